"""A checkpoint's weight files and their one hash, for the recipes and the evaluation.

:func:`weight_files` finds what ``from_pretrained`` would load from a ``save_pretrained``
folder; :func:`weights_sha256` hashes it. The recipe writes the hash into its manifests
(``provenance.model.weights_sha256``), the evaluation builds its mteb revisions from it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

__all__ = ["WEIGHT_FILES", "WeightFilesError", "weight_files", "weights_sha256"]


#: The weight files of a ``save_pretrained`` folder, in the order ``from_pretrained`` looks for
#: them: a single file, else its sharded index.
WEIGHT_FILES = (
    ("model.safetensors", "model.safetensors.index.json"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json"),
)


class WeightFilesError(FileNotFoundError):
    """A folder without complete model weights (the message names what is wrong)."""


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The weight files ``from_pretrained`` loads from ``folder`` (safetensors first, as
    transformers): the single file, or a sharded index followed by every shard it names.

    Raises:
        WeightFilesError: no weight file (naming what the folder holds instead, e.g. only
            ``optimizer.pt``: training state), an unreadable index, or a shard the index names
            is missing.
    """
    folder = Path(folder)
    for single, index_name in WEIGHT_FILES:
        if (folder / single).is_file():
            return [folder / single]
        index = folder / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, AttributeError) as err:
                raise WeightFilesError(
                    f"{index} is not a readable shard index ({err}); re-save the checkpoint."
                ) from err
            missing = [name for name in shards if not (folder / name).is_file()]
            if missing:
                raise WeightFilesError(
                    f"{index} names {len(missing)} shard(s) that are missing from {folder}: "
                    f"{', '.join(missing[:5])}; the checkpoint is incomplete."
                )
            return [index, *(folder / name for name in shards)]
    present = (
        sorted(
            p.name
            for p in folder.iterdir()
            if p.is_file() and p.suffix in {".pt", ".pth", ".bin", ".safetensors"}
        )
        if folder.is_dir()
        else []
    )
    found = f" It holds only {', '.join(present)} (training state, not model weights)." if present else ""
    expected = " or ".join(single for single, _ in WEIGHT_FILES)
    indexes = " / ".join(index for _, index in WEIGHT_FILES)
    raise WeightFilesError(
        f"No model weights in {folder}: expected {expected} or a sharded index ({indexes}).{found} "
        "The checkpoint looks incomplete; point at a folder written by save_pretrained / Trainer.save_model."
    )


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:  # size / mtime: the cache key
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(folder: str | os.PathLike) -> str:
    """SHA-256 of the model's weights, the one hash of a checkpoint (the recipe's manifests and
    the evaluation's mteb revisions): of the file itself when there is one (as ``sha256sum``
    prints), else of the lines ``<name> <sha256>`` of the index and every shard.

    Raises:
        WeightFilesError: as :func:`weight_files`.
    """
    files = weight_files(folder)
    sums = [(f.name, _file_sha256(str(f), f.stat().st_size, f.stat().st_mtime_ns)) for f in files]
    if len(sums) == 1:
        return sums[0][1]
    return hashlib.sha256("".join(f"{name} {sha}\n" for name, sha in sums).encode()).hexdigest()
