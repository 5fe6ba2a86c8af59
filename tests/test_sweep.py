"""recipes/sweep.py: the plan, the SLURM script, local execution, skipping and the manifest."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from recipes import mlm_finetune, sweep
from recipes.hub import SAMPLE_FILES
from tests.support.recipe_args import tiny_recipe_args, tiny_sweep_args
from tests.support.slurm_cluster import script_commands
from tests.support.tiny_models import save_tiny_model


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_model("bert", tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="module")
def recipe_extra(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("text")
    train, valid = root / "train.txt", root / "valid.txt"
    train.write_text(SAMPLE_FILES["train"].read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    valid.write_text(SAMPLE_FILES["validation"].read_text(encoding="utf-8")[:6_000], encoding="utf-8")
    return tiny_recipe_args((train, valid), max_train_samples=8, per_device_eval_batch_size=None)


def test_dry_run_lists_the_paper_grid(tmp_path, capsys):
    cells = sweep.main(["--dry-run", "--output_root", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("36 runs (0 finished), each over lrs 5e-06, 1e-05, 5e-05")
    commands = [shlex.split(line.split("] ", 1)[1]) for line in lines[1:]]
    assert len(commands) == len(cells) == 6 * 2 * 3
    combos = set()
    for cmd in commands:
        assert cmd[:3] == ["accelerate", "launch", "recipes/mlm_finetune.py"]
        arg = {cmd[i]: cmd[i + 1] for i in range(3, len(cmd) - 1) if cmd[i].startswith("--")}
        lrs = cmd[cmd.index("--learning_rates") + 1 : cmd.index("--learning_rates") + 4]
        assert lrs == ["5e-06", "1e-05", "5e-05"]
        combos.add((arg["--model_name_or_path"], arg["--optim"], int(arg["--num_train_epochs"])))
        assert arg["--output_dir"].endswith(f"{arg['--optim']}/ep{arg['--num_train_epochs']}")
    assert combos == {(m, o, e) for m in sweep.PAPER_MODELS for o in ("adamw", "adatamw") for e in (3, 5, 10)}
    assert not (tmp_path / "manifest.json").exists()


def emit_slurm(out: Path, output_root: str | Path, args: list[str]) -> None:
    """``sweep.py --emit slurm`` writing its batch script to ``out``, runs under ``output_root``."""
    sweep.main(["--emit", "slurm", "--slurm_out", str(out), "--output_root", str(output_root), *args])


def test_slurm_script_has_one_task_per_cell(tmp_path, monkeypatch):
    out = tmp_path / "sweep.sbatch"
    monkeypatch.chdir(tmp_path)
    emit_slurm(
        out,
        "runs",
        [
            "--models",
            "roberta-base",
            "microsoft/deberta-base",
            "--epochs",
            "3",
            "5",
            "--launch_args",
            "--multi_gpu --num_processes 4",
            "--slurm_directive=--gres=gpu:4",
            "--slurm_directive",
            "time=24:00:00",
            "--slurm_throttle",
            "3",
            "--max_seq_length",
            "128",
        ],
    )
    script = out.read_text()
    assert "#SBATCH --array=0-7%3\n" in script and "#SBATCH --gres=gpu:4\n" in script
    assert "#SBATCH --time=24:00:00\n" in script and "#SBATCH --job-name=tam-mlm\n" in script
    assert f"#SBATCH --output={tmp_path / 'runs' / 'slurm_logs'}/%A_%a.out" in script
    assert (tmp_path / "runs" / "slurm_logs").is_dir()  # sbatch does not create it
    tasks = script_commands(script)
    assert len(tasks) == 8
    recipe = str(sweep.REPO / "recipes" / "mlm_finetune.py")
    for cmd in tasks:  # this interpreter runs accelerate: nothing from PATH
        assert cmd[:7] == [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "4",
            recipe,
        ]
        assert cmd[-2:] == ["--max_seq_length", "128"]
        assert cmd[cmd.index("--output_dir") + 1].startswith(str(tmp_path / "runs") + "/")
    assert any(c[c.index("--output_dir") + 1].endswith("microsoft--deberta-base/adatamw/ep5") for c in tasks)
    collect = [
        sys.executable,
        str(sweep.REPO / "recipes" / "sweep.py"),
        "--collect",
        "--output_root",
        str(tmp_path / "runs"),
    ]
    assert f"{shlex.join(collect)} || STATUS=1" in script  # every array task refreshes the manifest
    assert f"cd {shlex.quote(str(tmp_path))}\n" in script  # where the sweep was started
    subprocess.run(["bash", "-n", str(out)], check=True)


def test_slurm_options_is_deprecated_but_works(tmp_path, capsys):
    out = tmp_path / "sweep.sbatch"
    emit_slurm(
        out,
        tmp_path / "runs",
        [
            "--models",
            "roberta-base",
            "--epochs",
            "3",
            "--slurm_options",
            "--gres=gpu:4 --time=24:00:00",
        ],
    )
    assert "#SBATCH --gres=gpu:4\n#SBATCH --time=24:00:00\n" in out.read_text()
    assert "--slurm_options is deprecated" in capsys.readouterr().err


def test_slurm_array_is_packed_under_max_array_size(tmp_path, capsys):
    out = tmp_path / "sweep.sbatch"
    emit_slurm(
        out,
        tmp_path / "runs",
        [
            "--slurm_max_array_size",
            "5",
            "--launcher",
            "python",
        ],
    )  # the paper's 36 cells
    script = out.read_text()
    assert "#SBATCH --array=0-4\n" in script and "PER_TASK=8\n" in script
    assert len(script_commands(script)) == 36
    assert all(
        c[:2] == [sys.executable, str(sweep.REPO / "recipes" / "mlm_finetune.py")]
        for c in script_commands(script)
    )
    assert "8 commands per array task (MaxArraySize 5 from --slurm_max_array_size)" in capsys.readouterr().out


@pytest.mark.slow
def test_local_sweep_writes_manifest_and_skips_finished(
    tiny_bert, recipe_extra, tmp_path, monkeypatch, capsys
):
    root = tmp_path / "runs"
    common = [
        *tiny_sweep_args(tiny_bert, root, epochs=["1", "2"]),
        "--in_process",
        *recipe_extra,
    ]
    sweep.main(common)
    manifest = json.loads((root / "manifest.json").read_text())
    assert [(e["optimizer"], e["epochs"]) for e in manifest["selected"]] == [("adamw", 1), ("adamw", 2)]
    for entry in manifest["selected"]:
        assert list(entry) == [
            "model",
            "optimizer",
            "epochs",
            "lr",
            "checkpoint",
            "val_perplexity",
            "provenance",
        ]
        assert entry["model"] == str(tiny_bert) and entry["lr"] == 1e-3
        assert set(entry["provenance"]) == {"model", "data"}
        assert set(entry["provenance"]["model"]) == {"name", "resolved", "weights_sha256"}
        assert set(entry["provenance"]["data"]) == {"name", "config", "fingerprint"}
        assert entry["provenance"]["model"]["name"] == str(tiny_bert)
        assert (root / entry["checkpoint"] / "model.safetensors").exists()
        assert entry["checkpoint"].startswith(f"bert/adamw/ep{entry['epochs']}/lr_0.001/checkpoint-")
    # Re-running trains nothing and prints the cells as done.
    monkeypatch.setattr(mlm_finetune, "main", lambda *a, **k: pytest.fail("a finished cell was rerun"))
    sweep.main(common)
    assert capsys.readouterr().out.count("skip (finished)") == 2
    sweep.main([*common, "--dry-run"])
    assert capsys.readouterr().out.count("[done]") == 2
    # A larger lr grid is not finished yet.
    larger = list(common)
    larger[larger.index("--learning_rates") + 1 : larger.index("--learning_rates") + 2] = ["1e-3", "2e-3"]
    sweep.main([*larger, "--dry-run"])
    assert capsys.readouterr().out.count("[todo]") == 2


@pytest.mark.slow
def test_local_sweep_runs_the_recipe_as_a_subprocess(tiny_bert, recipe_extra, tmp_path):
    root = tmp_path / "runs"
    sweep.main(
        [
            *tiny_sweep_args(tiny_bert, root),
            "--launcher",
            "python",
            *recipe_extra,
        ]
    )
    manifest = json.loads((root / "manifest.json").read_text())
    assert len(manifest["selected"]) == 1


@pytest.mark.parametrize(
    "args,message",
    [
        (["--epochs", "0"], "--epochs must be positive"),
        (["--learning_rates", "0"], "--learning_rates must all be positive"),
        (["--output_dir", "x"], "--output_dir: set by the sweep"),
        (["--emit", "slurm"], "--emit slurm needs --slurm_out"),
        (
            ["--emit", "slurm", "--slurm_out", "x.sbatch", "--slurm_directive=--array=0-3"],
            "--array is written by",
        ),
    ],
)
def test_bad_sweep_input(tmp_path, args, message):
    with pytest.raises(SystemExit, match=message):
        sweep.main(["--output_root", str(tmp_path), *args])
