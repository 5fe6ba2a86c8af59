#!/usr/bin/env python
"""Masked-LM fine-tuning with a learning-rate grid and best-checkpoint selection (docs/reproducing.md).

Modelled on ``transformers/examples/pytorch/language-modeling/run_mlm.py``: the same
dataclass arguments through ``HfArgumentParser``, tokenize, group into blocks, MLM
with probability 0.15; plus what the TAM comparison needs:

* ``--optim`` one of ``adatamw.registry.OPTIM_NAMES`` through ``adatamw.trainer.TAMTrainer``
  (``adamw`` builds exactly what a plain Trainer builds). HF's own optimizer names
  (``--optim adamw_torch``) still reach ``TrainingArguments`` and set the adamw baseline.
* one run per ``--learning_rates`` value in ``output_dir/lr_<lr>/``, evaluated every
  epoch; the best epoch of the best lr is the selected checkpoint (``selection.json``).
* validation perplexity = exp(mean masked-token loss) on a validation set masked once
  with ``--mask_seed``; training masks drawn per (mask_seed, epoch, block index), so a
  resumed run and a 2-process run see the masks of an uninterrupted 1-process run.
* every lr run records its identity (``recipes/identity.py``: model weights hash, data
  fingerprint, every setting that changes the weights); a finished run with the same identity
  is skipped, one with another identity refused naming each differing key; an interrupted run
  resumes from its newest *complete* checkpoint (one cut off by a kill is skipped), under a
  lock, so a second process on the same run is refused.

Usage::

    accelerate launch recipes/mlm_finetune.py --model_name_or_path bert-base-uncased \\
        --optim adatamw --num_train_epochs 3 --output_dir runs/bert-base/adatamw/ep3
    python recipes/mlm_finetune.py --offline_sample --model_name_or_path minilm-offline \\
        --max_seq_length 128 --max_train_samples 512 --learning_rates 5e-5 --output_dir runs/demo

Offline (no hub), nothing is substituted: a model or data set missing from the local cache
stops the run before training, naming it and the command that fills the cache. The offline
stand-ins only when asked for: ``--model_name_or_path minilm-offline`` (the embedded
all-MiniLM-L6-v2 BERT), ``--offline_sample`` (the bundled text), or ``--offline_defaults``
(both, where the model / data are not given) (``recipes/hub.py``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

if __package__ in (None, ""):  # `python recipes/mlm_finetune.py` / `accelerate launch recipes/...`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import datasets
import torch
import transformers
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer, HfArgumentParser, TrainingArguments

from adatamw.registry import OPTIM_NAMES, names_with
from common.locks import hold
from recipes import fsdp_prep, identity, results
from recipes.data import (
    block_size_for,
    load_raw_datasets,
    source_label,
    text_column,
    tokenize_and_group,
    truncate,
)
from recipes.hub import DEFAULT_MODEL, OFFLINE_MODEL_ALIAS, cache_only_when_unreachable, resolve_model
from recipes.launch_checks import warn_if_fsdp_downgraded
from recipes.masking import (
    IndexedMLMCollator,
    MaskEpochCallback,
    fixed_eval_masking,
    masked_lm_loss,
    masking_fingerprint,
    per_example_nll,
    perplexity_metrics,
)

logger = logging.getLogger("recipes.mlm_finetune")

#: What the registry says of the optimizers (adatamw.registry: the one home of names and capabilities).
TORQUE_OPTIMIZERS = names_with("torque")
COUPLED_OPTIMIZERS = names_with("coupled")
_HEAD_KEYS = ("cls.predictions", "lm_predictions", "lm_head", "predictions.")


@dataclass
class ModelArguments:
    """Which model to fine-tune."""

    model_name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={
            "help": "Hub id (from the hub or the local cache) or local folder; "
            f"'{OFFLINE_MODEL_ALIAS}' names the embedded all-MiniLM-L6-v2 BERT. Nothing is substituted: "
            "a hub model neither reachable nor cached stops the run."
        },
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the model's."})
    cache_dir: str | None = field(default=None, metadata={"help": "Hub cache folder for models and data."})


@dataclass
class DataArguments:
    """Which text to train and validate on."""

    dataset_name: str = field(default="Salesforce/wikitext", metadata={"help": "Hub data set."})
    dataset_config_name: str = field(
        default="wikitext-2-raw-v1",
        metadata={"help": "wikitext-2-raw-v1 (paper runtimes) or wikitext-103-raw-v1."},
    )
    train_file: str | None = field(default=None, metadata={"help": "Local text/csv/json training file."})
    validation_file: str | None = field(default=None, metadata={"help": "Local validation file."})
    offline_sample: bool = field(
        default=False, metadata={"help": "Use the bundled sample (recipes/sample_data) instead of the hub."}
    )
    offline_defaults: bool = field(
        default=False,
        metadata={
            "help": "The offline stand-ins for the defaults: --model_name_or_path "
            f"{OFFLINE_MODEL_ALIAS} unless a model is given, --offline_sample unless --train_file or "
            "--dataset_name is given (what the demo passes)."
        },
    )
    validation_split_percentage: int = field(
        default=5,
        metadata={"help": "Percent of train used for validation when there is no validation split."},
    )
    max_seq_length: int = field(
        default=512, metadata={"help": "Block length, capped at the model's maximum."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep the first N training blocks."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep the first N validation blocks."}
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "Fraction of tokens masked."})
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for tokenization."}
    )


@dataclass
class RecipeArguments:
    """Optimizer and learning-rate grid of the comparison."""

    optimizer: str = field(
        default="adamw",
        metadata={"help": "Optimizer (also accepted as --optim).", "choices": list(OPTIM_NAMES)},
    )
    learning_rates: list[float] = field(
        default_factory=lambda: [5e-6, 1e-5, 5e-5], metadata={"help": "Learning-rate grid, one run each."}
    )
    coupled_embeddings: bool = field(
        default=False,
        metadata={
            "help": f"Coupled second moment for the embedding matrix ({'/'.join(COUPLED_OPTIMIZERS)})."
        },
    )
    gamma: float | None = field(
        default=None, metadata={"help": "TAM smoothing of the cosine (optimizer default 0.9)."}
    )
    cosine_scope: str | None = field(
        default=None,
        metadata={"help": "One cosine over all parameters or per tensor.", "choices": ["global", "tensor"]},
    )
    mask_seed: int = field(
        default=0, metadata={"help": "Seed of the fixed validation masking and training masks."}
    )
    overwrite_runs: bool = field(
        default=False,
        metadata={
            "help": "Delete and retrain lr runs already in --output_dir (finished, interrupted or of "
            "other settings)."
        },
    )


def split_optim_flag(argv: list[str]) -> list[str]:
    """Route ``--optim NAME`` to ``--optimizer`` when NAME is one of the recipe's optimizers.

    ``TrainingArguments`` owns ``--optim`` (HF optimizer implementations such as
    ``adamw_torch``); those values pass through untouched.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--optim" and i + 1 < len(argv) and argv[i + 1] in OPTIM_NAMES:
            out += ["--optimizer", argv[i + 1]]
            i += 2
            continue
        if arg.startswith("--optim=") and arg.split("=", 1)[1] in OPTIM_NAMES:
            out.append("--optimizer=" + arg.split("=", 1)[1])
        else:
            out.append(arg)
        i += 1
    return out


def parse_args(argv: list[str] | None = None):
    """Parse the four dataclasses from ``argv`` (default ``sys.argv[1:]``)."""
    parser = HfArgumentParser((ModelArguments, DataArguments, RecipeArguments, TrainingArguments))
    argv = sys.argv[1:] if argv is None else list(argv)
    check_learning_rate_tokens(argv)
    model_args, data_args, recipe, training_args = parser.parse_args_into_dataclasses(
        args=split_optim_flag(argv)
    )
    if data_args.offline_defaults:
        given = {a.split("=", 1)[0] for a in argv}
        if "--model_name_or_path" not in given:
            model_args.model_name_or_path = OFFLINE_MODEL_ALIAS
        if not given & {"--train_file", "--dataset_name"}:
            data_args.offline_sample = True
    return model_args, data_args, recipe, cpu_distributed(training_args)


def check_learning_rate_tokens(argv: list[str]) -> None:
    """The recipe's one-line error for a non-positive ``--learning_rates`` value that argparse
    would take for a flag (``-1e-5``: argparse reads only ``-1`` or ``-0.5`` forms as negative
    numbers, and HfArgumentParser then fails with a traceback)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--learning_rates="):
            tokens = [arg.split("=", 1)[1]]
        elif arg == "--learning_rates":
            tokens = argv[i + 1 :]
        else:
            continue
        values = []
        for token in tokens:
            try:
                values.append(float(token))
            except ValueError:
                break
        refuse_bad_learning_rates(values)


def refuse_bad_learning_rates(values: list[float]) -> None:
    bad = [lr for lr in values if not (lr > 0 and math.isfinite(lr))]
    if bad:
        raise SystemExit(f"--learning_rates must all be positive, got {bad}")


def cpu_distributed(training_args: TrainingArguments) -> TrainingArguments:
    """Launched on several processes (``WORLD_SIZE`` > 1) on a machine without CUDA: train on CPU/gloo.

    Without ``use_cpu`` the Trainer sees an initialised process group but no GPU and trains each
    process alone. (``accelerate launch --cpu --num_processes 2`` starts ONE process unless an MPI
    hostfile is given; on CPU use ``accelerate launch --multi_gpu --num_processes 2`` or ``torchrun``.)
    """
    if (
        int(os.environ.get("WORLD_SIZE", "1")) > 1
        and not training_args.use_cpu
        and not torch.cuda.is_available()
    ):
        logger.info(
            "WORLD_SIZE=%s and no CUDA device: training on CPU with gloo (--use_cpu).",
            os.environ["WORLD_SIZE"],
        )
        training_args = replace(training_args, use_cpu=True)
    return training_args


def validate(model_args, data_args, recipe, training_args) -> None:
    """Fail fast, naming the problem and the fix."""
    if recipe.optimizer not in OPTIM_NAMES:
        raise SystemExit(
            f"--optim {recipe.optimizer}: unknown optimizer; choose one of {', '.join(OPTIM_NAMES)}"
        )
    if not recipe.learning_rates:
        raise SystemExit(
            "--learning_rates is empty: give at least one value, e.g. --learning_rates 5e-6 1e-5 5e-5"
        )
    refuse_bad_learning_rates(recipe.learning_rates)
    if len(set(recipe.learning_rates)) != len(recipe.learning_rates):
        raise SystemExit(f"--learning_rates has duplicates: {recipe.learning_rates}")
    if recipe.optimizer not in TORQUE_OPTIMIZERS and (
        recipe.gamma is not None or recipe.cosine_scope is not None
    ):
        raise SystemExit(
            f"--gamma / --cosine_scope apply to {', '.join(TORQUE_OPTIMIZERS)}, "
            f"not --optim {recipe.optimizer}"
        )
    if recipe.gamma is not None and not 0 <= recipe.gamma < 1:
        raise SystemExit(f"--gamma must be in [0, 1), got {recipe.gamma}")
    if recipe.coupled_embeddings and recipe.optimizer not in COUPLED_OPTIMIZERS:
        raise SystemExit(f"--coupled_embeddings needs --optim {' or '.join(COUPLED_OPTIMIZERS)}")
    epochs = training_args.num_train_epochs
    if epochs <= 0 or epochs != int(epochs):
        raise SystemExit(
            f"--num_train_epochs must be a positive whole number (evaluation is per epoch), got {epochs}"
        )
    if training_args.max_steps and training_args.max_steps > 0:
        raise SystemExit(
            "--max_steps is not supported: the recipe trains whole epochs; use --num_train_epochs "
            "and --max_train_samples to shorten a run"
        )
    if training_args.dataloader_persistent_workers:
        raise SystemExit(
            "--dataloader_persistent_workers would keep stale per-epoch masks in the workers; drop it"
        )
    if not 0 < data_args.mlm_probability < 1:
        raise SystemExit(f"--mlm_probability must be in (0, 1), got {data_args.mlm_probability}")
    check_output_dir(training_args.output_dir)


def check_output_dir(path: str) -> None:
    """One-line error when ``--output_dir`` is a file or cannot be written (before anything is loaded).

    Creates nothing: a run rejected later (a bad ``--train_file``) leaves no empty folder behind. The
    test file goes to the folder itself or, when it does not exist yet, to its nearest existing parent.
    """
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--output_dir {path}: is a file, not a folder; give a folder path")
    existing = next((p for p in (out, *out.absolute().parents) if p.exists()), Path("/"))
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise SystemExit(
            f"--output_dir {path}: cannot write there ({err.strerror or err}); give a writable folder"
        ) from None


def optim_kwargs(recipe) -> dict:
    kwargs = {}
    if recipe.gamma is not None:
        kwargs["gamma"] = recipe.gamma
    if recipe.cosine_scope is not None:
        kwargs["cosine_scope"] = recipe.cosine_scope
    return kwargs


def load_model(model_path: str, cache_dir: str | None):
    """Load the masked LM; log when its MLM head is newly initialised (MiniLM, DeBERTa)."""
    config = AutoConfig.from_pretrained(model_path, cache_dir=cache_dir)
    model, info = AutoModelForMaskedLM.from_pretrained(
        model_path, config=config, cache_dir=cache_dir, output_loading_info=True
    )
    head_missing = sorted(k for k in info.get("missing_keys", []) if any(h in k for h in _HEAD_KEYS))
    if head_missing:
        logger.warning(
            "%s carries no trained MLM head: %d head tensors are newly initialised (%s%s). Expect a high "
            "first-epoch perplexity.",
            model_path,
            len(head_missing),
            ", ".join(head_missing[:3]),
            ", ..." if len(head_missing) > 3 else "",
        )
    if config.model_type.startswith("deberta"):
        logger.warning(
            "DeBERTa: Microsoft's published checkpoints ship no trained MLM head, so fine-tuning starts "
            "from a random head (docs/demo.md, offline defaults)."
        )
    return model, bool(head_missing)


@dataclass
class PreparedData:
    train: datasets.Dataset
    eval: datasets.Dataset
    source: str
    block_size: int
    fingerprint: str

    def derived(self) -> dict:
        """The identity keys that follow from tokenizing (``recipes.identity.DERIVED_KEYS``)."""
        return {
            "block_size": self.block_size,
            "train_blocks": len(self.train),
            "eval_blocks": len(self.eval),
            "eval_mask_fingerprint": self.fingerprint,
        }


def prepare_data(raw, source: str, data_args, recipe, training_args, tokenizer, config) -> PreparedData:
    """Text -> blocks with an index column; validation masked once."""
    block_size = block_size_for(data_args.max_seq_length, tokenizer, config)
    blocks = tokenize_and_group(
        raw,
        tokenizer,
        block_size,
        training_args.main_process_first,
        data_args.preprocessing_num_workers,
        source,
    )
    train = truncate(blocks["train"], data_args.max_train_samples, "--max_train_samples")
    evaluation = truncate(blocks["validation"], data_args.max_eval_samples, "--max_eval_samples")
    with training_args.main_process_first(desc="masking validation"):
        evaluation = fixed_eval_masking(evaluation, tokenizer, recipe.mask_seed, data_args.mlm_probability)
    fingerprint = masking_fingerprint(evaluation)
    logger.info(
        "Data %s: %d train / %d validation blocks of %d tokens; validation masking %s.",
        source,
        len(train),
        len(evaluation),
        block_size,
        fingerprint,
    )
    return PreparedData(train, evaluation, source, block_size, fingerprint)


def run_args(training_args: TrainingArguments, run_dir: Path, lr: float) -> TrainingArguments:
    """The TrainingArguments of one lr run: per-epoch eval/save, keep the best by perplexity."""
    return replace(
        training_args,
        output_dir=str(run_dir),
        learning_rate=lr,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="perplexity",
        greater_is_better=False,
        remove_unused_columns=False,  # the collator needs the block index
        save_total_limit=training_args.save_total_limit or 1,  # with load_best: best + last
        run_name=training_args.run_name or f"{run_dir.parent.name}-{run_dir.name}",
    )


def _trainer_class():
    try:
        from adatamw.trainer import TAMTrainer
    except ImportError as err:
        raise SystemExit(
            f"adatamw.trainer.TAMTrainer is not importable ({err}): `pip install -e .[hf]`"
        ) from err
    return TAMTrainer


def epoch_history(log_history: list[dict]) -> list[dict]:
    """One entry per evaluated epoch (the last evaluation of each epoch wins)."""
    by_epoch: dict[int, dict] = {}
    for entry in log_history:
        if "eval_perplexity" in entry:
            epoch = round(entry["epoch"])
            by_epoch[epoch] = {
                "epoch": epoch,
                "step": entry["step"],
                "perplexity": entry["eval_perplexity"],
                "eval_loss": entry.get("eval_loss"),
            }
    return [by_epoch[e] for e in sorted(by_epoch)]


def resume_point(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of ``run_dir``; warns about each newer incomplete one skipped."""
    last, skipped = results.last_complete_checkpoint(run_dir)
    for folder, defect in skipped:
        logger.warning(
            "%s is incomplete (%s): cut off by a kill while it was written. Skipped; %s, and this folder is "
            "overwritten when training reaches that step again.",
            folder,
            defect,
            f"resuming from {last.name}" if last else "no complete checkpoint: training from the start",
        )
    return last


def train_one_lr(
    lr,
    run_dir: Path,
    record: dict,
    model_path,
    tokenizer,
    data,
    recipe,
    training_args,
    cache_dir,
    callbacks=(),
):
    """Train (or resume) one lr run and write its metrics.json; returns the metrics.

    ``record``: ``{"identity": ..., "provenance": ...}`` of this lr run, written to
    ``identity.json`` before training starts and into ``metrics.json`` at the end.
    """
    args = run_args(training_args, run_dir, lr)
    settings = record["identity"]
    last = resume_point(run_dir) if run_dir.is_dir() else None
    transformers.set_seed(args.seed)  # the same fresh MLM head for every lr
    model, head_initialised = load_model(model_path, cache_dir)
    fsdp_prep.prepare_if_fsdp2(model, args)  # for accelerate's FSDP2 preparation; refuses what cannot run
    if args.should_save:
        results.write_json_atomic(run_dir / identity.IDENTITY_FILE, record)
    collator = IndexedMLMCollator(tokenizer, recipe.mask_seed, settings["mlm_probability"])
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=collator,
        processing_class=tokenizer,
        compute_loss_func=masked_lm_loss,
        compute_metrics=perplexity_metrics,
        preprocess_logits_for_metrics=per_example_nll,
        callbacks=[MaskEpochCallback(collator), *callbacks],
        optim_name=recipe.optimizer,
        optim_kwargs=optim_kwargs(recipe) or None,
        coupled_embeddings=recipe.coupled_embeddings,
    )
    if last:
        logger.info("Resuming lr=%g from %s.", lr, last)
    start = time.time()
    output = trainer.train(resume_from_checkpoint=str(last) if last else None)
    history = epoch_history(trainer.state.log_history)
    best_ckpt = Path(trainer.state.best_model_checkpoint or "").name
    best_step = int(best_ckpt.split("-")[-1]) if best_ckpt.startswith("checkpoint-") else None
    best = next((h for h in history if h["step"] == best_step), None)
    if best is None:
        raise RuntimeError(
            f"{run_dir}: the Trainer kept no best checkpoint ({trainer.state.best_model_checkpoint!r})"
        )
    metrics = {
        **{key: settings[key] for key in SUMMARY_KEYS},
        "data": data.source,
        "resolved_model": model_path,
        "mlm_head_initialised": head_initialised,
        "epochs_history": history,
        "best_epoch": best["epoch"],
        "best_perplexity": best["perplexity"],
        "checkpoint": best_ckpt,
        "train_runtime": output.metrics.get("train_runtime"),
        "wall_seconds": time.time() - start,
        "resumed_from": last.name if last else None,
        "global_step": trainer.state.global_step,
        "selected": False,
        "complete": len(history) == settings["epochs"],
        **record,
    }
    if args.should_save:
        results.write_json_atomic(run_dir / results.METRICS_FILE, metrics)
    return metrics


#: Identity keys repeated at the top of metrics.json for readers (the whole identity is under "identity").
SUMMARY_KEYS = (
    "model",
    "optimizer",
    "epochs",
    "lr",
    "seed",
    "mask_seed",
    "mlm_probability",
    "block_size",
    "train_blocks",
    "eval_blocks",
    "eval_mask_fingerprint",
    "global_batch_size",
)


def select_and_record(output_dir: Path, runs: dict[float, dict], record: dict, should_save: bool) -> dict:
    """Pick the best lr, write selection.json, flag every run's metrics.json, point ``selected``.

    ``record``: the grid's ``{"identity": ..., "provenance": ...}``, carried into selection.json.
    """
    lr, best = results.select_best(runs)
    selection = {
        "model": best["model"],
        "optimizer": best["optimizer"],
        "epochs": best["epochs"],
        "lr": lr,
        "best_epoch": best["best_epoch"],
        "val_perplexity": best["best_perplexity"],
        "checkpoint": f"{results.lr_dirname(lr)}/{best['checkpoint']}",
        "grid": {f"{k:g}": v["best_perplexity"] for k, v in sorted(runs.items())},
        "resolved_model": best.get("resolved_model"),
        "seed": best["seed"],
        "mask_seed": best["mask_seed"],
        "eval_mask_fingerprint": best["eval_mask_fingerprint"],
        **record,
    }
    if should_save:
        for run_lr, metrics in runs.items():
            flag = run_lr == lr
            if metrics.get("selected") != flag:
                metrics["selected"] = flag
                results.write_json_atomic(
                    output_dir / results.lr_dirname(run_lr) / results.METRICS_FILE, metrics
                )
        results.write_json_atomic(output_dir / results.SELECTION_FILE, selection)
        results.point_selected(output_dir, output_dir / selection["checkpoint"])
    logger.info(
        "Selected lr=%g epoch %d (val perplexity %.4f): %s",
        lr,
        selection["best_epoch"],
        selection["val_perplexity"],
        output_dir / selection["checkpoint"],
    )
    return selection


def recorded_run(run_dir: Path) -> tuple[dict | None, dict | None]:
    """(metrics, recorded identity) of an lr run folder; the identity from metrics.json, else
    identity.json."""
    metrics = results.read_json(run_dir / results.METRICS_FILE)
    record = (
        metrics if metrics and "identity" in metrics else results.read_json(run_dir / identity.IDENTITY_FILE)
    )
    return metrics, (record or {}).get("identity")


def reuse_lr_run(run_dir: Path, expected: dict, overwrite: bool, main_process: bool) -> dict | None:
    """metrics of a finished run of this identity (skip it), None to train or resume it.

    Refuses a run of other settings, naming each differing key (``recipes.identity.reusable``),
    and a folder with checkpoints but no recorded identity. ``overwrite``: delete the folder first.
    """
    if overwrite:
        if main_process and run_dir.exists():
            logger.warning("--overwrite_runs: deleting %s.", run_dir)
            shutil.rmtree(run_dir)
        return None
    metrics, recorded = recorded_run(run_dir)
    if recorded is None and not metrics and results.checkpoints(run_dir):
        raise SystemExit(
            f"{run_dir} holds checkpoints but no record of their settings ({identity.IDENTITY_FILE}), "
            f"so they cannot be resumed safely: delete the folder {run_dir} (or pass --overwrite_runs) "
            "and re-run."
        )
    finished = results.is_complete(metrics)
    return metrics if identity.reusable(run_dir, recorded, expected, finished) else None


def identity_of(
    model_args, data_args, recipe, training_args, provenance: dict, world_size: int | None = None
) -> dict:
    """This run's identity (``recipes.identity.run_identity``) with the recipe's optimizer overrides."""
    return identity.run_identity(
        model_args, data_args, recipe, training_args, provenance, optim_kwargs(recipe), world_size
    )


def load_sources(model_args, data_args) -> tuple[object, str, dict]:
    """(raw text, resolved model folder, provenance): the data first (bad files fail before any model work).

    Stops, naming what is missing, when the hub is unreachable and the model or the data set is
    not cached; substitutes nothing.
    """
    cache_only_when_unreachable()
    raw, source = load_raw_datasets(data_args, model_args.cache_dir)
    model_path = resolve_model(model_args.model_name_or_path, model_args.cache_dir)
    fingerprint = identity.text_fingerprint(raw, text_column)
    return (
        raw,
        model_path,
        identity.provenance(model_args.model_name_or_path, model_path, source, fingerprint),
    )


def run(model_args, data_args, recipe, training_args, callbacks=()) -> dict:
    """Run the lr grid for one (model, optimizer, epochs); returns the selection.

    ``callbacks``: extra ``TrainerCallback`` instances given to every lr run's Trainer.
    """
    validate(model_args, data_args, recipe, training_args)
    raw, model_path, provenance = load_sources(model_args, data_args)
    grid_identity = identity_of(model_args, data_args, recipe, training_args, provenance)
    output_dir = Path(training_args.output_dir)
    main_process = training_args.should_save
    if not recipe.overwrite_runs:  # refuse other settings before tokenizing (the derived keys come later)
        for lr in recipe.learning_rates:
            reuse_lr_run(
                output_dir / results.lr_dirname(lr),
                identity.lr_identity(grid_identity, lr),
                False,
                main_process,
            )
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.tokenizer_name or model_path, cache_dir=model_args.cache_dir
    )
    config = AutoConfig.from_pretrained(model_path, cache_dir=model_args.cache_dir)
    data = prepare_data(
        raw, source_label(provenance["data"]), data_args, recipe, training_args, tokenizer, config
    )
    grid_identity.update(data.derived())
    runs: dict[float, dict] = {}
    grid = tqdm(
        recipe.learning_rates, desc="lr grid", unit="run", disable=not training_args.local_process_index == 0
    )
    for lr in grid:
        grid.set_postfix(lr=f"{lr:g}")
        run_dir = output_dir / results.lr_dirname(lr)
        record = {"identity": identity.lr_identity(grid_identity, lr), "provenance": provenance}
        lock = (
            hold(output_dir / f".{run_dir.name}.lock", f"lr run {run_dir}")
            if main_process
            else contextlib.nullcontext()
        )
        with lock:
            with training_args.main_process_first(desc="checking for a finished run"):
                finished = reuse_lr_run(run_dir, record["identity"], recipe.overwrite_runs, main_process)
            if finished is not None:
                logger.info("lr=%g already finished (%s): skipped.", lr, run_dir / results.METRICS_FILE)
                runs[lr] = finished
                continue
            runs[lr] = train_one_lr(
                lr,
                run_dir,
                record,
                model_path,
                tokenizer,
                data,
                recipe,
                training_args,
                model_args.cache_dir,
                callbacks,
            )
    return select_and_record(
        output_dir, runs, {"identity": grid_identity, "provenance": provenance}, main_process
    )


def setup_logging(training_args: TrainingArguments) -> None:
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = training_args.get_process_log_level()
    logging.getLogger("recipes").setLevel(logging.INFO if training_args.should_log else level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def main(argv: list[str] | None = None, callbacks=()) -> dict:
    """CLI entry point, also callable in-process: ``main(["--offline_sample", ...])``; returns the
    selection."""
    model_args, data_args, recipe, training_args = parse_args(argv)
    setup_logging(training_args)
    warn_if_fsdp_downgraded(training_args)
    return run(model_args, data_args, recipe, training_args, callbacks)


if __name__ == "__main__":
    main()
