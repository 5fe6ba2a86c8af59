"""Matplotlib renderings of the report's figures (Agg canvas, no pyplot state).

* ``win_rate_figure``: the paper's Figure 4 / Figure 10 layout, rows models, columns epochs.
  Each cell is a 100 % bar: dark green = AdaTAMW better (>=), light green = similar but
  not better, red = worse; the text gives better % and similar-or-better %.
* ``category_figure``: Figure 3, the percentage improvement of each category mean, as a
  heatmap (rows model / epochs, columns categories; green = AdaTAMW higher, red = lower).
* ``geometry_figure``: the embedding-geometry table, iso and mu_ratio per model / epochs,
  one bar per optimizer.

Functions return a ``matplotlib.figure.Figure``; the caller saves it (atomically).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from evaluation.categories import category_order

BETTER, SIMILAR, WORSE = "#1b7837", "#a6dba0", "#d6604d"


def win_rate_figure(cells: pd.DataFrame, title: str) -> Figure:
    """Figure 4 / 10: cells has columns model, epochs, better_pct, similar_or_better_pct."""
    models = list(dict.fromkeys(cells["model"]))
    epochs = sorted(cells["epochs"].unique())
    fig = Figure(figsize=(1.9 * len(epochs) + 2.6, 0.9 * len(models) + 1.6), dpi=120)
    ax = fig.add_subplot()
    for _, c in cells.iterrows():
        i, j = models.index(c["model"]), epochs.index(c["epochs"])
        better, sob = c["better_pct"], c["similar_or_better_pct"]
        x, width = j + 0.05, 0.9
        for start, share, colour in (
            (0, better, BETTER),
            (better, sob - better, SIMILAR),
            (sob, 100 - sob, WORSE),
        ):
            ax.add_patch(
                Rectangle(
                    (x + width * start / 100, i + 0.1),
                    width * share / 100,
                    0.8,
                    facecolor=colour,
                    edgecolor="none",
                )
            )
        ax.text(
            j + 0.5,
            i + 0.5,
            f"better {better}%\nsim./better {sob}%",
            ha="center",
            va="center",
            fontsize=8.5,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5},
        )
    ax.set_xlim(0, len(epochs))
    ax.set_ylim(len(models), 0)
    ax.set_xticks(np.arange(len(epochs)) + 0.5, [f"{e} epochs" for e in epochs])
    ax.set_yticks(np.arange(len(models)) + 0.5, models)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=10)
    ax.legend(
        handles=[
            Patch(color=BETTER, label="AdaTAMW better (>=)"),
            Patch(color=SIMILAR, label="similar, not better"),
            Patch(color=WORSE, label="worse"),
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.08),
        ncol=3,
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout()
    return fig


def category_figure(improvement: pd.DataFrame, benchmark: str | None = None) -> Figure:
    """Figure 3 heatmap: improvement has columns model, size, category, epochs, percent.

    One column per category that has a task (a benchmark without e.g. Summarization gets no
    Summarization column); ``benchmark`` goes into the title."""
    categories = category_order(improvement["category"])
    rows = improvement[["model", "size", "epochs"]].drop_duplicates().sort_values(["model", "epochs"])
    grid = improvement.pivot(index=["model", "epochs"], columns="category", values="percent")
    grid = grid.reindex(index=pd.MultiIndex.from_frame(rows[["model", "epochs"]]), columns=categories)
    values = grid.to_numpy(dtype=float)
    limit = max(np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0, 0.1)
    fig = Figure(figsize=(1.1 * len(categories) + 3.6, 0.42 * len(rows) + 2.4), dpi=120)
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="RdYlGn", norm=TwoSlopeNorm(0.0, -limit, limit), aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        dark = np.isfinite(v) and abs(v) > 0.6 * limit
        ax.text(
            j,
            i,
            "n/a" if np.isnan(v) else f"{v:+.1f}",
            ha="center",
            va="center",
            fontsize=8,
            color="white" if dark else "black",
        )
    labels = [f"{m} ({s}), {e} ep" for m, s, e in rows.itertuples(index=False)]
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right", fontsize=8)
    on = f" on {benchmark}" if benchmark else ""
    ax.set_title(f"Figure 3: improvement of category means, AdaTAMW vs AdamW{on} (%)", fontsize=10)
    fig.colorbar(image, ax=ax, label="% change")
    fig.tight_layout()
    return fig


def geometry_figure(geometry: pd.DataFrame, metrics=("iso", "mu_ratio")) -> Figure:
    """Bars of the geometry metrics per (model, epochs), one bar per optimizer."""
    groups = geometry[["model", "epochs"]].drop_duplicates().sort_values(["model", "epochs"])
    keys = list(groups.itertuples(index=False, name=None))
    optimizers = sorted(geometry["optimizer"].unique())
    fig = Figure(figsize=(max(6.0, 0.9 * len(keys) + 2.5), 3.2 * len(metrics)), dpi=120)
    width = 0.8 / len(optimizers)
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(len(metrics), 1, k + 1)
        for n, opt in enumerate(optimizers):
            sub = geometry[geometry["optimizer"] == opt].set_index(["model", "epochs"])[metric]
            heights = [sub.get(key, np.nan) for key in keys]
            ax.bar(np.arange(len(keys)) - 0.4 + width * (n + 0.5), heights, width, label=opt)
        ax.set_xticks(range(len(keys)), [f"{m}\n{e} ep" for m, e in keys], fontsize=8)
        ax.set_ylabel(metric)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.axes[0].set_title("Embedding geometry per model, epochs and optimizer", fontsize=10)
    fig.tight_layout()
    return fig
