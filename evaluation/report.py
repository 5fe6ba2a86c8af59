"""The comparison report of AdaTAMW vs AdamW on MTEB (the paper's Figures 3, 4, 10, Tables 11-16).

Usage::

    python -m evaluation.report (--results DIR | --scores_csv FILE) --out DIR
        [--allow_missing] [--geometry_csv FILE] [--paper_tasks | --full_benchmark | --benchmark NAME]
    python -m evaluation.report --paper --out DIR

Any benchmark's results get the same report: win / similar rates and the sign test, Figure 3
over the categories (task types) the benchmark has (none drawn empty), per-dataset tables. The
report states the benchmark (the input's ``benchmark`` column, or ``--benchmark NAME``, which
also requires all of that benchmark's tasks) and each task's data revision, refuses a table
holding two benchmarks, and puts the paper's cells beside only the paper's MTEB(eng, v1).

``--results DIR`` reads a sweep's evaluation output through
``evaluation.collect.collect_scores``; ``--scores_csv FILE`` reads the long CSV
``model,optimizer,epochs,task,category,score`` (scores in percent). A ``geometry.csv`` in
DIR (or ``--geometry_csv``) adds the embedding-geometry section. ``--paper`` reads the paper's
own Tables 11-16 (``evaluation.paper``) and so recomputes its Figures 3, 4 and 10.

Writes into ``--out`` (each file atomically, temp file + ``os.replace``): ``report.md``,
``win_rates.csv`` (Figures 4 and 10, the columns of ``evaluation/paper/win_rates_all.csv``),
``win_rates_stats.csv`` (counts and sign-test p), ``category_improvement.csv`` (Figure 3),
``per_dataset_tables.md`` (Tables 11-16), ``figures.json`` (every figure's data),
``scores_compared.csv`` and PNGs ``figure3_category_improvement.png``,
``figure4_win_rates_0.2pct.png``, ``figure10_win_rates_1pct.png`` (and ``geometry.png``).
Models that are the paper's (``bert-base-uncased`` -> BERT-base, ...) also get
``paper_comparison.csv`` and a report section: each cell beside the paper's.

``build_report`` is the same in-process.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from common.files import atomic_write, atomic_write_text
from evaluation import paper
from evaluation.categories import category_improvement, category_order
from evaluation.code_path import code_path_section, split_code_path_checks
from evaluation.figures import category_figure, geometry_figure, win_rate_figure
from evaluation.scores import (
    IDENTITY_COLUMNS,
    IDENTITY_LABELS,
    MTEB_ENG_V1_TASKS,
    PAPER_BENCHMARK,
    PAPER_TASKS,
    TASK_VERSION_COLUMN,
    ScoreTableError,
    load_geometry_csv,
    load_scores_csv,
    table_benchmarks,
    validate_geometry,
    validate_scores,
)
from evaluation.tables import per_dataset_tables
from evaluation.win_rates import THRESHOLDS, paired_scores, win_rate_stats, win_rates

FIGURE_FILES = {"0.2%": "figure4_win_rates_0.2pct.png", "1%": "figure10_win_rates_1pct.png"}


# ---------------------------------------------------------------- atomic output


def _write_text(path: Path, text: str) -> Path:
    return atomic_write_text(path, text)


def _write_csv(path: Path, df: pd.DataFrame) -> Path:
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def _write_png(path: Path, figure) -> Path:
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))


def _records(df: pd.DataFrame) -> list[dict]:
    """DataFrame rows as JSON-safe dicts (NaN -> null)."""
    rows = df.to_dict(orient="records")
    return [
        {
            k: (None if isinstance(v, float) and math.isnan(v) else v.item() if hasattr(v, "item") else v)
            for k, v in r.items()
        }
        for r in rows
    ]


# ---------------------------------------------------------------- Markdown


def _p(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3g}"


def _md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _win_rate_section(stats: pd.DataFrame, label: str) -> str:
    t, figure = THRESHOLDS[label]
    cells = stats[stats["threshold"] == label]
    table = _md_table(
        [
            "Model",
            "Epochs",
            "Better %",
            "Similar or better %",
            "Datasets",
            "Wins / losses (not similar)",
            "Sign test p",
        ],
        [
            [
                r.model,
                r.epochs,
                r.better_pct,
                r.similar_or_better_pct,
                r.n_datasets,
                f"{r.sign_test_wins} / {r.sign_test_losses}",
                _p(r.sign_test_p),
            ]
            for r in cells.itertuples()
        ],
    )
    return (
        f"## {figure}: win rates, similar within {label} of the higher score\n\n"
        f"![{figure}]({FIGURE_FILES[label]})\n\n"
        f"Better: AdaTAMW >= AdamW. Similar: |a - b| < {t} * max(a, b). The sign test "
        f"counts AdaTAMW wins vs losses over the datasets that are not similar "
        f"(two-sided exact binomial, p = 0.5).\n\n{table}\n"
    )


def _category_section(improvement: pd.DataFrame) -> str:
    categories = category_order(improvement["category"])
    grid = improvement.pivot(index=["model", "size", "epochs"], columns="category", values="percent").reindex(
        columns=categories
    )
    rows = [
        [m, s, e] + ["n/a" if pd.isna(v) else f"{v:+.2f}" for v in vals]
        for (m, s, e), vals in zip(grid.index, grid.to_numpy())
    ]
    return (
        "## Figure 3: improvement of category means (%)\n\n"
        "![Figure 3](figure3_category_improvement.png)\n\n"
        "100 * (mean_cat(AdaTAMW) - mean_cat(AdamW)) / mean_cat(AdamW).\n\n"
        + _md_table(["Model", "Size", "Epochs"] + categories, rows)
        + "\n"
    )


def _geometry_section(geometry: pd.DataFrame, source: str) -> str:
    cols = list(geometry.columns)
    rows = [
        [f"{v:.4g}" if isinstance(v, float) else v for v in r]
        for r in geometry.sort_values(["model", "epochs", "optimizer"]).itertuples(index=False)
    ]
    return (
        f"## Embedding geometry\n\nSource: `{source}`.\n\n![Geometry](geometry.png)\n\n"
        + _md_table(cols, rows)
        + "\n"
    )


def _inputs_section(source: str, scores: pd.DataFrame, expected_tasks, benchmark: str | None) -> str:
    names = {
        None: "the union of tasks seen for each model",
        "mteb_eng_v1": "the 56 datasets of MTEB(eng, v1)",
        "paper": "the paper's 56 datasets (CQADupstackTexRetrieval)",
    }
    expected = (
        names.get(expected_tasks, "a given task list")
        if expected_tasks is None or isinstance(expected_tasks, str)
        else f"the {len(expected_tasks)} datasets of {benchmark}"
        if benchmark
        else "a given task list"
    )
    models = ", ".join(sorted(scores["model"].unique()))
    epochs = ", ".join(str(e) for e in sorted(scores["epochs"].unique()))
    return (
        f"## Inputs\n\n- Scores: `{source}`\n- Models: {models}\n- Epochs: {epochs}\n"
        f"- Datasets compared: {scores['task'].nunique()} "
        f"(expected task set: {expected})\n- Comparison: AdaTAMW vs AdamW\n"
    )


def _paper_comparison(cells: pd.DataFrame, out: Path, files: dict) -> str:
    """Each cell beside the paper's (``paper_comparison.csv``) when a model is the paper's;
    returns the report section ("" when none is)."""
    comparison = paper.compare_with_paper(cells)
    if not comparison.empty:
        files["paper_comparison"] = _write_csv(out / "paper_comparison.csv", comparison)
    return paper.comparison_section(comparison)


def _sources_section(source: str, scores: pd.DataFrame) -> str:
    """Where every compared cell comes from: base weights, training data, evaluation settings."""
    columns = [c for c in IDENTITY_COLUMNS if c in scores.columns]
    cells = scores.drop_duplicates(["model", "optimizer", "epochs"]).sort_values(
        ["model", "epochs", "optimizer"]
    )
    if not columns:
        return (
            f"## Sources of the cells\n\nEvery cell is read from `{source}`, which records no "
            f"provenance (base weights, training data) or evaluation settings.\n"
        )

    def short(column: str, value: str) -> str:
        return value[:12] if column in ("base_weights", "data_fingerprint") and value else value or "-"

    rows = [
        [r["model"], r["optimizer"], r["epochs"]] + [short(c, r[c]) for c in columns]
        for _, r in cells.iterrows()
    ]
    return (
        f"## Sources of the cells\n\nScores: `{source}`. Each cell's base model and weights "
        f"(sha256, first 12 hex digits), training data and fingerprint, and evaluation settings; "
        f"'-' where the input does not record it. The two arms of each comparison agree on every "
        f"recorded value (checked).\n\n"
        + _md_table(["Model", "Optimizer", "Epochs"] + [IDENTITY_LABELS[c] for c in columns], rows)
        + "\n"
    )


def _versions_section(benchmark: str | None, scores: pd.DataFrame) -> str:
    """Which benchmark, and which version of each task (its name, e.g. ``.v2``, and data revision)."""
    said = (
        f"**{benchmark}**"
        if benchmark
        else "not recorded in the input (a CSV without a `benchmark` column; `evaluation.collect` writes one)"
    )
    if TASK_VERSION_COLUMN in scores.columns:
        revisions = scores.groupby("task")[TASK_VERSION_COLUMN].apply(
            lambda v: ", ".join(sorted(set(v) - {""})) or "-"
        )
    else:
        revisions = pd.Series(dtype=str)
    categories = scores.drop_duplicates("task").set_index("task")["category"]
    rows = [
        [task, categories[task], revisions.get(task, "-")] for task in sorted(categories.index, key=str.lower)
    ]
    return (
        f"## Benchmark and task versions\n\nBenchmark: {said}. A task's version is its name "
        f"(mteb marks a revised task `.v2`, `.v3`) and the data revision mteb recorded in its "
        f"result; both arms of every comparison were scored on the same revision (checked).\n\n"
        + _md_table(["Task", "Category", "Data revision"], rows)
        + "\n"
    )


def _list_section(title: str, items: list[str]) -> str:
    return f"## {title}\n\n" + "\n".join(f"- {i}" for i in items) + "\n" if items else ""


def _task_versions(scores: pd.DataFrame) -> dict[str, list[str]]:
    """Task -> the data revisions its results record (empty when the input has none)."""
    if TASK_VERSION_COLUMN not in scores.columns:
        return {}
    return {task: sorted(set(g) - {""}) for task, g in scores.groupby("task")[TASK_VERSION_COLUMN]}


# ---------------------------------------------------------------- API


def _benchmark_task_names(benchmark: str | None) -> set[str] | None:
    """The task names of an mteb benchmark, None for the offline suite or a name mteb lacks.
    mteb is imported here, only when a report names a benchmark, not for every CSV."""
    if not benchmark or benchmark == PAPER_BENCHMARK:
        return None
    from evaluation.tasks import UnknownBenchmarkError, benchmark_task_types

    try:
        return set(benchmark_task_types(benchmark))
    except UnknownBenchmarkError:
        return None


def report_benchmark(scores_df: pd.DataFrame, benchmark: str | None = None) -> str | None:
    """The benchmark the report covers: the one the table records, or the one asked for.

    Raises:
        ScoreTableError: the table records two benchmarks, or another one than ``benchmark``.
    """
    recorded = table_benchmarks(scores_df)
    if len(recorded) > 1 or (benchmark and recorded and recorded != [benchmark]):
        asked = f" (--benchmark {benchmark!r} was asked for)" if benchmark and len(recorded) == 1 else ""
        raise ScoreTableError(
            f"score table: it holds results of {' and '.join(recorded)}{asked}; a report covers one "
            f"benchmark. Report each benchmark's results on their own (or pass the benchmark they are of)."
        )
    return recorded[0] if recorded else benchmark


def _is_papers(benchmark: str | None, tasks) -> bool:
    """The paper's cells belong beside results of its MTEB(eng, v1) only (an unrecorded benchmark:
    when every task is one of the paper's datasets)."""
    if benchmark is not None:
        return benchmark == PAPER_BENCHMARK
    return set(tasks) <= set(MTEB_ENG_V1_TASKS) | set(PAPER_TASKS)


def build_report(
    scores_df: pd.DataFrame,
    out_dir,
    geometry_df: pd.DataFrame | None = None,
    allow_missing: bool = False,
    expected_tasks=None,
    source: str = "in-memory DataFrame",
    geometry_source: str = "in-memory DataFrame",
    benchmark: str | None = None,
) -> dict:
    """Validate the long score table and write the whole report into out_dir.

    ``benchmark``: the benchmark the scores are of when the table does not record it (a table
    that records another one is refused). Returns a dict with the DataFrames (win_rates,
    win_rate_stats, category_improvement, pairs), the benchmark, the notes and dropped items,
    and the written file paths. Raises ScoreTableError (a ValueError) naming the offending rows
    when the input is unusable.
    """
    benchmark = report_benchmark(scores_df, benchmark)
    checked = validate_scores(
        scores_df,
        expected_tasks=expected_tasks,
        allow_missing=allow_missing,
        benchmark_tasks=_benchmark_task_names(benchmark),
    )
    geometry = validate_geometry(geometry_df) if geometry_df is not None else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # mock / tiny tasks only exercise code: listed on their own, outside every comparison
    # (evaluation.code_path)
    pairs, code_path_checks, code_path_notes = split_code_path_checks(paired_scores(checked.scores))
    compared = checked.scores[checked.scores["task"].isin(set(pairs["task"]))]
    notes = checked.notes + code_path_notes
    stats = win_rate_stats(pairs)
    cells = win_rates(stats)
    papers = _is_papers(benchmark, checked.scores["task"])
    if not papers and not paper.compare_with_paper(cells).empty:  # one of the paper's models
        notes.append(
            f"The paper's cells are not shown beside these: they are {PAPER_BENCHMARK} scores "
            f"and these are {benchmark or 'of other tasks'}."
        )
    on = benchmark or "MTEB"
    improvement = category_improvement(pairs)
    tables = per_dataset_tables(pairs)

    files = {
        "win_rates": _write_csv(out / "win_rates.csv", cells),
        "win_rates_stats": _write_csv(out / "win_rates_stats.csv", stats),
        "category_improvement": _write_csv(out / "category_improvement.csv", improvement),
        "scores_compared": _write_csv(out / "scores_compared.csv", compared),
        "figure3": _write_png(
            out / "figure3_category_improvement.png", category_figure(improvement, benchmark=benchmark)
        ),
    }
    for label, (_, figure) in THRESHOLDS.items():
        title = f"{figure}: AdaTAMW vs AdamW on {on}, similar within {label} of the higher score"
        files[figure.lower().replace(" ", "")] = _write_png(
            out / FIGURE_FILES[label], win_rate_figure(cells[cells["threshold"] == label], title)
        )
    tables_md = "\n\n".join(f"### {m}\n\n{t}" for m, t in tables.items())
    files["per_dataset_tables"] = _write_text(
        out / "per_dataset_tables.md", "# Per-dataset scores (Tables 11-16)\n\n" + tables_md + "\n"
    )
    if geometry is not None:
        files["geometry_png"] = _write_png(out / "geometry.png", geometry_figure(geometry))
        files["geometry_csv"] = _write_csv(out / "geometry.csv", geometry)

    figures = {
        "inputs": {
            "scores": source,
            "benchmark": benchmark,
            "task_versions": _task_versions(compared),
            "geometry": geometry_source if geometry is not None else None,
            "allow_missing": allow_missing,
            "expected_tasks": expected_tasks
            if isinstance(expected_tasks, (str, type(None)))
            else sorted(expected_tasks),
        },
        "figure_3": _records(improvement),
        "figure_4": _records(stats[stats["threshold"] == "0.2%"]),
        "figure_10": _records(stats[stats["threshold"] == "1%"]),
        "per_dataset": _records(pairs),
        "code_path_checks": _records(code_path_checks),
        "geometry": _records(geometry) if geometry is not None else None,
        "notes": notes,
        "dropped": checked.dropped,
    }
    files["figures_json"] = _write_text(out / "figures.json", json.dumps(figures, indent=1) + "\n")

    sections = [
        f"# AdaTAMW vs AdamW on {on}: comparison report\n\n"
        "Reproduces the layout of Torque-Aware Momentum (arXiv 2412.18790): Figure 3, "
        "Figure 4, Figure 10 and the per-dataset Tables 11-16.\n",
        _inputs_section(source, compared, expected_tasks, benchmark),
        _versions_section(benchmark, compared),
        _sources_section(source, checked.scores),
        _list_section("Dropped by --allow_missing (the report covers the rest)", checked.dropped),
        _list_section("Notes", notes),
        *(_win_rate_section(stats, label) for label in THRESHOLDS),
        _paper_comparison(cells, out, files) if papers else "",
        _category_section(improvement),
        code_path_section(code_path_checks, pairs),
        _geometry_section(geometry, geometry_source) if geometry is not None else "",
        "## Per-dataset scores (Tables 11-16)\n\nThe better score of each pair is bold.\n\n"
        + tables_md
        + "\n",
    ]
    files["report"] = _write_text(out / "report.md", "\n".join(s for s in sections if s))
    return {
        "out_dir": out,
        "files": files,
        "win_rates": cells,
        "win_rate_stats": stats,
        "benchmark": benchmark,
        "category_improvement": improvement,
        "pairs": pairs,
        "notes": notes,
        "dropped": checked.dropped,
        "code_path_checks": code_path_checks,
    }


# ---------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.report",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--results", type=Path, help="a sweep's evaluation output directory")
    src.add_argument(
        "--scores_csv", type=Path, help="long CSV model,optimizer,epochs,task,category,score (percent)"
    )
    src.add_argument(
        "--paper",
        action="store_true",
        help="the paper's own Tables 11-16 (bundled): recompute Figures 3, 4, 10",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--allow_missing",
        action="store_true",
        help="report on the tasks every compared cell shares; list what was dropped",
    )
    p.add_argument(
        "--geometry_csv", type=Path, help="model,optimizer,epochs,iso,mu_norm,mean_norm,mu_ratio,rho,kappa"
    )
    tasks = p.add_mutually_exclusive_group()
    tasks.add_argument(
        "--paper_tasks", action="store_true", help="require the paper's 56 datasets (CQADupstackTexRetrieval)"
    )
    tasks.add_argument(
        "--full_benchmark", action="store_true", help="require the 56 datasets of MTEB(eng, v1)"
    )
    p.add_argument(
        "--benchmark",
        metavar="NAME",
        help="the mteb benchmark the scores are of (e.g. 'MTEB(eng, v2)'): require all of "
        "its tasks; refused if the scores record another one (default: the one they record)",
    )
    return p


def _requested(args) -> tuple[str | None, object]:
    """(benchmark, expected task set) that the task flags ask for (None, None: whatever the input holds)."""
    if args.benchmark is None:
        return (
            (PAPER_BENCHMARK, "paper" if args.paper_tasks else "mteb_eng_v1")
            if args.paper_tasks or args.full_benchmark
            else (None, None)
        )
    from evaluation.tasks import UnknownBenchmarkError, benchmark_name, benchmark_task_types

    try:
        name = benchmark_name(args.benchmark)
        if name == PAPER_BENCHMARK:
            return name, "paper" if args.paper_tasks else "mteb_eng_v1"
        if args.paper_tasks or args.full_benchmark:
            raise ScoreTableError(
                f"--paper_tasks / --full_benchmark are the paper's {PAPER_BENCHMARK}; "
                f"--benchmark {name!r} is another one. Drop one of them."
            )
        return name, set(benchmark_task_types(name))
    except UnknownBenchmarkError as err:
        raise ScoreTableError(str(err)) from None


def _load_results(results: Path) -> pd.DataFrame:
    if not results.is_dir():
        raise ScoreTableError(f"--results {results} is not a directory")
    try:
        from evaluation.collect import collect_scores
    except ImportError as err:
        raise ScoreTableError(
            f"--results needs evaluation.collect.collect_scores ({err}); "
            f"pass the long CSV with --scores_csv instead"
        ) from err
    try:
        scores = collect_scores(results)
    except (FileNotFoundError, ValueError) as err:
        raise ScoreTableError(f"--results {results}: {err}") from err
    if not isinstance(scores, pd.DataFrame):
        raise ScoreTableError(f"collect_scores({results}) returned {type(scores).__name__}, not a DataFrame")
    return scores


def _paper_figures(args) -> int:
    """``--paper``: the report on the paper's own tables, all six models. BERT-base's 10-epoch
    cells cannot be recomputed (Table 11 lacks that AdaTAMW column): reported, not an error."""
    if args.results or args.geometry_csv or args.allow_missing or args.full_benchmark or args.benchmark:
        raise ScoreTableError(
            "--paper reads the paper's own tables; drop --geometry_csv, "
            "--allow_missing, --full_benchmark and --benchmark"
        )
    result = build_report(
        paper.load_scores(),
        args.out,
        allow_missing=True,
        expected_tasks="paper",
        benchmark=PAPER_BENCHMARK,
        source="the paper's Tables 11-16 (evaluation/paper/mteb_scores_all.csv)",
    )
    comparison = pd.read_csv(result["files"]["paper_comparison"])
    print(comparison.drop(columns="paper_model").to_string(index=False))
    print(f"report written to {result['files']['report']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.paper:
            return _paper_figures(args)
        benchmark, expected = _requested(args)
        if args.results is not None:
            scores, source = _load_results(args.results), str(args.results)
            found = args.results / "geometry.csv"
        else:
            scores, source = load_scores_csv(args.scores_csv), str(args.scores_csv)
            found = None
        geometry_path = args.geometry_csv or (found if found is not None and found.is_file() else None)
        geometry = load_geometry_csv(geometry_path) if geometry_path else None
        result = build_report(
            scores,
            args.out,
            geometry_df=geometry,
            allow_missing=args.allow_missing,
            expected_tasks=expected,
            source=source,
            geometry_source=str(geometry_path),
            benchmark=benchmark,
        )
    except ScoreTableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in result["dropped"]:
        print(f"dropped: {line}", file=sys.stderr)
    print(result["win_rates"].to_string(index=False))
    print(f"report written to {result['files']['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
