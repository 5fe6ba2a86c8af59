"""Exact torque cosines and coupled row means under FSDP and DDP: the public face of
:mod:`adatamw.sharding` (docs/distributed.md).

``shard_aware(optimizer, model=fsdp_model)`` makes an optimizer exact over FSDP1 shards; FSDP2's
DTensors and DDP need nothing. DeepSpeed ZeRO: :mod:`adatamw.zero`.
"""

from .sharding.base import RowMean, Sharding, is_dtensor
from .sharding.fsdp import DTensorSharding, FlatShardSharding, describe_mesh, shard_aware
from .sharding.resolve import resolve

__all__ = [
    "DTensorSharding",
    "FlatShardSharding",
    "RowMean",
    "Sharding",
    "describe_mesh",
    "is_dtensor",
    "resolve",
    "shard_aware",
]
