"""Tests of the comparison report (evaluation.report): the paper's Figures 3, 4, 10, Tables 11-16.

The paper's data is the package's own copy (evaluation/paper/, loaded by evaluation.paper).
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import types
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from evaluation import collect, paper, report  # noqa: F401 (collect: imported, never skipped)
from evaluation.categories import model_size
from evaluation.scores import MTEB_ENG_V1_TASKS, ScoreTableError, load_scores_csv, validate_scores
from evaluation.win_rates import round_percent, sign_test_p

REPO = Path(__file__).resolve().parents[1]


VISIBLE = ("BERT-large", "RoBERTa-base")  # the two models these older checks were written for


@pytest.fixture(scope="module")
def paper_scores_csv(tmp_path_factory):
    """BERT-large and RoBERTa-base of the bundled tables, as a CSV file (the CLI's input)."""
    scores = paper.load_scores()
    path = tmp_path_factory.mktemp("paper") / "mteb_scores_visible.csv"
    scores[scores["model"].isin(VISIBLE)].to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def paper_report(tmp_path_factory, paper_scores_csv):
    out = tmp_path_factory.mktemp("paper_report")
    return report.build_report(
        load_scores_csv(paper_scores_csv), out, expected_tasks="paper", source=str(paper_scores_csv)
    )


# ------------------------------------------------------------------ paper reproduction


def test_win_rates_reproduce_paper_figures_4_and_10(paper_report):
    """Every BERT-large / RoBERTa-base cell of the paper's figures within 2 points."""
    expected = paper.load_win_rates()
    expected = expected[expected["model"].isin(VISIBLE)]
    written = pd.read_csv(paper_report["out_dir"] / "win_rates.csv")
    assert list(written.columns) == list(expected.columns)
    keys = ["model", "epochs", "threshold"]
    both = expected.merge(written, on=keys, suffixes=("_paper", "_ours"), how="outer", indicator=True)
    assert (both["_merge"] == "both").all(), both[both["_merge"] != "both"]
    diffs = {}
    for col in ("better_pct", "similar_or_better_pct"):
        both[f"{col}_diff"] = both[f"{col}_ours"] - both[f"{col}_paper"]
        diffs[col] = both[f"{col}_diff"].abs().max()
    print(both.drop(columns="_merge").to_string(index=False))
    print("largest |difference| per column:", diffs)
    # The one known difference: RoBERTa-base, 10 epochs, MedrxivClusteringS2S is 20.46 vs
    # 20.46 in the two-decimal table (counted as better), 89 % vs the paper's 88 %: the raw
    # scores broke the tie the other way. Any cell further off means a wrong definition.
    assert max(diffs.values()) <= 2, both
    # Tighter, since the fixture is fixed: only that tie's cells differ at all (">" instead of
    # ">=" would move RoBERTa-base's 3 and 5 epochs cells too, still within 2 points).
    off = both[(both["better_pct_diff"] != 0) | (both["similar_or_better_pct_diff"] != 0)]
    assert set(zip(off["model"], off["epochs"], off["threshold"])) <= {
        ("RoBERTa-base", 10, "0.2%"),
        ("RoBERTa-base", 10, "1%"),
    }, off


@pytest.fixture(scope="module")
def paper_figures(tmp_path_factory):
    """`python -m evaluation.report --paper`: all six models from the bundled tables."""
    out = tmp_path_factory.mktemp("paper_figures")
    assert report.main(["--paper", "--out", str(out)]) == 0
    return out


def test_bundled_paper_data_has_all_six_models():
    scores = paper.load_scores()
    assert sorted(scores["model"].unique()) == sorted(paper.MODELS)
    assert len(scores) == 1960  # 6 models x 2 optimizers x 3 epochs x 56, less BERT-base's column
    assert scores[(scores["model"] == "BERT-base") & (scores["optimizer"] == "AdaTAMW")][
        "epochs"
    ].unique().tolist() == ["3", "5"]
    assert len(paper.load_win_rates()) == 36


def test_paper_flag_reproduces_figures_4_and_10_for_all_six_models(paper_figures):
    """Every recomputable cell within 2 points of the paper's figures, except the cells the
    data's README documents (DeBERTa-base's table vs its figure; BERT-base 5 epochs' ties)."""
    got = pd.read_csv(paper_figures / "paper_comparison.csv")
    assert len(got) == 36 and set(got["model"]) == set(paper.MODELS)
    missing = got[got["better_pct"].isna()]
    assert set(zip(missing["model"], missing["epochs"])) == {("BERT-base", 10)}
    assert missing["note"].str.startswith("not recomputable").all()
    assert missing["paper_better_pct"].tolist() == [18, 18]  # the published cell is still shown
    done = got.dropna(subset=["better_pct"])
    off = (
        (done["better_pct"] - done["paper_better_pct"])
        .abs()
        .combine((done["similar_or_better_pct"] - done["paper_similar_or_better_pct"]).abs(), max)
    )
    keys = list(zip(done["model"], done["epochs"], done["threshold"]))
    assert {k for k, o in zip(keys, off) if o > 2} == {
        ("DeBERTa-base", 3, "0.2%"),
        ("DeBERTa-base", 3, "1%"),
        ("DeBERTa-base", 5, "0.2%"),
        ("DeBERTa-base", 5, "1%"),
        ("DeBERTa-base", 10, "0.2%"),
        ("BERT-base", 5, "0.2%"),
        ("BERT-base", 5, "1%"),
    }
    assert (done.loc[off > 2, "note"].str.startswith("known difference")).all()
    assert (done.loc[off <= 2, "note"] == "within 2 points of the paper's figure").all()
    # BERT-base, 5 epochs: 30 of 56 datasets better with the table's 4 exact ties as wins;
    # the published 50 % (28) is inside what the ties allow (26-30).
    row = done[(done["model"] == "BERT-base") & (done["epochs"] == 5)].iloc[0]
    assert (row["better_pct"], row["paper_better_pct"]) == (54, 50)
    written = pd.read_csv(paper_figures / "win_rates.csv")
    assert len(written) == 34  # 36 cells less BERT-base 10 epochs
    improvement = pd.read_csv(paper_figures / "category_improvement.csv")
    assert set(improvement["model"]) == set(paper.MODELS)  # Figure 3 for all six models
    md = (paper_figures / "report.md").read_text()
    assert "Beside the paper's Figures 4 and 10" in md and "not recomputable" in md
    for png in (
        "figure3_category_improvement.png",
        "figure4_win_rates_0.2pct.png",
        "figure10_win_rates_1pct.png",
    ):
        assert (paper_figures / png).stat().st_size > 0


def test_users_report_shows_the_papers_cell_beside_each(tmp_path, paper_scores_csv):
    """A model that is one of the paper's, under its Hub name, gets the paper's cells beside."""
    scores = load_scores_csv(paper_scores_csv).replace(
        {"model": {"BERT-large": "bert-large-uncased", "RoBERTa-base": "FacebookAI/roberta-base"}}
    )
    result = report.build_report(scores, tmp_path, expected_tasks="paper")
    got = pd.read_csv(tmp_path / "paper_comparison.csv")
    published = paper.load_win_rates().set_index(["model", "epochs", "threshold"])
    assert len(got) == 12
    for r in got.itertuples():
        cell = published.loc[(r.paper_model, r.epochs, r.threshold)]
        assert r.paper_better_pct == cell["better_pct"]
        assert r.paper_similar_or_better_pct == cell["similar_or_better_pct"]
    assert set(got["paper_model"]) == {"BERT-large", "RoBERTa-base"}
    assert got["note"].isna().all()  # notes are for the paper's own tables only
    md = (tmp_path / "report.md").read_text()
    assert "| bert-large-uncased | 3 | 0.2% | 68 | 68 | 70 | 70 |" in md
    assert "paper_comparison" in result["files"]


def test_no_paper_comparison_for_other_models(tmp_path):
    report.build_report(_suite(), tmp_path)
    assert not (tmp_path / "paper_comparison.csv").exists()
    assert "Beside the paper" not in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(
    "name, expected",
    [
        ("bert-base-uncased", "BERT-base"),
        ("google-bert/bert-large-cased", "BERT-large"),
        ("microsoft/deberta-base", "DeBERTa-base"),
        ("FacebookAI/roberta-large", "RoBERTa-large"),
        ("RoBERTa-base", "RoBERTa-base"),
        ("microsoft/deberta-v3-base", None),
        ("roberta-base-uncased", None),
        ("bert-base-multilingual-cased", None),
        ("minilm-offline", None),
    ],
)
def test_paper_model_names(name, expected):
    assert paper.paper_model(name) == expected


def test_paper_flag_refuses_other_inputs(tmp_path, capsys):
    assert report.main(["--paper", "--out", str(tmp_path), "--allow_missing"]) == 2
    assert "--paper reads the paper's own tables" in capsys.readouterr().err


def test_category_improvement_matches_plain_computation(paper_report, paper_scores_csv):
    """Figure 3 values against a dict-and-loop computation straight from the CSV."""
    sums = defaultdict(float)
    counts = defaultdict(int)
    with open(paper_scores_csv, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["model"], int(row["epochs"]), row["category"], row["optimizer"])
            sums[key] += float(row["score"])
            counts[key] += 1
    expected = {}
    for model, epochs, category, optimizer in sums:
        if optimizer != "AdamW":
            continue
        adamw = sums[(model, epochs, category, "AdamW")] / counts[(model, epochs, category, "AdamW")]
        tam = sums[(model, epochs, category, "AdaTAMW")] / counts[(model, epochs, category, "AdaTAMW")]
        expected[(model, epochs, category)] = 100 * (tam - adamw) / adamw
    with open(paper_report["out_dir"] / "category_improvement.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["model", "size", "category", "epochs", "percent"]
    got = {(r["model"], int(r["epochs"]), r["category"]): float(r["percent"]) for r in rows}
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
    sizes = {r["model"]: r["size"] for r in rows}
    assert sizes == {"BERT-large": "large", "RoBERTa-base": "base"}
    # Spot value by hand: BERT-large, 3 epochs, Summarization (SummEval only).
    assert got[("BERT-large", 3, "Summarization")] == pytest.approx(100 * (30.35 - 30.37) / 30.37, abs=1e-9)


def test_sign_test_counts_and_p(paper_report):
    stats = paper_report["win_rate_stats"]
    for r in stats.itertuples():
        assert r.sign_test_wins + r.sign_test_losses + r.n_similar <= r.n_datasets
        assert 0 <= r.sign_test_p <= 1
    written = pd.read_csv(paper_report["out_dir"] / "win_rates_stats.csv")
    assert "sign_test_p" in written.columns and len(written) == len(stats)
    assert sign_test_p(5, 0) == pytest.approx(2 * 0.5**5)  # exact two-sided binomial
    assert sign_test_p(0, 0) != sign_test_p(0, 0)  # NaN with nothing decided


def test_outputs_exist_pngs_open_and_report_links_them(paper_report):
    out = paper_report["out_dir"]
    md = (out / "report.md").read_text()
    pngs = sorted(out.glob("*.png"))
    assert {p.name for p in pngs} >= {
        "figure3_category_improvement.png",
        "figure4_win_rates_0.2pct.png",
        "figure10_win_rates_1pct.png",
    }
    for png in pngs:
        with Image.open(png) as im:
            im.verify()
        with Image.open(png) as im:
            assert im.size[0] > 100 and im.size[1] > 100
        assert f"]({png.name})" in md
    for name in ("figures.json", "per_dataset_tables.md", "win_rates_stats.csv"):
        assert (out / name).stat().st_size > 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temp files left behind"
    assert "Sign test p" in md and "Figure 3" in md and "### BERT-large" in md


def test_per_dataset_table_bolds_the_better_score(paper_report):
    md = (paper_report["out_dir"] / "per_dataset_tables.md").read_text()
    # Table 12, BERT-large, AmazonCounterfactualClassification: 65.25 / 67.38 at 3 epochs.
    assert "| AmazonCounterfactualClassification | 65.25 | **67.38** |" in md
    # A tie in the two-decimal table bolds both (RoBERTa-base, 3 epochs, NQ: 0.29 / 0.29).
    assert "| NQ | **0.29** | **0.29** |" in md


@pytest.mark.slow
def test_cli_subprocess(tmp_path, paper_report, paper_scores_csv):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "evaluation.report",
            "--scores_csv",
            str(paper_scores_csv),
            "--out",
            str(out),
            "--paper_tasks",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "win_rates.csv").read_text() == (paper_report["out_dir"] / "win_rates.csv").read_text()


@pytest.mark.slow
def test_task_list_matches_mteb():
    mteb = pytest.importorskip("mteb")
    tasks = {t.metadata.name: t.metadata.type for t in mteb.get_benchmark("MTEB(eng, v1)").tasks}
    assert tasks == MTEB_ENG_V1_TASKS


def test_paper_tasks_needed_for_the_paper_table(paper_scores_csv):
    with pytest.raises(ScoreTableError, match="CQADupstackTexRetrieval.*--paper_tasks"):
        validate_scores(load_scores_csv(paper_scores_csv), expected_tasks="mteb_eng_v1")


# ------------------------------------------------------------------ small suite and errors

TASKS = {"MockClassification": "Classification", "MockClustering": "Clustering", "MockSTS": "STS"}


def _suite(optimizers=("adamw", "AdaTAMW"), epochs=(1, 2)) -> pd.DataFrame:
    rows = []
    for i, opt in enumerate(optimizers):
        for e in epochs:
            for j, (task, cat) in enumerate(TASKS.items()):
                rows.append(
                    {
                        "model": "tiny-bert-base",
                        "optimizer": opt,
                        "epochs": str(e),
                        "task": task,
                        "category": cat,
                        "score": str(50 + i + j + e),
                    }
                )
    return pd.DataFrame(rows)


def _cli(tmp_path, df, *extra) -> int:
    path = tmp_path / "scores.csv"
    df.to_csv(path, index=False)
    return report.main(["--scores_csv", str(path), "--out", str(tmp_path / "out"), *extra])


def test_small_suite_union_of_tasks_and_optimizer_names(tmp_path):
    df = pd.concat([_suite(), _suite(optimizers=("coupled_adamw",))], ignore_index=True)
    result = report.build_report(df, tmp_path)
    cells = result["win_rates"]
    assert set(cells["better_pct"]) == {100} and len(cells) == 4
    assert (result["win_rate_stats"]["n_datasets"] == 3).all()
    assert any("CoupledAdamW" in n for n in result["notes"])


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda df: df.drop(index=4), r"tiny-bert-base/AdamW/2 epochs is missing 1 task.*MockClustering"),
        (
            lambda df: pd.concat([df, df.iloc[[7]]], ignore_index=True),
            r"duplicate rows.*line 9 \(tiny-bert-base/AdaTAMW/1/MockClustering\).*line 14",
        ),
        (
            lambda df: df.assign(optimizer=df["optimizer"].where(df.index != 2, "sgd")),
            r"unknown optimizer.*'sgd'.*line 4 \(tiny-bert-base/sgd/1/MockSTS\)",
        ),
        (
            lambda df: df.assign(score=df["score"].where(df.index != 5, "n/a")),
            r"non-numeric.*'n/a'.*line 7 \(tiny-bert-base/AdamW/2/MockSTS\)",
        ),
        (
            lambda df: df[df["optimizer"] != "AdaTAMW"].pipe(
                lambda d: pd.concat([d, _suite(optimizers=("AdaTAMW",), epochs=(1,))])
            ),
            r"missing optimizer runs: tiny-bert-base 2 epochs has only \['AdamW'\]",
        ),
    ],
)
def test_invalid_tables_are_refused_naming_the_rows(tmp_path, capsys, corrupt, message):
    bad = corrupt(_suite())
    with pytest.raises(ScoreTableError, match=message):
        validate_scores(bad.reset_index(drop=True))
    assert _cli(tmp_path, bad) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(message, err), err
    assert not (tmp_path / "out" / "report.md").exists()


def test_allow_missing_reports_on_the_intersection(tmp_path, capsys):
    bad = _suite().drop(index=4)  # AdamW, 2 epochs, MockClustering
    assert _cli(tmp_path, bad, "--allow_missing") == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Dropped by --allow_missing" in md
    assert "tiny-bert-base/AdamW/2 epochs is missing 1 task(s): ['MockClustering']" in md
    assert "tiny-bert-base: left out of every comparison of this model: ['MockClustering']" in md
    assert "dropped:" in capsys.readouterr().err
    stats = pd.read_csv(tmp_path / "out" / "win_rates_stats.csv")
    assert (stats["n_datasets"] == 2).all()  # MockClustering left out for every epochs setting


def test_results_dir_goes_through_evaluation_collect(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    pd.DataFrame(
        [
            {
                "model": "tiny-bert-base",
                "optimizer": o,
                "epochs": e,
                "iso": 0.1 * e,
                "mu_norm": 1.0,
                "mean_norm": 2.0,
                "mu_ratio": 0.5 / e,
                "rho": 0.3,
                "kappa": 3.0,
            }
            for o in ("AdamW", "adatamw")
            for e in (1, 2)
        ]
    ).to_csv(results / "geometry.csv", index=False)
    seen = []
    fake = types.ModuleType("evaluation.collect")
    fake.collect_scores = lambda d, **kwargs: seen.append(Path(d)) or _suite()
    monkeypatch.setitem(sys.modules, "evaluation.collect", fake)
    out = tmp_path / "out"
    assert report.main(["--results", str(results), "--out", str(out)]) == 0
    assert seen == [results]
    md = (out / "report.md").read_text()
    assert "## Embedding geometry" in md and str(results / "geometry.csv") in md
    with Image.open(out / "geometry.png") as im:
        assert im.size[0] > 100
    # Re-running on the same inputs overwrites the derived report in place.
    assert report.main(["--results", str(results), "--out", str(out)]) == 0


def test_geometry_without_corpus_frequencies_is_reported(tmp_path):
    """evaluation.geometry leaves rho empty without --corpus; the report must take that."""
    geometry = tmp_path / "geometry.csv"
    geometry.write_text(
        "model,optimizer,epochs,iso,mu_norm,mean_norm,mu_ratio,rho,kappa\n"
        + "".join(
            f"tiny-bert-base,{o},{e},0.8,0.1,1.0,0.1,,0.06\n" for o in ("AdamW", "AdaTAMW") for e in (1, 2)
        )
    )
    assert _cli(tmp_path, _suite(), "--geometry_csv", str(geometry)) == 0
    assert "## Embedding geometry" in (tmp_path / "out" / "report.md").read_text()
    geometry.write_text(geometry.read_text().replace(",,0.06", ",abc,0.06", 1))
    assert _cli(tmp_path, _suite(), "--geometry_csv", str(geometry)) == 2


@pytest.mark.parametrize(
    "name, size",
    [
        ("BERT-large", "large"),
        ("bert-base-uncased", "base"),
        ("runs/roberta-large/best", "n/a"),
        ("FacebookAI/roberta-large", "large"),
        ("all-MiniLM-L6-v2", "n/a"),
    ],
)
def test_model_size(name, size):
    assert model_size(name) == size


def test_round_percent_half_up():
    assert [round_percent(k, 56) for k in (7, 21, 49, 55)] == [13, 38, 88, 98]


def test_results_dir_uses_the_real_collect_module(tmp_path, capsys):
    """Without monkeypatching, --results goes through evaluation.collect and fails cleanly."""
    assert report.main(["--results", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith(f"error: --results {tmp_path}")


def test_negative_scores_keep_the_meaning_of_better_and_improvement(tmp_path):
    """A weak model's negative correlation: AdaTAMW -1.0 vs AdamW -2.0 is an improvement."""
    df = _suite(epochs=(1,))
    df.loc[(df["task"] == "MockSTS") & (df["optimizer"] == "adamw"), "score"] = "-2.0"
    df.loc[(df["task"] == "MockSTS") & (df["optimizer"] == "AdaTAMW"), "score"] = "-1.0"
    result = report.build_report(df, tmp_path)
    sts = result["category_improvement"].set_index("category").loc["STS", "percent"]
    assert sts == pytest.approx(50.0)
    assert any("negative score" in n for n in result["notes"])


# ------------------------------------------------------------------ any benchmark


def _bert_base_rows(
    benchmark: str | None,
    tasks=(("STS12", "STS", 70.0), ("SciFact", "Retrieval", 60.0), ("STSBenchmark", "STS", 80.0)),
    revision=None,
) -> pd.DataFrame:
    """bert-base-uncased (one of the paper's models) at 3 epochs, AdaTAMW 1 point up on every task."""
    rows = [
        {
            "model": "bert-base-uncased",
            "optimizer": opt,
            "epochs": 3,
            "task": task,
            "category": cat,
            "score": score + (opt == "AdaTAMW"),
            **({"benchmark": benchmark} if benchmark else {}),
            **(
                {"dataset_revision": revision[opt] if isinstance(revision, dict) else revision}
                if revision
                else {}
            ),
        }
        for opt in ("AdamW", "AdaTAMW")
        for task, cat, score in tasks
    ]
    return pd.DataFrame(rows)


def test_papers_cells_are_beside_only_the_papers_benchmark(tmp_path):
    v1 = report.build_report(_bert_base_rows("MTEB(eng, v1)"), tmp_path / "v1")
    assert "paper_comparison" in v1["files"] and v1["benchmark"] == "MTEB(eng, v1)"
    assert "Beside the paper" in (tmp_path / "v1" / "report.md").read_text()

    v2 = report.build_report(_bert_base_rows("MTEB(eng, v2)"), tmp_path / "v2")
    md = (tmp_path / "v2" / "report.md").read_text()
    assert not (tmp_path / "v2" / "paper_comparison.csv").exists() and "Beside the paper" not in md
    assert (
        "The paper's cells are not shown beside these: "
        "they are MTEB(eng, v1) scores and these are MTEB(eng, v2)" in md
    )
    assert md.startswith("# AdaTAMW vs AdamW on MTEB(eng, v2): comparison report")
    assert (
        "1 task(s) are not tasks of MTEB(eng, v2) as this mteb defines it: ['SciFact']" in md
    )  # a v1-only task
    # the win rates and the sign test are those of any benchmark
    assert set(v2["win_rates"]["better_pct"]) == {100} and set(v2["win_rate_stats"]["sign_test_wins"]) == {3}

    unrecorded = report.build_report(_bert_base_rows(None), tmp_path / "csv")  # v1 task names: the paper's
    assert "paper_comparison" in unrecorded["files"] and unrecorded["benchmark"] is None
    assert "Benchmark: not recorded in the input" in (tmp_path / "csv" / "report.md").read_text()


def test_figure3_leaves_out_categories_without_tasks(tmp_path):
    result = report.build_report(_bert_base_rows("MTEB(eng, v2)"), tmp_path)
    assert set(result["category_improvement"]["category"]) == {"STS", "Retrieval"}
    md = (tmp_path / "report.md").read_text()
    header = next(line for line in md.split("## Figure 3")[1].splitlines() if line.startswith("| Model"))
    assert header == "| Model | Size | Epochs | Retrieval | STS |"
    sts = result["category_improvement"].set_index("category").loc["STS", "percent"]
    assert sts == pytest.approx(100 * ((71 + 81) / 2 - (70 + 80) / 2) / ((70 + 80) / 2))


def test_two_benchmarks_or_another_than_asked_are_refused(tmp_path, capsys):
    mixed = pd.concat(
        [
            _bert_base_rows("MTEB(eng, v1)"),
            _bert_base_rows("MTEB(eng, v2)").assign(model="bert-large-uncased"),
        ]
    )
    with pytest.raises(ScoreTableError, match=r"MTEB\(eng, v1\) and MTEB\(eng, v2\)"):
        report.build_report(mixed, tmp_path / "mixed")
    assert _cli(tmp_path, _bert_base_rows("MTEB(eng, v1)"), "--benchmark", "MTEB(eng, v2)") == 2
    err = capsys.readouterr().err
    assert "MTEB(eng, v1) (--benchmark 'MTEB(eng, v2)' was asked for)" in err
    assert (
        _cli(tmp_path, _bert_base_rows("MTEB(eng, v2)"), "--paper_tasks") == 2
    )  # the paper's tasks are v1's
    assert "MTEB(eng, v2)" in capsys.readouterr().err
    assert _cli(tmp_path, _bert_base_rows(None), "--benchmark", "MTEB(eng, v2)", "--paper_tasks") == 2
    assert "--paper_tasks / --full_benchmark are the paper's MTEB(eng, v1)" in capsys.readouterr().err


def test_benchmark_flag_requires_its_tasks_and_states_it(tmp_path, capsys):
    v2_tasks = (("STS12", "STS", 70.0), ("FEVERHardNegatives", "Retrieval", 60.0))
    assert _cli(tmp_path, _bert_base_rows(None, v2_tasks), "--benchmark", "MTEB(eng, v2)") == 2
    assert "is missing 39 task(s)" in capsys.readouterr().err
    assert (
        _cli(tmp_path, _bert_base_rows(None, v2_tasks), "--benchmark", "MTEB(eng, v2)", "--allow_missing")
        == 0
    )
    md = (tmp_path / "out" / "report.md").read_text()
    assert (
        "Benchmark: **MTEB(eng, v2)**" in md and "expected task set: the 41 datasets of MTEB(eng, v2)" in md
    )
    assert "| FEVERHardNegatives | Retrieval | - |" in md


def test_task_versions_are_stated_and_must_agree_between_arms(tmp_path):
    result = report.build_report(_bert_base_rows("MTEB(eng, v2)", revision="abc123"), tmp_path)
    assert "| SciFact | Retrieval | abc123 |" in (tmp_path / "report.md").read_text()
    assert result["benchmark"] == "MTEB(eng, v2)"
    with pytest.raises(ScoreTableError, match=r"different data revisions.*SciFact: AdamW r1 vs AdaTAMW r2"):
        report.build_report(
            _bert_base_rows("MTEB(eng, v2)", revision={"AdamW": "r1", "AdaTAMW": "r2"}), tmp_path / "x"
        )
