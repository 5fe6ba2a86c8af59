"""Exact torque under DeepSpeed ZeRO stages 1 and 2 (docs/distributed.md).

DeepSpeed's ZeRO-1/2 optimizer (``DeepSpeedZeroOptimizer``) replaces each param group's tensors
by one flat fp32 partition per rank: the group's parameters concatenated, zero padded to a
multiple of the data-parallel size and cut into disjoint equal pieces. The global cosine of
Eq. 2 needs only three sums over every element, ``<m, g>``, ``||m||^2`` and ``||g||^2``; the
pieces are disjoint and the padding is zero in ``m``, ``g`` and ``p`` (so it adds nothing, also
with L2 decay ``g + wd p``), hence summing each rank's partial sums over DeepSpeed's
data-parallel group gives exactly the unsharded cosine, and every rank computes the same
``s_t`` (Eq. 3) and damping (Eq. 4).

Two things make this more than one ``all_reduce``:

- DeepSpeed steps the wrapped optimizer **once per param group** (``_optimizer_step(i)``
  shows it only ``param_groups[i]``), and builds group ``i + 1``'s gradient only after group
  ``i`` has stepped. One cosine over all groups (Algorithm 1) needs every group's gradient
  before the first update, so :func:`zero_aware` defers the inner step: the calls for groups
  ``0 .. n-2`` keep their gradient partition, the call for the last group steps all groups at
  once (one reduction, one ``s_t``), then copies the earlier groups' updated fp32 partitions
  into DeepSpeed's bit16 partitions as DeepSpeed does after each group (the last group's copy
  and the all-gather are DeepSpeed's own, after the call).
- The optimizer cannot tell by itself that the flat tensors are ZeRO partitions, nor over
  which group; :func:`zero_aware` says it. When the optimizer finds its groups flattened
  without it, :func:`detect` looks for the ZeRO optimizer that wraps it: with one param group
  it makes the optimizer exact itself; with several it refuses (the first per-group call has
  already started) and names :func:`zero_aware`.

Exact: AdaTAMW / AdaTAM / TAM with ``cosine_scope="global"`` (and CoupledAdamW without coupled
groups, which has no cross-element term) under ZeRO-1 and ZeRO-2, fp32 or bf16, with or
without ``offload_optimizer`` (a client optimizer there needs
``"zero_force_ds_cpu_optimizer": false``), DeepSpeed's gradient clipping (applied to the
partitions before the step), gradient accumulation and skipped overflow steps (DeepSpeed
returns before calling the optimizer, so ``s`` and the step counters do not move), and
``save_checkpoint`` / ``load_checkpoint`` (``s`` is a 0-dim entry of each rank's optimizer
state, the same on every rank). DeepSpeed's universal checkpoint (``ds_to_universal``) does not
apply: it cuts every optimizer state tensor but ``step`` per parameter and stops at the 0-dim
``s`` ("narrow() cannot be applied to a 0-dim tensor"); it also needs client-written
``universal_checkpoint_info``, which the Trainer does not write.

Refused, with the reason:

- ``cosine_scope="tensor"`` and coupled groups: the flat partition has lost the tensor
  boundaries and the ``[V, H]`` rows (use FSDP2, see :mod:`adatamw.distributed`).
- ZeRO-3 (``DeepSpeedZeroOptimizer_Stage3``): it calls the optimizer once per *sub-group*
  (``sub_group_size``) with every other group emptied, interleaved with its own
  parameter swapping and offload; the deferral above is not implemented for it.
- ZeRO-1/2 with ``torch_autocast`` or ZenFlow: other step paths that the deferral does not
  replicate (``offload_optimizer`` is handled: its weights go back through DeepSpeed's buffer).
- MoE groups (expert-parallel groups reduce over different process groups).
"""

from __future__ import annotations

import gc
import sys
from typing import Any, Optional, Sequence

import torch.distributed as dist
from torch import Tensor

from .distributed import Sharding

__all__ = ["ZeroSharding", "detect", "zero_aware", "zero_aware_callback"]

_WORKS = ("cosine_scope='global' under DeepSpeed ZeRO-1/2, or FSDP2 "
          "(torch.distributed.fsdp.fully_shard; see docs/distributed.md)")


class ZeroSharding(Sharding):
    """The partial sums of ZeRO-1/2 flat partitions, completed over the data-parallel group.

    ``flat_partitions`` tells :func:`adatamw.distributed.resolve` that the param groups were
    replaced by flat partitions on purpose.
    """

    flat_partitions = True

    def __init__(self, group: Any) -> None:
        self.group = group

    def reduce_partials(self, sums: Tensor, sources: Sequence[Tensor], scope: str) -> Tensor:
        """Eq. 2's three sums over every rank's partition (global scope): one ``all_reduce``
        of 3 floats. Every rank's partition of every group takes part, so no row is counted
        twice and the padding adds zeros."""
        if scope != "global":  # zero_aware refuses it; a later change of scope lands here
            raise RuntimeError(_tensor_scope_message("the optimizer"))
        total = sums.sum(0, keepdim=True)
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=self.group)
        return total


def _tensor_scope_message(name: str) -> str:
    return (f"{name} uses cosine_scope='tensor', but DeepSpeed ZeRO replaced each param group by "
            "one flat partition per rank: the tensors' boundaries are gone, so a per-tensor "
            f"cosine (Eq. 2) cannot be computed. Use {_WORKS}")


def _zero_classes() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(ZeRO-1/2 optimizer classes, other DeepSpeed optimizers that flatten the groups)."""
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3
    from deepspeed.runtime.bf16_optimizer import BF16_Optimizer
    from deepspeed.runtime.fp16.fused_optimizer import FP16_Optimizer

    return (DeepSpeedZeroOptimizer,), (DeepSpeedZeroOptimizer_Stage3, BF16_Optimizer,
                                       FP16_Optimizer)


def _unwrap(obj: Any) -> tuple[Any, Any]:
    """(DeepSpeed's optimizer, the optimizer of this package) from an engine, accelerate's
    wrapper, DeepSpeed's optimizer or this package's optimizer (then DeepSpeed's is None)."""
    from .base import TorqueOptimizer

    outer = None
    seen = 0
    while not isinstance(obj, TorqueOptimizer):
        zero12, others = _zero_classes()
        if isinstance(obj, zero12 + others):
            outer = obj
        inner = getattr(obj, "optimizer", None)
        seen += 1
        if inner is None or seen > 8:
            raise TypeError(
                f"zero_aware needs a DeepSpeed engine, its optimizer or an optimizer of adatamw "
                f"wrapped by DeepSpeed; got {type(obj).__name__}, which holds no adatamw "
                "optimizer (build the DeepSpeed engine with optimizer=AdaTAMW(...))")
        obj = inner
    return outer, obj


def _find_wrapper(optimizer: Any) -> Optional[Any]:
    """The DeepSpeed optimizer whose ``.optimizer`` is ``optimizer`` (None: not under DeepSpeed).

    Searches the objects that refer to ``optimizer`` (their ``__dict__`` on CPython): only run
    when the param groups were found replaced, once per layout."""
    if "deepspeed" not in sys.modules:
        return None
    try:
        zero12, others = _zero_classes()
    except ImportError:
        return None
    for ref in gc.get_referrers(optimizer):
        owners = gc.get_referrers(ref) if isinstance(ref, dict) else [ref]
        for owner in owners:
            if isinstance(owner, zero12 + others) and getattr(owner, "optimizer", None) is optimizer:
                return owner
    return None


def _check_supported(wrapper: Any, optimizer: Any) -> None:
    """Refuse what cannot be exact (module docstring), naming the reason and the fix."""
    name = type(optimizer).__name__
    zero12, _ = _zero_classes()
    if not isinstance(wrapper, zero12):
        stage3 = type(wrapper).__name__ == "DeepSpeedZeroOptimizer_Stage3"
        raise RuntimeError(
            f"{name} is wrapped by DeepSpeed's {type(wrapper).__name__}"
            + (" (ZeRO-3), which steps it once per parameter sub-group with every other group "
               "emptied, so one cosine over all parameters (Eq. 2) is not available to any "
               "call" if stage3 else ", which replaces the param groups by flat tensors "
               "outside ZeRO-1/2") +
            ". Use ZeRO stage 1 or 2 (zero_optimization.stage), or FSDP2; see "
            "docs/distributed.md")
    missing = [a for a in _ZERO12_INTERNALS if not hasattr(wrapper, a)]
    if missing:
        raise RuntimeError(
            f"{name} under a DeepSpeed whose ZeRO-1/2 optimizer lacks {missing}, which "
            "adatamw.zero uses to step all param groups at once; it is tested with DeepSpeed "
            "0.19 (pip install 'adatamw[deepspeed]')")
    if optimizer.uses_torque and optimizer.param_groups[0]["cosine_scope"] != "global":
        raise RuntimeError(_tensor_scope_message(name))
    for i, group in enumerate(optimizer.param_groups):
        if group.get("coupled"):
            raise RuntimeError(
                f"param_groups[{i}] of {name} is coupled (Coupled Adam's row mean of a [V, H] "
                "embedding), but DeepSpeed ZeRO flattens the group into 1-D partitions that cut "
                "its rows. Drop coupled=True / --coupled_embeddings, or use FSDP2")
        if group.get("moe"):
            raise RuntimeError(f"param_groups[{i}] of {name} is a DeepSpeed MoE group (its own "
                               "expert-parallel process group): not supported with the torque "
                               "cosine")
    for flag, what in (("torch_autocast_gradscaler", "torch_autocast"), ("zenflow", "ZenFlow")):
        if getattr(wrapper, flag, None):
            raise RuntimeError(
                f"{name} under DeepSpeed ZeRO with {what}: DeepSpeed copies each group back "
                "differently there, which the one-step-for-all-groups deferral of "
                "adatamw.zero does not replicate; drop it from the ds_config")


#: What :func:`_step_all_groups_at_once` reads of DeepSpeed's ZeRO-1/2 optimizer.
_ZERO12_INTERNALS = ("bit16_groups", "single_partition_of_fp32_groups",
                     "parallel_partitioned_bit16_groups", "real_dp_process_group", "cpu_offload",
                     "_optimizer_step", "_lazy_init_hp_params_optimizer_state")


def _step_all_groups_at_once(wrapper: Any, optimizer: Any) -> None:
    """Make ``wrapper._optimizer_step(i)`` defer the step to the last group (module docstring).

    Installed on the instance once; a no-op for a single group."""
    n = len(wrapper.bit16_groups)
    if n < 2 or getattr(wrapper, "_adatamw_deferred", False):
        return
    pending: dict[int, Tensor] = {}
    partitions = wrapper.single_partition_of_fp32_groups

    def _optimizer_step(group_no: int) -> None:
        if group_no == 0:
            pending.clear()  # a step interrupted by an exception leaves nothing behind
        if group_no < n - 1:  # DeepSpeed sets .grad = None after the call: keep it
            pending[group_no] = partitions[group_no].grad
            return
        for j, grad in pending.items():
            partitions[j].grad = grad
        optimizer.step()  # all groups: one reduction, one s_t (Eqs. 2-4)
        for j in pending:  # what DeepSpeed does after each group's step, for the deferred ones
            rank = dist.get_rank(group=wrapper.real_dp_process_group[j])
            bit16 = wrapper.parallel_partitioned_bit16_groups[j][rank]
            if wrapper.cpu_offload:  # the gradient buffer persists; weights go through a buffer
                buffer = wrapper.param_buffer_of_bit16_for_cpu_offload_groups[j]
                buffer.data.copy_(partitions[j].data)
                bit16.data.copy_(buffer.data)
            else:
                partitions[j].grad = None
                bit16.data.copy_(partitions[j].data)
        pending.clear()
        wrapper._lazy_init_hp_params_optimizer_state()

    wrapper._optimizer_step = _optimizer_step
    wrapper._adatamw_deferred = True


def zero_aware(optimizer: Any, group: Any = None) -> Any:
    """Make an optimizer of this package exact under DeepSpeed ZeRO-1/2; returns its argument.

    Call it after ``deepspeed.initialize`` (or ``accelerator.prepare``) and before the first
    step. The global cosine (Eq. 2) then sums the three partial sums of every rank's flat
    partition over the data-parallel group, and DeepSpeed's per-group steps are made one step
    over all groups (module docstring).

    Args:
        optimizer: the DeepSpeed engine, DeepSpeed's ZeRO optimizer, accelerate's wrapper of
            it (``Trainer.optimizer`` after ``prepare``), or the adatamw optimizer inside it.
        group: the process group the partitions are split over (default: DeepSpeed's
            data-parallel group of the param groups).

    Raises ``RuntimeError`` for what cannot be exact: ``cosine_scope="tensor"``, coupled
    groups, ZeRO-3, ``torch_autocast`` / ZenFlow (module docstring).
    """
    wrapper, inner = _unwrap(optimizer)
    if wrapper is None:
        wrapper = _find_wrapper(inner)
    if wrapper is None:
        raise RuntimeError(
            f"zero_aware: the {type(inner).__name__} is not wrapped by a DeepSpeed ZeRO "
            "optimizer; call it after deepspeed.initialize(..., optimizer=...) / "
            "accelerator.prepare")
    _check_supported(wrapper, inner)
    if group is None:
        groups = {id(g): g for g in wrapper.real_dp_process_group}
        if len(groups) != 1:
            raise RuntimeError(f"zero_aware: the param groups of {type(inner).__name__} are "
                               f"partitioned over {len(groups)} process groups; pass group=")
        group = next(iter(groups.values()))
    _step_all_groups_at_once(wrapper, inner)
    inner.sharding = ZeroSharding(group)
    return optimizer


def detect(optimizer: Any) -> Optional[ZeroSharding]:
    """The :class:`ZeroSharding` of an optimizer whose groups DeepSpeed ZeRO-1/2 flattened
    without :func:`zero_aware` (None: not under DeepSpeed, or groups not replaced).

    Called by :func:`adatamw.distributed.resolve` inside DeepSpeed's call for the first group.
    One param group: nothing to defer, so it is made exact here. Several: refused, naming
    :func:`zero_aware` (this call already sees one group only)."""
    built = getattr(optimizer, "_built_shapes", None)
    if built is None or "deepspeed" not in sys.modules:
        return None
    now = [[tuple(p.shape) for p in g["params"]] for g in optimizer.param_groups]
    if now == built:
        return None
    wrapper = _find_wrapper(optimizer)
    if wrapper is None:
        return None
    _check_supported(wrapper, optimizer)
    if len(wrapper.bit16_groups) > 1:
        raise RuntimeError(
            f"{type(optimizer).__name__} runs under DeepSpeed ZeRO with "
            f"{len(wrapper.bit16_groups)} param groups, which DeepSpeed steps one at a time; "
            "one cosine over all of them (Eq. 2) needs adatamw.zero.zero_aware(engine) after "
            "deepspeed.initialize (with the Trainer: callbacks=[adatamw.zero."
            "zero_aware_callback()])")
    zero_aware(wrapper)
    return optimizer.sharding


def zero_aware_callback():
    """A ``transformers.TrainerCallback`` that calls :func:`zero_aware` on the Trainer's
    optimizer at ``on_train_begin`` (after ``accelerator.prepare``, before the first step)
    when DeepSpeed wraps an adatamw optimizer (``TrainingArguments(deepspeed=...)`` or an
    ``accelerate launch`` DeepSpeed config); a no-op otherwise."""
    from transformers import TrainerCallback

    class ZeroAwareCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
            if optimizer is None or "deepspeed" not in sys.modules:
                return
            try:
                wrapper, inner = _unwrap(optimizer)
            except TypeError:  # not an adatamw optimizer: nothing to do
                return
            if wrapper is not None and not isinstance(inner.sharding, ZeroSharding):
                zero_aware(optimizer)

    return ZeroAwareCallback()
