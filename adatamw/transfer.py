"""Learning-rate transfer from SGD with momentum to TAM (arXiv 2412.18790, Eq. 6)."""

from __future__ import annotations


def transfer_lr(
    lr_sgdm: float, beta_sgdm: float = 0.9, beta_tam: float = 0.9, s_star: float = 0.0
) -> float:
    """Eq. 6: the TAM learning rate whose steady-state step matches SGDM's.

    ``lr_tam = 2 (1 - beta_tam) / ((1 + s_star) (1 - beta_sgdm)) * lr_sgdm``; with the
    defaults (equal betas, stationary cosine s* = 0) TAM needs twice SGDM's rate.
    """
    if lr_sgdm < 0:
        raise ValueError(f"Invalid lr_sgdm: {lr_sgdm}; it must be >= 0")
    if not 0.0 <= beta_sgdm < 1.0:
        raise ValueError(f"Invalid beta_sgdm: {beta_sgdm}; it must be in [0, 1)")
    if not 0.0 <= beta_tam < 1.0:
        raise ValueError(f"Invalid beta_tam: {beta_tam}; it must be in [0, 1)")
    if not -1.0 < s_star <= 1.0:
        raise ValueError(f"Invalid s_star: {s_star}; the smoothed cosine must be in (-1, 1]")
    return 2.0 * (1.0 - beta_tam) / ((1.0 + s_star) * (1.0 - beta_sgdm)) * lr_sgdm
