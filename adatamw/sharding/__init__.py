"""Exact torque cosines and coupled row means under sharded parameters (docs/distributed.md).

Layers, each importing only those below it:

- :mod:`.base`: what a sharding is (:class:`Sharding`) and what it reads of an optimizer
  (:class:`ShardableOptimizer`); torch only.
- :mod:`.fsdp`: FSDP2 / DTensor (detected) and FSDP1 (:func:`shard_aware`).
- :mod:`.zero`: DeepSpeed ZeRO stages 1-3 (:func:`zero_aware`, :func:`zero_aware_callback`).
- :mod:`.resolve`: the one resolver the optimizer base asks at a step.

The public faces of the engines are :mod:`adatamw.distributed` and :mod:`adatamw.zero`.
"""

from .base import ShardableOptimizer, Sharding
from .fsdp import DTensorSharding, FlatShardSharding, shard_aware
from .resolve import resolve
from .zero import ZeroSharding, zero_aware, zero_aware_callback

__all__ = [
    "DTensorSharding",
    "FlatShardSharding",
    "ShardableOptimizer",
    "Sharding",
    "ZeroSharding",
    "resolve",
    "shard_aware",
    "zero_aware",
    "zero_aware_callback",
]
