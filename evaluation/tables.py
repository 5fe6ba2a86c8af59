"""Per-dataset score tables in Markdown: the paper's Tables 11-16.

One table per model; rows are datasets grouped by category (with the category mean after
each group), columns are AdamW / AdaTAMW for each epochs setting. In each pair the better
score (score >= the other's, as Figure 4's "better") is bold, so a tie bolds both.
"""

from __future__ import annotations

import pandas as pd

from evaluation.categories import category_order
from evaluation.scores import BASELINE, CANDIDATE


def _pair_cells(a: float, b: float) -> list[str]:
    """Format (AdamW, AdaTAMW) with the better one(s) bold."""
    return [f"**{x:.2f}**" if x >= y else f"{x:.2f}" for x, y in ((b, a), (a, b))]


def model_table(pairs: pd.DataFrame, model: str) -> str:
    """The Markdown table of one model (pairs: paired_scores rows)."""
    g = pairs[pairs["model"] == model]
    epochs = sorted(g["epochs"].unique())
    wide = g.pivot_table(
        index=["category", "task"], columns="epochs", values=[BASELINE, CANDIDATE], aggfunc="first"
    )
    header = ["Category", "Dataset"] + [f"{opt} {e} ep" for e in epochs for opt in (BASELINE, CANDIDATE)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (2 * len(epochs))]

    def row(category: str, label: str, values: pd.DataFrame) -> str:
        cells = []
        for e in epochs:
            cells += _pair_cells(values[(CANDIDATE, e)], values[(BASELINE, e)])
        return "| " + " | ".join([category, label] + cells) + " |"

    for category in category_order(g["category"]):
        block = wide.loc[category]
        for task in sorted(block.index, key=str.lower):
            lines.append(row(category, task, block.loc[task]))
        lines.append(row(category, f"*mean of {len(block)}*", block.mean()))
    lines.append(row("All", f"*mean of {len(wide)}*", wide.mean()))
    return "\n".join(lines)


def per_dataset_tables(pairs: pd.DataFrame) -> dict[str, str]:
    """Model name -> Markdown table, for every model in the paired scores."""
    return {model: model_table(pairs, model) for model in sorted(pairs["model"].unique())}
