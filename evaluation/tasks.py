"""Task selection: any mteb benchmark by name (default the paper's MTEB(eng, v1)), the paper's
variant of it, and the offline suite.

The real run and the offline suite go through the same evaluation code; only the
list of task objects returned here differs. :func:`benchmark_tasks` is the one place that
turns a benchmark name into mteb task objects (run_mteb, the report and the cache filling
call it).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from functools import cache

import mteb
from mteb.abstasks.abstask import AbsTask

from evaluation.scores import PAPER_BENCHMARK, PAPER_SWAP

# The paper's benchmark (arXiv 2412.18790, 56 datasets) is the default everywhere, so that
# reproduction needs no flag; mteb recommends MTEB(eng, v2) today.
DEFAULT_BENCHMARK = PAPER_BENCHMARK

# What the offline suite is called where a benchmark name is shown.
OFFLINE_SUITE_LABEL = "offline suite"
# Suite names of MTEB(eng, v1) kept from before --benchmark (they are part of the settings hash
# of every existing result, so they must not change); any other benchmark's suite is its name.
_V1_SUITES = {"mteb_eng_v1": False, "paper": True}

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


class UnknownBenchmarkError(ValueError):
    """A benchmark name that mteb does not know, or a flag that does not fit the benchmark."""


@cache
def get_benchmark(name: str = DEFAULT_BENCHMARK):
    """mteb's ``Benchmark`` called ``name`` (any name or alias ``mteb.get_benchmark`` knows).

    Raises:
        UnknownBenchmarkError: mteb does not know the name; the message has mteb's close matches
            and how to list every name.
    """
    try:
        return mteb.get_benchmark(name)
    except (KeyError, ValueError) as err:
        raise UnknownBenchmarkError(
            f"Unknown benchmark {name!r} ({str(err).strip(chr(34)).rstrip('.')}). List the names with "
            f'python -c "import mteb; print([b.name for b in mteb.get_benchmarks()])"; '
            f"the paper's is {PAPER_BENCHMARK!r}, mteb recommends 'MTEB(eng, v2)'."
        ) from None


def benchmark_name(name: str = DEFAULT_BENCHMARK) -> str:
    """The canonical name of a benchmark (an alias resolved)."""
    return get_benchmark(name).name


def is_paper_benchmark(name: str) -> bool:
    """True for the paper's MTEB(eng, v1) (under any of its aliases)."""
    return benchmark_name(name) == PAPER_BENCHMARK


def benchmark_tasks(name: str = DEFAULT_BENCHMARK, paper_tasks: bool = False) -> list[AbsTask]:
    """The task objects of the mteb benchmark ``name``, with the benchmark's subsets and splits
    (e.g. the English subsets of a multilingual task), in the benchmark's order.

    ``paper_tasks`` (MTEB(eng, v1) only) replaces CQADupstackRetrieval in place by
    CQADupstackTexRetrieval, as in the paper's tables.

    Raises:
        UnknownBenchmarkError: an unknown name, or ``paper_tasks`` with another benchmark.
    """
    tasks = list(get_benchmark(name).tasks)
    if not paper_tasks:
        return tasks
    if not is_paper_benchmark(name):
        raise UnknownBenchmarkError(
            f"--paper_tasks swaps CQADupstackRetrieval for CQADupstackTexRetrieval in the paper's "
            f"{PAPER_BENCHMARK}; {benchmark_name(name)!r} is another benchmark. Drop --paper_tasks, "
            f"or pass --benchmark {PAPER_BENCHMARK!r}."
        )
    return [
        mteb.get_task(PAPER_SWAP[t.metadata.name], languages=["eng"], eval_splits=["test"])
        if t.metadata.name in PAPER_SWAP
        else t
        for t in tasks
    ]


def benchmark_task_types(name: str = DEFAULT_BENCHMARK, paper_tasks: bool = False) -> dict[str, str]:
    """Task name -> MTEB category (``metadata.type``) of every task of a benchmark."""
    return {t.metadata.name: t.metadata.type for t in benchmark_tasks(name, paper_tasks)}


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
            raise ImportError(
                f"mteb's mock task {name} was not found; the installed mteb ({mteb.__version__}) "
                "differs from the one this suite was written for (2.x)."
            )
        mocks.append(cls())
    return mocks + [cls() for cls in (*LOCAL_TASK_CLASSES, *HUMAN_JUDGED_TASK_CLASSES)]


SUITES = ("mteb_eng_v1", "paper", "offline")  # the fixed suite names; any other benchmark's suite is its name


def suite_name(
    paper_tasks: bool = False, offline_suite: bool = False, *, benchmark: str = DEFAULT_BENCHMARK
) -> str:
    """The suite a run's flags select (part of a result's identity): ``offline``, ``paper`` or
    ``mteb_eng_v1`` for the paper's benchmark (the names results had before ``--benchmark``),
    else the benchmark's canonical name, e.g. ``MTEB(eng, v2)``.

    Raises:
        UnknownBenchmarkError: an unknown benchmark, ``paper_tasks`` with another benchmark than
            the paper's, or ``offline_suite`` with a benchmark other than the default.
    """
    if offline_suite:
        if benchmark_name(benchmark) != DEFAULT_BENCHMARK:
            raise UnknownBenchmarkError(
                "--offline_suite runs its own tasks instead of a benchmark; "
                f"drop --benchmark {benchmark!r} or --offline_suite."
            )
        return "offline"
    if is_paper_benchmark(benchmark):
        return "paper" if paper_tasks else "mteb_eng_v1"
    benchmark_tasks(benchmark, paper_tasks)  # refuses --paper_tasks with another benchmark
    return benchmark_name(benchmark)


def suite_benchmark(suite: str) -> str:
    """The benchmark a suite name belongs to: the paper's for ``mteb_eng_v1`` / ``paper``,
    ``offline suite`` for ``offline``, else the suite itself (a benchmark's name)."""
    if suite in _V1_SUITES:
        return PAPER_BENCHMARK
    return OFFLINE_SUITE_LABEL if suite == "offline" else suite


def suite_tasks(
    *, paper_tasks: bool = False, offline_suite: bool = False, benchmark: str = DEFAULT_BENCHMARK
) -> list[AbsTask]:
    """The full task list of the chosen suite."""
    return offline_suite_tasks() if offline_suite else benchmark_tasks(benchmark, paper_tasks)


@cache
def tasks_of_suite(suite: str) -> dict[str, AbsTask]:
    """Task name -> task object of a suite name (:func:`suite_name`'s values)."""
    if suite == "offline":
        tasks = offline_suite_tasks()
    else:
        tasks = benchmark_tasks(suite_benchmark(suite), paper_tasks=_V1_SUITES.get(suite, False))
    return {t.metadata.name: t for t in tasks}


def select_tasks(
    names: Sequence[str] | None = None,
    *,
    paper_tasks: bool = False,
    offline_suite: bool = False,
    benchmark: str = DEFAULT_BENCHMARK,
) -> list[AbsTask]:
    """The suite's tasks, or the subset named in ``names`` (in the order given).

    Raises:
        UnknownTaskError: a name is not in the suite; the message names close matches
            and the flag that would include it.
        UnknownBenchmarkError: see :func:`suite_name`.
    """
    suite_name(paper_tasks, offline_suite, benchmark=benchmark)  # the flags fit together
    tasks = suite_tasks(paper_tasks=paper_tasks, offline_suite=offline_suite, benchmark=benchmark)
    if not names:
        return tasks
    by_name = {t.metadata.name: t for t in tasks}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UnknownTaskError(
            _unknown_message(
                unknown, by_name, paper_tasks=paper_tasks, offline_suite=offline_suite, benchmark=benchmark
            )
        )
    return [by_name[n] for n in dict.fromkeys(names)]


def _unknown_message(
    unknown: Iterable[str],
    by_name: dict[str, AbsTask],
    *,
    paper_tasks: bool,
    offline_suite: bool,
    benchmark: str,
) -> str:
    suite = (
        "the offline suite"
        if offline_suite
        else f"{benchmark_name(benchmark)}{' (paper variant)' if paper_tasks else ''}"
    )
    lines = [f"Unknown task name(s) for {suite}:"]
    for name in unknown:
        hint = difflib.get_close_matches(name, list(by_name), n=3)
        extra = ""
        if name in PAPER_SWAP.values() and not paper_tasks and is_paper_benchmark(benchmark):
            extra = " (add --paper_tasks to use it)"
        elif name in PAPER_SWAP and paper_tasks:
            extra = " (it is swapped out by --paper_tasks)"
        elif not offline_suite and name in _offline_names():
            extra = " (add --offline_suite to use it)"
        else:
            holders = [
                b for b in _HINT_BENCHMARKS if b != benchmark_name(benchmark) and name in _benchmark_names(b)
            ]
            if holders:
                extra = f" (it is in {holders[0]}: pass --benchmark {holders[0]!r})"
        lines.append(f"  {name!r}{extra}" + (f"; did you mean {', '.join(hint)}?" if hint else ""))
    lines.append(f"Available: {', '.join(sorted(by_name))}")
    return "\n".join(lines)


# Benchmarks searched for a task name that is not in the selected one (a hint, not a rule).
_HINT_BENCHMARKS = (PAPER_BENCHMARK, "MTEB(eng, v2)")


@cache
def _benchmark_names(name: str) -> frozenset[str]:
    return frozenset(t.metadata.name for t in benchmark_tasks(name))


@cache
def _offline_names() -> frozenset[str]:
    return frozenset(t.metadata.name for t in offline_suite_tasks())


@cache
def known_tasks() -> dict[str, AbsTask]:
    """Every task object the paper's benchmark, its paper variant and the offline suite produce, by name."""
    known: dict[str, AbsTask] = {}
    for suite in SUITES:
        for name, task in tasks_of_suite(suite).items():
            known.setdefault(name, task)
    return known


def lookup_task(name: str, suite: str | None = None) -> AbsTask | None:
    """The task object for a result file's task name, or None if mteb does not know it.

    The task of ``suite`` (the suite the result was run in) comes first, then those of the
    fixed suites, so the subset/split filters of the benchmark (e.g. English-only subsets of
    STS22.v2 in MTEB(eng, v2)) are the ones scores are averaged over.
    """
    try:
        task = tasks_of_suite(suite).get(name) if suite else None
    except UnknownBenchmarkError:  # a benchmark this mteb no longer knows: the task's own filters
        task = None
    if task is None:
        task = known_tasks().get(name)
    if task is not None:
        return task
    try:
        return mteb.get_task(name)
    except (KeyError, ValueError):
        return None
