"""Deprecated since 0.2.0: the update's module is :mod:`adatamw.update` (it holds the whole
update: m, v, bias corrections, decoupled decay, not only the momentum)."""

import warnings

from .update import (  # noqa: F401 - re-exported names of the old module
    adam_step,
    bias_correction,
    decoupled_decay,
    momentum_update,
    second_moment_update,
)
from .update import sgd_step as _sgd_step

warnings.warn(
    "adatamw.momentum is deprecated; import adatamw.update (sgd_step takes beta= instead of momentum=)",
    DeprecationWarning,
    stacklevel=2,
)


def sgd_step(p, g, buf, c, *, lr, momentum):
    """:func:`adatamw.update.sgd_step` under its old keyword (``momentum``: the beta)."""
    _sgd_step(p, g, buf, c, lr=lr, beta=momentum)
