"""Exact torque cosines and coupled row means under FSDP (docs/distributed.md).

The cosine of Eq. 2 needs three sums per tensor, ``<m, g>``, ``||m||^2`` and ``||g||^2``
(:func:`adatamw.torque.partial_sums`). When a process holds only a shard of a tensor, its local
sums are partial: they must be summed over the shard group before Eq. 2, per scope (global: one
cosine over everything; tensor: one per tensor). Coupled Adam's row mean of the second moment
(``mean(v, dim=0)`` of a ``[V, H]`` embedding) likewise needs the column sums of every shard.

- **FSDP2** (``torch.distributed.fsdp.fully_shard``, DTensor parameters): detected
  automatically; the parameters must share one device mesh, compared by equality (a
  ``fully_shard`` call without ``mesh=`` makes a new but equal mesh object each time). One
  ``all_reduce`` (SUM) of the ``[N, 3]`` partial sums per step over the DTensor mesh dims that
  shard a tensor; rows of tensors that are replicated on a mesh dim are kept only on
  coordinate 0 of that dim, so they are not double counted. The coupled row mean
  of a ``Shard(0)`` embedding all-reduces the local column sums (``H`` floats per tensor) and
  divides by the global ``V``.
- **FSDP1** with ``use_orig_params=True`` (1-D flat views, size 0 where a rank holds nothing):
  the tensors do not say how they are sharded, so the optimizer refuses to step until
  :func:`shard_aware` tells it (``shard_aware(optimizer, model=fsdp_model)`` or
  ``process_group=...``). Global scope: one ``all_reduce`` of 3 floats; tensor scope: one of
  ``[P, 3]`` (P = parameters of the optimizer, the same list on every rank). Coupled groups are
  refused: the flat views have lost the ``[V, H]`` rows.
- **DDP / one process**: parameters are whole on every rank (DDP averages the gradients):
  nothing to do (:func:`detect` returns ``None``).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from .base import FSDP_WORKS, RowMean, Sharding, is_dtensor, is_fsdp1_flat, parameters

__all__ = ["DTensorSharding", "FlatShardSharding", "describe_mesh", "detect", "shard_aware"]


class DTensorSharding(Sharding):
    """FSDP2 / DTensor parameters on one device mesh (module docstring)."""

    def __init__(self, mesh: Any) -> None:
        self.mesh = mesh
        self._reductions: dict[tuple[int, ...], list[tuple[Any, Optional[Tensor]]]] = {}

    def _shard_dims(self, t: Tensor, tensor_dim: Optional[int] = None) -> list[int]:
        """Mesh dims along which ``t`` is split (along ``tensor_dim`` only, if given). A dim of
        size 1 splits nothing (its all_reduce would be the identity): left out."""
        if not is_dtensor(t):
            return []
        return [
            i
            for i, pl in enumerate(t.placements)
            if pl.is_shard()
            and self.mesh.size(i) > 1
            and (tensor_dim is None or pl.dim % t.dim() == tensor_dim)
        ]

    def _reductions_of(self, sources: Sequence[Tensor], device: torch.device):
        """Per sharding mesh dim: its process group and the row mask (None: all ones)."""
        key = tuple(map(id, sources))
        reductions = self._reductions.get(key)
        if reductions is None:
            reductions = []
            dims = sorted({d for t in sources for d in self._shard_dims(t)})
            for d in dims:
                first = self.mesh.get_local_rank(d) == 0
                keep = [1.0 if (first or d in self._shard_dims(t)) else 0.0 for t in sources]
                mask = None if all(keep) else torch.tensor(keep, device=device).unsqueeze(1)
                reductions.append((self.mesh.get_group(d), mask))
            self._reductions[key] = reductions
        return reductions

    def reduce_partials(self, sums: Tensor, sources: Sequence[Tensor], scope: str) -> Tensor:
        for group, mask in self._reductions_of(sources, sums.device):
            if mask is not None:
                sums = sums * mask
            dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
        return sums

    def row_mean(self, source: Tensor) -> Optional[RowMean]:
        dims = self._shard_dims(source, tensor_dim=0)
        if not dims or source.dim() != 2:
            return None
        groups = [self.mesh.get_group(d) for d in dims]
        n_rows = source.shape[0]  # the global V of the DTensor

        def mean(v: Tensor) -> Tensor:
            col = v.sum(dim=0, keepdim=True, dtype=torch.float32)
            for group in groups:
                dist.all_reduce(col, op=dist.ReduceOp.SUM, group=group)
            return col.div_(n_rows).to(v.dtype)

        return mean


class FlatShardSharding(Sharding):
    """FSDP1 flat views (``use_orig_params=True``) or ``FlatParameter`` s over one group.

    ``sharded`` are the parameters split over ``process_group``; every other parameter is
    taken as replicated (counted on group rank 0 only).
    """

    def __init__(self, process_group: Any, all_params: Sequence[Tensor], sharded: Sequence[Tensor]) -> None:
        self.group = process_group
        self.index = {id(p): i for i, p in enumerate(all_params)}
        self.sharded = {id(p) for p in sharded}
        self.rank0 = dist.get_rank(process_group) == 0
        self.n_params = len(all_params)
        self.device = all_params[0].device if all_params else torch.device("cpu")
        self._cache: dict[tuple[int, ...], tuple[Tensor, Optional[Tensor]]] = {}
        self._check_same_params()

    def _check_same_params(self) -> None:
        """Tensor-scope rows are aligned by position: every rank needs the same list (once)."""
        n = torch.tensor([self.n_params, -self.n_params], dtype=torch.float64, device=self.device)
        dist.all_reduce(n, op=dist.ReduceOp.MAX, group=self.group)
        if n[0].item() != self.n_params or -n[1].item() != self.n_params:
            raise RuntimeError(
                f"The optimizer holds {self.n_params} parameters on this rank but not on every "
                "rank of the FSDP process group; build it from model.parameters() of the "
                "FSDP-wrapped model on every rank (use_orig_params=True keeps them all)"
            )

    def _rows(self, sources: Sequence[Tensor]):
        key = tuple(map(id, sources))
        hit = self._cache.get(key)
        if hit is None:
            idx = torch.tensor([self.index[id(p)] for p in sources], dtype=torch.long, device=self.device)
            keep = [1.0 if (self.rank0 or id(p) in self.sharded) else 0.0 for p in sources]
            mask = None if all(keep) else torch.tensor(keep, device=self.device).unsqueeze(1)
            hit = self._cache[key] = (idx, mask)
        return hit

    def reduce_partials(self, sums: Tensor, sources: Sequence[Tensor], scope: str) -> Tensor:
        idx, mask = self._rows(sources)
        sums = sums.to(self.device)
        if mask is not None:
            sums = sums * mask
        if scope == "global":
            total = sums.sum(0, keepdim=True)
            dist.all_reduce(total, op=dist.ReduceOp.SUM, group=self.group)
            return total
        # A rank without a piece of some tensor has no row for it: scatter into all P rows.
        full = torch.zeros(self.n_params, 3, dtype=sums.dtype, device=self.device)
        full.index_copy_(0, idx, sums)
        dist.all_reduce(full, op=dist.ReduceOp.SUM, group=self.group)
        return full.index_select(0, idx)


def describe_mesh(mesh: Any) -> str:
    """A mesh in words: device type, shape with dim names, and the global ranks it spans."""
    names = mesh.mesh_dim_names
    shape = tuple(mesh.mesh.shape)
    dims = ", ".join(f"{n}={k}" for n, k in zip(names, shape)) if names else "x".join(map(str, shape))
    return f"DeviceMesh({mesh.device_type!r}, {dims}, ranks {mesh.mesh.flatten().tolist()})"


def _one_mesh(dtensors: Sequence[Tensor], optimizer_name: str) -> Any:
    """The one device mesh of ``dtensors``, compared by equality (``DeviceMesh.__eq__``).

    ``fully_shard(module)`` without ``mesh=`` (what accelerate does without a parallelism
    config) builds a new, equal ``DeviceMesh`` object per call; those are one mesh. Meshes that
    differ (other ranks, shape, dim names or device type) are refused, naming each."""
    meshes: dict[Any, list[int]] = {}
    for i, p in enumerate(dtensors):
        meshes.setdefault(p.device_mesh, []).append(i)
    if len(meshes) == 1:
        return next(iter(meshes))
    listed = "; ".join(
        f"{describe_mesh(m)} holds {len(idx)} parameter(s), e.g. one of shape {tuple(dtensors[idx[0]].shape)}"
        for m, idx in meshes.items()
    )
    raise RuntimeError(
        f"{optimizer_name}: the DTensor parameters live on {len(meshes)} different device meshes "
        f"({listed}); the torque cosine (Eq. 2) and the coupled row mean reduce over one mesh. "
        "Shard every module over the same mesh (fully_shard(..., mesh=mesh)), or give each mesh "
        "its own optimizer"
    )


def detect(optimizer: Any) -> Optional[Sharding]:
    """The FSDP sharding of the optimizer's parameters, seen from the tensors themselves:
    :class:`DTensorSharding` for FSDP2's DTensors, ``None`` for whole tensors (DDP, one
    process). FSDP1's flat views under more than one process are refused: only
    :func:`shard_aware` can say how they are split."""
    params = parameters(optimizer)
    name = type(optimizer).__name__
    dtensors = [p for p in params if is_dtensor(p)]
    if dtensors:
        return DTensorSharding(_one_mesh(dtensors, name))
    flat = [p for p in params if is_fsdp1_flat(p)]
    if flat and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        raise RuntimeError(
            f"{name} sees FSDP1 flattened parameters (FullyShardedDataParallel): their shards "
            "do not say how they are split, so a local cosine would be silently wrong. Call "
            "adatamw.distributed.shard_aware(optimizer, model=fsdp_model) after building the "
            f"optimizer (use_orig_params=True), or use {FSDP_WORKS}"
        )
    return None


def shard_aware(optimizer: Any, process_group: Any = None, *, model: Any = None) -> Any:
    """Make ``optimizer`` exact over FSDP1 shards; returns it.

    Args:
        optimizer: an optimizer of this package built from the parameters of an FSDP1 model
            (``FullyShardedDataParallel(..., use_orig_params=True)``; ``FlatParameter`` s of
            ``use_orig_params=False`` work in the global scope only).
        process_group: the group the parameters are sharded over (default: the world). Every
            FSDP1-flattened parameter is taken as sharded over it; other parameters as
            replicated.
        model: the FSDP1 model instead of ``process_group``: its FSDP units give the group
            and the sharding strategy (``NO_SHARD`` units need no reduction; the shard group
            of ``HYBRID_SHARD`` is used).

    Coupled groups (``coupled=True``) are refused: FSDP1's flat views cut the ``[V, H]`` rows.
    """
    params = parameters(optimizer)
    name = type(optimizer).__name__
    if model is not None:
        if process_group is not None:
            raise ValueError("Pass process_group or model to shard_aware, not both")
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp import ShardingStrategy

        sharded, groups = [], {}
        for unit in FSDP.fsdp_modules(model):
            handle = getattr(unit, "_handle", None)
            if handle is None or unit.sharding_strategy == ShardingStrategy.NO_SHARD:
                continue
            flat = handle.flat_param
            sharded.extend(flat._params if flat._params is not None else [flat])
            sharded.extend(flat._shared_params or [])
            groups[id(unit.process_group)] = unit.process_group
        if len(groups) > 1:
            raise RuntimeError(
                f"{name}: the FSDP units of this model shard over "
                f"{len(groups)} different process groups; the cosine reduces over one"
            )
        process_group = next(iter(groups.values())) if groups else None
        if not groups:  # nothing sharded (NO_SHARD everywhere)
            optimizer.sharding = _NOTHING_SHARDED
            return optimizer
        ids = {id(p) for p in sharded}
        sharded = [p for p in params if id(p) in ids]
    else:
        sharded = [p for p in params if getattr(p, "_fsdp_flattened", False)]
    if process_group is None:
        process_group = dist.group.WORLD
    for i, group in enumerate(optimizer.param_groups):
        if group.get("coupled") and any(id(p) in {id(q) for q in sharded} for p in group["params"]):
            raise RuntimeError(
                f"param_groups[{i}] of {name} is coupled (Coupled Adam's row mean of a [V, H] "
                "embedding), but FSDP1 flattens the embedding into 1-D shards that cut its rows. "
                f"Use {FSDP_WORKS}, keep the embedding out of FSDP1 sharding (ignored_states), "
                "or drop coupled=True / --coupled_embeddings"
            )
        if group.get("cosine_scope") == "tensor" and any(
            type(p).__name__ == "FlatParameter" for p in group["params"]
        ):
            raise RuntimeError(
                f"{name} with cosine_scope='tensor' over FSDP1 FlatParameters would take one "
                "cosine per FSDP unit, not per tensor: use use_orig_params=True or "
                "cosine_scope='global'"
            )
    optimizer.sharding = FlatShardSharding(process_group, params, sharded)
    return optimizer


class _Unsharded(Sharding):
    """Explicitly nothing to reduce (e.g. FSDP1 NO_SHARD): silences the FSDP1 refusal."""

    def reduce_partials(self, sums: Tensor, sources: Sequence[Tensor], scope: str) -> Tensor:
        return sums


_NOTHING_SHARDED = _Unsharded()
