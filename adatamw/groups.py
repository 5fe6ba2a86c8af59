"""Param groups that put embedding matrices under Coupled Adam's shared second moment."""

from __future__ import annotations

from typing import Iterable, Optional

from torch import nn


def embedding_param_groups(
    model: nn.Module,
    weight_decay: float = 0.0,
    coupled_scale: float = 1.0,
    decay_parameter_names: Optional[Iterable[str]] = None,
) -> list[dict]:
    """Param groups: the input embedding (and the output embedding, once when tied) coupled.

    Returns up to three groups: ``{"params": [embeddings], "coupled": True, "coupled_scale":
    coupled_scale, "weight_decay": weight_decay}``, then the other parameters split into decay
    and no-decay groups. ``decay_parameter_names`` (e.g. ``Trainer.get_decay_parameter_names``)
    chooses which get weight decay; by default every tensor of 2 or more dimensions does,
    biases and norm weights do not. Parameters with ``requires_grad=False`` are left out.
    """
    get_in = getattr(model, "get_input_embeddings", None)
    if get_in is None or get_in() is None:
        raise ValueError(
            f"{type(model).__name__} has no get_input_embeddings(); build the "
            "coupled group by hand: {'params': [embedding.weight], 'coupled': True}"
        )
    embeddings = [get_in().weight]
    get_out = getattr(model, "get_output_embeddings", None)
    out = get_out() if get_out is not None else None
    if out is not None and getattr(out, "weight", None) is not None and out.weight.dim() == 2:
        if all(out.weight is not e for e in embeddings):
            embeddings.append(out.weight)
    embeddings = [e for e in embeddings if e.requires_grad]
    coupled_ids = {id(e) for e in embeddings}
    decay_names = set(decay_parameter_names) if decay_parameter_names is not None else None
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # named_parameters() yields a tied tensor once
        if not p.requires_grad or id(p) in coupled_ids:
            continue
        wants_decay = name in decay_names if decay_names is not None else p.dim() >= 2
        (decay if wants_decay else no_decay).append(p)
    groups = [
        {"params": embeddings, "coupled": True, "coupled_scale": coupled_scale, "weight_decay": weight_decay},
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
