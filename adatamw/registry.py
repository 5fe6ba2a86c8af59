"""The one registry of the optimizers by name, read by ``TAMTrainer``, the recipe, the sweep and
the tests: the class and what it can do, derived from the class itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .adam_family import AdamFamily
from .adatamw import AdaTAM, AdaTAMW
from .coupled import CoupledAdamW
from .tam import TAM

__all__ = ["OPTIMIZERS", "OPTIM_NAMES", "OptimizerInfo", "get", "names_with"]


@dataclass(frozen=True)
class OptimizerInfo:
    name: str
    cls: type
    #: None: built by this package; otherwise the HF Trainer builds it from args.optim
    hf_optim: Optional[str] = None

    @property
    def adam(self) -> bool:
        """Takes Adam's betas / eps (from TrainingArguments' adam_beta1/2, adam_epsilon)."""
        return issubclass(self.cls, (AdamFamily, torch.optim.AdamW))

    @property
    def coupled(self) -> bool:
        """Has a coupled second moment (``coupled=True`` groups: Coupled Adam)."""
        return bool(getattr(self.cls, "has_coupled", False))

    @property
    def torque(self) -> bool:
        """Has torque damping (logs s_hat / damping; cosine_scope, gamma, torque_eps)."""
        return bool(getattr(self.cls, "uses_torque", False))

    @property
    def fused(self) -> bool:
        """The step has a fused CPU kernel (``fused=True``)."""
        return issubclass(self.cls, torch.optim.AdamW) or bool(getattr(self.cls, "has_fused", False))


OPTIMIZERS: dict[str, OptimizerInfo] = {
    info.name: info
    for info in (
        OptimizerInfo("adamw", torch.optim.AdamW, hf_optim="adamw_torch_fused"),
        OptimizerInfo("adatamw", AdaTAMW),
        OptimizerInfo("adatam", AdaTAM),
        OptimizerInfo("tam", TAM),
        OptimizerInfo("coupled_adamw", CoupledAdamW),
    )
}

#: The valid ``--optim`` / ``optim_name`` values.
OPTIM_NAMES = tuple(OPTIMIZERS)


def get(name: str) -> OptimizerInfo:
    """The registry entry of ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"Unknown optimizer {name!r}; choose one of {OPTIM_NAMES}") from None


def names_with(capability: str) -> tuple[str, ...]:
    """The names of the optimizers that have ``capability`` (``"adam"``, ``"coupled"``,
    ``"torque"`` or ``"fused"``), in registry order."""
    if capability not in ("adam", "coupled", "torque", "fused"):
        raise ValueError(f"Unknown capability {capability!r}; one of adam, coupled, torque, fused")
    return tuple(name for name, info in OPTIMIZERS.items() if getattr(info, capability))
