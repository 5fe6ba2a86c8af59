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
* category = the task's ``metadata.type``;
* benchmark = the benchmark the model was run on (``MTEB(eng, v1)`` for the paper's suites,
  ``offline suite``, or any mteb benchmark's name), and dataset_revision = the data revision
  mteb recorded in the result file: the report states both, and refuses to mix benchmarks;
* the task objects whose subsets a score is averaged over are the run's benchmark's, e.g.
  STS22.v2's English subset in MTEB(eng, v2);
* a truncated or corrupt result file is named in a warning and left out (``run_mteb``
  moves it aside and re-runs the task);
* a model with both CQADupstackRetrieval and CQADupstackTexRetrieval (two suites in one
  folder) is refused rather than counted twice, and so is a folder holding two benchmarks.

Each row also carries what the score is a score of
(:data:`IDENTITY_COLUMNS`): the evaluation settings (precision, max_seq_length, pooling,
normalisation, suite, benchmark) and the cell's provenance from the sweep manifest (base model and its
weights hash, training data and its fingerprint); the report compares arms only when these
agree.

CLI: ``python -m evaluation.collect DIR --out scores.csv`` (the long CSV; ``--identity`` adds the identity
and dataset_revision columns).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import warnings
from pathlib import Path

import pandas as pd

from common.files import atomic_write
from evaluation.model_index import read_model_index
from evaluation.result_files import CorruptResultError, read_result, result_files
from evaluation.scores import IDENTITY_COLUMNS, PAPER_SWAP, TASK_VERSION_COLUMN
from evaluation.tasks import lookup_task, suite_benchmark

logger = logging.getLogger(__name__)

COLUMNS = ["model", "optimizer", "epochs", "task", "category", "score"]


def task_score(result, task) -> float:
    """Main score x 100 over the task's splits/subsets (NaN if a subset is missing)."""
    if task is None:
        return 100.0 * result.get_score(languages=["eng"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return 100.0 * result.validate_and_filter_scores(task).get_score()


def identity(meta: dict) -> dict:
    """The :data:`IDENTITY_COLUMNS` of one models.json entry ('' where not recorded)."""
    settings = meta.get("settings") or {}
    provenance = meta.get("provenance") or {}
    base, data = provenance.get("model") or {}, provenance.get("data") or {}
    data_name = "/".join(str(x) for x in (data.get("name"), data.get("config")) if x)
    values = {
        # the requested name: the resolved folder is machine-specific, the weights hash is what must match
        "base_model": base.get("name") or base.get("resolved"),
        "base_weights": base.get("weights_sha256"),
        "data": data_name,
        "data_fingerprint": data.get("fingerprint"),
        **{
            key: settings.get(key) for key in ("precision", "max_seq_length", "pooling", "normalize", "suite")
        },
        "benchmark": meta.get("benchmark")
        or (suite_benchmark(settings["suite"]) if settings.get("suite") else None),
    }
    return {key: "" if values.get(key) is None else str(values[key]) for key in IDENTITY_COLUMNS}


def _refuse_two_cqadupstack(rows: list[dict]) -> None:
    """One model with both the CQADupstack aggregate and the paper's TeX forum: two suites mixed."""
    ((aggregate, tex),) = PAPER_SWAP.items()
    tasks: dict[str, set[str]] = {}
    for row in rows:
        tasks.setdefault(row["_name"], set()).add(row["task"])
    mixed = sorted(name for name, names in tasks.items() if {aggregate, tex} <= names)
    if mixed:
        raise ValueError(
            f"{', '.join(mixed)} ha{'s' if len(mixed) == 1 else 've'} results for both {aggregate} "
            f"(MTEB(eng, v1)) and {tex} (--paper_tasks): two suites in one output, which would count "
            "CQADupstack twice. "
            f"Evaluate each suite into its own --output folder."
        )


def _refuse_two_benchmarks(index: dict) -> None:
    """A folder whose models were run on different benchmarks (e.g. MTEB(eng, v1) and v2)."""
    benchmarks: dict[str, list[str]] = {}
    for name, meta in sorted(index.items()):
        benchmark = identity(meta)["benchmark"]
        if benchmark:
            benchmarks.setdefault(benchmark, []).append(name)
    if len(benchmarks) > 1:
        shown = "; ".join(f"{b}: {', '.join(names)}" for b, names in sorted(benchmarks.items()))
        raise ValueError(
            f"results of {len(benchmarks)} benchmarks in one folder ({shown}); scores of "
            f"{' and '.join(sorted(benchmarks))} are not comparable and are never mixed in one table. "
            f"Evaluate each benchmark into its own --output folder."
        )


def collect_scores(results_dir: str | Path) -> pd.DataFrame:
    """The long score table of every model registered in ``results_dir/models.json``.

    Tasks without a complete result (an interrupted run) or with an unreadable result file
    are left out with a warning naming them. Columns: :data:`COLUMNS` + :data:`IDENTITY_COLUMNS`
    + ``dataset_revision``.

    Raises:
        ValueError: the folder holds two benchmarks, or both CQADupstack variants for a model.
    """
    results_dir = Path(results_dir)
    index = read_model_index(results_dir)
    if not index:
        raise FileNotFoundError(
            f"No models.json in {results_dir}: not a run_mteb output folder "
            f"(run python -m evaluation.run_mteb --output {results_dir} first)."
        )
    _refuse_two_benchmarks(index)
    rows = []
    for mteb_name, meta in sorted(index.items()):
        wanted = set(meta.get("tasks") or [])
        suite = (meta.get("settings") or {}).get("suite")
        for path in result_files(results_dir, mteb_name, meta["revision"]):
            try:
                result = read_result(path)
            except CorruptResultError as err:
                logger.warning(
                    "%s Left out; re-run python -m evaluation.run_mteb with the same flags to redo it.", err
                )
                continue
            if wanted and result.task_name not in wanted:
                continue
            task = lookup_task(result.task_name, suite)
            score = task_score(result, task)
            if math.isnan(score):
                logger.warning(
                    "%s: %s is incomplete (missing subsets); left out.", mteb_name, result.task_name
                )
                continue
            rows.append(
                {
                    "_name": mteb_name,
                    "model": meta.get("model") or mteb_name,
                    "optimizer": meta.get("optimizer"),
                    "epochs": meta.get("epochs"),
                    "task": result.task_name,
                    "category": task.metadata.type if task is not None else None,
                    "score": score,
                    **identity(meta),
                    TASK_VERSION_COLUMN: result.dataset_revision or "",
                }
            )
    _refuse_two_cqadupstack(rows)
    table = pd.DataFrame(rows, columns=COLUMNS + IDENTITY_COLUMNS + [TASK_VERSION_COLUMN])
    table["epochs"] = table["epochs"].astype("Int64")
    return table.sort_values(["model", "optimizer", "epochs", "category", "task"], ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.collect", description="Long score table of a run_mteb output folder."
    )
    parser.add_argument("results", type=Path, help="the --output folder of evaluation.run_mteb")
    parser.add_argument("--out", type=Path, help="CSV to write (default: print to stdout)")
    parser.add_argument(
        "--identity",
        action="store_true",
        help="add the evaluation settings, provenance and data revision columns: "
        + ",".join(IDENTITY_COLUMNS + [TASK_VERSION_COLUMN]),
    )
    args = parser.parse_args(argv)
    try:
        table = collect_scores(args.results)
        if not args.identity:
            table = table[COLUMNS]
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.out is None:
        table.to_csv(sys.stdout, index=False)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda tmp: table.to_csv(tmp, index=False))
    print(
        f"Wrote {len(table)} rows ({table['model'].nunique()} model(s), "
        f"{table['task'].nunique()} task(s)) to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
