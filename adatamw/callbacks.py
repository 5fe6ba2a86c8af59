"""Trainer callbacks for Torque-Aware Momentum (TAM, arXiv 2412.18790).

* :class:`TorqueLoggingCallback` adds the optimizer's smoothed cosine ``s_hat`` and damping
  ``d = (1 + s_hat) / 2`` (the paper's Figure 8) to every training log of a plain
  :class:`transformers.Trainer` built with ``optimizer_cls_and_kwargs=(AdaTAMW, {...})``.
  :class:`adatamw.trainer.TAMTrainer` logs them itself and does not need it.
* :class:`TAMWarmupCallback` implements "TAM as a warm-up" (paper §4.4): train with TAM (or
  AdaTAMW) for the first ``switch_step`` optimizer steps, then switch the trainer's optimizer in
  place to SGD with momentum (learning rate halved, TAM's momentum buffer kept) or to AdamW.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from .wrappers import innermost_wrapper, unwrap_optimizer

logger = logging.getLogger(__name__)

__all__ = [
    "TAMWarmupCallback",
    "TorqueLoggingCallback",
    "add_torque_logging",
    "torque_log_values",
    "unwrap_optimizer",
]


# ---------------------------------------------------------------------------
# Helpers shared with adatamw.trainer
# ---------------------------------------------------------------------------


def _unwrap_scheduler(scheduler: Any) -> Any:
    """Return the torch scheduler behind accelerate's ``AcceleratedScheduler`` (``.scheduler``)."""
    while getattr(scheduler, "scheduler", None) is not None:
        scheduler = scheduler.scheduler
    return scheduler


def torque_log_values(optimizer: Any) -> dict[str, float]:
    """Torque telemetry of ``optimizer`` (possibly wrapped) as plain floats for ``Trainer.log``.

    Returns ``optimizer.torque_stats()`` (``s_hat``, ``damping`` and, in ``cosine_scope="tensor"``,
    ``s_hat_min`` / ``s_hat_max``), or ``{}`` for optimizers without torque (AdamW, SGD, CoupledAdamW).
    """
    if optimizer is None:
        return {}
    stats_fn = getattr(unwrap_optimizer(optimizer), "torque_stats", None)
    if not callable(stats_fn):
        return {}
    return {key: float(value) for key, value in stats_fn().items()}


# ---------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------


class TorqueLoggingCallback(TrainerCallback):
    """Add ``s_hat`` / ``damping`` (paper Figure 8) of ``trainer.optimizer`` to each training log.

    For a plain ``Trainer(..., optimizer_cls_and_kwargs=(AdaTAMW, {...}))``. The values land in the
    ``logs`` dict seen by later callbacks and in ``trainer.state.log_history``. The Trainer calls
    ``report_to`` integrations (TensorBoard, W&B, ...) *before* user callbacks, so to have them
    receive the values register the callback with :func:`add_torque_logging`, which puts it first.
    """

    def on_log(self, args, state, control, logs=None, optimizer=None, **kwargs):
        if logs is None or "loss" not in logs or "s_hat" in logs:
            return
        values = torque_log_values(optimizer)
        if not values:
            return
        logs.update(values)
        # Trainer.log appended a copy of `logs` to the history before calling the callbacks.
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(values)


def add_torque_logging(trainer) -> TorqueLoggingCallback:
    """Register a :class:`TorqueLoggingCallback` on ``trainer`` ahead of the ``report_to``
    integrations, so TensorBoard / W&B / ... receive ``s_hat`` and ``damping`` too."""
    callback = TorqueLoggingCallback()
    trainer.callback_handler.callbacks.insert(0, callback)
    return callback


# ---------------------------------------------------------------------------
# TAM warm-up switch (paper §4.4)
# ---------------------------------------------------------------------------

_SWITCH_TARGETS = ("sgdm", "adamw")
_DEFAULT_LR_FACTOR = {"sgdm": 0.5, "adamw": 1.0}


class TAMWarmupCallback(TrainerCallback):
    """Train with TAM for ``switch_step`` optimizer steps, then switch to SGDM or AdamW in place.

    Paper §4.4 ("TAM as a warm-up"): TAM's damping keeps the early, noisy phase stable; after the
    warm-up plain SGD with momentum takes over with the learning rate halved. Halving matches the
    learning-rate transfer of Eq. 6: TAM's step is about ``lr * d / (1 - beta)`` with ``d`` near
    1/2, SGDM's ``lr / (1 - beta)``.

    What is kept across the switch:

    * the parameters and their param groups (weight decay, no-decay split, extra keys);
    * ``to="sgdm"``: TAM's ``momentum_buffer`` per parameter (same tensor, same semantics as
      ``torch.optim.SGD``), momentum = the group's ``momentum`` (TAM default 0.9). From AdaTAMW /
      AdaTAM there is no SGD-compatible buffer and SGD starts its momentum afresh (warned).
    * ``to="adamw"`` from AdaTAMW / AdaTAM / CoupledAdamW: ``exp_avg_sq`` and ``step``; the first
      moment too, rescaled by ``1 - beta1`` when it is TAM's sum-form momentum (``momentum="tam"``)
      so that it is an average as AdamW expects. Betas and eps are taken from the old groups.
      From TAM (no second moment) AdamW starts afresh (warned).
    * the learning-rate scheduler: it keeps its schedule (``last_epoch``), now drives the new
      optimizer (``lr_scheduler.optimizer`` is re-pointed or is the same accelerate wrapper), and its
      ``base_lrs`` and every group's ``lr`` / ``initial_lr`` are multiplied by ``lr_factor``.

    Resuming from a checkpoint written after the switch re-creates the switched optimizer from the
    loaded state (no second ``lr_factor``) before the first step.

    Args:
        switch_step: number of optimizer steps (``state.global_step``) trained with TAM, >= 1.
        to: ``"sgdm"`` (torch.optim.SGD with momentum) or ``"adamw"`` (torch.optim.AdamW).
        lr_factor: multiplier of the learning rate at the switch; default 0.5 for ``"sgdm"`` (paper
            §4.4) and 1.0 for ``"adamw"``.
        optimizer_kwargs: extra keyword arguments for the new optimizer (e.g. ``{"nesterov": True}``
            or ``{"foreach": False}``); they override the values taken from the old groups.
    """

    def __init__(
        self,
        switch_step: int,
        to: str = "sgdm",
        lr_factor: float | None = None,
        optimizer_kwargs: dict[str, Any] | None = None,
    ):
        if isinstance(switch_step, bool) or not isinstance(switch_step, int) or switch_step < 1:
            raise ValueError(
                f"switch_step must be an int >= 1 (optimizer steps trained with TAM), got {switch_step!r}; "
                "to train with SGDM or AdamW from the start, use that optimizer directly"
            )
        if to not in _SWITCH_TARGETS:
            raise ValueError(f"to must be one of {_SWITCH_TARGETS}, got {to!r}")
        if lr_factor is None:
            lr_factor = _DEFAULT_LR_FACTOR[to]
        if not (isinstance(lr_factor, (int, float)) and math.isfinite(lr_factor) and lr_factor > 0):
            raise ValueError(f"lr_factor must be a positive finite number, got {lr_factor!r}")
        self.switch_step = switch_step
        self.to = to
        self.lr_factor = float(lr_factor)
        self.optimizer_kwargs = dict(optimizer_kwargs or {})
        self.switched_at: int | None = None

    # -- callback events ---------------------------------------------------

    def prepare_resume(self, optimizer, lr_scheduler, checkpoint: str) -> None:
        """Switch before a checkpoint written after the switch is loaded: it holds the switched
        optimizer's state, which the TAM optimizer refuses to load. :class:`adatamw.trainer.
        TAMTrainer` calls this; with a plain ``Trainer``, resuming past the switch is refused at
        load (the state belongs to SGD / AdamW), so use TAMTrainer for warm-up runs you resume."""
        trainer_state = Path(checkpoint) / "trainer_state.json"
        step = json.loads(trainer_state.read_text(encoding="utf-8"))["global_step"]
        if step > self.switch_step:
            self._switch(optimizer, lr_scheduler, step, lr_factor=1.0)
            self._switched_for_resume = True

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        self.switched_at = None
        if getattr(self, "_switched_for_resume", False):
            self._switched_for_resume = False
            self.switched_at = state.global_step
        elif state.global_step > self.switch_step:
            # Resumed from a checkpoint written after the switch: the loaded groups and scheduler
            # already carry the switched learning rate, so rebuild without rescaling.
            self._switch(optimizer, lr_scheduler, state.global_step, lr_factor=1.0)

    def on_step_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        # Switch before step `switch_step + 1`, not at the end of step `switch_step`: the log and the
        # checkpoint of step `switch_step` still show TAM (telemetry, state), and a checkpoint holds
        # the switched optimizer exactly when its step is past `switch_step`.
        if self.switched_at is None and state.global_step >= self.switch_step:
            self._switch(optimizer, lr_scheduler, state.global_step, lr_factor=self.lr_factor)

    # -- the switch --------------------------------------------------------

    def _switch(self, optimizer, lr_scheduler, step: int, lr_factor: float) -> None:
        if optimizer is None:
            raise RuntimeError(
                "TAMWarmupCallback needs the trainer's optimizer; none was passed to the callback"
            )
        wrapper = innermost_wrapper(optimizer)
        if wrapper is None:
            raise RuntimeError(
                "TAMWarmupCallback can only switch an optimizer the Trainer holds through a wrapper "
                "(accelerate's AcceleratedOptimizer, as transformers.Trainer does); got a bare "
                f"{type(optimizer).__name__}"
            )
        old = wrapper.optimizer
        new = self._build(old, lr_factor)
        _replace_inner_optimizer(wrapper, new)
        _repoint_scheduler(lr_scheduler, old, new, lr_factor)
        self.switched_at = step
        logger.info(
            "TAMWarmupCallback: switched %s -> %s at step %d (lr x %g)",
            type(old).__name__,
            type(new).__name__,
            step,
            lr_factor,
        )

    def _build(self, old: torch.optim.Optimizer, lr_factor: float) -> torch.optim.Optimizer:
        groups = []
        for group in old.param_groups:
            new_group = {"params": group["params"], "lr": _scaled(group["lr"], lr_factor)}
            new_group["weight_decay"] = group.get("weight_decay", 0.0)
            if "maximize" in group:
                new_group["maximize"] = group["maximize"]
            if "initial_lr" in group:
                new_group["initial_lr"] = _scaled(group["initial_lr"], lr_factor)
            if self.to == "sgdm":
                momentum = group.get("momentum")
                # AdaTAMW's group key `momentum` is the variant name ("tam" / "ema"), not a float.
                new_group["momentum"] = momentum if isinstance(momentum, (int, float)) else 0.9
            else:
                new_group["betas"] = tuple(group.get("betas", (0.9, 0.999)))
                new_group["eps"] = group.get("eps", 1e-8)
            new_group.update(self.optimizer_kwargs)
            groups.append(new_group)

        cls = torch.optim.SGD if self.to == "sgdm" else torch.optim.AdamW
        hyper = ("lr", "momentum") if self.to == "sgdm" else ("lr", "betas", "eps")
        defaults = {key: groups[0][key] for key in hyper}  # so `new.defaults` describes the switch too
        new = cls(groups, **{**defaults, **self.optimizer_kwargs})
        carried = self._carry_state(old, new)
        if not carried and any(old.state.values()):
            logger.warning(
                "TAMWarmupCallback: %s has no state %s can take over; the new optimizer starts its "
                "moments afresh",
                type(old).__name__,
                cls.__name__,
            )
        return new

    def _carry_state(self, old: torch.optim.Optimizer, new: torch.optim.Optimizer) -> bool:
        carried = False
        for old_group, new_group in zip(old.param_groups, new.param_groups, strict=True):
            for p in old_group["params"]:
                state = old.state.get(p)
                if not state:
                    continue
                if self.to == "sgdm":
                    if state.get("momentum_buffer") is not None:
                        new.state[p]["momentum_buffer"] = state["momentum_buffer"]
                        carried = True
                elif "exp_avg" in state and "exp_avg_sq" in state and "step" in state:
                    exp_avg = state["exp_avg"]
                    if old_group.get("momentum") == "tam":
                        # TAM momentum is a damped sum (no 1 - beta1 factor); AdamW keeps an average.
                        exp_avg = exp_avg * (1.0 - new_group["betas"][0])
                    step = state["step"]
                    step = (
                        step.detach().clone().float() if torch.is_tensor(step) else torch.tensor(float(step))
                    )
                    new.state[p].update(exp_avg=exp_avg, exp_avg_sq=state["exp_avg_sq"], step=step)
                    carried = True
        return carried


def _scaled(value, factor: float):
    return value if factor == 1.0 else value * factor


def _replace_inner_optimizer(wrapper, new: torch.optim.Optimizer) -> None:
    """Make ``wrapper`` (accelerate's AcceleratedOptimizer) drive ``new``; the Trainer, the callback
    handler and accelerate keep referencing the same wrapper object."""
    wrapper.optimizer = new
    if getattr(wrapper, "scaler", None) is not None:  # mixed precision: re-patch the step hooks
        from accelerate.optimizer import patch_optimizer_step

        wrapper._optimizer_original_step_method = new.step
        wrapper._optimizer_patched_step_method = patch_optimizer_step(wrapper, new.step)


def _repoint_scheduler(lr_scheduler, old, new, lr_factor: float) -> None:
    """Let the learning-rate scheduler drive ``new`` with its base learning rates scaled."""
    if lr_scheduler is None:
        return
    scheduler = _unwrap_scheduler(lr_scheduler)
    if unwrap_optimizer(getattr(scheduler, "optimizer", None)) is old:
        scheduler.optimizer = new  # bound to the raw optimizer; otherwise to the swapped wrapper
    if unwrap_optimizer(getattr(scheduler, "optimizer", None)) is not new:
        raise RuntimeError(
            f"TAMWarmupCallback: the lr scheduler {type(scheduler).__name__} does not drive the trainer's "
            "optimizer, so it cannot be carried over to the new optimizer"
        )
    if hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [_scaled(lr, lr_factor) for lr in scheduler.base_lrs]
    if hasattr(scheduler, "_last_lr"):
        # Trainer logs `get_last_lr()`; make it report the learning rate the next step will use.
        scheduler._last_lr = [group["lr"] for group in new.param_groups]
