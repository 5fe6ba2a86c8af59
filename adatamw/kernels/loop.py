"""The loop implementation: plain PyTorch, one tensor at a time (the readable statement).

It is also the one implementation of Coupled Adam's row-mean second moment, whose broadcast
the multi-tensor kernels do not express: :func:`adatamw.kernels.pick` sends coupled 2-D tensors
here whatever the flags.
"""

from __future__ import annotations

from .. import update
from ..torque import partial_sums as torque_sums  # noqa: F401 - this implementation's Eq. 2 sums


def adam_update(
    params,
    grads,
    exp_avgs,
    exp_avg_sqs,
    steps,
    coefs,
    *,
    lr,
    beta1,
    beta2,
    eps,
    decoupled_wd,
    kind,
    v_transforms=None,
) -> None:
    """:func:`adatamw.update.adam_step` for each tensor (``v_transforms[i]``: Coupled Adam)."""
    for i, p in enumerate(params):
        update.adam_step(
            p,
            grads[i],
            exp_avgs[i],
            exp_avg_sqs[i],
            steps[i],
            coefs[i] if coefs else None,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            decoupled_wd=decoupled_wd,
            kind=kind,
            v_transform=v_transforms[i] if v_transforms else None,
        )


def sgd_update(params, grads, buffers, coefs, *, lr, beta) -> None:
    """:func:`adatamw.update.sgd_step` (TAM, Algorithm 1) for each tensor."""
    for p, g, buf, c in zip(params, grads, buffers, coefs):
        update.sgd_step(p, g, buf, c, lr=lr, beta=beta)
