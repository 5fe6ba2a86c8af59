"""Deprecated since 0.2.0 (removed in 0.1.x without notice, restored as an alias): the
learning-rate transfers live in :mod:`adatamw.lr`."""

import warnings

from .lr import transfer_lr  # noqa: F401

warnings.warn(
    "adatamw.transfer is deprecated; use adatamw.transfer_lr (adatamw.lr)", DeprecationWarning, stacklevel=2
)
