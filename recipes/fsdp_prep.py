"""Fit a masked LM to accelerate's FSDP2 preparation (docs/distributed.md, "FSDP2 on the masked LMs").

torch 2.13's ``fully_shard`` lets a parameter belong to one FSDP group only: a parameter that a
second group also sees stops the first forward ("Parameter '...' is shared with a parameter
already managed by another FSDP group"), or, when the second group tries to shard it again,
``fully_shard`` itself (the sharded DTensor is taken for a tensor-parallel one: "Invariant
encountered: value was None"). accelerate's ``fsdp2_prepare_model`` (1.16) wraps the layers of
the auto-wrap policy, then one tail group ``[final norm, input embedding, output embedding]``
(the input embedding only when tied), then the root. BERT, RoBERTa and DeBERTa (v1, v2) masked
LMs (transformers 5) break that in two ways:

1. **The decoder bias is registered twice.** ``cls.predictions.decoder.bias`` (``lm_head.decoder.bias``
   for RoBERTa), which the decoder ``Linear`` adds, is the very Parameter the head registers as
   ``cls.predictions.bias`` (``_tied_weights_keys`` ties them). The decoder goes to the tail
   group, the head's registration stays in the root group: the first forward stops.
2. **The embeddings block is a wrap class.** BERT's and RoBERTa's ``_no_split_modules`` name
   ``BertEmbeddings`` / ``RobertaEmbeddings``, which transformer-based wrapping (``fsdp.yaml``
   without a class list) makes a group; the tail group then takes the word embedding again.
   DeBERTa declares no ``_no_split_modules`` at all, so its layers would not be wrapped.

:func:`prepare_for_fsdp2` changes the model before ``accelerator.prepare`` so that every
parameter has one registration and the wrap classes are the encoder layers: it removes the
head's alias of the decoder bias (the decoder's registration, which the forward uses, stays),
drops that pair from the model's tie map (so the ``tie_weights()`` that accelerate calls with
``fsdp_cpu_ram_efficient_loading`` does not look for it) and sets the model's
``_no_split_modules`` to its encoder layer class. The forward, the weights and the decoder
weight's tie to the input embedding are unchanged. A checkpoint saved from the prepared model
holds the bias as ``cls.predictions.decoder.bias`` only, and ``from_pretrained`` ties
``cls.predictions.bias`` back to it (transformers ties symmetrically when one key is missing).

Refused before training, naming the fix (:class:`Fsdp2Unsupported`): an explicit wrap class
(``fsdp_transformer_layer_cls_to_wrap``) that holds an embedding, size-based wrapping (it puts
the tied word embedding in two groups), and DeBERTa's non-legacy head
(``config.legacy=False``), which multiplies by ``word_embeddings.weight`` outside the embedding's
forward, where FSDP2 holds it sharded ("mixed torch.Tensor and DTensor"). The paper's checkpoints
use the legacy head (the configs' default).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

logger = logging.getLogger(__name__)

#: accelerate's name of size-based wrapping (``fsdp_auto_wrap_policy``).
_SIZE_BASED = "SIZE_BASED_WRAP"


class Fsdp2Unsupported(ValueError):
    """The model or the FSDP settings cannot run under accelerate's FSDP2 preparation."""


@dataclass
class Fsdp2Preparation:
    """What :func:`prepare_for_fsdp2` changed: ``aliases`` maps each removed registration to the
    one kept (the same Parameter); ``wrap_classes`` is the model's new ``_no_split_modules``."""

    aliases: dict[str, str] = field(default_factory=dict)
    wrap_classes: list[str] = field(default_factory=list)


def fsdp2_requested(training_args: Any) -> bool:
    """FSDP version 2 asked for: ``accelerate launch`` with ``distributed_type: FSDP`` and
    ``fsdp_version: 2`` (it exports ``ACCELERATE_USE_FSDP`` and ``FSDP_VERSION``), or
    ``TrainingArguments(fsdp=...)`` with ``fsdp_config["version"]`` 2 (transformers 5's default)."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return os.environ.get("FSDP_VERSION", "1") == "2"
    if getattr(training_args, "fsdp", None):
        return int((getattr(training_args, "fsdp_config", None) or {}).get("version", 2)) == 2
    return False


def requested_wrapping(training_args: Any) -> tuple[str | None, list[str]]:
    """(auto-wrap policy, explicit wrap class names) of the FSDP request, as accelerate reads them:
    the launcher's ``FSDP_AUTO_WRAP_POLICY`` / ``FSDP_TRANSFORMER_CLS_TO_WRAP``, else
    ``TrainingArguments.fsdp_config``'s ``auto_wrap_policy`` / ``transformer_layer_cls_to_wrap``."""
    config = getattr(training_args, "fsdp_config", None) or {}
    policy = os.environ.get("FSDP_AUTO_WRAP_POLICY") or config.get("auto_wrap_policy")
    names = (
        os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP") or config.get("transformer_layer_cls_to_wrap") or []
    )
    if isinstance(names, str):
        names = names.split(",")
    return policy, [n.strip() for n in names if n.strip()]


def shared_registrations(model: nn.Module) -> dict[str, str]:
    """``{alias: kept}``: parameters a module registers that one of its descendants registers too
    (``cls.predictions.bias`` -> ``cls.predictions.decoder.bias``). The descendant is the module
    whose forward uses it (the decoder ``Linear``); the ancestor's name is only an alias."""
    found: dict[str, str] = {}
    for prefix, module in model.named_modules():
        own = {id(p): name for name, p in module._parameters.items() if p is not None}
        if not own:
            continue
        for sub_prefix, sub in module.named_modules():
            if sub is module:
                continue
            for name, p in sub._parameters.items():
                if p is not None and id(p) in own:
                    alias = ".".join(filter(None, (prefix, own[id(p)])))
                    found.setdefault(alias, ".".join(filter(None, (prefix, sub_prefix, name))))
    return found


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent, _, leaf = name.rpartition(".")
    return (model.get_submodule(parent) if parent else model), leaf


def _drop_from_tie_maps(model: nn.Module, removed: set[str]) -> None:
    """Forget every tie pair that names a removed registration, in each ``_tied_weights_keys``
    (names relative to the submodel declaring them) and in the top model's
    ``all_tied_weights_keys`` (full names): ``tie_weights()`` would look the alias up."""
    for prefix, module in model.named_modules():
        tied = getattr(module, "_tied_weights_keys", None)
        if not tied:
            continue
        full = lambda n, p=prefix: f"{p}.{n}" if p else n  # noqa: E731 - binds this prefix
        kept = {t: s for t, s in tied.items() if full(t) not in removed and full(s) not in removed}
        if kept != tied:
            module._tied_weights_keys = kept  # instance attribute: the class's stays as it was
    all_tied = getattr(model, "all_tied_weights_keys", None)
    if all_tied:
        model.all_tied_weights_keys = {
            t: s for t, s in all_tied.items() if t not in removed and s not in removed
        }


def _embedding_modules(model: nn.Module) -> list[nn.Module]:
    found = []
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, getter, lambda: None)()
        if module is not None:
            found.append(module)
    return found


def embedding_holders(model: nn.Module) -> set[str]:
    """Class names of the modules that are or hold the input or the output embedding (the model
    itself aside): as a wrap class each makes a group that accelerate's tail group collides with."""
    embeddings = _embedding_modules(model)
    return {
        type(m).__name__
        for m in model.modules()
        if m is not model and any(e is not m and any(e is d for d in m.modules()) for e in embeddings)
    } | {type(e).__name__ for e in embeddings}


def encoder_layer_classes(model: nn.Module) -> list[str]:
    """Class names of the base model's ``encoder.layer`` blocks (BertLayer, RobertaLayer,
    DebertaLayer, DebertaV2Layer): the units FSDP2 should gather one at a time."""
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    return sorted({type(layer).__name__ for layer in layers}) if isinstance(layers, nn.ModuleList) else []


def _check_head(model: nn.Module) -> None:
    config = getattr(model, "config", None)
    if (
        getattr(config, "model_type", "") in ("deberta", "deberta-v2")
        and getattr(config, "legacy", True) is False
    ):
        raise Fsdp2Unsupported(
            f"{type(model).__name__} with config.legacy=False cannot run under FSDP2: its head multiplies "
            "by deberta.embeddings.word_embeddings.weight outside the embedding's forward, where fully_shard "
            'holds that weight sharded ("mixed torch.Tensor and DTensor"). Load it with legacy=True (the '
            "default of the published configs), or launch with recipes/accelerate/ddp.yaml."
        )


def _check_wrapping(model: nn.Module, policy: str | None, names: Iterable[str]) -> None:
    if policy is not None and policy.upper() == _SIZE_BASED:
        raise Fsdp2Unsupported(
            "fsdp_auto_wrap_policy SIZE_BASED_WRAP cannot run this model under FSDP2: it wraps every module "
            "larger than fsdp_min_num_params, the modules that hold one included, so the tied word embedding "
            "lands in two groups (the embedding's or the base model's, and the decoder's or accelerate's "
            "tail group), which fully_shard refuses. Use fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP "
            "(recipes/accelerate/fsdp.yaml), or recipes/accelerate/ddp.yaml."
        )
    bad = sorted(set(names) & embedding_holders(model))
    if bad:
        layers = ", ".join(encoder_layer_classes(model)) or "the encoder layer class"
        raise Fsdp2Unsupported(
            f"fsdp_transformer_layer_cls_to_wrap names {', '.join(bad)}, which is or holds an embedding "
            "of the model: accelerate's FSDP2 preparation puts the embeddings in its tail group as well, "
            "and fully_shard refuses a parameter in two groups. "
            f"Name the encoder layers only ({layers}), or drop the setting."
        )


def prepare_for_fsdp2(
    model: nn.Module, policy: str | None = None, wrap_classes: Iterable[str] = ()
) -> Fsdp2Preparation:
    """Make ``model`` fit accelerate's ``fsdp2_prepare_model`` (module docstring), in place.

    ``policy`` and ``wrap_classes``: the request's ``fsdp_auto_wrap_policy`` and
    ``fsdp_transformer_layer_cls_to_wrap`` (:func:`requested_wrapping`), checked, not changed.
    Raises :class:`Fsdp2Unsupported` naming the fix when they or the model cannot work.
    """
    _check_head(model)
    _check_wrapping(model, policy, wrap_classes)
    aliases = shared_registrations(model)
    for alias in aliases:
        owner, leaf = _owner(model, alias)
        del owner._parameters[leaf]
    _drop_from_tie_maps(model, set(aliases))
    holders = embedding_holders(model)
    layers = [n for n in sorted(getattr(model, "_no_split_modules", None) or ()) if n not in holders]
    layers = sorted(set(layers) | set(encoder_layer_classes(model)))
    model._no_split_modules = set(layers)  # what accelerate wraps when no class list is given
    return Fsdp2Preparation(aliases, layers)


def prepare_if_fsdp2(model: nn.Module, training_args: Any) -> Fsdp2Preparation | None:
    """:func:`prepare_for_fsdp2` when the launch asks for FSDP2 (:func:`fsdp2_requested`), with its
    wrap settings; ``None`` otherwise (the model is left as it is). Also where accelerate will run
    DDP instead (CPU): the prepared model computes the same as the original. What cannot run is
    refused with ``SystemExit`` naming the reason and the fix, as the recipe's other checks."""
    if not fsdp2_requested(training_args):
        return None
    policy, names = requested_wrapping(training_args)
    try:
        done = prepare_for_fsdp2(model, policy, names)
    except Fsdp2Unsupported as err:
        raise SystemExit(f"{err} (docs/distributed.md, FSDP2)") from err
    logger.info(
        "FSDP2: one registration per parameter (removed the aliases %s); wrap classes %s.",
        done.aliases or "none",
        done.wrap_classes or "none",
    )
    return done
