"""One registry of the optimizers by name, read by ``TAMTrainer``, the recipe, the sweep and the
tests: the class and what it can do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .adatamw import AdaTAM, AdaTAMW
from .coupled import CoupledAdamW
from .tam import TAM


@dataclass(frozen=True)
class OptimizerInfo:
    name: str
    cls: type
    #: takes Adam's betas / eps (from TrainingArguments' adam_beta1/2, adam_epsilon)
    adam: bool
    #: has a coupled second moment (coupled=True groups: Coupled Adam)
    coupled: bool
    #: has torque damping (logs s_hat / damping; cosine_scope, gamma, torque_eps)
    torque: bool
    #: the step has a fused CPU kernel (fused=True)
    fused: bool
    #: None: built by this package; otherwise the HF Trainer builds it from args.optim
    hf_optim: Optional[str] = None


OPTIMIZERS: dict[str, OptimizerInfo] = {
    "adamw": OptimizerInfo("adamw", torch.optim.AdamW, adam=True, coupled=False, torque=False,
                           fused=True, hf_optim="adamw_torch_fused"),
    "adatamw": OptimizerInfo("adatamw", AdaTAMW, adam=True, coupled=True, torque=True, fused=True),
    "adatam": OptimizerInfo("adatam", AdaTAM, adam=True, coupled=True, torque=True, fused=True),
    "tam": OptimizerInfo("tam", TAM, adam=False, coupled=False, torque=True, fused=False),
    "coupled_adamw": OptimizerInfo("coupled_adamw", CoupledAdamW, adam=True, coupled=True,
                                   torque=False, fused=True),
}

#: The valid ``--optim`` / ``optim_name`` values.
OPTIM_NAMES = tuple(OPTIMIZERS)


def get(name: str) -> OptimizerInfo:
    """The registry entry of ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"Unknown optimizer {name!r}; choose one of {OPTIM_NAMES}") from None
