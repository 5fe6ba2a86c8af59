"""Seed-to-seed spread of the demo's scores against the AdamW-vs-AdaTAMW difference.

Two demo runs that differ only in the training seed (``python -m recipes.demo --seed N --out
DIR``: ``--seed`` and ``--mask_seed`` of every training run, so the new MLM head, the data order
and the masks all change) give, per task, two scores of each (optimizer, epochs) arm. Their
difference is what chance alone moves a score by; the optimizer difference AdaTAMW - AdamW is
worth reading only where it is larger than that and keeps its sign from seed to seed::

    python -m recipes.demo                                   # demo_output (the recipe's default seeds)
    python -m recipes.demo --seed 1 --out demo_output_seed1
    python -m evaluation.seed_spread demo_output demo_output_seed1 [--out seed_spread.csv]

Reads each run's ``scores_compared.csv`` (written by ``evaluation.report``: the tasks that
carry the comparison; code-path checks are not in it). Per (task, epochs) it prints:

* ``seed_spread``: mean over the two optimizers of max - min of the arm's score across runs;
* ``diff_<run>``: AdaTAMW - AdamW in each run, and ``same_sign``: whether those agree;
* ``diff_over_spread``: |mean difference| / seed spread (above 1: the optimizer moved the
  score by more than the seed did).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from evaluation.scores import BASELINE, CANDIDATE


class SeedSpreadError(ValueError):
    """The runs cannot be compared (missing file, no shared task)."""


def _scores(run: Path) -> pd.DataFrame:
    path = run / "scores_compared.csv" if run.is_dir() else run
    if not path.is_file():
        raise SeedSpreadError(
            f"{path}: no such file; give a demo output folder (python -m recipes.demo --out DIR) "
            "or its scores_compared.csv"
        )
    df = pd.read_csv(path)
    missing = {"optimizer", "epochs", "task", "score"} - set(df.columns)
    if missing:
        raise SeedSpreadError(f"{path}: missing column(s) {sorted(missing)}")
    return df


def seed_spread(runs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (task, epochs): the seed spread, each run's AdaTAMW - AdamW, sign agreement."""
    if len(runs) < 2:
        raise SeedSpreadError("give at least two runs (demo outputs with different --seed)")
    long = pd.concat([df.assign(run=name) for name, df in runs.items()], ignore_index=True)
    long["optimizer"] = long["optimizer"].map(
        lambda o: {"adamw": BASELINE, "adatamw": CANDIDATE}.get(str(o).lower(), o)
    )
    wide = long.pivot_table(
        index=["task", "epochs", "optimizer"], columns="run", values="score", aggfunc="first"
    )
    wide = wide.dropna()
    if wide.empty:
        raise SeedSpreadError(f"the runs share no (task, epochs, optimizer) score: {sorted(runs)}")
    names = list(runs)
    spread = (wide[names].max(axis=1) - wide[names].min(axis=1)).groupby(["task", "epochs"]).mean()
    arms = wide[names].unstack("optimizer")
    rows = []
    for (task, epochs), arm in arms.iterrows():
        diffs = {
            name: float(arm[(name, CANDIDATE)] - arm[(name, BASELINE)])
            for name in names
            if (name, CANDIDATE) in arm and (name, BASELINE) in arm
        }
        if len(diffs) < 2 or any(pd.isna(v) for v in diffs.values()):
            continue
        s = float(spread.loc[(task, epochs)])
        mean_diff = sum(diffs.values()) / len(diffs)
        signs = {(d > 0) - (d < 0) for d in diffs.values()}
        rows.append(
            {
                "task": task,
                "epochs": int(epochs),
                "seed_spread": round(s, 4),
                **{f"diff_{name}": round(float(d), 4) for name, d in diffs.items()},
                "same_sign": len(signs) == 1 and 0 not in signs,
                "diff_over_spread": round(abs(mean_diff) / s, 3)
                if s > 0
                else float("inf")
                if mean_diff
                else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.seed_spread",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "runs", nargs="+", type=Path, help="demo output folders (or their scores_compared.csv)"
    )
    parser.add_argument("--out", type=Path, help="write the table as CSV here")
    args = parser.parse_args(argv)
    try:
        names = [p.name if p.is_dir() else p.parent.name for p in args.runs]
        if len(set(names)) != len(names):
            names = [str(p) for p in args.runs]
        table = seed_spread({name: _scores(path) for name, path in zip(names, args.runs)})
    except SeedSpreadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table.to_string(index=False))
    if len(table):
        agree = int(table["same_sign"].sum())
        beyond = int((table["diff_over_spread"] > 1).sum())
        print(
            f"\n{agree} of {len(table)} (task, epochs) differences keep their sign across seeds; "
            f"{beyond} exceed the seed spread."
        )
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
