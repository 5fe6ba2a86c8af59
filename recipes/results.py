"""Result files of the recipe and the sweep: atomic JSON, per-run metrics, lr selection.

Layout of one recipe output folder (one (model, optimizer, epochs) cell)::

    output_dir/
      lr_5e-06/ checkpoint-*/ (Trainer checkpoints, best + last)  best/  metrics.json
      lr_1e-05/ ...
      selection.json      the chosen lr and its best epoch
      selected -> lr_1e-05/best   (symlink where the filesystem allows it)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from recipes.files import atomic_write_text

BEST_DIR = "best"
METRICS_FILE = "metrics.json"
SELECTION_FILE = "selection.json"
SELECTED_LINK = "selected"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file in the same folder and ``os.replace`` it into place."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any | None:
    """The parsed file, or None when it is missing or unreadable (e.g. truncated by a crash)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def lr_dirname(lr: float) -> str:
    """``5e-05`` -> ``lr_5e-05`` (``%g``: short and stable)."""
    return f"lr_{lr:g}"


def is_complete(metrics: dict | None) -> bool:
    """A finished run: flagged complete with one perplexity per epoch and a best checkpoint."""
    return bool(
        metrics
        and metrics.get("complete")
        and len(metrics.get("epochs_history", [])) == metrics.get("epochs")
        and metrics.get("checkpoint")
    )


#: Settings that must match for a finished run to count as "the same run".
IDENTITY_KEYS = ("model", "optimizer", "lr", "seed", "epochs", "mask_seed", "max_seq_length", "data")


def identity_mismatch(metrics: dict, expected: dict) -> list[str]:
    """Keys whose recorded value differs from the requested one."""
    return [k for k in IDENTITY_KEYS if k in expected and metrics.get(k) != expected[k]]


def _score(metrics: dict) -> float:
    value = metrics.get("best_perplexity")
    return value if isinstance(value, (int, float)) and math.isfinite(value) else math.inf


def select_best(runs: dict[float, dict]) -> tuple[float, dict]:
    """The lr whose best epoch has the lowest validation perplexity (ties: the smaller lr)."""
    if not runs:
        raise ValueError("no finished run to select from")
    return min(runs.items(), key=lambda item: (_score(item[1]), item[0]))


def point_selected(output_dir: Path, checkpoint: Path) -> None:
    """Make ``output_dir/selected`` a symlink to the chosen checkpoint (atomically; best effort)."""
    link = output_dir / SELECTED_LINK
    if link.exists() and not link.is_symlink():
        return  # a real folder put there by someone else: leave it, selection.json is the reference
    tmp = output_dir / f".{SELECTED_LINK}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(checkpoint, output_dir), target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)
