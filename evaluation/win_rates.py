"""Win rates of AdaTAMW over AdamW: the paper's Figure 4 (t = 0.2 %) and Figure 10 (t = 1 %).

Definitions (docs/evaluation.md, checked against the paper's Tables 11-16), per dataset with
a = score(AdaTAMW), b = score(AdamW):

* better:  a >= b
* similar: |a - b| < t * max(a, b)
* similar_or_better: better or similar

Percentages are over the datasets of a (model, epochs) cell, rounded half up to integers.
MTEB scores are non-negative percentages; should a weak model score below zero (a negative
correlation), max(|a|, |b|) stands for max(a, b), which is the same for non-negative scores.

A sign test goes with each cell: over the datasets that are *not* similar, AdaTAMW wins
(a > b) versus losses (a < b), two-sided exact binomial test with p = 0.5
(``scipy.stats.binomtest``), so a reader can see whether e.g. 71 % could be chance.
"""

from __future__ import annotations

import pandas as pd
from scipy.stats import binomtest

from evaluation.scores import BASELINE, CANDIDATE

# Threshold label as written in win_rates.csv -> (t, paper figure).
THRESHOLDS = {"0.2%": (0.002, "Figure 4"), "1%": (0.01, "Figure 10")}
WIN_RATE_COLUMNS = ["model", "epochs", "threshold", "better_pct", "similar_or_better_pct"]
STATS_COLUMNS = WIN_RATE_COLUMNS + [
    "n_datasets",
    "n_better",
    "n_similar",
    "n_similar_or_better",
    "sign_test_wins",
    "sign_test_losses",
    "sign_test_p",
]
# Scores are two-decimal percentages; a difference this close to t * max(a, b) is the
# boundary itself, which the strict "<" counts as not similar.
_BOUNDARY_TOL = 1e-9


def paired_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, epochs, task): columns category, AdamW, AdaTAMW."""
    wide = scores.pivot_table(
        index=["model", "epochs", "task", "category"], columns="optimizer", values="score", aggfunc="first"
    )
    return wide.reset_index().dropna(subset=[BASELINE, CANDIDATE])


def round_percent(k: int, n: int) -> int:
    """100 * k / n rounded half up, in integers (so 7/56 = 12.5 % -> 13, no float drift)."""
    return (200 * k + n) // (2 * n)


def compare(pairs: pd.DataFrame, t: float) -> pd.DataFrame:
    """Per dataset: better, similar, similar_or_better, win, loss (booleans) at threshold t."""
    a, b = pairs[CANDIDATE], pairs[BASELINE]
    higher = pd.concat([a.abs(), b.abs()], axis=1).max(axis=1)
    out = pairs.copy()
    out["better"] = a >= b
    out["similar"] = (a - b).abs() < t * higher - _BOUNDARY_TOL
    out["similar_or_better"] = out["better"] | out["similar"]
    out["win"] = ~out["similar"] & (a > b)
    out["loss"] = ~out["similar"] & (a < b)
    return out


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact binomial p of wins vs losses under p = 0.5 (NaN with no decided dataset)."""
    n = wins + losses
    return float("nan") if n == 0 else float(binomtest(wins, n, 0.5).pvalue)


def win_rate_stats(pairs: pd.DataFrame) -> pd.DataFrame:
    """Counts, percentages and sign-test p for every (model, epochs, threshold)."""
    rows = []
    for label, (t, _figure) in THRESHOLDS.items():
        cmp = compare(pairs, t)
        for (model, epochs), g in cmp.groupby(["model", "epochs"], sort=False):
            n = len(g)
            wins, losses = int(g["win"].sum()), int(g["loss"].sum())
            rows.append(
                {
                    "model": model,
                    "epochs": int(epochs),
                    "threshold": label,
                    "better_pct": round_percent(int(g["better"].sum()), n),
                    "similar_or_better_pct": round_percent(int(g["similar_or_better"].sum()), n),
                    "n_datasets": n,
                    "n_better": int(g["better"].sum()),
                    "n_similar": int(g["similar"].sum()),
                    "n_similar_or_better": int(g["similar_or_better"].sum()),
                    "sign_test_wins": wins,
                    "sign_test_losses": losses,
                    "sign_test_p": sign_test_p(wins, losses),
                }
            )
    stats = pd.DataFrame(rows, columns=STATS_COLUMNS)
    order = {label: i for i, label in enumerate(THRESHOLDS)}
    return stats.sort_values(
        ["model", "epochs", "threshold"],
        key=lambda c: c.map(order) if c.name == "threshold" else c,
        ignore_index=True,
    )


def win_rates(stats: pd.DataFrame) -> pd.DataFrame:
    """The figure cells with exactly the columns of evaluation/paper/win_rates_all.csv."""
    return stats[WIN_RATE_COLUMNS].copy()
