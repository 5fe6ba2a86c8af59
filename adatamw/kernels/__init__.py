"""The one place that picks how a step runs: three implementations, one dispatch.

Each implementation owns both halves of a step for the tensors it is given: the three sums of
Eq. 2 (``torque_sums``) and the update (``adam_update`` / ``sgd_update``, Eqs. 7-8, Algorithm 1):

- ``loop``: plain PyTorch per tensor (:mod:`.loop`), the readable statement of the equations;
- ``foreach``: ``torch._foreach_*`` over a (device, dtype) bucket (:mod:`.foreach`), the
  default on accelerators and for every dtype the C++ kernels do not take; its sums of Eq. 2
  take a fixed number of kernels per bucket (on CPU the C++ sums op, which takes every
  floating dtype);
- ``fused``: C++ kernels for float32 CPU tensors (:mod:`.cpu_fused`), the default there.

As in ``torch.optim``: ``foreach=False`` asks for the loop, ``foreach=True`` for foreach,
``fused=True`` for the C++ kernels (refused at construction for tensors they cannot take);
unset, the fused kernels take float32 CPU tensors (when they build) and foreach the rest.
Coupled 2-D tensors (Coupled Adam's row mean) always take the loop.

Everything about the choice lives here: the construction checks of a group's flags
(:func:`check_group`), the one predicate "the fused kernels can take this tensor"
(:func:`adatamw.kernels.cpu_fused.fits`, used by both the checks and :func:`pick`), the rule
(:func:`pick`) and its cache (:class:`PlanCache`). Each implementation also refuses, with an
error, what it cannot do (foreach and fused: Coupled Adam's per-tensor v transform).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from . import cpu_fused, foreach, loop

__all__ = [
    "Implementation",
    "LOOP",
    "FOREACH",
    "FUSED",
    "Plan",
    "PlanCache",
    "check_group",
    "check_fused_supported",
    "pick",
]


@dataclass(frozen=True)
class Implementation:
    name: str
    torque_sums: Callable  # (momenta, grads) -> [N, 3] sums of Eq. 2
    adam_update: Callable  # adatamw.update.adam_step over the tensors
    sgd_update: Optional[Callable]  # adatamw.update.sgd_step over the tensors (TAM)


LOOP = Implementation("loop", loop.torque_sums, loop.adam_update, loop.sgd_update)
FOREACH = Implementation("foreach", foreach.torque_sums, foreach.adam_update, foreach.sgd_update)
FUSED = Implementation("fused", cpu_fused.torque_sums, cpu_fused.adam_update, None)

#: A step's plan for one param group: (implementation, indices of the group's tensors) pairs.
Plan = list[tuple[Implementation, list[int]]]


def _local(t: Tensor) -> Tensor:
    """The process-local data of ``t`` (a DTensor's shard; a plain tensor itself)."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def check_fused_supported(params: Sequence[Tensor], optimizer_name: str) -> None:
    """``fused=True`` takes what :func:`cpu_fused.fits` takes: contiguous float32 CPU tensors
    (raised at construction, as torch does)."""
    bad = [p for p in params if not cpu_fused.fits(_local(p))]
    if bad:
        local = _local(bad[0])
        what = (
            "a non-contiguous float32 CPU tensor"
            if local.dtype == torch.float32 and local.device.type == "cpu"
            else f"a {local.dtype} tensor on {local.device}"
        )
        raise RuntimeError(
            f"{optimizer_name}(fused=True) runs C++ kernels for contiguous float32 CPU tensors; "
            f"got {what} of shape {tuple(bad[0].shape)}. Leave fused unset (foreach is picked "
            "there) or pass foreach=True"
        )
    if not cpu_fused.available():
        raise RuntimeError(
            f"{optimizer_name}(fused=True): the C++ CPU kernels are not available here "
            "(ADATAMW_NO_CPU_KERNELS is set, or no C++ compiler / ninja: see the warning above). "
            "Leave fused unset to use foreach"
        )


def check_group(
    params: Sequence[Tensor],
    *,
    foreach: Optional[bool],
    fused: Optional[bool],
    has_fused: bool,
    optimizer_name: str,
) -> None:
    """Construction checks of one param group's flags. Builds the C++ kernels now (not inside
    the first, maybe compiled, step) when a step would use them: fused on float32 CPU tensors,
    foreach's sums on any floating CPU tensor; never for the loop (``foreach=False``)."""
    if fused and foreach:
        raise ValueError(
            "Invalid foreach/fused: `fused` and `foreach` cannot both be True; pick one implementation"
        )
    if fused:
        if not has_fused:
            raise ValueError(f"{optimizer_name} has no fused implementation; leave fused unset")
        check_fused_supported(params, optimizer_name)
    elif foreach is not False and any(cpu_fused.sums_fit(_local(p)) for p in params):
        cpu_fused.available()


def pick(
    params: Sequence[Tensor],
    *,
    foreach: Optional[bool],
    fused: Optional[bool],
    coupled: Sequence[bool],
    sgd: bool = False,
) -> Plan:
    """The implementation of each of ``params`` (the local tensors of one group), bucketed.

    ``coupled[i]``: tensor i is a coupled 2-D tensor (loop). ``sgd``: the update is TAM's, which
    has no fused kernel. Pure: the same inputs give the same plan (the optimizer caches it).
    """
    loop_idx: list[int] = []
    fused_idx: list[int] = []
    buckets: dict[tuple, list[int]] = {}
    use_fused = bool(fused) or (fused is None and foreach is None and not sgd)
    for i, p in enumerate(params):
        if coupled[i] or (foreach is False and not fused):
            loop_idx.append(i)
        elif use_fused and cpu_fused.fits(p) and (fused or cpu_fused.available()):
            fused_idx.append(i)
        else:
            buckets.setdefault((p.device, p.dtype), []).append(i)
    plan: Plan = [(FOREACH, idx) for idx in buckets.values()]
    if fused_idx:
        plan.append((FUSED, fused_idx))
    if loop_idx:
        plan.append((LOOP, loop_idx))
    return plan


class PlanCache:
    """:func:`pick` of each param group, kept while the group's flags and tensors stay the same
    (one entry per group: the step recomputes it only when the layout changes)."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[tuple, Plan]] = {}

    def plan(self, group: dict[str, Any], params: Sequence[Tensor], *, sgd: bool) -> Plan:
        """The plan of ``params`` (the local tensors of ``group`` that step now)."""
        key = (group.get("foreach"), group.get("fused"), *map(id, params))
        hit = self._last.get(id(group))
        if hit is not None and hit[0] == key:
            return hit[1]
        coupled = [bool(group.get("coupled")) and p.dim() == 2 for p in params]
        plan = pick(params, foreach=group.get("foreach"), fused=group.get("fused"), coupled=coupled, sgd=sgd)
        self._last[id(group)] = (key, plan)
        return plan
