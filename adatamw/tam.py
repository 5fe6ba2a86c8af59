"""TAM: SGD with torque-aware momentum (arXiv 2412.18790, Algorithm 1)."""

from __future__ import annotations

from typing import Iterable, Optional

import torch

from .base import GroupBatch, TorqueOptimizer, check_range


class TAM(TorqueOptimizer):
    r"""SGD with torque-aware momentum (Algorithm 1).

    .. math::
        d_t = (1 + s_t)/2, \quad m_t = \beta m_{t-1} + (\epsilon_\tau + d_t)\, g_t, \quad
        \theta_t = \theta_{t-1} - \eta\, m_t

    with s_t the smoothed cosine of Eqs. 2-3. Weight decay is SGD's L2 term, added to g before
    the cosine. The momentum lives in ``state["momentum_buffer"]`` as for ``torch.optim.SGD``,
    so a switch to SGDM can carry it over. Learning rates transfer from SGDM by
    :func:`adatamw.transfer_lr` (Eq. 6: 2x at equal betas).

    Args:
        params: iterable of parameters or dicts defining param groups.
        lr: learning rate (default 1e-3).
        momentum: beta (default 0.9).
        weight_decay: L2 penalty (default 0).
        gamma: smoothing of the cosine (default 0.9).
        torque_eps: floor of the damping coefficient (default 1e-8).
        cosine_scope: ``"global"`` or ``"tensor"``.
        foreach: ``None``/``True`` multi-tensor kernels, ``False`` per-tensor loop (TAM has no
            fused kernel).
        maximize: maximize the objective instead of minimizing.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | torch.Tensor = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        *,
        gamma: float = 0.9,
        torque_eps: float = 1e-8,
        cosine_scope: str = "global",
        foreach: Optional[bool] = None,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            gamma=gamma,
            torque_eps=torque_eps,
            weight_decay=weight_decay,
            cosine_scope=cosine_scope,
            foreach=foreach,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def _check_group(self, group: dict) -> None:
        super()._check_group(group)
        check_range("momentum", group["momentum"], 0.0, 1.0)

    momentum_key = "momentum_buffer"
    l2_weight_decay = True
    state_keys = ("momentum_buffer",)

    def _init_state(self, state: dict, param: torch.Tensor) -> None:
        state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)

    def _update(self, group: dict, batch: GroupBatch) -> None:
        """adatamw.update.sgd_step on each implementation's share of the group."""
        for impl, idx in batch.plan:
            params, grads, buffers, coefs = batch.subset(
                idx, batch.params, batch.grads, batch.momenta, batch.coefs
            )
            impl.sgd_update(params, grads, buffers, coefs, lr=group["lr"], beta=group["momentum"])
