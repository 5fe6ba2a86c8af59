"""CoupledAdamW: AdamW whose embedding rows share one second moment (Coupled Adam,
arXiv 2502.08441). The coupled second moment itself is :meth:`_AdamFamily._coupled_means`, used by
every optimizer of the Adam family for groups with ``coupled=True``."""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from .adatamw import _AdamFamily


class CoupledAdamW(_AdamFamily):
    """AdamW whose coupled groups share the second moment across rows (arXiv 2502.08441).

    Standard bias-corrected EMA momentum, no torque. Put the embedding matrices in a group
    with ``coupled=True`` (see :func:`adatamw.embedding_param_groups`); other groups are AdamW.
    """

    uses_torque = False

    def __init__(self, params, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, *, coupled_scale: float = 1.0,
                 foreach: Optional[bool] = None, maximize: bool = False,
                 coupled: bool = False, fused: Optional[bool] = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, gamma=0.0, torque_eps=0.0,
                         cosine_scope="tensor", momentum="adam", coupled=coupled,
                         coupled_scale=coupled_scale, foreach=foreach, maximize=maximize,
                         fused=fused)
