"""The identity of a training run, and the one rule that decides whether a recorded run is reused.

A run's *identity* is every setting that changes its trained weights or its selection: the
model (requested name and the SHA-256 of the weight files actually loaded), the data (source
name, config and a SHA-256 of the train + validation text), block length and block counts,
masking (probability, seed, the fingerprint of the fixed validation masks), seeds, epochs, the
optimizer with all its effective keyword arguments, coupled embeddings, the global batch size,
gradient accumulation, precision, the schedule and the learning rate (grid). It is written with
the results (``identity.json`` when an lr run starts, ``metrics.json`` when it ends,
``selection.json`` for the whole grid) and compared by :func:`reusable` before anything is
reused: the recipe for each lr run and the sweep for each cell go through that one function.

*Provenance* is the part a reader downstream needs (``selection.json`` and every sweep
manifest entry carry it)::

    {"model": {"name": ..., "resolved": ..., "weights_sha256": ...},
     "data": {"name": ..., "config": ..., "fingerprint": ...}}
"""

from __future__ import annotations

import enum
import hashlib
from pathlib import Path
from typing import Any

from common.weights import WeightFilesError, weights_sha256

#: TrainingArguments fields that change the trained weights (besides batch size, precision, epochs, lr).
TRAINING_KEYS = (
    "seed",
    "data_seed",
    "gradient_accumulation_steps",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "warmup_ratio",
    "warmup_steps",
    "max_grad_norm",
    "label_smoothing_factor",
    "group_by_length",
    "dataloader_drop_last",
)
#: Derived from the data once it is tokenized (recorded by the recipe; the sweep compares the rest).
DERIVED_KEYS = ("block_size", "train_blocks", "eval_blocks", "eval_mask_fingerprint")
GRID_KEY = "learning_rates"
IDENTITY_FILE = "identity.json"


# ---- text fingerprints ------------------------------------------------------------------------


def text_fingerprint(raw, text_column) -> str:
    """SHA-256 of the train then validation texts (length-prefixed, so boundaries count)."""
    digest = hashlib.sha256()
    for split in ("train", "validation"):
        ds = raw[split]
        column = text_column(ds)
        digest.update(f"[{split}]".encode())
        for batch in ds.iter(batch_size=10_000):
            for text in batch[column]:
                data = ("" if text is None else str(text)).encode("utf-8")
                digest.update(len(data).to_bytes(8, "little"))
                digest.update(data)
    return digest.hexdigest()


def provenance(requested_model: str, resolved_model: str, data_source: dict, data_fingerprint: str) -> dict:
    """``{"model": {name, resolved, weights_sha256}, "data": {name, config, fingerprint}}``.

    Exits naming what is wrong when ``resolved_model`` holds no complete weights."""
    try:
        weights = weights_sha256(resolved_model)
    except WeightFilesError as err:
        raise SystemExit(str(err)) from None
    return {
        "model": {"name": requested_model, "resolved": str(resolved_model), "weights_sha256": weights},
        "data": {
            "name": data_source["name"],
            "config": data_source["config"],
            "fingerprint": data_fingerprint,
        },
    }


# ---- the identity ---------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """JSON-comparable form: enums by value, tuples as lists (what a JSON round trip gives)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def optimizer_settings(optimizer: str, training_args, optim_kwargs: dict) -> dict:
    """Every keyword argument the optimizer is built with, defaults included.

    ``adamw`` is what a plain ``Trainer`` builds from ``TrainingArguments`` (``--optim`` names
    the implementation). The adatamw optimizers are built here once on a dummy parameter, with
    what ``adatamw.trainer.TAMTrainer`` passes (betas / eps where the class takes them, the
    overrides), and their ``defaults`` read back; ``weight_decay`` is the one the Trainer sets
    on the decayed group. ``lr`` is recorded separately; ``foreach`` / ``fused`` pick a kernel,
    not the update.
    """
    if optimizer == "adamw":
        return {
            "implementation": plain(training_args.optim),
            "optim_args": training_args.optim_args,
            "betas": [training_args.adam_beta1, training_args.adam_beta2],
            "eps": training_args.adam_epsilon,
            "weight_decay": training_args.weight_decay,
        }
    import torch

    from adatamw import registry  # the name -> class lookup TAMTrainer uses

    info = registry.get(optimizer)
    cls = info.cls
    kwargs: dict[str, Any] = {"lr": 1.0}
    if info.adam:
        kwargs.update(
            betas=(training_args.adam_beta1, training_args.adam_beta2), eps=training_args.adam_epsilon
        )
    kwargs.update(optim_kwargs)
    defaults = dict(cls([torch.zeros(1, requires_grad=True)], **kwargs).defaults)
    defaults["weight_decay"] = training_args.weight_decay
    for key in ("lr", "foreach", "fused", "differentiable", "capturable"):
        defaults.pop(key, None)
    return plain(defaults)


def run_identity(
    model_args,
    data_args,
    recipe,
    training_args,
    provenance: dict,
    optim_overrides: dict,
    world_size: int | None = None,
) -> dict:
    """The identity of a recipe run over its lr grid (before tokenization: no derived keys).

    ``optim_overrides``: the optimizer keyword arguments the recipe's flags set (``--gamma``, ...).
    ``world_size``: the number of training processes (default: this process's view, which is
    right inside the recipe; the sweep passes the launcher's).
    """
    world = world_size if world_size is not None else max(1, training_args.world_size)
    identity = {
        "model": provenance["model"]["name"],
        "model_weights_sha256": provenance["model"]["weights_sha256"],
        "tokenizer": model_args.tokenizer_name,
        "data": provenance["data"]["name"],
        "data_config": provenance["data"]["config"],
        "data_fingerprint": provenance["data"]["fingerprint"],
        "validation_split_percentage": data_args.validation_split_percentage,
        "max_seq_length": data_args.max_seq_length,
        "max_train_samples": data_args.max_train_samples,
        "max_eval_samples": data_args.max_eval_samples,
        "mlm_probability": data_args.mlm_probability,
        "mask_seed": recipe.mask_seed,
        "epochs": int(training_args.num_train_epochs),
        "optimizer": recipe.optimizer,
        "optimizer_settings": optimizer_settings(recipe.optimizer, training_args, optim_overrides),
        "coupled_embeddings": recipe.coupled_embeddings,
        "global_batch_size": training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * world,
        "precision": {"bf16": training_args.bf16, "fp16": training_args.fp16, "tf32": training_args.tf32},
        **{key: getattr(training_args, key, None) for key in TRAINING_KEYS},
        GRID_KEY: sorted(recipe.learning_rates),
    }
    return plain(identity)


def lr_identity(identity: dict, lr: float) -> dict:
    """The identity of one lr run: the grid's, with its lr instead of the grid."""
    return {**{k: v for k, v in identity.items() if k != GRID_KEY}, "lr": lr}


# ---- the reuse rule -------------------------------------------------------------------------


def differences(
    recorded: dict | None, expected: dict, ignore: tuple[str, ...] = ()
) -> list[tuple[str, Any, Any]]:
    """``(key, recorded value, expected value)`` for every key of ``expected`` that differs.

    Nested settings are compared key by key (``optimizer_settings.gamma``). Keys only in
    ``recorded`` do not count (what the recipe derives after tokenizing, which the sweep cannot
    compute; they follow from the keys compared); a key missing from ``recorded`` does.
    """
    out: list[tuple[str, Any, Any]] = []
    recorded = recorded or {}
    for key, want in expected.items():
        if key in ignore:
            continue
        have = recorded.get(key, _MISSING)
        if isinstance(want, dict) and isinstance(have, dict):
            out += [(f"{key}.{k}", h, w) for k, h, w in differences(have, want)]
        elif have != want:
            out.append((key, have, want))
    return out


class _Missing:
    def __repr__(self) -> str:
        return "(not recorded)"


_MISSING = _Missing()


def reusable(
    where: Path, recorded: dict | None, expected: dict, finished: bool, ignore: tuple[str, ...] = ()
) -> bool:
    """True: ``where`` holds a finished run of this identity (skip it). False: train (or resume) it.

    Refuses (SystemExit) when ``where`` holds a run of another identity, naming each
    differing key with its recorded and requested value, or a run with no recorded identity.
    ``recorded`` None with nothing recorded at all means "nothing there yet": train.
    """
    if recorded is None:
        if finished:
            raise SystemExit(
                f"{where} holds a finished run without a recorded identity (written by an older version "
                "of the recipe), so it cannot be checked against these settings. Pass --overwrite_runs to "
                "retrain it, or use another output folder."
            )
        return False
    diff = differences(recorded, expected, ignore)
    if diff:
        details = "; ".join(f"{key}: {old!r} there vs {new!r} now" for key, old, new in diff)
        raise SystemExit(
            f"{where} holds a run with other settings ({details}). "
            "Pass --overwrite_runs to delete and retrain it, "
            "or use another output folder (--output_dir / --output_root)."
        )
    return finished
