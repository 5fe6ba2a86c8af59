"""Text loading and block building for the MLM recipe (as ``run_mlm.py``'s non line-by-line path).

Sources, in the order the recipe considers them:

1. ``--train_file`` / ``--validation_file``: local ``.txt`` / ``.raw`` (one text per line),
   ``.csv`` or ``.json(l)`` with a ``text`` column;
2. ``--offline_sample``: the bundled ``recipes/sample_data`` (WikiText layout);
3. ``--dataset_name`` / ``--dataset_config_name`` from the hub (default
   ``Salesforce/wikitext`` / ``wikitext-2-raw-v1``); when the hub is unreachable
   the bundled sample is used instead, with a log line saying so.

Every block carries an ``idx`` column (its position in the split), which the masking
collator uses to draw that block's mask independently of any global random stream.
"""

from __future__ import annotations

import contextlib
import logging
from itertools import chain
from pathlib import Path

from datasets import DatasetDict, load_dataset

from recipes.hub import SAMPLE_FILES, hub_reachable, is_connection_error, offline_env

logger = logging.getLogger(__name__)

INDEX_COLUMN = "idx"
_EXTENSIONS = {".txt": "text", ".raw": "text", ".text": "text", ".csv": "csv", ".json": "json", ".jsonl": "json"}


def _builder_for(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in _EXTENSIONS:
        raise SystemExit(
            f"data file {path}: unsupported extension {suffix!r}; use one of {sorted(_EXTENSIONS)} "
            "(plain text is one example per line)"
        )
    return _EXTENSIONS[suffix]


def check_files(train_file: str | None, validation_file: str | None) -> None:
    """Fail fast on missing or inconsistent local data files."""
    for flag, path in (("--train_file", train_file), ("--validation_file", validation_file)):
        if path is not None and not Path(path).is_file():
            raise SystemExit(f"{flag} {path}: no such file; check the path")
    if validation_file is not None and train_file is None:
        raise SystemExit("--validation_file needs --train_file too")
    if train_file and validation_file and _builder_for(train_file) != _builder_for(validation_file):
        raise SystemExit("--train_file and --validation_file must have the same format (both text, csv or json)")


def _load_files(files: dict[str, str], cache_dir: str | None) -> DatasetDict:
    builder = _builder_for(next(iter(files.values())))
    kwargs = {"keep_linebreaks": True} if builder == "text" else {}
    return load_dataset(builder, data_files={k: str(v) for k, v in files.items()}, cache_dir=cache_dir, **kwargs)


def _split_validation(raw: DatasetDict, percentage: int) -> DatasetDict:
    """Carve a validation split off the head of train when none was given (as run_mlm)."""
    if "validation" in raw:
        return raw
    if not 0 < percentage < 100:
        raise SystemExit(f"--validation_split_percentage must be in 1..99, got {percentage}")
    n_valid = max(1, len(raw["train"]) * percentage // 100)
    train = raw["train"]
    return DatasetDict(validation=train.select(range(n_valid)), train=train.select(range(n_valid, len(train))))


def load_raw_datasets(data_args, cache_dir: str | None = None) -> tuple[DatasetDict, str]:
    """Load train/validation text; returns the datasets and a short description of the source."""
    if data_args.train_file is not None:
        check_files(data_args.train_file, data_args.validation_file)
        files = {"train": data_args.train_file}
        if data_args.validation_file:
            files["validation"] = data_args.validation_file
        raw = _split_validation(_load_files(files, cache_dir), data_args.validation_split_percentage)
        return raw, f"files:{data_args.train_file},{data_args.validation_file}"
    if data_args.offline_sample:
        logger.info("Using the bundled offline sample %s (--offline_sample).", SAMPLE_FILES["train"].parent)
        return _load_files(SAMPLE_FILES, cache_dir), "bundled-sample"

    name, config = data_args.dataset_name, data_args.dataset_config_name
    # Reachable hub: the real path. Offline mode: a cached copy still loads. No network and no
    # offline variable: skip `datasets`' long retries and go straight to the sample.
    reason = "no network"
    if hub_reachable() or offline_env():
        try:
            raw = load_dataset(name, config, cache_dir=cache_dir)
        except Exception as err:  # noqa: BLE001 - only connection failures fall back, others re-raise
            if not is_connection_error(err):
                raise
            reason = str(err)
            raw = None
    else:
        raw = None
    if raw is None:
        logger.warning(
            "Hub unreachable and %s/%s not cached (%s): using the bundled offline sample %s "
            "(the Jargon File in WikiText format; see recipes/sample_data/SOURCE.md).",
            name,
            config,
            reason,
            SAMPLE_FILES["train"].parent,
        )
        return _load_files(SAMPLE_FILES, cache_dir), "bundled-sample"
    return _split_validation(raw, data_args.validation_split_percentage), f"hub:{name}/{config}"


def block_size_for(requested: int, tokenizer, config) -> int:
    """``--max_seq_length`` capped at what the model and tokenizer accept."""
    if requested <= 0:
        raise SystemExit(f"--max_seq_length must be positive, got {requested}")
    limits = []
    if getattr(tokenizer, "model_max_length", None) and tokenizer.model_max_length < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    max_pos = getattr(config, "max_position_embeddings", None)
    if max_pos:
        # RoBERTa-style position ids start after the padding index.
        offset = (config.pad_token_id + 1) if config.model_type in {"roberta", "xlm-roberta", "camembert"} else 0
        limits.append(int(max_pos) - offset)
    cap = min(limits) if limits else requested
    if requested > cap:
        logger.info("--max_seq_length %d exceeds the model's maximum %d: using %d.", requested, cap, cap)
    return min(requested, cap)


def tokenize_and_group(raw: DatasetDict, tokenizer, block_size: int, process_first=None, num_proc: int | None = None):
    """Tokenize every line, concatenate, cut into ``block_size`` blocks, add the ``idx`` column.

    ``process_first`` is a context-manager factory (``TrainingArguments.main_process_first``)
    so that, under ``accelerate launch``, the main process builds the ``datasets`` cache first.
    """
    process_first = process_first or (lambda desc: contextlib.nullcontext())
    text_column = "text" if "text" in raw["train"].column_names else raw["train"].column_names[0]

    def tokenize(examples):
        return tokenizer(examples[text_column], return_special_tokens_mask=True)

    def group_texts(examples):
        concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
        total = (len(concatenated["input_ids"]) // block_size) * block_size
        return {k: [t[i : i + block_size] for i in range(0, total, block_size)] for k, t in concatenated.items()}

    with process_first(desc="tokenizing"):
        tokenized = raw.map(
            tokenize,
            batched=True,
            num_proc=num_proc,
            remove_columns=raw["train"].column_names,
            desc="Tokenizing",
        )
    with process_first(desc="grouping texts"):
        grouped = tokenized.map(group_texts, batched=True, num_proc=num_proc, desc=f"Grouping into blocks of {block_size}")
    for split in grouped:
        if len(grouped[split]) == 0:
            raise SystemExit(
                f"the {split} split gives no block of {block_size} tokens: provide more text or lower --max_seq_length"
            )
    return DatasetDict({split: ds.add_column(INDEX_COLUMN, list(range(len(ds)))) for split, ds in grouped.items()})


def truncate(ds, max_samples: int | None, flag: str):
    """Keep the first ``max_samples`` blocks (``--max_train_samples`` / ``--max_eval_samples``)."""
    if max_samples is None:
        return ds
    if max_samples <= 0:
        raise SystemExit(f"{flag} must be positive, got {max_samples}")
    return ds.select(range(min(max_samples, len(ds))))
