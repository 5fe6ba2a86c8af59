"""Task selection: MTEB(eng, v1), the paper's variant, and the offline suite.

The real run and the offline suite go through the same evaluation code; only the
list of task objects returned here differs.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from functools import cache

import mteb
from mteb.abstasks.abstask import AbsTask

from evaluation.scores import PAPER_SWAP

BENCHMARK_NAME = "MTEB(eng, v1)"

# mteb's mock tasks (mteb/mocks/mock_tasks), one per MTEB(eng, v1) category.
MOCK_TASK_NAMES = {
    "Classification": "MockClassificationTask",
    "Clustering": "MockClusteringTask",
    "PairClassification": "MockPairClassificationTask",
    "Reranking": "MockRerankingTask",
    "Retrieval": "MockRetrievalTask",
    "STS": "MockSTSTask",
    "Summarization": "MockSummarizationTask",
}


class UnknownTaskError(ValueError):
    """A requested task name is not part of the selected suite."""


def benchmark_tasks(paper_tasks: bool = False) -> list[AbsTask]:
    """The 56 tasks of MTEB(eng, v1), with their English subsets and splits.

    With ``paper_tasks`` CQADupstackRetrieval is replaced (in place, same position)
    by CQADupstackTexRetrieval, as in the paper's tables.
    """
    tasks = list(mteb.get_benchmark(BENCHMARK_NAME).tasks)
    if not paper_tasks:
        return tasks
    return [
        mteb.get_task(PAPER_SWAP[t.metadata.name], languages=["eng"], eval_splits=["test"])
        if t.metadata.name in PAPER_SWAP
        else t
        for t in tasks
    ]


def offline_suite_tasks() -> list[AbsTask]:
    """mteb's mock tasks for all 7 categories, the project's tiny local English tasks (these ten are
    code-path checks, ``evaluation.code_path``) and the human-judged word-similarity and polarity tasks."""
    from mteb.mocks.mock_tasks import (
        classification,
        clustering,
        pair_classification,
        reranking,
        retrieval,
        sts,
        summarization,
    )

    from evaluation.offline_tasks import LOCAL_TASK_CLASSES
    from evaluation.offline_tasks.human_judged import HUMAN_JUDGED_TASK_CLASSES

    modules = (classification, clustering, pair_classification, reranking, retrieval, sts, summarization)
    mocks = []
    for name in MOCK_TASK_NAMES.values():
        cls = next((getattr(m, name) for m in modules if hasattr(m, name)), None)
        if cls is None:
            raise ImportError(f"mteb's mock task {name} was not found; the installed mteb ({mteb.__version__}) differs from the one this suite was written for (2.x).")
        mocks.append(cls())
    return mocks + [cls() for cls in (*LOCAL_TASK_CLASSES, *HUMAN_JUDGED_TASK_CLASSES)]


def suite_name(paper_tasks: bool = False, offline_suite: bool = False) -> str:
    """The suite a run's flags select: ``offline``, ``paper`` or ``mteb_eng_v1`` (part of a result's identity)."""
    return "offline" if offline_suite else "paper" if paper_tasks else "mteb_eng_v1"


def suite_tasks(*, paper_tasks: bool = False, offline_suite: bool = False) -> list[AbsTask]:
    """The full task list of the chosen suite."""
    return offline_suite_tasks() if offline_suite else benchmark_tasks(paper_tasks)


def select_tasks(
    names: Sequence[str] | None = None,
    *,
    paper_tasks: bool = False,
    offline_suite: bool = False,
) -> list[AbsTask]:
    """The suite's tasks, or the subset named in ``names`` (in the order given).

    Raises:
        UnknownTaskError: a name is not in the suite; the message names close matches
            and the flag that would include it.
    """
    tasks = suite_tasks(paper_tasks=paper_tasks, offline_suite=offline_suite)
    if not names:
        return tasks
    by_name = {t.metadata.name: t for t in tasks}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UnknownTaskError(_unknown_message(unknown, by_name, paper_tasks=paper_tasks, offline_suite=offline_suite))
    return [by_name[n] for n in dict.fromkeys(names)]


def _unknown_message(unknown: Iterable[str], by_name: dict[str, AbsTask], *, paper_tasks: bool, offline_suite: bool) -> str:
    suite = "the offline suite" if offline_suite else f"{BENCHMARK_NAME}{' (paper variant)' if paper_tasks else ''}"
    lines = [f"Unknown task name(s) for {suite}:"]
    for name in unknown:
        hint = difflib.get_close_matches(name, list(by_name), n=3)
        extra = ""
        if name in PAPER_SWAP.values() and not paper_tasks:
            extra = " (add --paper_tasks to use it)"
        elif name in PAPER_SWAP and paper_tasks:
            extra = " (it is swapped out by --paper_tasks)"
        elif not offline_suite and name in _offline_names():
            extra = " (add --offline_suite to use it)"
        lines.append(f"  {name!r}{extra}" + (f"; did you mean {', '.join(hint)}?" if hint else ""))
    lines.append(f"Available: {', '.join(sorted(by_name))}")
    return "\n".join(lines)


@cache
def _offline_names() -> frozenset[str]:
    return frozenset(t.metadata.name for t in offline_suite_tasks())


@cache
def known_tasks() -> dict[str, AbsTask]:
    """Every task object any suite can produce, by name (for reading results back)."""
    known: dict[str, AbsTask] = {}
    for task in benchmark_tasks(False) + benchmark_tasks(True) + offline_suite_tasks():
        known.setdefault(task.metadata.name, task)
    return known


def lookup_task(name: str) -> AbsTask | None:
    """The task object for a result file's task name, or None if mteb does not know it.

    Suite tasks come first so their subset/split filters (e.g. English-only
    subsets in MTEB(eng, v1)) are the ones scores are averaged over.
    """
    task = known_tasks().get(name)
    if task is not None:
        return task
    try:
        return mteb.get_task(name)
    except (KeyError, ValueError):
        return None
