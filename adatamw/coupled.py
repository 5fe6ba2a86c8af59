"""Coupled Adam (arXiv 2502.08441): the rows of an embedding share one second moment.

For a coupled 2-D tensor (``[V, H]``: an embedding) the denominator uses
``coupled_scale * mean(v_t, dim=0)``, broadcast over the V rows, instead of v_t. The row mean is
the local one, or the mean over every shard's rows under FSDP2
(:meth:`adatamw.sharding.base.Sharding.row_mean`). :class:`CoupledSecondMoment` gives it to
any optimizer of the Adam family (AdaTAMW and AdaTAM mix it in too); :class:`CoupledAdamW` is
AdamW with it.
"""

from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor

from .adam_family import AdamFamily
from .base import GroupBatch

__all__ = ["CoupledAdamW", "CoupledSecondMoment", "coupled_second_moment"]


def coupled_second_moment(
    v: Tensor, scale: float, row_mean: Optional[Callable[[Tensor], Tensor]] = None
) -> Tensor:
    """Coupled Adam's second moment of a ``[V, H]`` tensor: ``scale * mean(v, dim=0)``
    (shape ``[1, H]``). ``row_mean``: the mean over all shards' rows (None: the local rows)."""
    mean = row_mean(v) if row_mean is not None else v.mean(dim=0, keepdim=True)
    return mean.mul_(scale)


class CoupledSecondMoment:
    """Mixin of an :class:`~adatamw.adam_family.AdamFamily` optimizer: its groups with
    ``coupled=True`` give their 2-D tensors :func:`coupled_second_moment`."""

    has_coupled = True

    def _v_transforms(self, group: dict, batch: GroupBatch, idx: list[int]) -> Optional[list]:
        """Per tensor ``idx`` of a coupled group: v_t -> coupled_scale * mean(v_t, dim=0) for
        2-D tensors (the mean over every shard's rows under FSDP2: ``batch.row_means``), None
        for the others."""
        if not group["coupled"]:
            return None
        scale = group["coupled_scale"]

        def transform(row_mean):
            return lambda v: coupled_second_moment(v, scale, row_mean)

        return [
            transform(batch.row_means[i] if batch.row_means else None) if batch.params[i].dim() == 2 else None
            for i in idx
        ]


class CoupledAdamW(CoupledSecondMoment, AdamFamily):
    """AdamW whose coupled groups share the second moment across rows (arXiv 2502.08441).

    Standard bias-corrected EMA momentum, no torque. Put the embedding matrices in a group
    with ``coupled=True`` (see :func:`adatamw.embedding_param_groups`); other groups are AdamW.
    """

    uses_torque = False

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        coupled_scale: float = 1.0,
        foreach: Optional[bool] = None,
        maximize: bool = False,
        coupled: bool = False,
        fused: Optional[bool] = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            gamma=0.0,
            torque_eps=0.0,
            cosine_scope="tensor",
            momentum="adam",
            coupled=coupled,
            coupled_scale=coupled_scale,
            foreach=foreach,
            maximize=maximize,
            fused=fused,
        )
