"""Read the sweep manifest (written by the recipes' sweep driver) into model specs.

Format::

    {"selected": [
        {"model": "bert-base-uncased", "optimizer": "adamw", "epochs": 3, "lr": 5e-05,
         "checkpoint": "/abs/or/relative/path", "val_perplexity": 12.3,
         "provenance": {"model": {"name", "resolved", "weights_sha256"},
                        "data": {"name", "config", "fingerprint"}}},
        ...
    ]}

``provenance`` (optional; older manifests lack it) says which base weights and which
training data the cell came from; it travels into ``models.json`` and the report, which
refuses to compare AdamW and AdaTAMW arms of different base weights or data.

Relative ``checkpoint`` paths are relative to the manifest's folder. Each entry is
named ``{model}__{optimizer}__ep{epochs}`` (sanitised).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from evaluation.models import CheckpointError, ModelSpec, check_checkpoint, default_name

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("model", "optimizer", "epochs", "checkpoint")
OPTIONAL_KEYS = ("lr", "val_perplexity", "provenance")
PROVENANCE_KEYS = {"model": ("name", "resolved", "weights_sha256"), "data": ("name", "config", "fingerprint")}


class ManifestError(ValueError):
    """The manifest file is malformed."""


def load_manifest(path: str | Path) -> list[ModelSpec]:
    """Model specs for every ``selected`` entry of the manifest at ``path`` (checkpoints unchecked).

    Raises:
        ManifestError: the file is not JSON, lacks ``selected``, an entry misses a key or has
            a malformed ``provenance``, or two entries would get the same name.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(
            f"Manifest not found: {path}. Pass the sweep manifest JSON written by the sweep driver."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ManifestError(f"Manifest {path} is not valid JSON: {err}") from err
    entries = data.get("selected") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ManifestError(
            f'Manifest {path} needs a non-empty "selected" list of '
            "{model, optimizer, epochs, lr, checkpoint} entries."
        )

    specs = [_entry_to_spec(i, entry, path) for i, entry in enumerate(entries)]
    _check_unique(specs, path)
    return specs


def checkpoint_problems(specs: list[ModelSpec]) -> dict[str, str]:
    """Model name -> why its checkpoint cannot be evaluated (missing folder, config or weights)."""
    problems = {}
    for spec in specs:
        try:
            check_checkpoint(spec.checkpoint)
        except CheckpointError as err:
            problems[spec.name] = str(err)
    return problems


def read_manifest(path: str | Path) -> list[ModelSpec]:
    """Model specs for every ``selected`` entry of the manifest at ``path``.

    Raises:
        ManifestError: see :func:`load_manifest`.
        CheckpointError: checkpoints are missing or hold no model weights (all of them are listed).
    """
    specs = load_manifest(path)
    problems = checkpoint_problems(specs)
    if problems:
        lines = "\n".join(f"  {name}: {message}" for name, message in problems.items())
        raise CheckpointError(f"Manifest {path}: {len(problems)} checkpoint(s) cannot be used:\n{lines}")
    return specs


def _check_provenance(index: int, provenance: object, manifest: Path) -> None:
    where = f"Manifest {manifest}: selected[{index}].provenance"
    if not isinstance(provenance, dict):
        raise ManifestError(
            f'{where} is {type(provenance).__name__}; expected {{"model": {{...}}, "data": {{...}}}}.'
        )
    for part, keys in PROVENANCE_KEYS.items():
        value = provenance.get(part)
        if value is not None and not isinstance(value, dict):
            raise ManifestError(
                f"{where}.{part} is {type(value).__name__}; expected an object with {', '.join(keys)}."
            )


def _entry_to_spec(index: int, entry: object, manifest: Path) -> ModelSpec:
    if not isinstance(entry, dict):
        raise ManifestError(
            f"Manifest {manifest}: selected[{index}] is {type(entry).__name__}, expected an object."
        )
    missing = [k for k in REQUIRED_KEYS if entry.get(k) in (None, "")]
    if missing:
        raise ManifestError(
            f"Manifest {manifest}: selected[{index}] lacks {', '.join(missing)} "
            f"(required: {', '.join(REQUIRED_KEYS)})."
        )
    unknown = set(entry) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS)
    if unknown:
        logger.warning(
            "Manifest %s: selected[%d] has keys %s that are kept in models.json but not used.",
            manifest,
            index,
            sorted(unknown),
        )
    if entry.get("provenance") is not None:
        _check_provenance(index, entry["provenance"], manifest)
    checkpoint = Path(entry["checkpoint"])
    if not checkpoint.is_absolute():
        checkpoint = manifest.parent / checkpoint
    extra = {k: v for k, v in entry.items() if k not in REQUIRED_KEYS and k != "lr"}
    return ModelSpec(
        name=default_name(entry["model"], entry["optimizer"], entry["epochs"]),
        checkpoint=checkpoint.resolve(),
        model=str(entry["model"]),
        optimizer=str(entry["optimizer"]),
        epochs=int(entry["epochs"]),
        lr=float(entry["lr"]) if entry.get("lr") is not None else None,
        extra=extra,
    )


def _check_unique(specs: list[ModelSpec], manifest: Path) -> None:
    seen: dict[str, ModelSpec] = {}
    for spec in specs:
        if spec.mteb_name in seen:
            raise ManifestError(
                f"Manifest {manifest}: two entries map to the name {spec.name!r} "
                f"({seen[spec.mteb_name].checkpoint} and {spec.checkpoint}); "
                "keep one selected checkpoint per (model, optimizer, epochs)."
            )
        seen[spec.mteb_name] = spec
