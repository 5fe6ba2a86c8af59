"""common/slurm.py: the one renderer of the SLURM arrays, checked by running its scripts with bash
and on a real one-node Slurm cluster (tests/support/slurm_cluster.py; skipped without Slurm unless
ADATAMW_REQUIRE_SLURM=1).

The cluster tests submit a packed array and check that every command ran exactly once, and submit
the paper's MTEB script (36 checkpoints x 56 tasks) at Slurm's default MaxArraySize and at a low
one: accepted, where the single unpacked array of earlier versions is refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common import slurm
from tests.support.slurm_cluster import OneAtATime, require, script_commands

REPO = Path(__file__).resolve().parent.parent
CONFIG_EXCERPT = """Configuration data as of 2026-12-07T00:37:40
AccountingStorageBackupHost = (null)
MaxArraySize            = 4
MaxJobCount             = 10000
"""


# ---- packing ------------------------------------------------------------------------------


def _fewest_per_task(n: int, limit: int) -> int:
    """Reference: the smallest k whose ceil(n / k) tasks fit in ``limit`` array indices, by search."""
    return next(k for k in range(1, n + 1) if -(-n // k) <= limit)


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 7, 1001])
def test_pack_covers_every_command_once_within_the_limit(limit):
    for n in [*range(1, 40), 1000, 1001, 1002, 2016]:
        packing = slurm.pack(n, limit)
        assert packing.tasks <= limit and packing.per_task == _fewest_per_task(n, limit)
        ran = [i for task in range(packing.tasks) for i in packing.commands_of(task)]
        assert ran == list(range(n)), (n, limit)
        assert all(len(packing.commands_of(t)) > 0 for t in range(packing.tasks))


def test_pack_refuses_a_cluster_without_arrays():
    with pytest.raises(ValueError, match="MaxArraySize = 0: this cluster accepts no job arrays"):
        slurm.pack(3, 0)


def test_paper_grid_packing_at_the_default_limit():
    packing = slurm.pack(36 * 56, slurm.DEFAULT_MAX_ARRAY_SIZE)
    assert (packing.per_task, packing.tasks) == (3, 672)


# ---- the cluster's limit ----------------------------------------------------------------------


def test_max_array_size_is_parsed_from_scontrol_output():
    assert slurm.parse_max_array_size(CONFIG_EXCERPT) == 4
    assert slurm.parse_max_array_size("MaxJobCount = 10000\n") is None


def test_without_scontrol_the_default_1001_is_taken(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    value, source = slurm.cluster_max_array_size()
    assert value == 1001 and "no scontrol" in source


def test_scontrol_that_does_not_answer_gives_the_default(monkeypatch, tmp_path):
    fake = tmp_path / "scontrol"
    fake.write_text(
        "#!/bin/sh\necho 'slurm_load_ctl_conf error: Unable to contact slurm controller' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    value, source = slurm.cluster_max_array_size()
    assert value == 1001 and "Unable to contact slurm controller" in source


# ---- directives ------------------------------------------------------------------------------


def test_directives_are_normalised_and_the_owned_ones_refused():
    assert slurm.normalise_directive("gres=gpu:1") == "--gres=gpu:1"
    assert slurm.normalise_directive("--time=08:00:00") == "--time=08:00:00"
    assert slurm.normalise_directive("-p gpu") == "-p gpu"
    for owned, hint in [
        ("--array=0-3", "--slurm_throttle"),
        ("array=0-3", "--slurm_throttle"),
        ("--job-name=x", "--slurm_job_name"),
        ("-J x", "--slurm_job_name"),
        ("--output=x", "logs"),
    ]:
        with pytest.raises(ValueError, match=hint):
            slurm.normalise_directive(owned)
    with pytest.raises(ValueError, match="one sbatch option per --slurm_directive"):
        slurm.normalise_directive("--time=1:00:00\n#SBATCH --gres=gpu:8")


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    slurm.add_arguments(parser, job_name="job")
    return parser.parse_args(argv)


def test_slurm_options_still_works_with_a_deprecation_message(capsys):
    args = _cli(["--slurm_options", "--gres=gpu:4 --time=24:00:00", "--slurm_directive", "mem=8G"])
    assert slurm.directives_of(args) == ["--mem=8G", "--gres=gpu:4", "--time=24:00:00"]
    err = capsys.readouterr().err
    assert "--slurm_options is deprecated" in err and "--slurm_directive=--gres=gpu:4" in err


def test_bad_directive_stops_with_its_name():
    with pytest.raises(SystemExit, match="--array=1-2.*--slurm_throttle"):
        slurm.directives_of(_cli(["--slurm_directive=--array=1-2"]))


@pytest.mark.parametrize("argv", [["--slurm_throttle", "0"], ["--slurm_max_array_size", "-1"]])
def test_throttle_and_limit_must_be_positive(argv, capsys):
    with pytest.raises(SystemExit):
        _cli(argv)
    assert "must be at least 1" in capsys.readouterr().err


# ---- forwarding a command line ---------------------------------------------------------------


def _forwarding_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--flag", action="store_true")
    p.add_argument("--count", type=int, default=32)
    p.add_argument("--ratio", type=float)
    p.add_argument("--names", nargs="+")
    p.add_argument("--cache", type=Path)
    p.add_argument("--tag", action="append", default=[])
    p.add_argument("--colour", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--dropped")
    return p


def test_forwarded_arguments_parse_back_to_the_same_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parser = _forwarding_parser()
    given = [
        "--flag",
        "--count",
        "8",
        "--ratio",
        "0.5",
        "--names",
        "A",
        "B C",
        "--cache",
        "rel/dir",
        "--tag",
        "x",
        "--tag=y",
        "--no-colour",
        "--dropped",
        "gone",
    ]
    args = parser.parse_args(given)
    forwarded = slurm.forwarded_arguments(parser, args, exclude=["dropped"])
    again = vars(parser.parse_args(forwarded))
    assert again.pop("dropped") is None
    expected = {**vars(args), "cache": tmp_path / "rel" / "dir"}
    expected.pop("dropped")
    assert again == expected
    assert forwarded[forwarded.index("--cache") + 1] == str(tmp_path / "rel" / "dir")  # absolute for the job
    assert slurm.forwarded_arguments(parser, parser.parse_args([]), exclude=()) == []  # defaults stay out


def test_forwarding_an_unknown_action_is_refused():
    parser = argparse.ArgumentParser()
    parser.add_argument("-v", action="count", default=0)
    with pytest.raises(ValueError, match="_CountAction cannot be forwarded"):
        slurm.forwarded_arguments(parser, parser.parse_args(["-vv"]), exclude=())


# ---- the rendered script, run by bash --------------------------------------------------------


def _job(tmp_path: Path, n: int, fail: set[int] = frozenset()) -> slurm.ArrayJob:
    """Command i appends i to ran.txt (and exits 3 if i is in ``fail``); the final command appends 'final'."""
    commands = [
        [
            sys.executable,
            "-c",
            f"open('ran.txt', 'a').write('{i}\\n'); raise SystemExit(3 if {i in fail} else 0)",
        ]
        for i in range(n)
    ]
    return slurm.ArrayJob(
        name="t",
        commands=commands,
        workdir=tmp_path,
        log_dir=tmp_path / "logs",
        directives=("gres=gpu:1",),
        final_command=["sh", "-c", "echo final >> ran.txt"],
        python_path=REPO,
        about=("a test job",),
    )


def _run_task(script: Path, task: int, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(script)],
        env={**(env or os.environ), "SLURM_ARRAY_TASK_ID": str(task)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_script_header_and_commands(tmp_path):
    job = _job(tmp_path, 10)
    text = slurm.render(job, slurm.pack(10, 4), throttle=2, limit_source="a test")
    assert "#SBATCH --array=0-3%2\n" in text and "#SBATCH --gres=gpu:1\n" in text
    assert f"#SBATCH --output={tmp_path / 'logs'}/%A_%a.out\n" in text and "#SBATCH --job-name=t\n" in text
    assert "3 per array task" in text and "(MaxArraySize 4 from a test), at most 2 at a time" in text
    assert script_commands(text) == [list(c) for c in job.commands]
    header = text[: text.index("set -uo pipefail")]
    assert all(
        line.startswith("#") for line in header.splitlines()
    )  # sbatch stops reading at the first command


def test_each_array_task_runs_its_commands_then_the_final_one(tmp_path):
    job = _job(tmp_path, 10, fail={4})
    packing = slurm.pack(10, 4)
    script = tmp_path / "job.sbatch"
    slurm.write(script, slurm.render(job, packing), job.log_dir)
    assert (tmp_path / "logs").is_dir() and os.access(script, os.X_OK)
    statuses = []
    for task in range(packing.tasks):
        (tmp_path / "ran.txt").unlink(missing_ok=True)
        proc = _run_task(script, task, env={**os.environ, "PATH": "/usr/bin:/bin"})  # no venv on PATH
        assert (tmp_path / "ran.txt").read_text().split() == [
            *map(str, packing.commands_of(task)),
            "final",
        ], proc.stderr
        statuses.append(proc.returncode)
    assert statuses == [0, 1, 0, 0]  # task 1 holds command 4: the others of that task still ran
    assert "command 5 failed (exit 3)" in _run_task(script, 1).stderr


def test_script_refuses_to_run_without_its_interpreter(tmp_path):
    job = _job(tmp_path, 2)
    script = tmp_path / "job.sbatch"
    slurm.write(
        script, slurm.render(job, slurm.pack(2, 4), python=str(tmp_path / "gone" / "python")), job.log_dir
    )
    proc = _run_task(script, 0)
    assert proc.returncode == 2 and "this script runs the Python environment that wrote it" in proc.stderr
    slurm.write(script, slurm.render(job, slurm.pack(2, 4)), job.log_dir)
    env = {k: v for k, v in os.environ.items() if k != "SLURM_ARRAY_TASK_ID"}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert (
        proc.returncode != 0 and "submit with sbatch" in proc.stderr and not (tmp_path / "ran.txt").exists()
    )


# ---- on a real Slurm --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clusters():
    """``clusters.get(max_array_size)``: the running one-node cluster with that MaxArraySize."""
    require()
    pool = OneAtATime()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def cluster(clusters):
    return clusters.get(4)


@pytest.mark.slow  # starts the daemons: kept out of `make test-fast`
def test_packed_array_runs_every_command_once_on_slurm(cluster, tmp_path):
    job = dataclasses.replace(_job(tmp_path, 10, fail={7}), directives=("--time=00:05:00",))
    parser = argparse.ArgumentParser()
    slurm.add_arguments(parser, job_name="t")
    args = parser.parse_args(["--slurm_out", str(tmp_path / "job.sbatch"), "--slurm_throttle", "1"])
    with cluster.as_default():
        packing = slurm.emit(args, job)  # the limit read from this cluster's `scontrol show config`
    assert (packing.per_task, packing.tasks) == (3, 4)
    job_id = cluster.sbatch(str(tmp_path / "job.sbatch"), env={**cluster.env, "PATH": "/usr/bin:/bin"})
    states = cluster.wait(job_id, timeout=240)
    assert states == {"0": "COMPLETED", "1": "COMPLETED", "2": "FAILED", "3": "COMPLETED"}, cluster.logs()
    # --slurm_throttle 1: one task at a time, each running its commands and then the final one
    blocks = " ".join((tmp_path / "ran.txt").read_text().split()).split(" final")
    assert sorted(block.split() for block in blocks if block.strip()) == [
        list(map(str, packing.commands_of(t))) for t in range(4)
    ]
    assert len(list((tmp_path / "logs").glob(f"{job_id}_*.out"))) == 4
    assert "command 8 failed (exit 3)" in (tmp_path / "logs" / f"{job_id}_2.out").read_text()


def _paper_scale_manifest(tmp_path: Path, checkpoint: Path) -> Path:
    """36 entries (6 models x 2 optimizers x 3 epochs), all on one tiny checkpoint."""
    models = [
        "bert-base-uncased",
        "bert-large-uncased",
        "microsoft/deberta-base",
        "microsoft/deberta-large",
        "roberta-base",
        "roberta-large",
    ]
    entries = [
        {
            "model": m,
            "optimizer": o,
            "epochs": e,
            "lr": 1e-5,
            "checkpoint": str(checkpoint),
            "val_perplexity": 10.0,
        }
        for m in models
        for o in ("adamw", "adatamw")
        for e in (3, 5, 10)
    ]
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"selected": entries}))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("limit", [4, None], ids=["MaxArraySize=4", "default-1001"])
def test_paper_mteb_script_is_accepted_at_any_max_array_size(clusters, limit, tmp_path, tiny_model_dir):
    pytest.importorskip("mteb")
    from evaluation import run_mteb

    cluster = clusters.get(limit)
    manifest = _paper_scale_manifest(tmp_path, tiny_model_dir("bert"))
    script = tmp_path / "mteb.sbatch"
    with cluster.as_default():  # run_mteb reads the limit from this cluster's scontrol
        assert (
            run_mteb.main(
                [
                    "--manifest",
                    str(manifest),
                    "--output",
                    str(tmp_path / "out"),
                    "--paper_tasks",
                    "--emit",
                    "slurm",
                    "--slurm_out",
                    str(script),
                    "--slurm_directive=--time=08:00:00",
                    "--slurm_throttle",
                    "32",
                ]
            )
            == 0
        )
    text = script.read_text()
    commands = script_commands(text)
    assert len(commands) == 36 * 56 and len({tuple(c) for c in commands}) == 36 * 56
    per_task = math.ceil(2016 / (limit or 1001))
    assert f"#SBATCH --array=0-{math.ceil(2016 / per_task) - 1}%32\n" in text
    held = cluster.sbatch("--hold", str(script))  # accepted by slurmctld, never run
    cluster.run(["scancel", str(held)])
    # what earlier versions wrote, one array task per command, is refused by the same cluster
    unpacked = tmp_path / "unpacked.sbatch"
    unpacked.write_text(
        text.replace(f"#SBATCH --array=0-{math.ceil(2016 / per_task) - 1}%32", "#SBATCH --array=0-2015")
    )
    refused = cluster.run(["sbatch", "--test-only", str(unpacked)], check=False)
    assert refused.returncode != 0 and "Invalid job array specification" in refused.stderr
