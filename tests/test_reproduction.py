"""The README's "Reproducing the paper" commands, run as written at tiny size, offline.

Each command of the README's two blocks (local, and with SLURM) is taken from README.md and run
with only these changes (:func:`tiny`): ``python`` is this interpreter; the sweep gets the
offline stand-ins and a tiny size appended (``minilm-offline``, the bundled text, 1 epoch, 1 lr,
16 blocks of 32 tokens); ``--paper_tasks`` becomes three offline tasks; the GPU directive is
dropped (the test cluster has none). The SLURM block runs on a one-node Slurm cluster
(tests/support/slurm_cluster.py) with a MaxArraySize below the MTEB array's size, and its manifest and
collected scores must equal, bit for bit, those of the same plan run in-process. Both run on one
CPU thread: ``accelerate launch`` gives a CPU process ``OMP_NUM_THREADS=1`` when it is unset, and
float sums on 2 threads differ from those on 1 in the last bits (perplexity 5461.44317 vs
5461.44232 when the reference ran on 2).
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from recipes import sweep
from tests.support.recipe_args import tiny_recipe_args
from tests.support.slurm_cluster import Cluster, require, script_commands

REPO = Path(__file__).resolve().parent.parent
TASKS = ["WordSim353", "PangLeePolarityClassification"]  # the offline suite's human-judged tasks
TINY_SWEEP = [
    *("--models", "minilm-offline", "--offline_defaults", "--optims", "adamw", "adatamw"),
    *("--epochs", "1", "--learning_rates", "2e-4"),
    *tiny_recipe_args(per_device_train_batch_size=8, dataloader_pin_memory=None),
]
TIMEOUT = 900


def readme_blocks(
    page: Path = REPO / "README.md", heading: str = "## Reproducing the paper"
) -> list[list[list[str]]]:
    """The commands (argv lists) of each bash block under ``heading``.

    Continuation lines joined, comments dropped.
    """
    text = page.read_text(encoding="utf-8")
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    section = text[start : end if end != -1 else len(text)]
    return [_commands(block) for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def _commands(block: str) -> list[list[str]]:
    """Shell commands of a block: a line ending in a backslash, or inside an open quote, continues."""
    commands, pending = [], ""
    for line in block.replace("\\\n", " ").splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            argv = shlex.split(pending, comments=True)
        except ValueError:  # no closing quotation yet
            continue
        if argv:
            commands.append(argv)
        pending = ""
    assert not pending, f"unterminated command: {pending!r}"
    return commands


def tiny(argv: list[str]) -> list[str]:
    """A README command at the tests' size (see the module docstring)."""
    argv = [
        sys.executable if a == "python" else str(REPO / a) if a == "recipes/sweep.py" else a for a in argv
    ]
    argv = [a for a in argv if a != "--slurm_directive=--gres=gpu:1"]
    if "evaluation.run_mteb" in argv:
        i = argv.index("--paper_tasks")
        argv[i : i + 1] = ["--offline_suite", "--tasks", *TASKS]
    elif "evaluation.report" in argv:
        argv = [a for a in argv if a != "--paper_tasks"]
    elif argv[1:2] == [str(REPO / "recipes" / "sweep.py")] and "--collect" not in argv:
        argv += TINY_SWEEP
    return argv


def _run(argv: list[str], cwd: Path) -> None:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
    if proc.returncode != 0:
        pytest.fail(
            f"{shlex.join(argv)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-5000:]}\n"
            f"--- stderr\n{proc.stderr[-5000:]}"
        )


@contextlib.contextmanager
def one_thread():
    """torch on one CPU thread within, as in a job started by ``accelerate launch`` (restored after)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _scores(results: Path):
    from evaluation.collect import collect_scores

    return (
        collect_scores(results).sort_values(["model", "optimizer", "epochs", "task"]).reset_index(drop=True)
    )


# ---- the blocks as written -----------------------------------------------------------------


def test_readme_blocks_train_select_evaluate_report_in_order():
    local, on_slurm = readme_blocks()
    assert [c[:2] for c in local] == [
        ["python", "recipes/sweep.py"],
        ["python", "recipes/sweep.py"],
        ["python", "-m"],
        ["python", "-m"],
    ]
    assert "--collect" in local[1] and "evaluation.run_mteb" in local[2] and "evaluation.report" in local[3]
    assert "--emit" not in " ".join(map(" ".join, local)) and "--dry-run" not in " ".join(
        map(" ".join, local)
    )
    assert len(on_slurm) == 6 and on_slurm[1][:2] == on_slurm[4][:2] == ["sbatch", "--wait"]
    assert on_slurm[1][-1] == on_slurm[0][on_slurm[0].index("--slurm_out") + 1]  # submits what step 1 wrote
    assert on_slurm[4][-1] == on_slurm[3][on_slurm[3].index("--slurm_out") + 1]
    assert "--collect" in on_slurm[2] and "evaluation.report" in on_slurm[5]
    # what the evaluation reads is what the selection wrote; the report reads the evaluation's output
    for block in (local, on_slurm):
        sweep_cmd = next(c for c in block if "recipes/sweep.py" in c)
        mteb = next(c for c in block if "evaluation.run_mteb" in c)
        report = next(c for c in block if "evaluation.report" in c)
        root = sweep_cmd[sweep_cmd.index("--output_root") + 1]
        assert mteb[mteb.index("--manifest") + 1] == f"{root}/{sweep.MANIFEST}"
        assert report[report.index("--results") + 1] == mteb[mteb.index("--output") + 1]


@pytest.mark.parametrize(
    "page,heading",
    [
        ("README.md", "## Reproducing the paper"),
        ("docs/reproducing.md", "## Scaling to the paper's grid on a GPU cluster"),
        ("docs/reproducing.md", "## The sweep: the paper's grid"),
    ],
)
def test_documented_commands_take_only_known_options(page, heading):
    """Every sweep / run_mteb / report command of these blocks parses with its CLI (the sweep passes
    what it does not know to the recipe, so nothing may be left over there)."""
    from evaluation import report, run_mteb

    seen = 0
    for block in readme_blocks(REPO / page, heading):
        for argv in block:
            if argv[:2] == ["python", "recipes/sweep.py"]:
                _, unknown = sweep.parser().parse_known_args(argv[2:])
                assert unknown == [], f"{page}: {shlex.join(argv)}: {unknown} would go to the recipe"
            elif argv[:3] == ["python", "-m", "evaluation.run_mteb"]:
                run_mteb.build_parser().parse_args(argv[3:])
            elif argv[:3] == ["python", "-m", "evaluation.report"]:
                report._parser().parse_args(argv[3:])
            else:
                continue
            seen += 1
    assert seen >= 2, f"no sweep / run_mteb / report command found under {heading} in {page}"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_readme_local_block_runs_at_tiny_size(tmp_path):
    local, _ = readme_blocks()
    for argv in local:
        _run(tiny(argv), cwd=tmp_path)
    manifest = json.loads((tmp_path / "runs" / "sweep" / sweep.MANIFEST).read_text())
    assert sorted((e["optimizer"], e["epochs"]) for e in manifest["selected"]) == [
        ("adamw", 1),
        ("adatamw", 1),
    ]
    assert set(_scores(tmp_path / "runs" / "mteb")["task"]) == set(TASKS)
    assert "## Per-dataset scores" in (tmp_path / "runs" / "report" / "report.md").read_text(encoding="utf-8")


# ---- the SLURM block on a real Slurm ------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    require()
    with Cluster(max_array_size=3) as c:  # below the MTEB array's 2 checkpoints x 2 tasks
        yield c


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_readme_slurm_block_equals_the_in_process_run(cluster, tmp_path):
    from evaluation import run_mteb

    _, on_slurm = readme_blocks()
    work = tmp_path / "slurm"
    work.mkdir()
    # the jobs find no Python or accelerate on PATH; one thread, as the in-process reference below
    job_env = {**cluster.env, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    with cluster.as_default():  # the emitting commands read this cluster's MaxArraySize
        for argv in on_slurm:
            argv = tiny(argv)
            if argv[0] == "sbatch":
                proc = cluster.run(argv, env=job_env, cwd=work, timeout=TIMEOUT, check=False)
                logs = "\n".join(
                    f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(work.rglob("slurm_logs/*.out"))
                )
                assert proc.returncode == 0, f"{shlex.join(argv)}: {proc.stderr}\n{logs}\n{cluster.logs()}"
            else:
                _run([*argv], cwd=work)
    runs = work / "runs"
    sweep_script, mteb_script = (runs / "sweep.sbatch").read_text(), (runs / "mteb.sbatch").read_text()
    for text in (sweep_script, mteb_script):
        assert all(c[0] == sys.executable for c in script_commands(text)), (
            "a job command not run by this interpreter"
        )
    assert script_commands(sweep_script)[0][1:3] == ["-m", "accelerate.commands.launch"]
    assert len(script_commands(mteb_script)) == 2 * 2 and "#SBATCH --array=0-1\n" in mteb_script  # 2 per task
    assert (runs / "report" / "report.md").is_file()

    # the same plan in this process
    ref = tmp_path / "in_process"
    with one_thread():
        sweep.main([*TINY_SWEEP, "--output_root", str(ref / "sweep"), "--in_process"])
        assert (
            run_mteb.main(
                [
                    "--manifest",
                    str(ref / "sweep" / sweep.MANIFEST),
                    "--output",
                    str(ref / "mteb"),
                    "--offline_suite",
                    "--tasks",
                    *TASKS,
                ]
            )
            == 0
        )

    on_cluster = json.loads((runs / "sweep" / sweep.MANIFEST).read_text())
    in_process = json.loads((ref / "sweep" / sweep.MANIFEST).read_text())
    assert len(on_cluster["selected"]) == 2 and on_cluster == in_process
    cluster_scores, local_scores = _scores(runs / "mteb"), _scores(ref / "mteb")
    assert len(cluster_scores) == 2 * len(TASKS)
    assert cluster_scores.equals(local_scores), f"\n{cluster_scores}\n{local_scores}"
