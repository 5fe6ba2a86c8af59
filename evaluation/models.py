"""Wrap a local checkpoint as a mean-pooled sentence-transformers model with its own identity.

mteb files results under ``results/<model name>/<revision>/``. Every local checkpoint
would otherwise get the same placeholder name, so two models could read each other's
scores. Here each model gets

* a name: ``adatamw/<sanitised name>`` (``--name`` or ``{model}__{optimizer}__ep{epochs}``);
* a revision: a content hash of its weight files, so a retrained checkpoint under the
  same name is a new revision and never reuses stale scores.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

NAME_PREFIX = "adatamw"
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.bin", "*.pt")
_HASH_CHUNK = 1 << 22


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

    def metadata(self, revision: str) -> dict[str, Any]:
        """The entry written to ``models.json`` for this model."""
        return {
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
        raise ValueError(f"Model name {name!r} has no usable characters; pass a name made of letters, digits, '.', '_' or '-'.")
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
        raise CheckpointError(f"Checkpoint folder not found: {checkpoint}. Check the path (manifest paths are relative to the manifest's folder).")
    modules = checkpoint / "modules.json"
    if modules.is_file():
        for module in json.loads(modules.read_text(encoding="utf-8")):
            if module.get("type", "").endswith("Transformer"):
                checkpoint = checkpoint / module.get("path", "")
                break
    if not (checkpoint / "config.json").is_file():
        raise CheckpointError(f"No config.json in {checkpoint}: not a transformers checkpoint. Point at the folder written by save_pretrained / Trainer.save_model.")
    return checkpoint


def weight_files(checkpoint: Path) -> list[Path]:
    """The model's weight files, sorted (raises CheckpointError when there are none)."""
    root = transformer_dir(checkpoint)
    files = sorted({p for pattern in WEIGHT_PATTERNS for p in root.glob(pattern) if p.is_file()})
    if not files:
        raise CheckpointError(f"No weight files ({', '.join(WEIGHT_PATTERNS)}) in {root}; the checkpoint looks incomplete.")
    return files


def weights_revision(checkpoint: Path) -> str:
    """Content hash (sha256, 16 hex chars) of the weight files and their names."""
    root = transformer_dir(checkpoint)
    digest = hashlib.sha256()
    for path in weight_files(checkpoint):
        digest.update(str(path.relative_to(root)).encode())
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def pick_device_and_dtype(device: str | None = None, precision: str = "auto") -> tuple[str, Any]:
    """cuda with bf16 (fp16 where bf16 is unsupported) when available, else cpu fp32."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if precision == "auto":
        if device.startswith("cuda"):
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision not in dtypes:
        raise ValueError(f"precision={precision!r}; use one of auto, {', '.join(dtypes)}.")
    return device, dtypes[precision]


def load_sentence_transformer(checkpoint: Path, *, device: str | None = None, precision: str = "auto", max_seq_length: int | None = None):
    """A ``SentenceTransformer`` = Transformer module (from ``checkpoint``) + mean pooling.

    Task heads (e.g. an MLM head of a ``BertForMaskedLM`` checkpoint) are dropped;
    only the encoder is used.
    """
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # pragma: no cover - sentence-transformers 5
        from sentence_transformers.models import Pooling, Transformer

    device, dtype = pick_device_and_dtype(device, precision)
    kwargs = {"max_seq_length": max_seq_length} if max_seq_length else {}
    encoder = Transformer(str(transformer_dir(checkpoint)), model_kwargs={"dtype": dtype}, **kwargs)
    pooling = Pooling(encoder.get_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[encoder, pooling], device=device)


def build_mteb_model(
    spec: ModelSpec,
    *,
    revision: str | None = None,
    device: str | None = None,
    precision: str = "auto",
    max_seq_length: int | None = None,
    embedding_cache: Path | None = None,
):
    """The mteb encoder for ``spec`` with its own name and revision.

    With ``embedding_cache`` the encoder is wrapped in mteb's ``CachedEmbeddingWrapper``
    under ``embedding_cache/<name>/<revision>/`` (the wrapper keys its files by task
    only, so the model identity must be in the path).
    """
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

    revision = revision or weights_revision(spec.checkpoint)
    wrapper = SentenceTransformerEncoderWrapper(
        load_sentence_transformer(spec.checkpoint, device=device, precision=precision, max_seq_length=max_seq_length)
    )
    wrapper.mteb_model_meta = wrapper.mteb_model_meta.model_copy(update={"name": spec.mteb_name, "revision": revision})
    if embedding_cache is None:
        return wrapper
    from mteb.models.cache_wrappers import CachedEmbeddingWrapper

    path = Path(embedding_cache) / wrapper.mteb_model_meta.model_name_as_path() / revision
    return CachedEmbeddingWrapper(wrapper, cache_path=path)
