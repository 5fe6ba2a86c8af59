"""Atomic file output for the recipes and the evaluation (not part of the `adatamw` library):
a reader (or a crash) never leaves half a file, and a finished result is replaced only by a
complete new one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Optional


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], mode: Optional[int] = None) -> Path:
    """Run ``write(tmp)`` on a temporary file next to ``path``, flush it to disk, give it
    ``mode`` (default: the usual 0o666 less the umask; mkstemp makes 0o600) and
    ``os.replace`` it into place. Creates the parent folder. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode if mode is not None else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, mode: Optional[int] = None) -> Path:
    """:func:`atomic_write` of a UTF-8 text."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), mode)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
