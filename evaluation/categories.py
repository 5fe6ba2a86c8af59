"""Category improvement of AdaTAMW over AdamW: the paper's Figure 3.

percent = 100 * (mean_cat(AdaTAMW) - mean_cat(AdamW)) / mean_cat(AdamW), where mean_cat is
the mean score over the datasets of one MTEB category, per model (size) and epochs
(docs/evaluation.md). With a negative AdamW mean (a correlation below zero, possible only for
weak models) the denominator is |mean_cat(AdamW)| so that a positive percent still means
AdaTAMW is higher; a zero mean gives NaN ("n/a").
"""

from __future__ import annotations

import re

import pandas as pd

from evaluation.scores import BASELINE, CANDIDATE, CATEGORY_ORDER

CATEGORY_COLUMNS = ["model", "size", "category", "epochs", "percent"]


def model_size(model: str) -> str:
    """'base' or 'large' from a model name (BERT-large, bert-base-uncased, ...); else 'n/a'."""
    name = re.split(r"[\\/]", str(model).rstrip("/\\"))[-1]
    tokens = {tok.lower() for tok in re.split(r"[-_.\s]+", name)}
    found = [size for size in ("base", "large") if size in tokens]
    return found[0] if len(found) == 1 else "n/a"


def category_order(categories) -> list[str]:
    """MTEB's category order (as the paper's figures), unknown categories after, sorted."""
    categories = set(categories)
    known = [c for c in CATEGORY_ORDER if c in categories]
    return known + sorted(categories - set(known))


def category_improvement(pairs: pd.DataFrame) -> pd.DataFrame:
    """Figure 3 values from paired scores (one row per model, epochs, task)."""
    means = pairs.groupby(["model", "epochs", "category"], sort=False)[[BASELINE, CANDIDATE]].mean()
    base = means[BASELINE]
    percent = 100.0 * (means[CANDIDATE] - base) / base.abs().where(base != 0)
    out = percent.rename("percent").reset_index()
    out["size"] = out["model"].map(model_size)
    rank = {c: i for i, c in enumerate(category_order(out["category"]))}
    out = out.sort_values(
        ["model", "category", "epochs"],
        key=lambda c: c.map(rank) if c.name == "category" else c,
        ignore_index=True,
    )
    return out[CATEGORY_COLUMNS]
