"""Collect mteb results of a run folder into the long score table.

``collect_scores(DIR)`` -> DataFrame ``model,optimizer,epochs,task,category,score``:

* rows come from mteb's result files ``DIR/results/<name>/<revision>/<task>.json``;
* model / optimizer / epochs come from ``DIR/models.json`` (written by run_mteb);
  only the revision registered there counts, so results of an older checkpoint
  stored under the same name are ignored, and only the tasks the model was run
  on count (the subtask files mteb writes for the CQADupstack aggregate are skipped);
* score = the task's main score x 100, averaged over the splits and subsets of the
  task as the suite defines it (e.g. English-only subsets in MTEB(eng, v1)) with
  mteb's ``TaskResult.validate_and_filter_scores`` + ``get_score``, as the leaderboard does;
* category = the task's ``metadata.type``.

CLI: ``python -m evaluation.collect DIR --out scores.csv``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import warnings
from pathlib import Path

import pandas as pd

from recipes.files import atomic_write
from evaluation.registry import read_registry
from evaluation.tasks import lookup_task

logger = logging.getLogger(__name__)

COLUMNS = ["model", "optimizer", "epochs", "task", "category", "score"]
_NOT_RESULTS = {"model_meta.json"}


def task_score(result, task) -> float:
    """Main score x 100 over the task's splits/subsets (NaN if a subset is missing)."""
    if task is None:
        return 100.0 * result.get_score(languages=["eng"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return 100.0 * result.validate_and_filter_scores(task).get_score()


def _result_files(results_dir: Path, mteb_name: str, revision: str) -> list[Path]:
    folder = results_dir / "results" / mteb_name.replace("/", "__").replace(" ", "_") / revision
    return sorted(p for p in folder.glob("*.json") if p.name not in _NOT_RESULTS)


def collect_scores(results_dir: str | Path) -> pd.DataFrame:
    """The long score table of every model registered in ``results_dir/models.json``.

    Tasks without a complete result (an interrupted run) are left out with a warning.
    """
    from mteb.results import TaskResult

    results_dir = Path(results_dir)
    registry = read_registry(results_dir)
    if not registry:
        raise FileNotFoundError(f"No models.json in {results_dir}: not a run_mteb output folder (run python -m evaluation.run_mteb --output {results_dir} first).")
    rows = []
    for mteb_name, meta in sorted(registry.items()):
        wanted = set(meta.get("tasks") or [])
        for path in _result_files(results_dir, mteb_name, meta["revision"]):
            result = TaskResult.from_disk(path)
            if wanted and result.task_name not in wanted:
                continue
            task = lookup_task(result.task_name)
            score = task_score(result, task)
            if math.isnan(score):
                logger.warning("%s: %s is incomplete (missing subsets); left out.", mteb_name, result.task_name)
                continue
            rows.append(
                {
                    "model": meta.get("model") or mteb_name,
                    "optimizer": meta.get("optimizer"),
                    "epochs": meta.get("epochs"),
                    "task": result.task_name,
                    "category": task.metadata.type if task is not None else None,
                    "score": score,
                }
            )
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["epochs"] = table["epochs"].astype("Int64")
    return table.sort_values(["model", "optimizer", "epochs", "category", "task"], ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.collect", description="Long score table of a run_mteb output folder.")
    parser.add_argument("results", type=Path, help="the --output folder of evaluation.run_mteb")
    parser.add_argument("--out", type=Path, help="CSV to write (default: print to stdout)")
    args = parser.parse_args(argv)
    try:
        table = collect_scores(args.results)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.out is None:
        table.to_csv(sys.stdout, index=False)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda tmp: table.to_csv(tmp, index=False))
    print(f"Wrote {len(table)} rows ({table['model'].nunique()} model(s), {table['task'].nunique()} task(s)) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
