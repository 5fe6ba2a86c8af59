"""The foreach implementation: the same equations over lists with ``torch._foreach_*`` kernels.

The default on accelerators: a few kernels per step for all tensors of one device and dtype, no
host sync (the damping c and the step counters stay on the device), and it compiles with
``torch.compile`` into fused kernels. Called once per (device, dtype) bucket.
"""

from __future__ import annotations

from .. import update
from ..torque import partial_sums as torque_sums  # noqa: F401 - this implementation's Eq. 2 sums


def _shared_or_list(coefs):
    """One tensor when every parameter shares the coefficient (global scope), else the list."""
    if not coefs:
        return None
    first = coefs[0]
    return first if all(c is first for c in coefs) else list(coefs)


def adam_update(params, grads, exp_avgs, exp_avg_sqs, steps, coefs, *, lr, beta1, beta2, eps,
                decoupled_wd, kind, v_transforms=None) -> None:
    """:func:`adatamw.update.adam_step` on the lists (no coupled tensors: see ``pick``)."""
    update.adam_step(list(params), list(grads), list(exp_avgs), list(exp_avg_sqs), list(steps),
                     _shared_or_list(coefs), lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                     decoupled_wd=decoupled_wd, kind=kind)


def sgd_update(params, grads, buffers, coefs, *, lr, beta) -> None:
    """:func:`adatamw.update.sgd_step` (TAM, Algorithm 1) on the lists."""
    update.sgd_step(list(params), list(grads), list(buffers), _shared_or_list(coefs), lr=lr,
                    beta=beta)
