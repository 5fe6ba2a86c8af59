"""Read the sweep manifest (written by the recipes' sweep driver) into model specs.

Format::

    {"selected": [
        {"model": "bert-base-uncased", "optimizer": "adamw", "epochs": 3, "lr": 5e-05,
         "checkpoint": "/abs/or/relative/path", "val_perplexity": 12.3},
        ...
    ]}

Relative ``checkpoint`` paths are relative to the manifest's folder. Each entry is
named ``{model}__{optimizer}__ep{epochs}`` (sanitised).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from evaluation.models import CheckpointError, ModelSpec, default_name, transformer_dir

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("model", "optimizer", "epochs", "checkpoint")
OPTIONAL_KEYS = ("lr", "val_perplexity")


class ManifestError(ValueError):
    """The manifest file is malformed."""


def read_manifest(path: str | Path) -> list[ModelSpec]:
    """Model specs for every ``selected`` entry of the manifest at ``path``.

    Raises:
        ManifestError: the file is not JSON, lacks ``selected``, an entry misses a key,
            or two entries would get the same name.
        CheckpointError: checkpoint folders are missing (all of them are listed).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"Manifest not found: {path}. Pass the sweep manifest JSON written by the sweep driver.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ManifestError(f"Manifest {path} is not valid JSON: {err}") from err
    entries = data.get("selected") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ManifestError(f'Manifest {path} needs a non-empty "selected" list of {{model, optimizer, epochs, lr, checkpoint}} entries.')

    specs = [_entry_to_spec(i, entry, path) for i, entry in enumerate(entries)]
    _check_checkpoints(specs, path)
    _check_unique(specs, path)
    return specs


def _entry_to_spec(index: int, entry: object, manifest: Path) -> ModelSpec:
    if not isinstance(entry, dict):
        raise ManifestError(f"Manifest {manifest}: selected[{index}] is {type(entry).__name__}, expected an object.")
    missing = [k for k in REQUIRED_KEYS if entry.get(k) in (None, "")]
    if missing:
        raise ManifestError(f"Manifest {manifest}: selected[{index}] lacks {', '.join(missing)} (required: {', '.join(REQUIRED_KEYS)}).")
    unknown = set(entry) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS)
    if unknown:
        logger.warning("Manifest %s: selected[%d] has keys %s that are kept in models.json but not used.", manifest, index, sorted(unknown))
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


def _check_checkpoints(specs: list[ModelSpec], manifest: Path) -> None:
    problems = []
    for spec in specs:
        try:
            transformer_dir(spec.checkpoint)
        except CheckpointError as err:
            problems.append(f"  {spec.name}: {err}")
    if problems:
        raise CheckpointError(f"Manifest {manifest}: {len(problems)} checkpoint(s) cannot be used:\n" + "\n".join(problems))


def _check_unique(specs: list[ModelSpec], manifest: Path) -> None:
    seen: dict[str, ModelSpec] = {}
    for spec in specs:
        if spec.mteb_name in seen:
            raise ManifestError(
                f"Manifest {manifest}: two entries map to the name {spec.name!r} "
                f"({seen[spec.mteb_name].checkpoint} and {spec.checkpoint}); keep one selected checkpoint per (model, optimizer, epochs)."
            )
        seen[spec.mteb_name] = spec
