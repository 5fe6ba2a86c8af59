"""Torque-Aware Momentum (arXiv 2412.18790) for PyTorch and Hugging Face.

``AdaTAMW`` (Adam + torque damping + decoupled weight decay), ``AdaTAM`` (L2 decay),
``TAM`` (SGD), ``CoupledAdamW`` (Coupled Adam, arXiv 2502.08441), the learning-rate
transfer of Eq. 6 and the coupled embedding param groups.
"""

from .adam import AdaTAM, AdaTAMW, CoupledAdamW
from .groups import embedding_param_groups
from .tam import TAM
from .transfer import transfer_lr

__all__ = ["AdaTAM", "AdaTAMW", "CoupledAdamW", "TAM", "embedding_param_groups", "transfer_lr"]
__version__ = "0.1.0"
