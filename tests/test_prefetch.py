"""recipes.prefetch: what the cache must hold for a plan, checked with no network.

References: mteb's own loader run on the real-task fixture cache (tests/support/mteb_fixture.py; what it
asks ``load_dataset`` for is recorded and compared with the configs and splits the check
requires), ``datasets.load_dataset`` and ``recipes.hub.resolve_model`` offline (what "present"
must mean), and the installed ``hf download --help`` (every option a printed command uses).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mteb")

from recipes import hub, prefetch  # noqa: E402
from tests.support.mteb_fixture import (
    BUILDERS,
    REAL_TASKS,
    V2_ONLY_TASKS,
    V2_TASKS,
    task_dataset,
    write_config,
    write_offline_cache,
)  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# the fixture's v1 tasks, all in the paper selection (CQADupstackTexRetrieval included)
PAPER_FIXTURE_TASKS = [t for t in REAL_TASKS if t not in V2_ONLY_TASKS]
WIKITEXT = ("Salesforce/wikitext", "wikitext-2-raw-v1")


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection fails the test: the check reads local caches only."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty hub and datasets caches for this test (offline); returns (hub cache, datasets cache)."""
    import datasets.config
    import huggingface_hub.constants

    hub_cache, data_cache = tmp_path / "hub", tmp_path / "datasets"
    hub_cache.mkdir()
    data_cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", data_cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return hub_cache, data_cache


@pytest.fixture(scope="module")
def fixture_cache(tmp_path_factory) -> Path:
    return write_offline_cache(tmp_path_factory.mktemp("fixture_datasets"))


def _check(argv, capsys) -> tuple[int, str]:
    rc = prefetch.main(["--check", *argv])
    return rc, capsys.readouterr().out


def _status(out: str) -> dict[str, str]:
    """Item name -> present / missing, from the listing."""
    found = {}
    for line in out.splitlines():
        match = re.match(r"(present|missing)\s+(model|train data|MTEB task)\s+(\S+)", line)
        if match:
            found[match.group(3)] = match.group(1)
    return found


# ---- the real-task fixture cache ---------------------------------------------------------------


def test_fixture_tasks_reported_present(caches, fixture_cache, monkeypatch, no_network, capsys):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", fixture_cache)
    rc, out = _check(["--only", "tasks", "--tasks", *PAPER_FIXTURE_TASKS], capsys)
    assert rc == 0, out
    assert _status(out) == dict.fromkeys(PAPER_FIXTURE_TASKS, "present")
    assert f"{len(PAPER_FIXTURE_TASKS)} items: {len(PAPER_FIXTURE_TASKS)} present, 0 missing." in out
    # the standard selection's own CQADupstackRetrieval is 12 forum tasks; the fixture holds one (TeX)
    # MTEB(eng, v2): the fixture's v2 tasks (its hard-negative retrieval and .v2 task included)
    rc, out = _check(["--only", "tasks", "--benchmark", "MTEB(eng, v2)", "--tasks", *V2_TASKS], capsys)
    assert rc == 0, out
    assert _status(out) == dict.fromkeys(V2_TASKS, "present")
    rc, out = _check(["--only", "tasks", "--standard_tasks", "--tasks", "CQADupstackRetrieval"], capsys)
    status = _status(out)
    assert rc == 1 and len(status) == 12 and status.pop("CQADupstackTexRetrieval") == "present"
    assert set(status.values()) == {"missing"} and "part of CQADupstackRetrieval" in out


def _recorded_loads(task_name: str, monkeypatch) -> set[tuple[str, str, str | None]]:
    """(config, split or None, revision) of every ``load_dataset`` call mteb's loader makes for the task."""
    import datasets
    from mteb.abstasks import abstask, retrieval_dataset_loaders

    from evaluation.task_data import load_task_data
    from evaluation.tasks import select_tasks

    calls = set()
    real = datasets.load_dataset

    def recording(path, name=None, *args, split=None, revision=None, **kwargs):
        calls.add((name or "default", split, revision))
        return real(path, name, *args, split=split, revision=revision, **kwargs)

    for module in (abstask, retrieval_dataset_loaders):
        monkeypatch.setattr(module, "load_dataset", recording)
    task = select_tasks(
        [task_name], paper_tasks=task_name == "CQADupstackTexRetrieval", benchmark=_benchmark(task_name)
    )[0]
    load_task_data(task)
    task.unload_data()
    return calls


def _benchmark(task_name: str) -> str:
    return "MTEB(eng, v2)" if task_name in V2_ONLY_TASKS else "MTEB(eng, v1)"


@pytest.mark.parametrize("task_name", REAL_TASKS)
def test_required_configs_are_what_mteb_loads(task_name, caches, fixture_cache, monkeypatch):
    """The check requires exactly the configs mteb's loader reads, the loader's split among their splits."""
    import datasets.config

    from evaluation.tasks import select_tasks

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", fixture_cache)
    loads = _recorded_loads(task_name, monkeypatch)
    task = select_tasks(
        [task_name], paper_tasks=task_name == "CQADupstackTexRetrieval", benchmark=_benchmark(task_name)
    )[0]
    needs = prefetch.task_configs(task)
    _, revision = task_dataset(task_name)
    assert {need.config for need in needs} == {config for config, _, _ in loads}
    assert {need.revision for need in needs} == {rev for _, _, rev in loads} == {revision}
    for config, split, _ in loads:
        required = next(n.splits for n in needs if n.config == config)
        if split is not None and split not in ("corpus", "queries"):  # corpus / queries: their one split
            assert split in required, (config, split, required)


def test_missing_config_split_or_revision_is_named(caches, no_network, capsys):
    _, data_cache = caches
    write_offline_cache(data_cache, ["AskUbuntuDupQuestions", "STSBenchmark"], skip_configs=["top_ranked"])
    write_offline_cache(data_cache, ["SciFact"], revision="0" * 40)
    repo, revision = task_dataset("MSMARCO")
    for config, splits in BUILDERS[
        "SciFact"
    ]().items():  # the retrieval layout with qrels in "test", not "dev"
        write_config(data_cache, repo, config, revision, splits)
    rc, out = _check(
        ["--only", "tasks", "--tasks", "AskUbuntuDupQuestions", "STSBenchmark", "SciFact", "MSMARCO"], capsys
    )
    assert rc == 1
    assert _status(out) == {
        "AskUbuntuDupQuestions": "missing",
        "STSBenchmark": "present",
        "SciFact": "missing",
        "MSMARCO": "missing",
    }
    _, ask_rev = task_dataset("AskUbuntuDupQuestions")
    assert f"lacks mteb/AskUbuntuDupQuestions top_ranked [test] at {ask_rev}" in out
    assert "lacks mteb/AskUbuntuDupQuestions corpus" not in out
    _, sci_rev = task_dataset("SciFact")
    assert f"lacks mteb/scifact corpus at {sci_rev}" in out  # only another revision is cached
    assert f"lacks mteb/msmarco default [dev] at {revision}" in out and "lacks mteb/msmarco corpus" not in out
    for task in ("AskUbuntuDupQuestions", "SciFact", "MSMARCO"):
        assert f"fill: python -m recipes.prefetch --only tasks --tasks {task}" in out


# ---- models and the training data ---------------------------------------------------------------


def _cached_model(hub_cache: Path, repo_id: str) -> Path:
    """The embedded MiniLM's files as ``hf download repo_id`` lays them out in the hub cache."""
    commit = "a" * 40
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    shutil.copytree(hub.offline_model_path(), snapshot)
    return snapshot


def test_models_and_train_data_present_iff_loadable(caches, no_network, capsys):
    hub_cache, data_cache = caches
    argv = [
        "--only",
        "models",
        "train_data",
        "--models",
        "bert-base-uncased",
        "roberta-base",
        "minilm-offline",
    ]
    rc, out = _check(argv, capsys)
    assert rc == 1
    assert _status(out) == {
        "bert-base-uncased": "missing",
        "roberta-base": "missing",
        "minilm-offline": "present",
        "Salesforce/wikitext": "missing",
    }
    for name in ("bert-base-uncased", "roberta-base"):
        with pytest.raises(SystemExit):
            hub.resolve_model(name)

    snapshot = _cached_model(hub_cache, "bert-base-uncased")
    lines = ["= Title =", "", "Some text of a wiki article .", ""]
    write_config(
        data_cache, *WIKITEXT, "b" * 40, {split: {"text": lines} for split in ("train", "validation", "test")}
    )
    rc, out = _check(argv, capsys)
    assert _status(out) == {
        "bert-base-uncased": "present",
        "roberta-base": "missing",
        "minilm-offline": "present",
        "Salesforce/wikitext": "present",
    }
    assert hub.resolve_model("bert-base-uncased") == str(snapshot)  # what the recipe loads offline
    from datasets import load_dataset

    assert load_dataset(*WIKITEXT)["train"]["text"] == lines


@pytest.mark.slow  # a subprocess sizes the 63 items of the default plan: ~11-15 s
def test_empty_cache_names_each_item_of_the_default_plan(tmp_path):
    """The default plan: the sweep's 6 models, WikiText-2 and the paper's 56 tasks, all missing."""
    from evaluation.tasks import benchmark_tasks
    from recipes.sweep import PAPER_MODELS

    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"),
        "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_ENDPOINT": "http://127.0.0.1:9",  # loopback discard port: any connection attempt fails
    }
    proc = subprocess.run(
        [sys.executable, "-m", "recipes.prefetch", "--check"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    tasks = [t.metadata.name for t in benchmark_tasks(paper_tasks=True)]
    assert len(tasks) == 56
    expected = {
        **dict.fromkeys(PAPER_MODELS, "missing"),
        "Salesforce/wikitext": "missing",
        **dict.fromkeys(tasks, "missing"),
    }
    assert _status(proc.stdout) == expected
    assert f"{len(expected)} items: 0 present, {len(expected)} missing." in proc.stdout
    assert (
        "Fill everything missing on a machine with network (a login node): python -m recipes.prefetch"
        in proc.stdout
    )


# ---- the printed commands exist ---------------------------------------------------------------


def _hf_download_options() -> set[str]:
    hf = shutil.which("hf", path=str(Path(sys.executable).parent)) or shutil.which("hf")
    assert hf, "huggingface_hub's `hf` CLI is not installed next to this interpreter"
    help_text = subprocess.run([hf, "download", "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", help_text))


def _assert_hf_download(command: str, options: set[str]) -> None:
    argv = shlex.split(command)
    assert argv[:2] == ["hf", "download"], command
    assert not argv[2].startswith("-"), command  # REPO_ID first
    flags = [a.split("=")[0] for a in argv[3:] if a.startswith("-")]
    assert set(flags) <= options, (command, set(flags) - options)


def test_every_printed_command_exists(caches, no_network, capsys):
    options = _hf_download_options()
    assert {"--repo-type", "--revision", "--cache-dir", "--include"} <= options  # the parse found the options
    rc, out = _check(["--tasks", "AskUbuntuDupQuestions", "STS17", "MSMARCO"], capsys)
    commands = [line.split("fill: ", 1)[1] for line in out.splitlines() if "fill: " in line]
    commands.append(out.rsplit("(a login node): ", 1)[1].strip())
    assert len(commands) == 6 + 1 + 3 + 1
    for command in commands:
        if command.startswith("hf "):
            _assert_hf_download(command, options)
            continue
        argv = shlex.split(command)
        assert argv[:3] == ["python", "-m", "recipes.prefetch"], command
        prefetch.parser().parse_args(argv[3:])  # exits on an unknown flag
        if "--only" in argv:  # the command of one missing item checks (and fills) exactly that item
            _, listed = _check(argv[3:], capsys)
            assert list(_status(listed)) == [argv[-1] if "--tasks" in argv else "Salesforce/wikitext"]
    message = str(hub.missing_model("bert-base-uncased", "/tmp/some cache"))
    _assert_hf_download(message.split("\n")[1].strip(), options)
    assert "--cache-dir" in message and "hf download bert-base-uncased" in message


def test_fill_is_idempotent_and_refuses_without_network(
    caches, fixture_cache, monkeypatch, no_network, capsys
):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", fixture_cache)
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    assert (
        prefetch.main(["--only", "tasks", "--tasks", *PAPER_FIXTURE_TASKS]) == 0
    )  # all present: nothing fetched
    assert f"All {len(PAPER_FIXTURE_TASKS)} items are in the cache" in capsys.readouterr().out
    with pytest.raises(
        SystemExit, match="1 of 1 items are missing and the Hugging Face Hub is unreachable.*login node"
    ):
        prefetch.main(["--only", "models", "--models", "bert-base-uncased"])


def test_benchmark_by_name(caches, no_network, capsys):
    import mteb

    rc, out = _check(["--only", "tasks", "--benchmark", "MTEB(eng, v2)"], capsys)
    leaves = prefetch.leaf_tasks(mteb.get_benchmark("MTEB(eng, v2)").tasks)
    assert rc == 1 and list(_status(out)) == [t.metadata.name for t, _ in leaves]
    assert "--benchmark 'MTEB(eng, v2)' --tasks" in out
    with pytest.raises(SystemExit, match=r"Unknown benchmark 'MTEB\(nowhere\)'.*Did you mean"):
        prefetch.main(["--check", "--only", "tasks", "--benchmark", "MTEB(nowhere)"])
    with pytest.raises(SystemExit, match="did you mean SciFact"):
        prefetch.main(["--check", "--only", "tasks", "--tasks", "SciFcat"])


def test_a_task_with_its_own_loader_is_never_reported_present():
    """A class that replaces mteb's load_data (here the offline suite's Pang-Lee task) reads files the
    rules cannot see: the check says so instead of guessing."""
    from evaluation.offline_tasks.human_judged import PangLeePolarityClassification
    from evaluation.tasks import select_tasks

    assert not prefetch.own_loader(select_tasks(["SciFact"])[0])
    item = prefetch.task_item(PangLeePolarityClassification(), "python -m recipes.prefetch --only tasks")
    assert prefetch.own_loader(PangLeePolarityClassification())
    assert item.missing() == [
        "PangLeePolarityClassification loads its data itself: the check cannot tell; run the fill command"
    ]
