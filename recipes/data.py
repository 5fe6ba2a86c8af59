"""Text loading and block building for the MLM recipe (as ``run_mlm.py``'s non line-by-line path).

Sources, in the order the recipe considers them:

1. ``--train_file`` / ``--validation_file``: local ``.txt`` / ``.raw`` (one text per line),
   ``.csv`` or ``.json(l)`` with a ``text`` column;
2. ``--offline_sample``: the bundled ``recipes/sample_data`` (WikiText layout);
3. ``--dataset_name`` / ``--dataset_config_name`` from the hub or its local cache (default
   ``Salesforce/wikitext`` / ``wikitext-2-raw-v1``). With the hub unreachable and the data set
   not cached the run stops, naming it (``recipes.hub.missing_dataset``): the bundled sample
   is never substituted on its own.

Every block carries an ``idx`` column (its position in the split), which the masking
collator uses to draw that block's mask independently of any global random stream.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
from itertools import chain
from pathlib import Path

from datasets import DatasetDict, load_dataset

from recipes.hub import SAMPLE_FILES, cache_only_when_unreachable, is_connection_error, missing_dataset

logger = logging.getLogger(__name__)

INDEX_COLUMN = "idx"
#: The source label of the bundled text (manifests, reports): an excerpt of the English Wikipedia
#: from gensim's test data, in WikiText layout (recipes/sample_data/SOURCE.md).
SAMPLE_SOURCE = "enwiki-excerpt"
_EXTENSIONS = {
    ".txt": "text",
    ".raw": "text",
    ".text": "text",
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "json",
}


def _builder_for(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in _EXTENSIONS:
        raise SystemExit(
            f"data file {path}: unsupported extension {suffix!r}; use one of {sorted(_EXTENSIONS)} "
            "(plain text is one example per line)"
        )
    return _EXTENSIONS[suffix]


def _check_text(flag: str, path: str) -> None:
    """One-line errors for a data file that is missing, empty or not UTF-8 (before any loading)."""
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"{flag} {path}: no such file; check the path")
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, blank = 0, True
    with open(file, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as err:
                raise SystemExit(
                    f"{flag} {path}: not valid UTF-8 (byte {chunk[err.start]:#04x} "
                    f"at offset {offset + err.start}); re-encode it, e.g. `iconv -f latin1 -t utf-8`"
                ) from None
            blank = blank and not text.strip()
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise SystemExit(f"{flag} {path}: not valid UTF-8 (truncated character at the end)") from None
    if blank:
        raise SystemExit(
            f"{flag} {path}: the file is empty{' (whitespace only)' if offset else ''}; give a file with text"
        )


def check_files(train_file: str | None, validation_file: str | None) -> None:
    """Fail fast on missing, empty, non-UTF-8 or inconsistent local data files."""
    for flag, path in (("--train_file", train_file), ("--validation_file", validation_file)):
        if path is not None:
            _check_text(flag, path)
    if validation_file is not None and train_file is None:
        raise SystemExit("--validation_file needs --train_file too")
    if train_file and validation_file and _builder_for(train_file) != _builder_for(validation_file):
        raise SystemExit(
            "--train_file and --validation_file must have the same format (both text, csv or json)"
        )


def _load_files(files: dict[str, str], cache_dir: str | None) -> DatasetDict:
    builder = _builder_for(next(iter(files.values())))
    kwargs = {"keep_linebreaks": True} if builder == "text" else {}
    return load_dataset(
        builder, data_files={k: str(v) for k, v in files.items()}, cache_dir=cache_dir, **kwargs
    )


def _split_validation(raw: DatasetDict, percentage: int) -> DatasetDict:
    """Carve a validation split off the head of train when none was given (as run_mlm)."""
    if "validation" in raw:
        return raw
    if not 0 < percentage < 100:
        raise SystemExit(f"--validation_split_percentage must be in 1..99, got {percentage}")
    n_valid = max(1, len(raw["train"]) * percentage // 100)
    train = raw["train"]
    return DatasetDict(
        validation=train.select(range(n_valid)), train=train.select(range(n_valid, len(train)))
    )


def load_raw_datasets(data_args, cache_dir: str | None = None) -> tuple[DatasetDict, dict]:
    """Load train/validation text; returns the datasets and the source ``{"name": ..., "config": ...}``.

    The source names what was loaded: the resolved paths of ``--train_file`` /
    ``--validation_file``, ``enwiki-excerpt`` (the bundled text), or the hub data set and its config.
    """
    if data_args.train_file is not None:
        check_files(data_args.train_file, data_args.validation_file)
        files = {"train": data_args.train_file}
        if data_args.validation_file:
            files["validation"] = data_args.validation_file
        raw = _split_validation(_load_files(files, cache_dir), data_args.validation_split_percentage)
        resolved = [
            str(Path(f).resolve()) if f else None for f in (data_args.train_file, data_args.validation_file)
        ]
        return raw, {"name": resolved[0], "config": resolved[1]}
    if data_args.offline_sample:
        logger.info("Using the bundled offline sample %s (--offline_sample).", SAMPLE_FILES["train"].parent)
        return _load_files(SAMPLE_FILES, cache_dir), {"name": SAMPLE_SOURCE, "config": None}

    name, config = data_args.dataset_name, data_args.dataset_config_name
    cache_only_when_unreachable()
    try:
        raw = load_dataset(name, config, cache_dir=cache_dir)
    except Exception as err:  # noqa: BLE001 - "not reachable and not cached" becomes the stop message
        if is_connection_error(err):
            raise missing_dataset(name, config, cache_dir) from err
        raise
    return _split_validation(raw, data_args.validation_split_percentage), {"name": name, "config": config}


def source_label(source: dict) -> str:
    """Short description of a data source for logs and ``metrics.json``."""
    if source["name"] == SAMPLE_SOURCE:
        return SAMPLE_SOURCE
    return f"{source['name']}" + (f" ({source['config']})" if source["config"] else "")


def text_column(ds) -> str:
    """The column holding the text (``text``, else the first one, as ``run_mlm.py``)."""
    return "text" if "text" in ds.column_names else ds.column_names[0]


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
        offset = (
            (config.pad_token_id + 1) if config.model_type in {"roberta", "xlm-roberta", "camembert"} else 0
        )
        limits.append(int(max_pos) - offset)
    cap = min(limits) if limits else requested
    if requested > cap:
        logger.info("--max_seq_length %d exceeds the model's maximum %d: using %d.", requested, cap, cap)
    return min(requested, cap)


def tokenize_and_group(
    raw: DatasetDict,
    tokenizer,
    block_size: int,
    process_first=None,
    num_proc: int | None = None,
    source: str = "the data",
):
    """Tokenize every line, concatenate, cut into ``block_size`` blocks, add the ``idx`` column.

    ``process_first`` is a context-manager factory (``TrainingArguments.main_process_first``)
    so that, under ``accelerate launch``, the main process builds the ``datasets`` cache first.
    """
    process_first = process_first or (lambda desc: contextlib.nullcontext())
    column = text_column(raw["train"])

    def tokenize(examples):
        return tokenizer(examples[column], return_special_tokens_mask=True)

    def group_texts(examples):
        concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
        total = (len(concatenated["input_ids"]) // block_size) * block_size
        return {
            k: [t[i : i + block_size] for i in range(0, total, block_size)] for k, t in concatenated.items()
        }

    with process_first(desc="tokenizing"):
        tokenized = raw.map(
            tokenize,
            batched=True,
            num_proc=num_proc,
            remove_columns=raw["train"].column_names,
            desc="Tokenizing",
        )
    with process_first(desc="grouping texts"):
        grouped = tokenized.map(
            group_texts, batched=True, num_proc=num_proc, desc=f"Grouping into blocks of {block_size}"
        )
    for split in grouped:
        if len(grouped[split]) == 0:
            raise SystemExit(
                f"{source}: the {split} split gives no block of {block_size} tokens "
                f"({sum(map(len, tokenized[split]['input_ids']))} tokens in all): "
                "provide more text or lower --max_seq_length"
            )
    return DatasetDict(
        {split: ds.add_column(INDEX_COLUMN, list(range(len(ds)))) for split, ds in grouped.items()}
    )


def truncate(ds, max_samples: int | None, flag: str):
    """Keep the first ``max_samples`` blocks (``--max_train_samples`` / ``--max_eval_samples``)."""
    if max_samples is None:
        return ds
    if max_samples <= 0:
        raise SystemExit(f"{flag} must be positive, got {max_samples}")
    return ds.select(range(min(max_samples, len(ds))))
