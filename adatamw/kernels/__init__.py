"""The one place that picks how a step runs: three implementations, one dispatch.

Each implementation owns both halves of a step for the tensors it is given: the three sums of
Eq. 2 (``torque_sums``) and the update (``adam_update`` / ``sgd_update``, Eqs. 7-8, Algorithm 1):

- ``loop``: plain PyTorch per tensor (:mod:`.loop`), the readable statement of the equations;
- ``foreach``: ``torch._foreach_*`` over a (device, dtype) bucket (:mod:`.foreach`), the
  default on accelerators and for every dtype the C++ kernels do not take;
- ``fused``: C++ kernels for float32 CPU tensors (:mod:`.cpu_fused`), the default there.

As in ``torch.optim``: ``foreach=False`` asks for the loop, ``foreach=True`` for foreach,
``fused=True`` for the C++ kernels (refused at construction for tensors they cannot take);
unset, the fused kernels take float32 CPU tensors (when they build) and foreach the rest.
Coupled 2-D tensors (Coupled Adam's row mean) always take the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from . import cpu_fused, foreach, loop

__all__ = ["Implementation", "LOOP", "FOREACH", "FUSED", "pick", "check_fused_supported"]


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


def check_fused_supported(params: Sequence[Tensor], optimizer_name: str) -> None:
    """``fused=True`` takes float32 CPU tensors only (raised at construction, as torch does)."""
    bad = [p for p in params if not (p.dtype == torch.float32 and p.device.type == "cpu")]
    if bad:
        raise RuntimeError(
            f"{optimizer_name}(fused=True) runs C++ kernels for float32 CPU tensors; got a "
            f"{bad[0].dtype} tensor on {bad[0].device}. Leave fused unset (foreach is picked "
            "there) or pass foreach=True")
    if not cpu_fused.available():
        raise RuntimeError(
            f"{optimizer_name}(fused=True): the C++ CPU kernels are not available here "
            "(ADATAMW_NO_CPU_KERNELS is set, or no C++ compiler / ninja: see the warning above). "
            "Leave fused unset to use foreach")


def pick(params: Sequence[Tensor], *, foreach: Optional[bool], fused: Optional[bool],
         coupled: Sequence[bool], sgd: bool = False) -> Plan:
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
