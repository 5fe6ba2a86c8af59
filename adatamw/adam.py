"""Deprecated since 0.2.0 (removed in 0.1.x without notice, restored as an alias): the Adam
family lives in :mod:`adatamw.adam_family` (the base), :mod:`adatamw.adatamw` and
:mod:`adatamw.coupled`."""

import warnings

from .adam_family import AdamFamily as _AdamFamily  # noqa: F401 - the old private base name
from .adatamw import AdaTAM, AdaTAMW  # noqa: F401
from .coupled import CoupledAdamW  # noqa: F401

warnings.warn(
    "adatamw.adam is deprecated; import AdaTAMW, AdaTAM, CoupledAdamW from adatamw "
    "(the base: adatamw.adam_family.AdamFamily)",
    DeprecationWarning,
    stacklevel=2,
)
