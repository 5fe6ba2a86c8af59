"""The tiny command lines the tests give ``recipes/mlm_finetune.py`` (and the sweep, which passes
them on): one builder, so each test names only the values it changes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def tiny_recipe_args(
    files: tuple[Path, Path] | None = None,
    *,
    model: Path | None = None,
    max_seq_length: int = 32,
    max_train_samples: int = 16,
    max_eval_samples: int = 8,
    per_device_train_batch_size: int = 4,
    per_device_eval_batch_size: int | None = 8,
    run: Sequence[str] = (),
    dataloader_pin_memory: str | None = "false",
    extra: Sequence[str] = (),
) -> list[str]:
    """``--model_name_or_path`` (when ``model``), the train/validation files (when ``files``), the
    size and batch arguments, then ``run`` (epochs, learning rates, optimizer, output folder ...),
    then no reporting, no progress bar, ``--dataloader_pin_memory`` (unless None), then ``extra``.

    A batch size or pin-memory value of None leaves that argument out (the recipe's default).
    """
    args = ["--model_name_or_path", str(model)] if model is not None else []
    if files is not None:
        args += ["--train_file", str(files[0]), "--validation_file", str(files[1])]
    args += [
        "--max_seq_length",
        str(max_seq_length),
        "--max_train_samples",
        str(max_train_samples),
        "--max_eval_samples",
        str(max_eval_samples),
        "--per_device_train_batch_size",
        str(per_device_train_batch_size),
    ]
    if per_device_eval_batch_size is not None:
        args += ["--per_device_eval_batch_size", str(per_device_eval_batch_size)]
    args += [*run, "--report_to", "none", "--disable_tqdm", "true"]
    if dataloader_pin_memory is not None:
        args += ["--dataloader_pin_memory", dataloader_pin_memory]
    return [*args, *extra]


def tiny_sweep_args(
    model: Path,
    output_root: Path,
    *,
    optims: Sequence[str] = ("adamw",),
    epochs: Sequence[str] = ("1",),
    learning_rates: Sequence[str] = ("1e-3",),
) -> list[str]:
    """``recipes/sweep.py``'s grid over one ``model`` (one cell by default: AdamW, 1 epoch, lr
    1e-3), its runs under ``output_root``; the recipe's own arguments go after it."""
    return [
        *("--models", str(model), "--optims", *optims, "--epochs", *epochs),
        *("--learning_rates", *learning_rates, "--output_root", str(output_root)),
    ]
