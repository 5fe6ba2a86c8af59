"""Torque-Aware Momentum (arXiv 2412.18790) for PyTorch and Hugging Face.

``AdaTAMW`` (Adam + torque damping + decoupled weight decay), ``AdaTAM`` (L2 decay),
``TAM`` (SGD), ``CoupledAdamW`` (Coupled Adam, arXiv 2502.08441), the learning-rate
transfers (``transfer_lr``: Eq. 6, SGDM -> TAM; ``adamw_lr_to_adatamw``), the coupled
embedding param groups and the registry of optimizer names (``OPTIMIZERS``).

Where the paper lives (arXiv 2412.18790 unless named)::

    Eq. 2  cosine S_t of m_{t-1} and g_t     adatamw.torque.partial_sums, adatamw.torque.cosine
    Eq. 3  smoothing s_t                      adatamw.torque.smooth
    Eq. 4  damping d_t = (1 + s_t) / 2        adatamw.torque.damping
    Eq. 6  lr transfer SGDM -> TAM            adatamw.lr.transfer_lr
    Eq. 7  AdaTAMW's momentum                 adatamw.update.momentum_update (kind="tam")
    Eq. 8  AdaTAM2's averaged momentum        adatamw.update.momentum_update (kind="ema")
    Alg. 1 TAM (SGD) step                     adatamw.update.sgd_step, adatamw.tam.TAM
    v_t, bias corrections, decoupled decay    adatamw.update.second_moment_update,
                                              bias_correction, decoupled_decay, adam_step
    Coupled Adam (arXiv 2502.08441) row mean  adatamw.coupled.coupled_second_moment
    the same sums across shards               adatamw.sharding (docs/distributed.md)
    which implementation runs a step          adatamw.kernels.pick (loop, foreach, fused C++)
"""

from .adam_family import AdamFamily
from .adatamw import AdaTAM, AdaTAMW
from .coupled import CoupledAdamW
from .groups import embedding_param_groups
from .lr import adamw_lr_to_adatamw, transfer_lr
from .registry import OPTIM_NAMES, OPTIMIZERS
from .tam import TAM

__all__ = [
    "AdaTAM",
    "AdaTAMW",
    "AdamFamily",
    "CoupledAdamW",
    "OPTIMIZERS",
    "OPTIM_NAMES",
    "TAM",
    "adamw_lr_to_adatamw",
    "embedding_param_groups",
    "transfer_lr",
]
__version__ = "0.2.0"
