"""Load and validate the long score table behind the comparison report.

The table is the long CSV of docs/evaluation.md (``model,optimizer,epochs,task,category,score``,
scores in percent), as in ``evaluation/paper/mteb_scores_all.csv`` (the paper's Tables 11
to 16) or as ``evaluation.collect.collect_scores`` returns it for a sweep.

Validation refuses, with an error that names the offending rows or keys and the fix:
missing columns, empty keys, non-integer epochs, unknown optimizer names, non-numeric
scores, duplicate rows, a task filed under two categories, a (model, epochs) without both
AdamW and AdaTAMW, and cells whose task set differs from the expected one (missing or
extra tasks), a table holding two benchmarks (e.g. MTEB(eng, v1) and v2, from the optional
``benchmark`` column), and arms scored on different data revisions of a task (the optional
``dataset_revision`` column). With ``allow_missing`` the comparison is restricted to the tasks every
compared cell of a model has, and everything dropped is listed.

The geometry table (``model,optimizer,epochs,iso,mu_norm,mean_norm,mu_ratio,rho,kappa``)
is validated here too, with the same optimizer and row conventions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

COLUMNS = ["model", "optimizer", "epochs", "task", "category", "score"]
KEY = ["model", "optimizer", "epochs", "task"]
# Optional columns (evaluation.collect with identity_columns=True; a CSV may carry them too):
# what a score is a score of. The two arms of a comparison must agree on every one recorded.
IDENTITY_COLUMNS = [
    "base_model",
    "base_weights",
    "data",
    "data_fingerprint",
    "precision",
    "max_seq_length",
    "pooling",
    "normalize",
    "suite",
    "benchmark",
]
IDENTITY_LABELS = {
    "base_model": "base model",
    "base_weights": "base weights (sha256)",
    "data": "training data",
    "data_fingerprint": "data fingerprint",
    "precision": "evaluation precision",
    "max_seq_length": "max_seq_length",
    "pooling": "pooling",
    "normalize": "normalisation",
    "suite": "task suite",
    "benchmark": "benchmark",
}
# Optional per-row column: the data revision mteb recorded for the task's result (the task's
# version besides its name, e.g. SummEvalSummarization.v2). Both arms must agree per task.
TASK_VERSION_COLUMN = "dataset_revision"
PAPER_BENCHMARK = "MTEB(eng, v1)"  # the benchmark of the paper's tables
BASELINE, CANDIDATE = "AdamW", "AdaTAMW"
COMPARED = (BASELINE, CANDIDATE)

# Lower-cased spelling (also without "_" / "-") -> canonical name. The report compares
# AdaTAMW with AdamW; the other project optimizers may appear in a sweep and are set aside.
_CANONICAL = {
    "AdamW": "AdamW",
    "AdaTAMW": "AdaTAMW",
    "CoupledAdamW": "CoupledAdamW",
    "AdaTAM": "AdaTAM",
    "TAM": "TAM",
}
OPTIMIZER_ALIASES = {k.lower(): v for k, v in _CANONICAL.items()}
OPTIMIZER_ALIASES["coupled_adamw"] = "CoupledAdamW"

CATEGORY_ORDER = [
    "Classification",
    "Clustering",
    "PairClassification",
    "Reranking",
    "Retrieval",
    "STS",
    "Summarization",
]

# MTEB(eng, v1), the 56 datasets the paper scores (mteb.get_benchmark("MTEB(eng, v1)"),
# checked against mteb in tests/test_report.py), by category.
_ENG_V1 = {
    "Classification": [
        "AmazonCounterfactualClassification",
        "AmazonPolarityClassification",
        "AmazonReviewsClassification",
        "Banking77Classification",
        "EmotionClassification",
        "ImdbClassification",
        "MassiveIntentClassification",
        "MassiveScenarioClassification",
        "MTOPDomainClassification",
        "MTOPIntentClassification",
        "ToxicConversationsClassification",
        "TweetSentimentExtractionClassification",
    ],
    "Clustering": [
        "ArxivClusteringP2P",
        "ArxivClusteringS2S",
        "BiorxivClusteringP2P",
        "BiorxivClusteringS2S",
        "MedrxivClusteringP2P",
        "MedrxivClusteringS2S",
        "RedditClustering",
        "RedditClusteringP2P",
        "StackExchangeClustering",
        "StackExchangeClusteringP2P",
        "TwentyNewsgroupsClustering",
    ],
    "PairClassification": ["SprintDuplicateQuestions", "TwitterSemEval2015", "TwitterURLCorpus"],
    "Reranking": ["AskUbuntuDupQuestions", "MindSmallReranking", "SciDocsRR", "StackOverflowDupQuestions"],
    "Retrieval": [
        "ArguAna",
        "ClimateFEVER",
        "CQADupstackRetrieval",
        "DBPedia",
        "FEVER",
        "FiQA2018",
        "HotpotQA",
        "MSMARCO",
        "NFCorpus",
        "NQ",
        "QuoraRetrieval",
        "SCIDOCS",
        "SciFact",
        "Touche2020",
        "TRECCOVID",
    ],
    "STS": [
        "BIOSSES",
        "SICK-R",
        "STS12",
        "STS13",
        "STS14",
        "STS15",
        "STS16",
        "STS17",
        "STS22",
        "STSBenchmark",
    ],
    "Summarization": ["SummEval"],
}
MTEB_ENG_V1_TASKS = {t: c for c, ts in _ENG_V1.items() for t in ts}
#: MTEB(eng, v1)'s aggregate of the 12 CQADupStack forums, and the TeX forum alone.
CQADUPSTACK, CQADUPSTACK_TEX = "CQADupstackRetrieval", "CQADupstackTexRetrieval"
#: The paper's Tables 11-16 list the TeX forum where MTEB(eng, v1) has the aggregate
#: (--paper_tasks): the one swap between the two task sets.
PAPER_SWAP = {CQADUPSTACK: CQADUPSTACK_TEX}
PAPER_TASKS = {PAPER_SWAP.get(t, t): c for t, c in MTEB_ENG_V1_TASKS.items()}
TASK_SETS = {"mteb_eng_v1": MTEB_ENG_V1_TASKS, "paper": PAPER_TASKS}

GEOMETRY_COLUMNS = ["model", "optimizer", "epochs", "iso", "mu_norm", "mean_norm", "mu_ratio", "rho", "kappa"]

_MAX_LISTED = 12  # rows named in one error message before "... and N more"


class ScoreTableError(ValueError):
    """An input table that the report cannot use; the message names the rows and the fix."""


@dataclass
class ValidatedScores:
    """The AdamW / AdaTAMW rows to compare, plus what was set aside and why."""

    scores: pd.DataFrame
    dropped: list[str] = field(default_factory=list)  # what --allow_missing removed
    notes: list[str] = field(default_factory=list)  # everything else worth telling


def _row_names(df: pd.DataFrame, index: Iterable) -> str:
    """Name rows as 'line N (model/optimizer/epochs/task)'; N is the CSV line (header = 1)."""
    index = list(index)
    names = []
    for i in index[:_MAX_LISTED]:
        key = "/".join(str(df.at[i, c]) for c in KEY if c in df.columns)
        names.append(f"line {int(i) + 2} ({key})")
    more = len(index) - _MAX_LISTED
    return "; ".join(names) + (f"; ... and {more} more" if more > 0 else "")


def load_scores_csv(path: str | Path) -> pd.DataFrame:
    """Read the long score CSV as text (validation turns it into numbers, naming bad rows)."""
    path = Path(path)
    if not path.is_file():
        raise ScoreTableError(
            f"score table {path} does not exist; pass the long CSV ({','.join(COLUMNS)}) with --scores_csv"
        )
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def normalise_optimizers(df: pd.DataFrame, table: str = "score table") -> pd.Series:
    """Map optimizer spellings to canonical names; unknown names raise, naming the rows."""
    spelled = df["optimizer"].astype(str).str.strip()
    canon = spelled.str.lower().map(OPTIMIZER_ALIASES)
    bad = canon.isna()
    if bad.any():
        names = sorted(set(spelled[bad]))
        raise ScoreTableError(
            f"{table}: unknown optimizer name(s) {names} in {_row_names(df, df.index[bad])}. "
            f"Known: {sorted(set(OPTIMIZER_ALIASES.values()))} (case-insensitive, e.g. "
            f"'adamw', 'adatamw'); fix the name or drop those rows."
        )
    return canon


def _require_columns(df: pd.DataFrame, columns: list[str], table: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ScoreTableError(
            f"{table}: missing column(s) {missing}; found {list(df.columns)}, "
            f"expected the header {','.join(columns)}"
        )
    if df.empty:
        raise ScoreTableError(f"{table}: no rows")


def _clean_keys(df: pd.DataFrame, keys: list[str], table: str) -> pd.DataFrame:
    """Strip key columns, refuse empty keys and non-integer epochs, naming the rows."""
    df = df.copy()
    for c in keys:
        df[c] = df[c].astype(str).str.strip()
        empty = df[c].isin(["", "nan", "None"])
        if empty.any():
            raise ScoreTableError(f"{table}: empty '{c}' in {_row_names(df, df.index[empty])}")
    epochs = pd.to_numeric(df["epochs"], errors="coerce")
    bad = epochs.isna() | (epochs != epochs.round())
    if bad.any():
        raise ScoreTableError(f"{table}: 'epochs' must be an integer in {_row_names(df, df.index[bad])}")
    df["epochs"] = epochs.astype(int)
    return df


def _numeric(df: pd.DataFrame, column: str, table: str, allow_missing: bool = False) -> pd.Series:
    """Parse a numeric column; text, empty cells, NaN and inf raise, naming the rows.

    With ``allow_missing``, empty cells and NaN are kept as NaN (text and inf still raise).
    """
    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
    if allow_missing:
        missing = raw.isna() | raw.astype(str).str.strip().str.lower().isin(["", "nan", "none"])
        bad &= ~missing.to_numpy(dtype=bool, na_value=True)
    if bad.any():
        shown = ", ".join(repr(v) for v in list(raw[bad])[:_MAX_LISTED])
        raise ScoreTableError(
            f"{table}: non-numeric or non-finite '{column}' ({shown}) in "
            f"{_row_names(df, df.index[bad])}; scores must be numbers in percent"
        )
    return values.astype(float)


def _refuse_duplicates(df: pd.DataFrame, keys: list[str], table: str) -> None:
    dup = df.duplicated(keys, keep=False)
    if dup.any():
        raise ScoreTableError(
            f"{table}: duplicate rows for the same ({', '.join(keys)}) in "
            f"{_row_names(df, df.index[dup])}; keep one row per key"
        )


def _check_categories(df: pd.DataFrame) -> None:
    per_task = df.groupby("task")["category"].unique()
    clash = per_task[per_task.apply(len) > 1]
    if len(clash):
        shown = "; ".join(f"{t}: {sorted(c)}" for t, c in clash.items())
        raise ScoreTableError(
            f"score table: a task is filed under more than one category ({shown}); "
            f"each task needs one category"
        )


def _expected_tasks(df: pd.DataFrame, model: str, expected) -> set[str]:
    """The task set every compared cell of `model` must have (the paper's 56 with --paper_tasks)."""
    if expected is None:
        return set(df.loc[df["model"] == model, "task"])
    if isinstance(expected, str):
        return set(TASK_SETS[expected])
    return set(expected)


def _check_pairs(df: pd.DataFrame, allow_missing: bool, dropped: list[str]) -> pd.DataFrame:
    """Every (model, epochs) needs both AdamW and AdaTAMW; otherwise refuse or drop it."""
    present = df.groupby(["model", "epochs"])["optimizer"].unique()
    lone = {k: sorted(v) for k, v in present.items() if set(v) != set(COMPARED)}
    if not lone:
        return df
    shown = "; ".join(f"{m} {e} epochs has only {v}" for (m, e), v in lone.items())
    if len(lone) == len(present):
        raise ScoreTableError(
            f"score table: no (model, epochs) has both AdamW and AdaTAMW "
            f"({shown}); the report compares AdaTAMW with AdamW"
        )
    if not allow_missing:
        raise ScoreTableError(
            f"score table: missing optimizer runs: {shown}. Add the missing "
            f"runs, or pass --allow_missing to report without those cells"
        )
    dropped.append(f"(model, epochs) without both optimizers: {shown}")
    keep = ~df.set_index(["model", "epochs"]).index.isin(list(lone))
    return df[keep]


def _check_task_sets(df: pd.DataFrame, expected, allow_missing: bool, dropped: list[str]) -> pd.DataFrame:
    """Refuse (or, with allow_missing, intersect) cells whose tasks differ from the expected set."""
    problems, keep_tasks = [], {}
    for model, g in df.groupby("model", sort=False):
        want = _expected_tasks(df, model, expected)
        common = set(want)
        for (opt, ep), cell in g.groupby(["optimizer", "epochs"]):
            have = set(cell["task"])
            missing, extra = sorted(want - have), sorted(have - want)
            if missing:
                problems.append(f"{model}/{opt}/{ep} epochs is missing {len(missing)} task(s): {missing}")
            if extra:
                problems.append(
                    f"{model}/{opt}/{ep} epochs has {len(extra)} task(s) not in the expected set: {extra}"
                )
            common &= have
        keep_tasks[model] = common
    if not problems:
        return df
    hint = ""
    if expected == "mteb_eng_v1" and CQADUPSTACK_TEX in set(df["task"]):
        hint = " (the paper's tables use CQADupstackTexRetrieval: pass --paper_tasks)"
    if not allow_missing:
        raise ScoreTableError(
            "score table: task sets differ between compared cells: "
            + "; ".join(problems)
            + hint
            + ". Re-run the missing tasks, or pass --allow_missing to report "
            "on the tasks all cells share"
        )
    dropped.extend(problems)
    for model, common in keep_tasks.items():
        left_out = sorted(set(df.loc[df["model"] == model, "task"]) - common)
        if left_out:
            dropped.append(
                f"{model}: left out of every comparison of this model: {left_out} "
                f"({len(common)} tasks compared)"
            )
    keep = df.apply(lambda r: r["task"] in keep_tasks[r["model"]], axis=1)
    if not keep.any():
        raise ScoreTableError("score table: no task is shared by all compared cells of any model")
    return df[keep]


def validate_scores(
    df: pd.DataFrame, expected_tasks=None, allow_missing: bool = False, benchmark_tasks=None
) -> ValidatedScores:
    """Validate the long score table and return the AdamW / AdaTAMW rows to compare.

    expected_tasks: None (the union of tasks seen for each model: any suite works as long as
    every compared cell has the same tasks), "mteb_eng_v1" (the 56 datasets of MTEB(eng, v1)),
    "paper" (the same with CQADupstackTexRetrieval, as the paper's tables), or a set of names
    (e.g. another benchmark's tasks). benchmark_tasks: the task names of the benchmark the
    table records (its ``benchmark`` column), for the note on a partial run.
    """
    if isinstance(expected_tasks, str) and expected_tasks not in TASK_SETS:
        raise ValueError(
            f"expected_tasks={expected_tasks!r}; use None, a set of task names, or one of {sorted(TASK_SETS)}"
        )
    table = "score table"
    _require_columns(df, COLUMNS, table)
    identity = [c for c in IDENTITY_COLUMNS + [TASK_VERSION_COLUMN] if c in df.columns]
    df = _clean_keys(
        df[COLUMNS + identity].reset_index(drop=True),
        ["model", "optimizer", "epochs", "task", "category"],
        table,
    )
    for c in identity:
        df[c] = df[c].fillna("").astype(str).str.strip().replace({"nan": "", "None": "", "<NA>": ""})
    df["optimizer"] = normalise_optimizers(df, table)
    df["score"] = _numeric(df, "score", table)
    _refuse_duplicates(df, KEY, table)
    _check_categories(df)

    notes, dropped = [], []
    others = sorted(set(df["optimizer"]) - set(COMPARED))
    if others:
        notes.append(
            f"Rows of {others} ({int((~df['optimizer'].isin(COMPARED)).sum())} rows) "
            f"are carried in the input but not part of the AdaTAMW vs AdamW figures."
        )
    df = df[df["optimizer"].isin(COMPARED)]
    if df.empty:
        raise ScoreTableError(f"score table: no AdamW or AdaTAMW rows (optimizers found: {others})")
    _refuse_two_cqadupstack(df)
    refuse_two_benchmarks(df)
    notes.extend(check_arms_agree(df))
    check_task_versions_agree(df)
    df = _check_pairs(df, allow_missing, dropped)
    df = _check_task_sets(df, expected_tasks, allow_missing, dropped)
    negative = df[df["score"] < 0]
    if len(negative):
        shown = _row_names(negative, negative.index[:3])
        notes.append(
            f"{len(negative)} negative score(s) (e.g. {shown}): similarity uses "
            f"max(|a|, |b|) and Figure 3 divides by |mean(AdamW)|."
        )
    notes.extend(_coverage_notes(df, expected_tasks, benchmark_tasks))
    return ValidatedScores(df.reset_index(drop=True), dropped, notes)


def _refuse_two_cqadupstack(df: pd.DataFrame) -> None:
    """A cell holding both CQADupstack variants mixes two suites and would count it twice."""
    both = {CQADUPSTACK, CQADUPSTACK_TEX}
    cells = df.groupby(["model", "optimizer", "epochs"])["task"].apply(set)
    mixed = [f"{m}/{o}/{e} epochs" for (m, o, e), tasks in cells.items() if both <= tasks]
    if mixed:
        raise ScoreTableError(
            f"score table: {', '.join(mixed)} ha{'s' if len(mixed) == 1 else 've'} both CQADupstackRetrieval "
            "(MTEB(eng, v1)) and CQADupstackTexRetrieval (the paper's tables): two suites mixed, "
            "CQADupstack would count twice. Keep the rows of one suite "
            "(evaluate each suite into its own folder)."
        )


def table_benchmarks(df: pd.DataFrame) -> list[str]:
    """The benchmarks the table's ``benchmark`` column records (empty: none recorded)."""
    if "benchmark" not in df.columns:
        return []
    return sorted(set(df["benchmark"].fillna("").astype(str).str.strip()) - {"", "nan", "None"})


def refuse_two_benchmarks(df: pd.DataFrame) -> None:
    """Scores of two benchmarks (e.g. MTEB(eng, v1) and MTEB(eng, v2)) never go into one report."""
    found = table_benchmarks(df)
    if len(found) > 1:
        cells = df.groupby("benchmark")["model"].unique()
        shown = "; ".join(f"{b}: {', '.join(sorted(map(str, cells[b])))}" for b in found)
        raise ScoreTableError(
            f"score table: results of {len(found)} benchmarks ({shown}); {' and '.join(found)} differ in "
            f"tasks and task versions, so one report never mixes them. Report each benchmark on its own "
            f"(its own --results folder or CSV)."
        )


def check_task_versions_agree(df: pd.DataFrame) -> None:
    """Refuse a (model, epochs, task) whose two arms were scored on different data revisions."""
    if TASK_VERSION_COLUMN not in df.columns:
        return
    problems = []
    for (model, epochs, task), cell in df.groupby(["model", "epochs", "task"], sort=True):
        values = {opt: set(g[TASK_VERSION_COLUMN]) - {""} for opt, g in cell.groupby("optimizer")}
        base, cand = values.get(BASELINE, set()), values.get(CANDIDATE, set())
        if base and cand and base != cand:
            problems.append(
                f"{model} {epochs} epochs {task}: AdamW {', '.join(sorted(base))} vs "
                f"AdaTAMW {', '.join(sorted(cand))}"
            )
    if problems:
        raise ScoreTableError(
            "score table: the AdamW and AdaTAMW arms were scored on different data revisions "
            "of a task: "
            + "; ".join(problems[:_MAX_LISTED])
            + ". Re-evaluate both arms with the same mteb task versions."
        )


def check_arms_agree(df: pd.DataFrame) -> list[str]:
    """Refuse a (model, epochs) whose AdamW and AdaTAMW arms differ in what they are.

    Compared on every :data:`IDENTITY_COLUMNS` column present: different base weights or
    training data (a stand-in model or text for one arm), or different evaluation settings
    (precision, sequence length, pooling, normalisation, suite) make the score gap mean
    something else than the optimizer. Returns notes for values recorded for one arm only.
    """
    problems, notes = [], []
    columns = [c for c in IDENTITY_COLUMNS if c in df.columns]
    for (model, epochs), cell in df.groupby(["model", "epochs"], sort=True):
        for column in columns:
            values = {opt: sorted(set(g[column]) - {""}) for opt, g in cell.groupby("optimizer")}
            label = IDENTITY_LABELS[column]
            for opt, vals in values.items():
                if len(vals) > 1:
                    problems.append(f"{model} {epochs} epochs {opt} has more than one {label}: {vals}")
            base, cand = values.get(BASELINE, []), values.get(CANDIDATE, [])
            if base and cand and base != cand:
                problems.append(
                    f"{model} {epochs} epochs: {label} differs between the arms: "
                    f"AdamW {', '.join(base)} vs AdaTAMW {', '.join(cand)}"
                )
            elif bool(base) != bool(cand) and (base or cand):
                notes.append(
                    f"{model} {epochs} epochs: {label} is recorded for one arm only "
                    f"({BASELINE if base else CANDIDATE}: {', '.join(base or cand)})."
                )
    if problems:
        raise ScoreTableError(
            "score table: the AdamW and AdaTAMW arms of a comparison must come from the same base "
            "weights and training data and be evaluated under the same settings; "
            + "; ".join(problems)
            + ". Retrain or re-evaluate the differing arm (same --model / data "
            "for the sweep, same --precision / --max_seq_length / suite flags for run_mteb)."
        )
    return notes


def _coverage_notes(df: pd.DataFrame, expected, benchmark_tasks=None) -> list[str]:
    """Say how the compared task set relates to its benchmark's, so a partial run is visible."""
    notes = []
    tasks_by_model = df.groupby("model")["task"].apply(frozenset)
    if tasks_by_model.nunique() > 1:
        notes.append(
            "Models were compared on different task sets: "
            + "; ".join(f"{m}: {len(t)} tasks" for m, t in tasks_by_model.items())
        )
    seen = set(df["task"])
    known = set(MTEB_ENG_V1_TASKS) | set(PAPER_TASKS)
    recorded = table_benchmarks(df)
    if recorded and recorded != [PAPER_BENCHMARK]:  # another benchmark: measured against its own tasks
        outside = sorted(seen - set(benchmark_tasks or seen))
        if outside:
            notes.append(
                f"{len(outside)} task(s) are not tasks of {recorded[0]} as this mteb defines it: {outside}."
            )
        if expected is None and benchmark_tasks is not None and set(benchmark_tasks) - seen:
            missing = sorted(set(benchmark_tasks) - seen)
            notes.append(
                f"Only {len(seen & set(benchmark_tasks))} of the {len(set(benchmark_tasks))} "
                f"{recorded[0]} datasets are present (no model has {missing}); percentages "
                f"are over the datasets present."
            )
    elif expected is None and seen <= known and len(seen) < len(MTEB_ENG_V1_TASKS):
        missing = sorted(
            set(MTEB_ENG_V1_TASKS) - seen - {CQADUPSTACK}
            if CQADUPSTACK_TEX in seen
            else set(MTEB_ENG_V1_TASKS) - seen
        )
        notes.append(
            f"Only {len(seen)} of the 56 MTEB(eng, v1) datasets are present (no model "
            f"has {missing}); percentages are over the datasets present."
        )
    if CQADUPSTACK_TEX in seen:
        notes.append(
            "CQADupstackTexRetrieval stands where MTEB(eng, v1) has CQADupstackRetrieval, "
            "as in the paper's tables."
        )
    return notes


def validate_geometry(df: pd.DataFrame) -> pd.DataFrame:
    """Validate the embedding-geometry table (one row per model, optimizer, epochs)."""
    table = "geometry table"
    _require_columns(df, GEOMETRY_COLUMNS, table)
    df = _clean_keys(df[GEOMETRY_COLUMNS].reset_index(drop=True), ["model", "optimizer", "epochs"], table)
    df["optimizer"] = normalise_optimizers(df, table)
    for c in GEOMETRY_COLUMNS[3:]:
        # rho needs the fine-tuning corpus (evaluation.geometry --corpus); without it it is empty
        df[c] = _numeric(df, c, table, allow_missing=c == "rho")
    _refuse_duplicates(df, ["model", "optimizer", "epochs"], table)
    return df


def load_geometry_csv(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ScoreTableError(f"geometry table {path} does not exist (--geometry_csv)")
    return validate_geometry(pd.read_csv(path, dtype=str, keep_default_na=False))
