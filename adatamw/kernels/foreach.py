"""The foreach implementation: the same equations over lists with ``torch._foreach_*`` kernels.

The default on accelerators: a fixed number of kernels per step for all tensors of one device
and dtype, whatever their number (the update and Eq. 2's sums), no host sync (the damping c and
the step counters stay on the device), and it compiles with ``torch.compile`` into fused
kernels. Called once per (device, dtype) bucket.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .. import update
from . import cpu_fused


def torque_sums(momenta: Sequence[Tensor], grads: Sequence[Tensor]) -> Tensor:
    """Eq. 2's ``(<m~, g>, ||m~||^2, ||g||^2)`` per tensor of one bucket, ``[N, 3]``, in a number
    of kernels that does not depend on N (m~: m with its non-finite elements as 0, the rule of
    :mod:`adatamw.torque`): on CPU the C++ sums op of :mod:`.cpu_fused` (one call, one read of m
    and g, float64 accumulation), elsewhere, or where it does not build, :func:`multi_tensor_sums`.
    """
    if (
        momenta
        and cpu_fused.sums_fit(momenta[0])
        and grads[0].dtype == momenta[0].dtype
        and cpu_fused.available()
    ):
        return cpu_fused.torque_sums(momenta, grads)
    return multi_tensor_sums(momenta, grads)


def multi_tensor_sums(momenta: Sequence[Tensor], grads: Sequence[Tensor]) -> Tensor:
    """:func:`torque_sums` with torch's multi-tensor kernels: 15-18 aten calls per bucket,
    the same for 10 or 10 000 tensors, no host sync.

    - m~ is one flat copy of the bucket's momenta (``cat``, then ``nan_to_num_`` in place), in
      the accumulation dtype: float32 on accelerators, float64 on CPU (where torch's per-tensor
      norms accumulate sequentially) and for float64 buckets. bf16/fp16 buckets also copy g.
      The per-tensor pieces are views of it.
    - ``||m~||`` and ``||g||`` are ``torch._foreach_norm``, squared.
    - ``<m~, g>`` has no multi-tensor kernel: the products are taken in place in the flat copy and
      the dot is ``2 sum(max(m~ g, 0)) - sum(|m~ g|)``, two ``_foreach_norm(ord=1)``. Both are
      sums of non-negative terms, so with ``u`` the unit roundoff of the accumulation dtype and
      ``gamma_n`` the error factor of torch's reduction over n terms, the error is at most
      ``(3 gamma_n + u) sum |m~_i g_i| <= (3 gamma_n + u) ||m~|| ||g||`` (Cauchy-Schwarz):
      bounded relative to ||m|| ||g|| as a plain dot's is, whatever the angle and the ratio of
      the norms (``tests/test_foreach_sums.py`` holds the cosine to 1e-6 at 1e7 elements).

    Temporaries per parameter: the flat copy of m (4 bytes in float32, 8 in float64; bf16/fp16
    buckets 2 + 4 for m and 2 + 4 for g at the peak). Memory traffic: about 13 reads or writes
    of an element (the floor is 2: one read of m and g).
    """
    if not momenta:
        return torch.zeros(0, 3)
    dtype, device = momenta[0].dtype, momenta[0].device
    acc = torch.float64 if dtype == torch.float64 or device.type == "cpu" else torch.float32
    sizes = [m.numel() for m in momenta]
    flat = torch.cat([m.reshape(-1) for m in momenta]).to(acc)
    torch.nan_to_num_(flat, nan=0.0, posinf=0.0, neginf=0.0)
    m_parts = flat.split(sizes)
    if dtype == acc:
        g_parts = [g.reshape(-1) for g in grads]
    else:
        g_parts = torch.cat([g.reshape(-1) for g in grads]).to(acc).split(sizes)
    m_norm = torch.stack(torch._foreach_norm(m_parts))
    g_norm = torch.stack(torch._foreach_norm(g_parts))
    torch._foreach_mul_(m_parts, g_parts)  # flat now holds m~ * g
    abs_sum = torch.stack(torch._foreach_norm(m_parts, 1))
    flat.clamp_min_(0.0)
    pos_sum = torch.stack(torch._foreach_norm(m_parts, 1))
    return torch.stack((pos_sum * 2.0 - abs_sum, m_norm * m_norm, g_norm * g_norm), dim=1)


def _shared_or_list(coefs):
    """One tensor when every parameter shares the coefficient (global scope), else the list."""
    if not coefs:
        return None
    first = coefs[0]
    return first if all(c is first for c in coefs) else list(coefs)


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
    """:func:`adatamw.update.adam_step` on the lists (no coupled tensors: see ``pick``)."""
    if v_transforms and any(t is not None for t in v_transforms):
        raise ValueError(
            "the foreach implementation has no per-tensor v transform (Coupled "
            "Adam's row mean): coupled tensors take the loop (adatamw.kernels.pick)"
        )
    update.adam_step(
        list(params),
        list(grads),
        list(exp_avgs),
        list(exp_avg_sqs),
        list(steps),
        _shared_or_list(coefs),
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        decoupled_wd=decoupled_wd,
        kind=kind,
    )


def sgd_update(params, grads, buffers, coefs, *, lr, beta) -> None:
    """:func:`adatamw.update.sgd_step` (TAM, Algorithm 1) on the lists."""
    update.sgd_step(list(params), list(grads), list(buffers), _shared_or_list(coefs), lr=lr, beta=beta)
