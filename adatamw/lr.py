"""Learning rates across optimizers: SGDM -> TAM (arXiv 2412.18790, Eq. 6) and AdamW -> AdaTAMW."""

from __future__ import annotations


def transfer_lr(lr_sgdm: float, beta_sgdm: float = 0.9, beta_tam: float = 0.9, s_star: float = 0.0) -> float:
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


def adamw_lr_to_adatamw(
    lr_adamw: float, beta1: float = 0.9, s_star: float = 0.0, torque_eps: float = 1e-8
) -> float:
    """The AdaTAMW learning rate whose step matches AdamW's at ``lr_adamw`` (same betas, eps).

    AdaTAMW's momentum has no bias correction: m_t = beta1 m_{t-1} + c g_t (Eq. 7), c = eps_tau +
    d, d = (1 + s) / 2 (Eq. 4). For a gradient that keeps its direction over the momentum's
    horizon (about 1 / (1 - beta1) steps), its steady state is m* = c g / (1 - beta1), while
    AdamW's bias-corrected m_hat tends to g. Both divide by the same sqrt(v_hat) + eps, so the
    steps are equal when

        lr_adatamw = lr_adamw (1 - beta1) / (eps_tau + (1 + s*) / 2),

    with s* the smoothed cosine (Eq. 3) during training. The assumption is on s*: the default
    0 (a damping of 1/2: momentum and gradients uncorrelated on average) gives lr_adamw / 5 at
    beta1 = 0.9; a persistent gradient drives s to 1 and the factor to 1/10. The paper compares
    the two optimizers on the same lr grid, and so does this project's recipe: this is for
    people swapping the optimizer line of a tuned AdamW script.
    """
    if lr_adamw < 0:
        raise ValueError(f"Invalid lr_adamw: {lr_adamw}; it must be >= 0")
    if not 0.0 <= beta1 < 1.0:
        raise ValueError(f"Invalid beta1: {beta1}; it must be in [0, 1)")
    if not -1.0 < s_star <= 1.0:
        raise ValueError(f"Invalid s_star: {s_star}; the smoothed cosine must be in (-1, 1]")
    return lr_adamw * (1.0 - beta1) / (torque_eps + (1.0 + s_star) / 2.0)
