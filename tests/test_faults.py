"""Fault injection on the recipe and the sweep (issues #11 and #17): one test per fault, each
asserting the outcome.

* ``kill -9`` at a random training step, and inside a checkpoint write, then a re-run: the final
  weights (``torch.equal``) and ``selection.json`` equal an uninterrupted run's;
* a changed setting is refused, naming the key (recipe and sweep);
* a second process on a running lr run or sweep cell is refused; a killed holder's lock is released;
* the sweep's child never outlives the sweep (``kill -9`` of the sweep, SIGTERM forwarded);
* bad input fails in one line naming the file or argument, before any model is loaded;
* offline with an empty cache, the default model or data set stops before training, naming it.

Tiny random BERTs (``tests/support/tiny_models.py``); the tests that start processes are marked slow. The
kill points are drawn at random and printed; ``FAULT_KILL_STEP=N`` / ``FAULT_KILL_CHECKPOINT=N`` fix them.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from common import locks
from recipes import mlm_finetune, results, sweep
from tests.support.recipe_args import tiny_recipe_args, tiny_sweep_args
from tests.support.tiny_models import save_tiny_model

REPO = Path(__file__).resolve().parent.parent
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONPATH": str(REPO),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny_model("bert", tmp_path_factory.mktemp("tiny") / "bert")


def data_args(files: tuple[Path, Path], train_blocks: int = 16) -> list[str]:
    """The recipe's data and batch arguments (also what the sweep passes on)."""
    return tiny_recipe_args(files, max_train_samples=train_blocks)


def recipe_argv(model: Path, out: Path, files, *extra: str) -> list[str]:
    return [
        "--model_name_or_path",
        str(model),
        "--learning_rates",
        "1e-3",
        "--output_dir",
        str(out),
        *data_args(files),
        *extra,
    ]


def last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(results.checkpoints(run_dir)[0] / "model.safetensors")


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    unequal = [k for k in a if not torch.equal(a[k], b[k])]
    assert not unequal, f"tensors differ: {unequal[:5]}"


# ---- kill -9, then re-run -------------------------------------------------------------------

# 16 blocks / batch 4 = 4 steps per epoch, 3 epochs, a checkpoint at steps 4, 8, 12.
KILL_RUN = ("--num_train_epochs", "3", "--optim", "adatamw")
STEPS, SAVE_STEPS = 12, (4, 8, 12)

# Runs the recipe and SIGKILLs itself: after optimizer step N ("step"), or inside the write of
# checkpoint-N, after its weights and before its optimizer state and trainer_state.json ("checkpoint").
KILLER = r"""
import os, signal, sys
import torch
import transformers
torch.set_num_threads(int(os.environ["FAULT_THREADS"]))  # the parent's: bit-exact resume needs it
from transformers import TrainerCallback
from recipes import mlm_finetune

mode, n = sys.argv[1], int(sys.argv[2])

class KillAtStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if mode == "step" and state.global_step == n:
            os.kill(os.getpid(), signal.SIGKILL)

save = transformers.Trainer._save_optimizer_and_scheduler
def save_then_die(self, output_dir):
    if mode == "checkpoint" and os.path.basename(output_dir) == f"checkpoint-{n}":
        os.kill(os.getpid(), signal.SIGKILL)
    return save(self, output_dir)
transformers.Trainer._save_optimizer_and_scheduler = save_then_die
mlm_finetune.main(sys.argv[3:], callbacks=[KillAtStep()])
"""


@pytest.fixture(scope="module")
def uninterrupted(tiny, text_files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    mlm_finetune.main(recipe_argv(tiny, out, text_files, *KILL_RUN))
    return out


def _kill_and_rerun(mode: str, n: int, tiny, text_files, out: Path, uninterrupted: Path, caplog) -> None:
    args = recipe_argv(tiny, out, text_files, *KILL_RUN)
    # the killed run and the in-process ones must run the same kernels on the same thread count
    # (another test module may have changed this process's): then their float operations match
    env = {**os.environ, **OFFLINE, "FAULT_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, mode, str(n), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -signal.SIGKILL, f"{mode} {n}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    run_dir = out / "lr_0.001"
    assert not (run_dir / results.METRICS_FILE).exists()
    if mode == "checkpoint":  # the fault really left a cut-off checkpoint
        cut = run_dir / f"checkpoint-{n}"
        assert (cut / "model.safetensors").exists() and not (cut / results.TRAINER_STATE).exists()
    caplog.clear()
    selection = mlm_finetune.main(args)
    if mode == "checkpoint":
        assert f"checkpoint-{n} is incomplete (no readable trainer_state.json)" in caplog.text
    expected = json.loads((uninterrupted / results.SELECTION_FILE).read_text())
    assert json.loads((out / results.SELECTION_FILE).read_text()) == selection == expected
    assert_same_tensors(last_weights(run_dir), last_weights(uninterrupted / "lr_0.001"))
    assert_same_tensors(
        load_file(out / selection["checkpoint"] / "model.safetensors"),
        load_file(uninterrupted / expected["checkpoint"] / "model.safetensors"),
    )


@pytest.mark.slow
def test_kill9_during_training_then_rerun_equals_uninterrupted(
    tiny, text_files, tmp_path, uninterrupted, caplog
):
    step = int(os.environ.get("FAULT_KILL_STEP") or random.SystemRandom().randint(1, STEPS - 1))
    print(f"kill -9 after step {step} of {STEPS}")
    _kill_and_rerun("step", step, tiny, text_files, tmp_path, uninterrupted, caplog)


@pytest.mark.slow
def test_kill9_during_checkpoint_write_then_rerun_equals_uninterrupted(
    tiny, text_files, tmp_path, uninterrupted, caplog
):
    step = int(os.environ.get("FAULT_KILL_CHECKPOINT") or random.SystemRandom().choice(SAVE_STEPS))
    print(f"kill -9 while checkpoint-{step} is written")
    _kill_and_rerun("checkpoint", step, tiny, text_files, tmp_path, uninterrupted, caplog)


def test_checkpoints_without_identity_name_the_folder_to_delete(tiny, text_files, tmp_path, monkeypatch):
    (tmp_path / "lr_0.001" / "checkpoint-4").mkdir(parents=True)
    monkeypatch.setattr(mlm_finetune, "load_model", lambda *a: pytest.fail("a model was loaded"))
    with pytest.raises(SystemExit, match=f"delete the folder {tmp_path / 'lr_0.001'}"):
        mlm_finetune.main(recipe_argv(tiny, tmp_path, text_files))


# ---- changed settings ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_sweep(tiny, text_files, tmp_path_factory):
    """One finished sweep cell (adatamw, 1 epoch, lr 1e-3, 8 blocks); returns (sweep args, cell)."""
    root = tmp_path_factory.mktemp("sweep")
    args = [
        *tiny_sweep_args(tiny, root, optims=["adatamw"]),
        "--in_process",
        *data_args(text_files, train_blocks=8),
    ]
    (cell,) = sweep.main(args)
    assert (cell.output_dir / results.SELECTION_FILE).is_file()
    return args, cell


@pytest.mark.slow
def test_changed_setting_is_refused_by_the_recipe(finished_sweep, text_files, monkeypatch):
    args, cell = finished_sweep
    monkeypatch.setattr(mlm_finetune, "train_one_lr", lambda *a, **k: pytest.fail("a run was retrained"))
    same = cell.recipe_args(data_args(text_files, train_blocks=8))
    assert mlm_finetune.main(same)["lr"] == 1e-3  # the same settings: skipped
    with pytest.raises(SystemExit) as err:
        mlm_finetune.main(
            [*same, "--mlm_probability", "0.3", "--gamma", "0.5", "--per_device_train_batch_size", "2"]
        )
    message = str(err.value)
    for part in (
        "mlm_probability: 0.15 there vs 0.3 now",
        "optimizer_settings.gamma: 0.9 there vs 0.5 now",
        "global_batch_size: 4 there vs 2 now",
        "--overwrite_runs",
        "another output folder",
    ):
        assert part in message, message


@pytest.mark.slow
def test_changed_setting_is_refused_by_the_sweep(finished_sweep, monkeypatch, capsys):
    args, cell = finished_sweep
    manifest = (cell.output_dir.parents[2] / sweep.MANIFEST).read_bytes()
    monkeypatch.setattr(mlm_finetune, "main", lambda *a, **k: pytest.fail("a cell was rerun"))
    sweep.main(args)  # the same settings: skipped
    assert "skip (finished)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as err:
        sweep.main([*args, "--max_seq_length", "64", "--seed", "7"])
    message = str(err.value)
    assert "max_seq_length: 32 there vs 64 now" in message and "seed: 42 there vs 7 now" in message, message
    assert (cell.output_dir.parents[2] / sweep.MANIFEST).read_bytes() == manifest


# ---- concurrency and locks -------------------------------------------------------------------

HOLDER = (
    "import sys, time\nfrom common.locks import hold\nwith hold(sys.argv[1], 'test'):\n"
    "    print('held', flush=True)\n    time.sleep(120)\n"
)


def _holder(lock_path: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_path)],
        cwd=REPO,
        env={**os.environ, **OFFLINE},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


@pytest.mark.slow
def test_concurrent_recipe_run_is_refused(finished_sweep, text_files):
    _, cell = finished_sweep
    holder = _holder(cell.output_dir / ".lr_0.001.lock")
    try:
        with pytest.raises(SystemExit, match=f"lr run .*lr_0.001 is in use by PID {holder.pid} "):
            mlm_finetune.main(cell.recipe_args(data_args(text_files, train_blocks=8)))
    finally:
        _stop(holder)


@pytest.mark.slow
def test_concurrent_sweep_cell_is_refused(finished_sweep):
    args, cell = finished_sweep
    holder = _holder(cell.output_dir.parent / f".{cell.output_dir.name}.lock")
    try:
        with pytest.raises(SystemExit, match=f"sweep cell .*ep1 is in use by PID {holder.pid} "):
            sweep.main(args)
    finally:
        _stop(holder)


def test_lock_of_a_killed_process_is_released(tmp_path):
    lock_path = tmp_path / ".run.lock"
    holder = _holder(lock_path)
    with pytest.raises(SystemExit, match=f"in use by PID {holder.pid}"):
        with locks.hold(lock_path, "run"):
            pass
    _stop(holder)  # kill -9: it leaves its owner note behind, the kernel releases the lock
    assert json.loads(lock_path.with_name(".run.lock.owner.json").read_text())["pid"] == holder.pid
    with locks.hold(lock_path, "run"):
        assert json.loads(lock_path.with_name(".run.lock.owner.json").read_text())["pid"] == os.getpid()


# ---- no orphan -------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _sweep_with_running_child(tiny, text_files, root: Path) -> tuple[subprocess.Popen, int]:
    cmd = [
        sys.executable,
        "-m",
        "recipes.sweep",
        *tiny_sweep_args(tiny, root),
        "--launcher",
        "python",
        *data_args(text_files),
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env={**os.environ, **OFFLINE}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        # the recipe itself (exec done, so the sweep's Popen has returned and its handlers are set)
        children = [c for c in _children(proc.pid) if b"mlm_finetune" in _cmdline(c)]
        if children:
            return proc, children[0]
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"the sweep started no child (exit {proc.poll()})")


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_killed_sweep_leaves_no_orphan(tiny, text_files, tmp_path):
    proc, child = _sweep_with_running_child(tiny, text_files, tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        assert _gone_within(child, 30), f"the recipe child {child} outlived the sweep"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.slow
def test_sweep_forwards_sigterm_to_its_child(tiny, text_files, tmp_path):
    proc, child = _sweep_with_running_child(tiny, text_files, tmp_path)
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        assert not _alive(child)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


# ---- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        "empty_train",
        "blank_validation",
        "invalid_utf8",
        "output_dir_is_file",
        "output_dir_unwritable",
        "zero_blocks",
    ],
)
def test_bad_input_is_one_line_naming_it_before_any_model(case, tiny, text_files, tmp_path, monkeypatch):
    monkeypatch.setattr(mlm_finetune, "load_model", lambda *a: pytest.fail("a model was loaded"))
    train, valid, out = text_files[0], text_files[1], tmp_path / "out"
    bad = tmp_path / "bad.txt"
    if case == "empty_train":
        bad.write_bytes(b"")
        train, expected = bad, f"--train_file {bad}: the file is empty"
    elif case == "blank_validation":
        bad.write_text("\n  \n\n", encoding="utf-8")
        valid, expected = bad, f"--validation_file {bad}: the file is empty (whitespace only)"
    elif case == "invalid_utf8":
        bad.write_bytes("caf\u00e9 ok\n".encode() + b"caf\xe9 latin-1\n")
        train, expected = bad, f"--train_file {bad}: not valid UTF-8 (byte 0xe9 at offset 12)"
    elif case == "output_dir_is_file":
        out.write_text("x")
        expected = f"--output_dir {out}: is a file, not a folder"
    elif case == "output_dir_unwritable":
        out, expected = (
            Path("/proc/adatamw-test/out"),
            "--output_dir /proc/adatamw-test/out: cannot write there",
        )
    else:
        bad.write_text("A few words only.\n", encoding="utf-8")
        train, expected = bad, f"{bad} ({valid}): the train split gives no block of 32 tokens"
    with pytest.raises(SystemExit) as err:
        mlm_finetune.main(recipe_argv(tiny, out, (train, valid)))
    message = str(err.value)
    assert message.startswith(expected) and "\n" not in message, message
    if case in ("empty_train", "blank_validation", "invalid_utf8"):
        assert not out.exists(), "a rejected run left an --output_dir behind"


# ---- offline with an empty cache (#17) -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "program,args,missing",
    [
        ("recipe", ["--offline_sample"], "hf download bert-base-uncased"),
        (
            "recipe",
            ["--model_name_or_path", "minilm-offline"],
            "load_dataset('Salesforce/wikitext', 'wikitext-2-raw-v1')",
        ),
        ("sweep", ["--offline_sample"], "hf download bert-base-uncased"),
        ("sweep", ["--models", "minilm-offline"], "load_dataset('Salesforce/wikitext', 'wikitext-2-raw-v1')"),
    ],
)
def test_offline_empty_cache_stops_before_training(program, args, missing, tmp_path):
    cache = tmp_path / "hf"
    env = {
        **os.environ,
        **OFFLINE,
        "HF_HOME": str(cache),
        "HF_HUB_CACHE": str(cache / "hub"),
        "HF_DATASETS_CACHE": str(cache / "datasets"),
    }
    out = tmp_path / "out"
    if program == "recipe":
        cmd = [
            sys.executable,
            "recipes/mlm_finetune.py",
            "--output_dir",
            str(out),
            "--num_train_epochs",
            "1",
            *args,
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "recipes.sweep",
            "--optims",
            "adamw",
            "--epochs",
            "1",
            "--launcher",
            "python",
            "--output_root",
            str(out),
            *args,
        ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert missing in log and "Nothing was trained" in log and "--offline_defaults" in log, log[-3000:]
    assert not list(out.glob("**/lr_*")) and not list(out.glob("**/checkpoint-*"))
