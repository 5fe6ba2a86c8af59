"""What a sharding is: how the partial sums of Eq. 2 and Coupled Adam's row means of one layout
of the parameters are completed across processes (torch only; docs/distributed.md).

The leaf of :mod:`adatamw.sharding`: the engines (:mod:`.fsdp`, :mod:`.zero`) define their
shardings on it, :mod:`.resolve` picks one, and the optimizer base asks the resolver. Nothing
here knows an engine or an optimizer class: an optimizer is recognised by the interface
:class:`ShardableOptimizer`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, Sequence, runtime_checkable

from torch import Tensor

__all__ = [
    "FSDP_WORKS",
    "RowMean",
    "ShardableOptimizer",
    "Sharding",
    "is_dtensor",
    "is_fsdp1_flat",
    "parameters",
]

#: Maps the local second moment ``v`` ([V_local, H]) of a coupled tensor to ``mean(v, dim=0)``
#: over the whole (unsharded) tensor, shape [1, H].
RowMean = Callable[[Tensor], Tensor]

#: The layouts that are exact with every optimizer setting (named in refusals).
FSDP_WORKS = (
    "FSDP2 (torch.distributed.fsdp.fully_shard, or accelerate with fsdp_version: 2; "
    "see recipes/accelerate/fsdp.yaml) or DDP"
)


class Sharding:
    """How the partial sums and coupled row means of one layout are completed."""

    #: True for a layout whose param groups were replaced by flat partitions on purpose
    #: (DeepSpeed ZeRO, :class:`adatamw.sharding.zero.ZeroSharding`).
    flat_partitions = False

    def reduce_partials(self, sums: Tensor, sources: Sequence[Tensor], scope: str) -> Tensor:
        """Complete the ``[N, 3]`` local sums of ``sources`` (the optimizer's parameters with a
        gradient, in step order). Tensor scope: return ``[N, 3]`` whole-tensor sums. Global
        scope: return any ``[k, 3]`` whose row sum is the sum over all parameters."""
        raise NotImplementedError

    def row_mean(self, source: Tensor) -> Optional[RowMean]:
        """The row mean of a coupled 2-D parameter, or ``None`` when the local mean is exact."""
        return None


@runtime_checkable
class ShardableOptimizer(Protocol):
    """What the sharding layer reads of an optimizer (:class:`adatamw.base.TorqueOptimizer`
    has it): its param groups, the explicit ``sharding`` (``None``: detected at the first
    step), whether it uses the torque cosine, and its telemetry. Wrappers (DeepSpeed,
    accelerate) have none of ``sharding`` / ``uses_torque`` / ``torque_stats``."""

    param_groups: list
    sharding: Optional[Sharding]
    uses_torque: bool

    def torque_stats(self) -> dict: ...


def is_dtensor(t: Tensor) -> bool:
    """True for a ``torch.distributed.tensor.DTensor`` (FSDP2 / tensor-parallel parameters)."""
    return hasattr(t, "placements") and hasattr(t, "device_mesh") and callable(getattr(t, "to_local", None))


def is_fsdp1_flat(t: Tensor) -> bool:
    """FSDP1 marks the tensors it flattened (the original params under use_orig_params)."""
    return bool(getattr(t, "_fsdp_flattened", False)) and not is_dtensor(t)


def parameters(optimizer: Any) -> list[Tensor]:
    """Every parameter of the optimizer's param groups, in order."""
    return [p for g in optimizer.param_groups for p in g["params"]]
