"""AdaTAMW and AdaTAM: Adam with torque-aware momentum (arXiv 2412.18790, Eq. 7, Eq. 8), and
the Adam-family base class they share with :class:`adatamw.coupled.CoupledAdamW`."""

from __future__ import annotations

from typing import Any, Iterable, Optional

import torch
from torch import Tensor

from . import kernels
from .base import GroupBatch, TorqueOptimizer, check_range, local_tensor


class _AdamFamily(TorqueOptimizer):
    """Adam-style optimizers of this package; subclasses fix the momentum and decay kinds."""

    has_fused = True
    state_keys = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, params: Iterable, lr: float, betas: tuple[float, float], eps: float,
                 weight_decay: float, gamma: float, torque_eps: float, cosine_scope: str,
                 momentum: str, coupled: bool, coupled_scale: float, foreach: Optional[bool],
                 maximize: bool, fused: Optional[bool] = None) -> None:
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        gamma=gamma, torque_eps=torque_eps, cosine_scope=cosine_scope,
                        momentum=momentum, coupled=coupled, coupled_scale=coupled_scale,
                        foreach=foreach, maximize=maximize, fused=fused)
        super().__init__(params, defaults)

    def _check_group(self, group: dict) -> None:
        super()._check_group(group)
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Invalid betas: {betas!r}; pass a pair (beta1, beta2)")
        check_range("betas[0]", betas[0], 0.0, 1.0)
        check_range("betas[1]", betas[1], 0.0, 1.0)
        check_range("eps", group["eps"], 0.0, float("inf"))
        check_range("coupled_scale", group["coupled_scale"], 0.0, float("inf"))
        if group["coupled_scale"] == 0:
            raise ValueError("Invalid coupled_scale: 0; it scales the coupled second moment "
                             "and must be > 0 (1.0 is Coupled Adam)")
        allowed = ("adam",) if not self.uses_torque else ("tam", "ema")
        if group["momentum"] not in allowed:
            raise ValueError(f"Invalid momentum: {group['momentum']!r}; "
                             f"{type(self).__name__} accepts {allowed}")

    def _init_state(self, state: dict, param: Tensor) -> None:
        state["step"] = torch.tensor(0.0, dtype=torch.float32)
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)

    def _update(self, group: dict, batch: GroupBatch) -> None:
        """adatamw.momentum.adam_step on each implementation's share of the group."""
        beta1, beta2 = group["betas"]
        exp_avg_sqs = [local_tensor(st["exp_avg_sq"]) for st in batch.states]
        steps = [st["step"] for st in batch.states]
        coefs = batch.coefs if self.uses_torque else None
        for impl, idx in batch.plan:
            lists = batch.subset(idx, batch.params, batch.grads, batch.momenta, exp_avg_sqs, steps,
                                 coefs)
            impl.adam_update(
                *lists, lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                decoupled_wd=0.0 if self.l2_weight_decay else group["weight_decay"],
                kind=group["momentum"],
                v_transforms=(self._coupled_means(group, batch, idx)
                              if impl is kernels.LOOP and group["coupled"] else None))

    @staticmethod
    def _coupled_means(group: dict, batch: GroupBatch, idx: list[int]) -> list:
        """Coupled Adam: v_t -> coupled_scale * mean(v_t, dim=0) for the group's 2-D tensors
        (the mean over every shard's rows under FSDP2: ``batch.row_means``)."""
        scale = group["coupled_scale"]

        def transform(row_mean):
            return lambda v: (row_mean(v) if row_mean is not None
                              else v.mean(dim=0, keepdim=True)).mul_(scale)

        return [transform(batch.row_means[i] if batch.row_means else None)
                if batch.params[i].dim() == 2 else None for i in idx]


class AdaTAMW(_AdamFamily):
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

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, *, gamma: float = 0.9, torque_eps: float = 1e-8,
                 cosine_scope: str = "global", momentum: str = "tam",
                 foreach: Optional[bool] = None, maximize: bool = False,
                 coupled: bool = False, coupled_scale: float = 1.0,
                 fused: Optional[bool] = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, gamma, torque_eps, cosine_scope,
                         momentum, coupled, coupled_scale, foreach, maximize, fused)


class AdaTAM(AdaTAMW):
    """AdaTAMW with Adam's L2 weight decay (``wd * p`` added to g before the cosine), default 0."""

    l2_weight_decay = True

    def __init__(self, params: Iterable, lr: float | Tensor = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **kwargs)
