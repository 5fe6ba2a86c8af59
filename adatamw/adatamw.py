"""AdaTAMW and AdaTAM: Adam with torque-aware momentum (arXiv 2412.18790, Eq. 7, Eq. 8)."""

from __future__ import annotations

import warnings
from typing import Any, Iterable, Optional

from torch import Tensor

from .adam_family import AdamFamily
from .coupled import CoupledSecondMoment

__all__ = ["AdaTAM", "AdaTAMW"]


class AdaTAMW(CoupledSecondMoment, AdamFamily):
    r"""Adam with torque-aware momentum and decoupled weight decay (arXiv 2412.18790, Eq. 7).

    .. math::
        S_t &= \cos(m_{t-1}, g_t) \;(0 \text{ if a norm is } 0), \quad
        s_t = \gamma s_{t-1} + (1-\gamma) S_t, \quad d_t = (1 + s_t)/2 \\
        m_t &= \beta_1 m_{t-1} + (\epsilon_\tau + d_t)\, g_t
              \quad(\texttt{momentum="ema"}: m_t = (1-c_t) m_{t-1} + c_t g_t,\ \text{Eq. 8}) \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad \hat v_t = v_t / (1-\beta_2^t) \\
        \theta_t &= \theta_{t-1} (1 - \eta\lambda) - \eta\, m_t / (\sqrt{\hat v_t} + \epsilon)

    Args:
        params: iterable of parameters or dicts defining param groups. Group keys
            ``coupled`` (bool) and ``coupled_scale`` (float) give the 2-D tensors of a group
            Coupled Adam's second moment ``coupled_scale * mean(v_hat, dim=0)``.
        lr: learning rate (default 1e-3).
        betas: (beta1, beta2): momentum decay and second-moment EMA (default (0.9, 0.999)).
        eps: added to the denominator (default 1e-8).
        weight_decay: decoupled weight decay (default 1e-2).
        gamma: smoothing of the cosine, Eq. 3 (default 0.9).
        torque_eps: floor of the damping coefficient, c = torque_eps + d (default 1e-8).
        cosine_scope: ``"global"`` (one cosine over all parameters, Algorithm 1) or
            ``"tensor"`` (one per parameter tensor).
        momentum: ``"tam"`` (Eq. 7) or ``"ema"`` (Eq. 8, "AdaTAM2").
        foreach: ``True`` the multi-tensor kernels, ``False`` the per-tensor loop.
        maximize: maximize the objective instead of minimizing.
        fused: ``True`` the C++ kernels (float32 CPU tensors only, refused otherwise). With
            ``foreach`` and ``fused`` both ``None`` (default): fused for float32 CPU tensors,
            foreach for the rest (:mod:`adatamw.kernels`).

    ``lr`` may be a 0-d tensor (as in torch.optim): a scheduler then changes it without
    recompiling a ``torch.compile``-d step. AdaTAMW's momentum is a sum, not an average, so at
    the same lr its steps are larger than AdamW's: :func:`adatamw.adamw_lr_to_adatamw` gives the
    lr of equal step size.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        gamma: float = 0.9,
        torque_eps: float = 1e-8,
        cosine_scope: str = "global",
        momentum: str = "tam",
        foreach: Optional[bool] = None,
        maximize: bool = False,
        coupled: bool = False,
        coupled_scale: float = 1.0,
        fused: Optional[bool] = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            gamma,
            torque_eps,
            cosine_scope,
            momentum,
            coupled,
            coupled_scale,
            foreach,
            maximize,
            fused,
        )


class AdaTAM(AdaTAMW):
    """AdaTAMW with Adam's L2 weight decay (``wd * p`` added to g before the cosine), default 0."""

    l2_weight_decay = True

    def __init__(
        self,
        params: Iterable,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **kwargs)


def __getattr__(name: str) -> Any:
    """``adatamw.adatamw._AdamFamily``, the base's name before 0.2.0 (deprecated)."""
    if name == "_AdamFamily":
        warnings.warn(
            "adatamw.adatamw._AdamFamily is deprecated; use adatamw.adam_family.AdamFamily "
            "(also exported as adatamw.AdamFamily)",
            DeprecationWarning,
            stacklevel=2,
        )
        return AdamFamily
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
