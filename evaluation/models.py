"""Wrap a local checkpoint as a mean-pooled sentence-transformers model with its own identity.

mteb files results under ``results/<model name>/<revision>/``. Every local checkpoint
would otherwise get the same placeholder name, so two models could read each other's
scores. Here each model gets

* a name: ``adatamw/<sanitised name>`` (``--name`` or ``{model}__{optimizer}__ep{epochs}``);
* a revision: a content hash of its weight files plus a hash of the evaluation settings
  (:class:`EvalSettings`: precision, max_seq_length, pooling, normalisation, task suite),
  ``<weights16>-<settings8>``, so a retrained checkpoint, or the same checkpoint evaluated at
  another precision or sequence length, is a new revision and never reuses stale scores.

A sentence-transformers folder (``modules.json``) is loaded as saved: its own modules
(pooling, Normalize) and its ``max_seq_length`` (``sentence_bert_config.json``); a plain
transformers checkpoint gets mean pooling and the tokenizer's / position embeddings' limit.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.weights import WeightFilesError, weights_sha256
from common.weights import weight_files as folder_weight_files

NAME_PREFIX = "adatamw"
PRECISIONS = ("fp32", "bf16", "fp16")
DEFAULT_PRECISION = "fp32"  # bf16 / fp16 move scores by about the 0.2 % threshold: docs/evaluation.md


class CheckpointError(FileNotFoundError):
    """A checkpoint folder is missing or holds no loadable model."""


@dataclass(frozen=True)
class ModelSpec:
    """One model to evaluate: where it is, its mteb name, and the sweep metadata."""

    name: str
    checkpoint: Path
    model: str | None = None
    optimizer: str | None = None
    epochs: int | None = None
    lr: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mteb_name(self) -> str:
        """The name mteb files results under (mteb requires ``org/name``)."""
        return f"{NAME_PREFIX}/{sanitise_name(self.name)}"

    def metadata(self, revision: str, settings: EvalSettings | None = None) -> dict[str, Any]:
        """The entry written to ``models.json`` for this model (``settings``: how it is evaluated)."""
        return {
            **({"settings": settings.to_dict()} if settings is not None else {}),
            "model": self.model if self.model is not None else self.name,
            "optimizer": self.optimizer,
            "epochs": self.epochs,
            "lr": self.lr,
            "checkpoint": str(self.checkpoint),
            "revision": revision,
            **self.extra,
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["checkpoint"] = str(self.checkpoint)
        return d


def sanitise_name(name: str) -> str:
    """A file-system- and mteb-safe name: ``[A-Za-z0-9._-]`` only, ``/`` becomes ``-``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.")
    if not cleaned:
        raise ValueError(
            f"Model name {name!r} has no usable characters; "
            "pass a name made of letters, digits, '.', '_' or '-'."
        )
    return cleaned


def default_name(model: str, optimizer: str, epochs: int | str) -> str:
    """The name of a swept checkpoint: ``{model}__{optimizer}__ep{epochs}``, sanitised."""
    return sanitise_name(f"{model}__{optimizer}__ep{epochs}")


def transformer_dir(checkpoint: Path) -> Path:
    """The folder holding the transformers model inside ``checkpoint``.

    A sentence-transformers folder names it in ``modules.json`` (often the root
    itself); a plain HF checkpoint (e.g. saved by a Trainer) is the root.

    Raises:
        CheckpointError: the folder is missing or has no ``config.json``.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise CheckpointError(
            f"Checkpoint folder not found: {checkpoint}. "
            "Check the path (manifest paths are relative to the manifest's folder)."
        )
    modules = checkpoint / "modules.json"
    if modules.is_file():
        for module in json.loads(modules.read_text(encoding="utf-8")):
            if module.get("type", "").endswith("Transformer"):
                checkpoint = checkpoint / module.get("path", "")
                break
    if not (checkpoint / "config.json").is_file():
        raise CheckpointError(
            f"No config.json in {checkpoint}: not a transformers checkpoint. "
            "Point at the folder written by save_pretrained / Trainer.save_model."
        )
    return checkpoint


def weight_files(checkpoint: Path) -> list[Path]:
    """The model's weight files (:func:`common.weights.weight_files` of its transformers
    folder): the single file, or a sharded index followed by every shard it names.

    Raises:
        CheckpointError: no weight file (naming what the folder holds instead, e.g. only
            ``optimizer.pt``), an unreadable index, or a shard the index names is missing.
    """
    try:
        return folder_weight_files(transformer_dir(checkpoint))
    except WeightFilesError as err:
        raise CheckpointError(str(err)) from None


def check_checkpoint(checkpoint: Path) -> Path:
    """The transformers folder of ``checkpoint`` once its config and weight files are found."""
    weight_files(checkpoint)
    return transformer_dir(checkpoint)


def weights_revision(checkpoint: Path) -> str:
    """The first 16 hex characters of the weights' one hash (:func:`common.weights.weights_sha256`,
    as the recipe's manifests record it in full)."""
    try:
        return weights_sha256(transformer_dir(checkpoint))[:16]
    except WeightFilesError as err:
        raise CheckpointError(str(err)) from None


@dataclass(frozen=True)
class EvalSettings:
    """Everything besides the weights that changes a score: part of the result identity."""

    precision: str
    max_seq_length: int
    pooling: str
    normalize: bool
    suite: str

    def key(self) -> str:
        """8 hex chars of sha256 over the settings (the second half of a result revision)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def result_revision(weights: str, settings: EvalSettings) -> str:
    """``<weights hash>-<settings hash>``: the revision folder mteb files this model's results under."""
    return f"{weights}-{settings.key()}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}).") from err


def _st_modules(checkpoint: Path) -> list[dict[str, Any]] | None:
    """The module list of a sentence-transformers folder, None for a plain transformers folder."""
    modules = Path(checkpoint) / "modules.json"
    return json.loads(modules.read_text(encoding="utf-8")) if modules.is_file() else None


def _pooling_name(config: dict[str, Any]) -> str:
    if isinstance(config.get("pooling_mode"), str):
        return config["pooling_mode"]
    modes = [
        k.removeprefix("pooling_mode_").removesuffix("_tokens")
        for k, v in config.items()
        if k.startswith("pooling_mode_") and v is True
    ]
    return "+".join(sorted(modes)) or "mean"


def _default_max_seq_length(root: Path) -> int:
    """What sentence-transformers' Transformer module uses when none is given: the smaller of the
    tokenizer's ``model_max_length`` and the model's position limit (512 when neither is known)."""
    limits = []
    tokenizer_limit = _read_json(root / "tokenizer_config.json").get("model_max_length")
    if isinstance(tokenizer_limit, int) and tokenizer_limit < 10**8:
        limits.append(tokenizer_limit)
    positions = _read_json(root / "config.json").get("max_position_embeddings")
    if isinstance(positions, int):
        limits.append(positions)
    return min(limits) if limits else 512


def eval_settings(
    checkpoint: Path, *, precision: str = DEFAULT_PRECISION, max_seq_length: int | None = None, suite: str
) -> EvalSettings:
    """The settings ``checkpoint`` is evaluated under, read from its files without loading it.

    A sentence-transformers folder keeps its pooling, Normalize module and ``max_seq_length``
    (``sentence_bert_config.json``); a plain checkpoint gets mean pooling, no normalisation.
    ``max_seq_length`` overrides the folder's.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; use one of {', '.join(PRECISIONS)}.")
    checkpoint = Path(checkpoint)
    root = transformer_dir(checkpoint)
    modules = _st_modules(checkpoint)
    pooling, normalize, own_length = "mean", False, None
    if modules is not None:
        own_length = _read_json(root / "sentence_bert_config.json").get("max_seq_length")
        for module in modules:
            kind = module.get("type", "")
            if kind.endswith("Pooling"):
                pooling = _pooling_name(_read_json(checkpoint / module.get("path", "") / "config.json"))
            elif kind.endswith("Normalize"):
                normalize = True
    length = max_seq_length or own_length or _default_max_seq_length(root)
    return EvalSettings(
        precision=precision, max_seq_length=int(length), pooling=pooling, normalize=normalize, suite=suite
    )


def pick_device_and_dtype(device: str | None = None, precision: str = DEFAULT_PRECISION) -> tuple[str, Any]:
    """cuda when available, else cpu; the torch dtype of ``precision`` (fp32 unless asked)."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision not in dtypes:
        raise ValueError(f"precision={precision!r}; use one of {', '.join(dtypes)}.")
    return device, dtypes[precision]


def load_sentence_transformer(
    checkpoint: Path,
    *,
    device: str | None = None,
    precision: str = DEFAULT_PRECISION,
    max_seq_length: int | None = None,
):
    """A ``SentenceTransformer`` for ``checkpoint``.

    A sentence-transformers folder is loaded with its own modules (pooling, Normalize, ...)
    and ``max_seq_length``; a plain transformers checkpoint becomes Transformer + mean
    pooling (task heads, e.g. the MLM head of a ``BertForMaskedLM``, are dropped).
    ``max_seq_length`` overrides either.
    """
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # pragma: no cover - sentence-transformers 5
        from sentence_transformers.models import Pooling, Transformer

    device, dtype = pick_device_and_dtype(device, precision)
    if _st_modules(Path(checkpoint)) is not None:
        model = SentenceTransformer(
            str(checkpoint), device=device, model_kwargs={"dtype": dtype}, local_files_only=True
        )
    else:
        root = transformer_dir(checkpoint)
        encoder = Transformer(
            str(root),
            model_kwargs={"dtype": dtype},
            max_seq_length=max_seq_length or _default_max_seq_length(root),
        )
        pooling = Pooling(encoder.get_embedding_dimension(), pooling_mode="mean")
        model = SentenceTransformer(modules=[encoder, pooling], device=device)
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


class EncodeMeter:
    """Texts encoded and seconds spent in the encoder's ``encode`` (tokenisation included)."""

    def __init__(self) -> None:
        self.texts = 0
        self.seconds = 0.0

    def reset(self) -> None:
        self.texts, self.seconds = 0, 0.0

    @property
    def per_second(self) -> float:
        return self.texts / self.seconds if self.seconds > 0 else float("nan")

    def wrap(self, encode):
        """``encode`` that adds each call's rows and wall time to this meter."""

        @functools.wraps(encode)
        def timed(*args: Any, **kwargs: Any):
            start = time.perf_counter()
            embeddings = encode(*args, **kwargs)
            self.seconds += time.perf_counter() - start
            self.texts += len(embeddings)
            return embeddings

        return timed


def build_mteb_model(
    spec: ModelSpec,
    *,
    settings: EvalSettings,
    revision: str | None = None,
    device: str | None = None,
    embedding_cache: Path | None = None,
):
    """The mteb encoder for ``spec`` under ``settings``, with its own name and revision.

    ``encode_meter`` on the returned object counts the texts it encodes and the time taken.
    With ``embedding_cache`` the encoder is wrapped in mteb's ``CachedEmbeddingWrapper``
    under ``embedding_cache/<name>/<revision>/`` (the wrapper keys its files by task
    only, so the model identity must be in the path).
    """
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

    revision = revision or result_revision(weights_revision(spec.checkpoint), settings)
    wrapper = SentenceTransformerEncoderWrapper(
        load_sentence_transformer(
            spec.checkpoint,
            device=device,
            precision=settings.precision,
            max_seq_length=settings.max_seq_length,
        )
    )
    wrapper.mteb_model_meta = wrapper.mteb_model_meta.model_copy(
        update={"name": spec.mteb_name, "revision": revision}
    )
    meter = EncodeMeter()
    wrapper.encode = meter.wrap(wrapper.encode)
    if embedding_cache is None:
        wrapper.encode_meter = meter
        return wrapper
    from mteb.models.cache_wrappers import CachedEmbeddingWrapper

    path = Path(embedding_cache) / wrapper.mteb_model_meta.model_name_as_path() / revision
    cached = CachedEmbeddingWrapper(wrapper, cache_path=path)
    cached.encode_meter = meter
    return cached
