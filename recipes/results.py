"""Result files of the recipe and the sweep: atomic JSON, per-run metrics, lr selection.

Layout of one recipe output folder (one (model, optimizer, epochs) cell)::

    output_dir/
      lr_5e-06/  identity.json  checkpoint-*/ (Trainer checkpoints: best + last)  metrics.json
      lr_1e-05/  ...
      selection.json      the chosen lr, its best epoch and that epoch's checkpoint
      selected -> lr_1e-05/checkpoint-N   (the best checkpoint; a symlink where the filesystem
                                          allows it, selection.json names it in any case)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from common.files import atomic_write_text
from common.weights import WeightFilesError, weight_files

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


CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE = "trainer_state.json"
_OPTIMIZER = ("optimizer.pt", "optimizer.bin", "optimizer_0", "optimizer.safetensors")


def checkpoint_defect(folder: Path) -> str | None:
    """Why a Trainer checkpoint folder cannot be resumed from, or None when it is complete.

    The Trainer writes weights, optimizer/scheduler, RNG state and ``trainer_state.json`` last,
    so a checkpoint cut off by a kill lacks the state file (or, cut earlier, the weights or the
    optimizer file).
    """
    if read_json(folder / TRAINER_STATE) is None:
        return f"no readable {TRAINER_STATE}"
    try:
        weight_files(folder)
    except WeightFilesError:
        return "no model weights"
    if not any((folder / name).exists() for name in _OPTIMIZER):
        return "no optimizer state"
    return None


def checkpoints(run_dir: Path) -> list[Path]:
    """``checkpoint-N`` folders of ``run_dir``, newest (highest N) first."""
    found = [
        p
        for p in Path(run_dir).glob(f"{CHECKPOINT_PREFIX}*")
        if p.is_dir() and p.name[len(CHECKPOINT_PREFIX) :].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]), reverse=True)


def last_complete_checkpoint(run_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest complete checkpoint of ``run_dir`` and the newer incomplete ones skipped on the way.

    (``transformers.trainer_utils.get_last_checkpoint`` returns the highest number, complete or not.)
    """
    skipped = []
    for folder in checkpoints(run_dir):
        defect = checkpoint_defect(folder)
        if defect is None:
            return folder, skipped
        skipped.append((folder, defect))
    return None, skipped


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
