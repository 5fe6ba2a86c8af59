"""The one resolver of a layout: which :class:`~adatamw.sharding.base.Sharding` completes an
optimizer's partial sums (docs/distributed.md).

An explicit sharding comes first (FSDP1: :func:`adatamw.sharding.fsdp.shard_aware`; DeepSpeed
ZeRO: :func:`adatamw.sharding.zero.zero_aware`, or :func:`adatamw.sharding.zero.detect` for
one param group). Otherwise DeepSpeed's layouts are refused (ZeRO-3 partitioned parameters,
groups replaced by flat partitions) and the FSDP layouts are read from the tensors.
"""

from __future__ import annotations

from typing import Optional

from . import fsdp, zero
from .base import ShardableOptimizer, Sharding, parameters

__all__ = ["resolve"]


def resolve(optimizer: ShardableOptimizer) -> Optional[Sharding]:
    """The :class:`Sharding` of the optimizer's current param groups (``None``: nothing sharded).

    Raises ``RuntimeError`` for layouts that cannot be made exact (module docstrings of
    :mod:`.fsdp` and :mod:`.zero`).
    """
    explicit = optimizer.sharding
    if explicit is None:  # DeepSpeed ZeRO's flat partitions, with one param group
        explicit = zero.detect(optimizer)
    if not getattr(explicit, "flat_partitions", False):  # DeepSpeed layouts, handled there
        zero.refuse_partitioned(parameters(optimizer), type(optimizer).__name__)
        zero.check_not_flattened(optimizer)
    if explicit is not None:
        return explicit
    return fsdp.detect(optimizer)
