"""Torque-Aware Momentum (arXiv 2412.18790) for PyTorch and Hugging Face.

``AdaTAMW`` (Adam + torque damping + decoupled weight decay), ``AdaTAM`` (L2 decay),
``TAM`` (SGD), ``CoupledAdamW`` (Coupled Adam, arXiv 2502.08441), the learning-rate
transfers (``transfer_lr``: Eq. 6, SGDM -> TAM; ``adamw_lr_to_adatamw``), the coupled
embedding param groups and the registry of optimizer names (``OPTIMIZERS``).
"""

from .adatamw import AdaTAM, AdaTAMW
from .coupled import CoupledAdamW
from .groups import embedding_param_groups
from .lr import adamw_lr_to_adatamw, transfer_lr
from .registry import OPTIM_NAMES, OPTIMIZERS
from .tam import TAM

__all__ = ["AdaTAM", "AdaTAMW", "CoupledAdamW", "OPTIMIZERS", "OPTIM_NAMES", "TAM",
           "adamw_lr_to_adatamw", "embedding_param_groups", "transfer_lr"]
__version__ = "0.1.0"
