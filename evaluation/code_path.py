"""Tasks that only exercise code, kept out of the comparison (win rates, sign test, Figure 3).

mteb's mock tasks (a handful of synthetic examples each) and the project's hand-written tiny
tasks (``evaluation/offline_tasks/data/SOURCE.md``) run the real evaluators offline, but their
scores saturate or tie (two random models tie on most of them; MockSTSTask's Spearman over a
few pairs flips from 100 to -100), so a win over them measures nothing. ``evaluation.report``
lists them as code-path checks, with their scores, and computes the win rates and category
figures over the other tasks: offline, the human-judged ones
(``evaluation/offline_tasks/human_judged.py``); online, the MTEB datasets (none is here).

The names are plain strings so that the report does not import mteb; ``tests`` check that
every mock task of the offline suite (``evaluation.tasks.MOCK_TASK_NAMES``) is listed.
"""

from __future__ import annotations

import pandas as pd

CODE_PATH_CHECKS = frozenset(
    {
        # mteb's mock tasks (mteb/mocks/mock_tasks), one per MTEB(eng, v1) category
        "MockClassificationTask",
        "MockClusteringTask",
        "MockPairClassificationTask",
        "MockRerankingTask",
        "MockRetrievalTask",
        "MockSTSTask",
        "MockSummarizationTask",
        # the hand-written tiny tasks (evaluation/offline_tasks/__init__.py)
        "TinyEnglishSTS",
        "TinyEnglishClassification",
        "TinyEnglishRetrieval",
    }
)


def is_code_path_check(task: str) -> bool:
    """True for a task whose score only shows that the code path runs."""
    return task in CODE_PATH_CHECKS


def split_code_path_checks(pairs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(compared, code-path checks, notes) from paired scores (one row per model, epochs, task).

    When every task is a code-path check nothing would be left to compare: then all of them
    are compared, and the note says that those win rates measure nothing.
    """
    mask = pairs["task"].map(is_code_path_check).astype(bool)
    checks = pairs[mask].reset_index(drop=True)
    if mask.all() and len(pairs):
        return (
            pairs,
            checks,
            [
                "Every task is a code-path check: the win rates and category figures below are over "
                "code-path checks only and measure nothing (add a human-judged task, e.g. SimLex999, "
                "WordSim353, PangLeePolarityClassification)."
            ],
        )
    notes = (
        [
            f"{checks['task'].nunique()} code-path check task(s) left out of the win rates and "
            "category figures (listed in their own section)."
        ]
        if len(checks)
        else []
    )
    return pairs[~mask].reset_index(drop=True), checks, notes


def code_path_section(checks: pd.DataFrame, compared: pd.DataFrame) -> str:
    """Markdown: the code-path checks' scores, AdamW vs AdaTAMW, per model and epochs (``compared``:
    the pairs the comparison used, which are these same checks when nothing else was scored)."""
    if checks.empty:
        return ""
    compared_all = bool(set(checks["task"]) & set(compared["task"]))
    from evaluation.scores import BASELINE, CANDIDATE

    lines = ["| Model | Epochs | Task | Category | AdamW | AdaTAMW |", "|---|---|---|---|---|---|"]
    for r in checks.sort_values(["model", "epochs", "category", "task"]).itertuples(index=False):
        row = r._asdict()
        lines.append(
            f"| {row['model']} | {row['epochs']} | {row['task']} | {row['category']} | "
            f"{row[BASELINE]:.2f} | {row[CANDIDATE]:.2f} |"
        )
    where = (
        "They are also the only tasks, so the sections above are over them (see Notes)."
        if compared_all
        else "They are not in the win rates, the sign test or the category figures above."
    )
    return (
        "## Code-path checks (not a measurement)\n\n"
        "mteb's mock tasks and the hand-written tiny tasks run the real evaluators, but on a handful of "
        f"examples: their scores saturate or tie, and show only that the code path runs. {where}\n\n"
        + "\n".join(lines)
        + "\n"
    )
