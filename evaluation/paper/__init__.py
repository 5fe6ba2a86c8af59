"""The paper's own MTEB tables, bundled with the package (provenance and known defects:
README.md in this folder).

- :func:`load_scores`: Tables 11-16, the long table ``model,optimizer,epochs,task,category,score``
  of all six models (as text, like :func:`evaluation.scores.load_scores_csv`).
- :func:`load_win_rates`: every Figure 4 (0.2 %) and Figure 10 (1 %) cell.
- :func:`paper_model`: the paper's name of a Hugging Face model (``bert-base-uncased`` ->
  ``BERT-base``), or None.

Read through :mod:`importlib.resources`, so they work from an installed package as from a clone.
"""
from __future__ import annotations

import re
from importlib import resources

import pandas as pd

SCORES_FILE = "mteb_scores_all.csv"
WIN_RATES_FILE = "win_rates_all.csv"
MODELS = ("BERT-base", "BERT-large", "DeBERTa-base", "DeBERTa-large", "RoBERTa-base",
          "RoBERTa-large")
# Cells that cannot be recomputed from the tables: BERT-base's AdaTAMW 10-epoch column is
# missing from Table 11 as published.
MISSING_CELLS = {("BERT-base", 10)}


def _open(name: str):
    return resources.files(__name__).joinpath(name).open("r", encoding="utf-8", newline="")


def load_scores() -> pd.DataFrame:
    """The paper's per-dataset scores (Tables 11-16) as the report's long table, all text."""
    with _open(SCORES_FILE) as f:
        return pd.read_csv(f, dtype=str, keep_default_na=False)


def load_win_rates() -> pd.DataFrame:
    """The paper's Figure 4 / 10 cells: model, epochs, threshold, better_pct, similar_or_better_pct."""
    with _open(WIN_RATES_FILE) as f:
        return pd.read_csv(f, dtype={"model": str, "threshold": str})


def paper_model(name: str) -> str | None:
    """The paper's name for a model: ``bert-base-uncased``, ``google-bert/bert-base-cased``,
    ``BERT-base`` -> ``BERT-base``; ``microsoft/deberta-large`` -> ``DeBERTa-large``;
    ``roberta-base`` / ``FacebookAI/roberta-base`` -> ``RoBERTa-base``. Other models (e.g.
    ``deberta-v3-base``, ``bert-base-multilingual``, a MiniLM) -> None: they are not the paper's."""
    base = name.rstrip("/").rsplit("/", 1)[-1].lower()
    match = re.fullmatch(r"(bert|deberta|roberta)-(base|large)(-uncased|-cased)?", base)
    if not match or (match.group(1) != "bert" and match.group(3)):
        return None
    family = {"bert": "BERT", "deberta": "DeBERTa", "roberta": "RoBERTa"}[match.group(1)]
    return f"{family}-{match.group(2)}"
