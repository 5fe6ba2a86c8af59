"""The shared base of the Adam family: :class:`~adatamw.adatamw.AdaTAMW`,
:class:`~adatamw.adatamw.AdaTAM` and :class:`~adatamw.coupled.CoupledAdamW` (arXiv 2412.18790,
Eqs. 7 and 8; arXiv 2502.08441)."""

from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import Tensor

from . import kernels
from .base import GroupBatch, TorqueOptimizer, check_range, local_tensor

__all__ = ["AdamFamily"]


class AdamFamily(TorqueOptimizer):
    """The Adam-style optimizers of this package: Adam's state (``step``, ``exp_avg``,
    ``exp_avg_sq``) and one update, :func:`adatamw.update.adam_step`. Subclasses fix the
    momentum kind (``"tam"`` / ``"ema"`` with torque, ``"adam"`` without) and the decay (L2 or
    decoupled); those that mix in :class:`adatamw.coupled.CoupledSecondMoment` take
    ``coupled=True`` groups (Coupled Adam's row-mean second moment)."""

    #: Groups with ``coupled=True`` are accepted (set by :class:`~adatamw.coupled.CoupledSecondMoment`).
    has_coupled: bool = False

    has_fused = True
    state_keys = ("step", "exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Iterable,
        lr: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float,
        gamma: float,
        torque_eps: float,
        cosine_scope: str,
        momentum: str,
        coupled: bool,
        coupled_scale: float,
        foreach: Optional[bool],
        maximize: bool,
        fused: Optional[bool] = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            gamma=gamma,
            torque_eps=torque_eps,
            cosine_scope=cosine_scope,
            momentum=momentum,
            coupled=coupled,
            coupled_scale=coupled_scale,
            foreach=foreach,
            maximize=maximize,
            fused=fused,
        )
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
            raise ValueError(
                "Invalid coupled_scale: 0; it scales the coupled second moment "
                "and must be > 0 (1.0 is Coupled Adam)"
            )
        allowed = ("adam",) if not self.uses_torque else ("tam", "ema")
        if group["coupled"] and not self.has_coupled:
            raise ValueError(
                f"Invalid coupled: True; {type(self).__name__} has no coupled "
                "second moment (use CoupledAdamW or AdaTAMW)"
            )
        if group["momentum"] not in allowed:
            raise ValueError(
                f"Invalid momentum: {group['momentum']!r}; {type(self).__name__} accepts {allowed}"
            )

    def _init_state(self, state: dict, param: Tensor) -> None:
        state["step"] = torch.tensor(0.0, dtype=torch.float32)
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)

    def _update(self, group: dict, batch: GroupBatch) -> None:
        """adatamw.update.adam_step on each implementation's share of the group."""
        beta1, beta2 = group["betas"]
        exp_avg_sqs = [local_tensor(st["exp_avg_sq"]) for st in batch.states]
        steps = [st["step"] for st in batch.states]
        coefs = batch.coefs if self.uses_torque else None
        for impl, idx in batch.plan:
            lists = batch.subset(idx, batch.params, batch.grads, batch.momenta, exp_avg_sqs, steps, coefs)
            impl.adam_update(
                *lists,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                decoupled_wd=0.0 if self.l2_weight_decay else group["weight_decay"],
                kind=group["momentum"],
                v_transforms=(
                    self._v_transforms(group, batch, idx)
                    if impl is kernels.LOOP and group["coupled"]
                    else None
                ),
            )

    def _v_transforms(self, group: dict, batch: GroupBatch, idx: list[int]) -> Optional[list]:
        """What the denominator uses instead of v_t, per tensor ``idx`` (None: v_t itself)."""
        return None
