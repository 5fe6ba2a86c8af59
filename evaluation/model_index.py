"""The index of evaluated models, ``DIR/models.json``: mteb model name -> {model, optimizer,
epochs, lr, checkpoint, revision, tasks}.

Written by every run (and by ``--emit slurm`` up front). Updates merge with the
existing entries under a file lock (array jobs write concurrently: :func:`common.locks.wait_for`)
and replace the file atomically (temp file + ``os.replace``), so a reader never sees half a file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.files import atomic_write_text
from common.locks import wait_for

FILENAME = "models.json"


def index_path(output: str | Path) -> Path:
    return Path(output) / FILENAME


def read_model_index(output: str | Path) -> dict[str, dict[str, Any]]:
    """The entries of ``output/models.json`` ({} when absent)."""
    path = index_path(output)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it and rerun to rebuild it.") from err


def update_model_index(
    output: str | Path, entries: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Merge ``entries`` into ``output/models.json`` and return the merged content.

    An entry with a new revision replaces the stored one for its name. For the
    same revision the entries merge: unset (None) values keep the stored ones and
    ``tasks`` is the union (several runs may cover different tasks of one model).
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    with wait_for(output / (FILENAME + ".lock")):
        merged = read_model_index(output)
        for name, entry in entries.items():
            merged[name] = _merge_entry(merged.get(name, {}), dict(entry))
        _atomic_write_json(index_path(output), merged)
    return merged


def _merge_entry(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` over ``old``.

    For the same revision, keep the old values that ``new`` leaves unset and union the tasks.
    """
    if old.get("revision") != new.get("revision"):
        return new
    merged = {**old, **{k: v for k, v in new.items() if v is not None}}
    merged["tasks"] = list(dict.fromkeys([*old.get("tasks", []), *new.get("tasks", [])]))
    return merged


def _atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", mode=0o644)
