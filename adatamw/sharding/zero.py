"""Exact torque under DeepSpeed ZeRO stages 1, 2 and 3 (docs/distributed.md).

DeepSpeed's ZeRO optimizers replace each param group's tensors by flat fp32 partitions, one set
per rank: ZeRO-1/2 (``DeepSpeedZeroOptimizer``) concatenate a group's parameters, pad with zeros
to a multiple of the data-parallel size and cut the whole into disjoint equal pieces; ZeRO-3
(``DeepSpeedZeroOptimizer_Stage3``) cuts every parameter (zero padded) and concatenates this
rank's pieces into one flat tensor per sub-group (``sub_group_size``). The global cosine of
Eq. 2 needs only three sums over every element, ``<m, g>``, ``||m||^2`` and ``||g||^2``; the
pieces are disjoint and the padding is zero in ``m``, ``g`` and ``p`` (so it adds nothing, also
with L2 decay ``g + wd p``), hence summing each rank's partial sums over DeepSpeed's
data-parallel group gives exactly the unsharded cosine, and every rank computes the same
``s_t`` (Eq. 3) and damping (Eq. 4).

Two things make this more than one ``all_reduce``:

- DeepSpeed steps the wrapped optimizer **once per param group** (ZeRO-1/2:
  ``_optimizer_step(i)`` shows it only ``param_groups[i]``) or **once per sub-group** (ZeRO-3:
  every other group emptied), and builds the next one's gradient only after the previous one
  has stepped. One cosine over all groups (Algorithm 1) needs every gradient before the first
  update, so :func:`zero_aware` defers the inner step: the calls for the first ``n - 1``
  keep their gradient partition, the last call steps everything at once (one reduction, one
  ``s_t``), then copies the earlier partitions' new weights where DeepSpeed copies them after
  each call (ZeRO-1/2: the bit16 partitions, through the offload buffer under
  ``offload_optimizer``; ZeRO-3: ``_reassign_or_swap_out_partitioned_parameters``). The last
  one's copy and the all-gather are DeepSpeed's own, after the call.
- The optimizer cannot tell by itself that the flat tensors are ZeRO partitions, nor over
  which group; :func:`zero_aware` says it. When the optimizer finds its groups flattened
  without it, :func:`detect` looks for the ZeRO optimizer that wraps it: with one inner step
  per step it makes the optimizer exact itself; with several it refuses (the first call has
  already started) and names :func:`zero_aware`.

Exact: AdaTAMW / AdaTAM / TAM with ``cosine_scope="global"`` (and CoupledAdamW without coupled
groups, which has no cross-element term) under ZeRO-1, 2 and 3, fp32 or bf16; ZeRO-1/2 also
with ``offload_optimizer`` (a client optimizer there needs
``"zero_force_ds_cpu_optimizer": false``); DeepSpeed's gradient clipping (applied to the
partitions before the step), gradient accumulation and skipped overflow steps (DeepSpeed
returns before calling the optimizer, so ``s`` and the step counters do not move), and
``save_checkpoint`` / ``load_checkpoint`` (``s`` is a 0-dim entry of each rank's optimizer
state, the same on every rank). DeepSpeed's universal checkpoint (``ds_to_universal``) does not
apply: it cuts every optimizer state tensor but ``step`` per parameter and stops at the 0-dim
``s`` ("narrow() cannot be applied to a 0-dim tensor"); it also needs client-written
``universal_checkpoint_info``, which the Trainer does not write.

Refused, with the reason:

- ``cosine_scope="tensor"`` and coupled groups: the flat partition has lost the tensor
  boundaries and the ``[V, H]`` rows (use FSDP2, see :mod:`adatamw.sharding.fsdp`).
- ZeRO-3 with ``offload_optimizer`` (or NVMe swapping) or Muon, ZeRO-1/2/3 with
  ``torch_autocast`` or ZenFlow: other step paths (state swapped in and out around each inner
  step) that the deferral does not replicate.
- MoE groups (expert-parallel groups reduce over different process groups).
"""

from __future__ import annotations

import gc
import sys
from typing import Any, Optional, Sequence

import torch.distributed as dist
from torch import Tensor

from ..wrappers import optimizer_chain
from .base import FSDP_WORKS, ShardableOptimizer, Sharding, is_dtensor, is_fsdp1_flat

__all__ = [
    "ZeroSharding",
    "check_not_flattened",
    "detect",
    "refuse_partitioned",
    "zero_aware",
    "zero_aware_callback",
]

_WORKS = (
    "cosine_scope='global' under DeepSpeed ZeRO, or FSDP2 "
    "(torch.distributed.fsdp.fully_shard; see docs/distributed.md)"
)


class ZeroSharding(Sharding):
    """The partial sums of ZeRO flat partitions, completed over the data-parallel group.

    ``flat_partitions`` tells :func:`adatamw.sharding.resolve.resolve` that the param groups
    were replaced by flat partitions on purpose.
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
    return (
        f"{name} uses cosine_scope='tensor', but DeepSpeed ZeRO replaced each param group by "
        "one flat partition per rank: the tensors' boundaries are gone, so a per-tensor "
        f"cosine (Eq. 2) cannot be computed. Use {_WORKS}"
    )


def refuse_partitioned(params: Sequence[Tensor], optimizer_name: str) -> None:
    """ZeRO-3 partitions parameters in place (``ds_id``/``ds_tensor``); without
    :func:`zero_aware` their local sums are partial: refuse them at the first step."""
    for p in params:
        if hasattr(p, "ds_id") or hasattr(p, "ds_tensor"):
            raise RuntimeError(
                f"{optimizer_name} got a DeepSpeed ZeRO-3 partitioned parameter without "
                "adatamw.zero.zero_aware: the torque cosine (Eq. 2) would sum one rank's "
                "partition only. Call adatamw.zero.zero_aware(engine) after deepspeed.initialize "
                "(with the Trainer: callbacks=[adatamw.zero.zero_aware_callback()]), or use "
                f"{FSDP_WORKS} (see docs/distributed.md)"
            )


def check_not_flattened(optimizer: Any) -> None:
    """DeepSpeed ZeRO-1/2/3 and its fp16/bf16 optimizers swap each group's tensors for flat
    partitions after construction; compare with the shapes the optimizer was built with."""
    built = getattr(optimizer, "_built_shapes", None)
    if built is None:
        return
    for i, (group, shapes) in enumerate(zip(optimizer.param_groups, built)):
        now = [tuple(p.shape) for p in group["params"]]
        if now == shapes or all(is_dtensor(p) or is_fsdp1_flat(p) for p in group["params"]):
            continue
        raise RuntimeError(
            f"param_groups[{i}]['params'] of {type(optimizer).__name__} was replaced after "
            f"construction ({len(shapes)} tensors -> {len(now)} tensors of shapes {now[:3]}"
            f"{'...' if len(now) > 3 else ''}). DeepSpeed ZeRO stages 1-3 and its fp16/bf16 "
            "optimizers do this with flat partitions of a whole group, over which neither the "
            "per-tensor cosine (Eq. 2) nor the coupled row mean is exact. Use "
            f"{FSDP_WORKS}; under DeepSpeed ZeRO-1/2/3, adatamw.zero.zero_aware(engine) after "
            "deepspeed.initialize makes the global scope exact. To change the "
            "parameters of an optimizer, build a new one or use add_param_group"
        )


def _zero_classes() -> tuple[type, type, tuple[type, ...]]:
    """(ZeRO-1/2 optimizer, ZeRO-3 optimizer, other DeepSpeed optimizers that flatten groups)."""
    from deepspeed.runtime.bf16_optimizer import BF16_Optimizer
    from deepspeed.runtime.fp16.fused_optimizer import FP16_Optimizer
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    return DeepSpeedZeroOptimizer, DeepSpeedZeroOptimizer_Stage3, (BF16_Optimizer, FP16_Optimizer)


def _deepspeed_optimizer(obj: Any) -> bool:
    zero12, zero3, others = _zero_classes()
    return isinstance(obj, (zero12, zero3, *others))


def _unwrap(obj: Any) -> tuple[Any, Any]:
    """(DeepSpeed's optimizer, the optimizer of this package) from an engine, accelerate's
    wrapper, DeepSpeed's optimizer or this package's optimizer (then DeepSpeed's is None).

    This package's optimizer is recognised by its interface (:class:`ShardableOptimizer`)."""
    chain = optimizer_chain(obj)
    inner = next((o for o in chain if isinstance(o, ShardableOptimizer)), None)
    if inner is None:
        raise TypeError(
            f"zero_aware needs a DeepSpeed engine, its optimizer or an optimizer of adatamw "
            f"wrapped by DeepSpeed; got {type(obj).__name__}, which holds no adatamw "
            "optimizer (build the DeepSpeed engine with optimizer=AdaTAMW(...))"
        )
    wrappers = chain[: chain.index(inner)]
    outer = next((o for o in reversed(wrappers) if _deepspeed_optimizer(o)), None)
    return outer, inner


def _find_wrapper(optimizer: Any) -> Optional[Any]:
    """The DeepSpeed optimizer whose ``.optimizer`` is ``optimizer`` (None: not under DeepSpeed).

    Searches the objects that refer to ``optimizer`` (their ``__dict__`` on CPython): only run
    when the param groups were found replaced, once per layout."""
    if "deepspeed" not in sys.modules:
        return None
    try:
        _zero_classes()
    except ImportError:
        return None
    for ref in gc.get_referrers(optimizer):
        owners = gc.get_referrers(ref) if isinstance(ref, dict) else [ref]
        for owner in owners:
            if _deepspeed_optimizer(owner) and getattr(owner, "optimizer", None) is optimizer:
                return owner
    return None


def _check_supported(wrapper: Any, optimizer: Any) -> None:
    """Refuse what cannot be exact (module docstring), naming the reason and the fix."""
    name = type(optimizer).__name__
    zero12, zero3, _ = _zero_classes()
    if not isinstance(wrapper, (zero12, zero3)):
        raise RuntimeError(
            f"{name} is wrapped by DeepSpeed's {type(wrapper).__name__}, which replaces the "
            "param groups by flat tensors outside ZeRO; use ZeRO stage 1, 2 or 3 "
            "(zero_optimization.stage), or FSDP2; see docs/distributed.md"
        )
    internals = _ZERO12_INTERNALS if isinstance(wrapper, zero12) else _ZERO3_INTERNALS
    missing = [a for a in internals if not hasattr(wrapper, a)]
    if missing:
        raise RuntimeError(
            f"{name} under a DeepSpeed whose {type(wrapper).__name__} lacks {missing}, which "
            "adatamw.zero uses to step all param groups at once; it is tested with DeepSpeed "
            "0.19 (pip install 'adatamw[deepspeed]')"
        )
    if isinstance(wrapper, zero3):
        for flag, what in (("offload_optimizer", "offload_optimizer"), ("use_muon", "Muon")):
            if getattr(wrapper, flag, None):
                raise RuntimeError(
                    f"{name} under DeepSpeed ZeRO-3 with {what}: DeepSpeed swaps each "
                    "sub-group's state in and out around its own step, which the "
                    "one-step-for-all-groups deferral of adatamw.zero does not replicate; "
                    "drop it from the ds_config or use ZeRO-2 (offload_optimizer works there)"
                )
    if optimizer.uses_torque and optimizer.param_groups[0]["cosine_scope"] != "global":
        raise RuntimeError(_tensor_scope_message(name))
    for i, group in enumerate(optimizer.param_groups):
        if group.get("coupled"):
            raise RuntimeError(
                f"param_groups[{i}] of {name} is coupled (Coupled Adam's row mean of a [V, H] "
                "embedding), but DeepSpeed ZeRO flattens the group into 1-D partitions that cut "
                "its rows. Drop coupled=True / --coupled_embeddings, or use FSDP2"
            )
        if group.get("moe"):
            raise RuntimeError(
                f"param_groups[{i}] of {name} is a DeepSpeed MoE group (its own "
                "expert-parallel process group): not supported with the torque "
                "cosine"
            )
    for flag, what in (("torch_autocast_gradscaler", "torch_autocast"), ("zenflow", "ZenFlow")):
        if getattr(wrapper, flag, None):
            raise RuntimeError(
                f"{name} under DeepSpeed ZeRO with {what}: DeepSpeed copies each group back "
                "differently there, which the one-step-for-all-groups deferral of "
                "adatamw.zero does not replicate; drop it from the ds_config"
            )


#: What :func:`_step_all_groups_at_once` reads of DeepSpeed's ZeRO-1/2 optimizer.
_ZERO12_INTERNALS = (
    "bit16_groups",
    "single_partition_of_fp32_groups",
    "parallel_partitioned_bit16_groups",
    "real_dp_process_group",
    "cpu_offload",
    "_optimizer_step",
    "_lazy_init_hp_params_optimizer_state",
)


#: What :func:`_defer_zero3` reads of DeepSpeed's ZeRO-3 optimizer.
_ZERO3_INTERNALS = (
    "fp16_groups",
    "fp32_partitioned_groups_flat",
    "dp_process_group",
    "offload_optimizer",
    "_set_fp32_optimizer_param_groups",
    "_clear_fp32_optimizer_param_groups",
    "_reassign_or_swap_out_partitioned_parameters",
    "_optimizer_step",
)


def _fill_stage3_padding(wrapper: Any, value: float = 0.0) -> None:
    """Set the padding of ZeRO-3's fp32 partitions to ``value`` (0: what :func:`zero_aware` does).

    ZeRO-3 cuts each parameter into equal pieces of ``ceil(numel / ranks)`` elements; the tail
    of the last piece is padding, which DeepSpeed allocates with ``torch.empty`` and never
    writes. Its gradient is zero, but with L2 decay (AdaTAM, TAM) ``g + wd p`` would carry the
    uninitialised ``p`` into the three sums of Eq. 2 and into ``m``. Zeroed once, it stays zero
    (zero gradient, zero momentum, zero update, decay of zero)."""
    for flat, params in zip(wrapper.fp32_partitioned_groups_flat, wrapper.fp16_groups):
        offset = 0
        for p in params:
            piece = p.ds_tensor.ds_numel
            rank = dist.get_rank(group=getattr(p, "ds_process_group", wrapper.dp_process_group))
            valid = max(0, min(piece, p.ds_numel - rank * piece))
            flat.data[offset + valid : offset + piece].fill_(value)
            offset += piece


def _n_steps(wrapper: Any) -> int:
    """How many inner steps DeepSpeed makes per step: one per param group (ZeRO-1/2) or per
    sub-group (ZeRO-3)."""
    return len(wrapper.bit16_groups if hasattr(wrapper, "bit16_groups") else wrapper.fp16_groups)


def _step_all_groups_at_once(wrapper: Any, optimizer: Any) -> None:
    """Make ``wrapper._optimizer_step(i)`` defer the step to the last group (module docstring).

    Installed on the instance once; a no-op for a single group."""
    if _n_steps(wrapper) < 2 or getattr(wrapper, "_adatamw_deferred", False):
        return
    zero12, _, _ = _zero_classes()
    defer = _defer_zero12 if isinstance(wrapper, zero12) else _defer_zero3
    wrapper._optimizer_step = defer(wrapper, optimizer)
    wrapper._adatamw_deferred = True


def _deferred(n: int, partitions: Sequence[Tensor], step_all, copy_back):
    """An ``_optimizer_step(i)`` for ``n`` inner steps: the first ``n - 1`` calls keep partition
    ``i``'s gradient (DeepSpeed sets ``.grad = None`` after each call), the last restores them,
    runs ``step_all()`` (one reduction, one ``s_t``: Eqs. 2-4) and ``copy_back(j)`` for every
    deferred ``j``."""
    pending: dict[int, Tensor] = {}

    def _optimizer_step(i: int) -> None:
        if i == 0:
            pending.clear()  # a step interrupted by an exception leaves nothing behind
        if i < n - 1:
            pending[i] = partitions[i].grad
            return
        for j, grad in pending.items():
            partitions[j].grad = grad
        step_all()
        for j in pending:
            copy_back(j)
        pending.clear()

    return _optimizer_step


def _defer_zero12(wrapper: Any, optimizer: Any):
    """ZeRO-1/2's ``_optimizer_step(group_no)``, deferred to the last group."""
    partitions = wrapper.single_partition_of_fp32_groups

    def step_all() -> None:
        optimizer.step()  # every group: DeepSpeed swapped none out
        wrapper._lazy_init_hp_params_optimizer_state()

    def copy_back(j: int) -> None:  # what DeepSpeed does after group j's step
        rank = dist.get_rank(group=wrapper.real_dp_process_group[j])
        bit16 = wrapper.parallel_partitioned_bit16_groups[j][rank]
        if wrapper.cpu_offload:  # the gradient buffer persists; weights go through a buffer
            buffer = wrapper.param_buffer_of_bit16_for_cpu_offload_groups[j]
            buffer.data.copy_(partitions[j].data)
            bit16.data.copy_(buffer.data)
        else:
            partitions[j].grad = None
            bit16.data.copy_(partitions[j].data)

    return _deferred(len(wrapper.bit16_groups), partitions, step_all, copy_back)


def _defer_zero3(wrapper: Any, optimizer: Any):
    """ZeRO-3's ``_optimizer_step(sub_group_id)``, deferred to the last sub-group: DeepSpeed
    shows the optimizer one sub-group's flat partition at a time (every other group emptied)
    and prepares a sub-group's gradient only just before its step."""
    flats = wrapper.fp32_partitioned_groups_flat

    def step_all() -> None:
        wrapper._clear_fp32_optimizer_param_groups()
        wrapper._set_fp32_optimizer_param_groups()  # every sub-group in its param group
        try:
            optimizer.step()
        finally:
            wrapper._clear_fp32_optimizer_param_groups()  # as DeepSpeed leaves them

    def copy_back(j: int) -> None:  # DeepSpeed's copy to the partitioned parameters
        flats[j].grad = None
        wrapper._reassign_or_swap_out_partitioned_parameters(j)

    return _deferred(len(wrapper.fp16_groups), flats, step_all, copy_back)


def zero_aware(optimizer: Any, group: Any = None) -> Any:
    """Make an optimizer of this package exact under DeepSpeed ZeRO; returns its argument.

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
    groups, ZeRO-3 with ``offload_optimizer``, ``torch_autocast`` / ZenFlow (module docstring).
    """
    wrapper, inner = _unwrap(optimizer)
    if wrapper is None:
        wrapper = _find_wrapper(inner)
    if wrapper is None:
        raise RuntimeError(
            f"zero_aware: the {type(inner).__name__} is not wrapped by a DeepSpeed ZeRO "
            "optimizer; call it after deepspeed.initialize(..., optimizer=...) / "
            "accelerator.prepare"
        )
    _check_supported(wrapper, inner)
    if group is None and not hasattr(wrapper, "real_dp_process_group"):  # ZeRO-3
        group = wrapper.dp_process_group
    if group is None:
        groups = {id(g): g for g in wrapper.real_dp_process_group}
        if len(groups) != 1:
            raise RuntimeError(
                f"zero_aware: the param groups of {type(inner).__name__} are "
                f"partitioned over {len(groups)} process groups; pass group="
            )
        group = next(iter(groups.values()))
    if not hasattr(wrapper, "bit16_groups"):  # ZeRO-3
        _fill_stage3_padding(wrapper)
    _step_all_groups_at_once(wrapper, inner)
    inner.sharding = ZeroSharding(group)
    return optimizer


def detect(optimizer: Any) -> Optional[ZeroSharding]:
    """The :class:`ZeroSharding` of an optimizer whose groups DeepSpeed ZeRO flattened
    without :func:`zero_aware` (None: not under DeepSpeed, or groups not replaced).

    Called by :func:`adatamw.sharding.resolve.resolve` inside DeepSpeed's call for the first
    group.
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
    if _n_steps(wrapper) > 1:
        raise RuntimeError(
            f"{type(optimizer).__name__} runs under DeepSpeed ZeRO with "
            f"{_n_steps(wrapper)} param groups (ZeRO-3: sub-groups), which DeepSpeed steps one "
            "at a time; "
            "one cosine over all of them (Eq. 2) needs adatamw.zero.zero_aware(engine) after "
            "deepspeed.initialize (with the Trainer: callbacks=[adatamw.zero."
            "zero_aware_callback()])"
        )
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
