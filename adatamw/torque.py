"""Torque damping of TAM (arXiv 2412.18790, Eqs. 2-4), shared by every optimizer of the family.

Given the previous momentum m_{t-1} and the (effective) gradient g_t:

- Eq. 2, cosine:     S_t = <m_{t-1}, g_t> / (||m_{t-1}|| ||g_t||),  S_t := 0 when a norm is 0;
- Eq. 3, smoothing:  s_t = gamma s_{t-1} + (1 - gamma) S_t,  s_0 = 0;
- Eq. 4, damping:    d_t = (1 + s_t) / 2, in [0, 1].

The cosine is reduced over a *scope*: ``"global"`` (Algorithm 1's theta as one vector: one
cosine over every parameter of the optimizer) or ``"tensor"`` (one per parameter tensor).
Everything here stays on the device: no ``.item()``, no Python branch on a tensor value.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from . import cpu_kernels

COSINE_SCOPES = ("global", "tensor")

#: One row per parameter tensor: <m, g>, ||m||^2, ||g||^2 (float32, on the parameters' device).
PartialSums = Tensor


def _accumulation_view(t: Tensor) -> Tensor:
    """Flat view in a precision fit for reductions (bf16/fp16 are upcast to fp32)."""
    flat = t.reshape(-1)
    return flat if flat.dtype in (torch.float32, torch.float64) else flat.float()


def partial_sums(momenta: Sequence[Tensor], grads: Sequence[Tensor]) -> PartialSums:
    """The three scalars of Eq. 2 for each tensor: a ``[N, 3]`` tensor.

    float32 (bf16/fp16 are upcast), or float64 when any tensor is float64.

    ``momenta[i]`` is m_{t-1} and ``grads[i]`` is g_t of the i-th parameter (same shape).
    Each row is ``(<m, g>, ||m||^2, ||g||^2)``. float32 CPU tensors use the C++ kernel of
    :mod:`adatamw.cpu_kernels` (one read of m and g, float64 accumulation); otherwise three
    dot products per tensor.
    """
    if momenta and all(cpu_kernels.fits(momenta, grads)):  # one read of m and g, in float64
        return cpu_kernels.load().torque_sums_list(list(momenta), list(grads)).float()
    rows = []
    for m, g in zip(momenta, grads):
        mf, gf = _accumulation_view(m), _accumulation_view(g)
        rows.append(torch.stack((torch.dot(mf, gf), torch.dot(mf, mf), torch.dot(gf, gf))))
    if not rows:
        return torch.zeros(0, 3)
    dtype = torch.float64 if any(r.dtype == torch.float64 for r in rows) else torch.float32
    return torch.stack([r.to(dtype) for r in rows])


def global_damping(momenta: Sequence[Tensor], grads: Sequence[Tensor], s_prev: Optional[Tensor],
                   gamma: float, torque_eps: float,
                   reduce: Optional[Callable[[Tensor], Tensor]] = None) -> tuple[Tensor, Tensor]:
    """Eqs. 2-4 with one cosine over every tensor (``"global"`` scope): ``(s_t, c_t)`` where
    c_t = torque_eps + d_t is the coefficient of g_t in the momentum.

    ``s_prev`` is s_{t-1} (None: s_0 = 0). ``reduce`` maps the ``[N, 3]`` partial sums to the
    sums over every process (sharded parameters). Unsharded float32 CPU tensors take one call to
    the C++ kernels (sums in float64, s_prev updated in place and returned); the rest goes
    through :func:`partial_sums`, :func:`cosine`, :func:`smooth` and :func:`damping`.
    """
    s_fits = s_prev is None or (s_prev.dtype == torch.float32 and s_prev.is_cpu)
    if reduce is None and momenta and s_fits and all(cpu_kernels.fits(momenta, grads)):
        s = torch.zeros(()) if s_prev is None else s_prev
        coef = cpu_kernels.load().global_damping(list(momenta), list(grads), s, gamma,
                                                 torque_eps)
        return s, coef
    sums = partial_sums(momenta, grads)
    if reduce is not None:
        sums = reduce(sums)
    if s_prev is None:
        s_prev = torch.zeros((), dtype=sums.dtype, device=sums.device)
    s = smooth(s_prev, cosine(sums.sum(0)), gamma)
    return s, damping(s) + torque_eps


def cosine(sums: Tensor) -> Tensor:
    """Eq. 2 from ``(..., 3)`` sums ``(<m,g>, ||m||^2, ||g||^2)``; 0 where a norm is 0.

    The result is clamped to [-1, 1] so rounding can never push the damping out of [0, 1].
    """
    dot, m_sq, g_sq = sums.unbind(-1)
    denom = m_sq.sqrt() * g_sq.sqrt()
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, dot / safe, torch.zeros_like(dot)).clamp(-1.0, 1.0)


def smooth(s_prev: Tensor, cos: Tensor, gamma: float) -> Tensor:
    """Eq. 3: s_t = gamma s_{t-1} + (1 - gamma) S_t."""
    return s_prev * gamma + cos * (1.0 - gamma)


def damping(s: Tensor) -> Tensor:
    """Eq. 4: d_t = (1 + s_t) / 2."""
    return (1.0 + s) * 0.5


def validate_scope(cosine_scope: str) -> None:
    if cosine_scope not in COSINE_SCOPES:
        raise ValueError(
            f"Invalid cosine_scope: {cosine_scope!r}; use 'global' (one cosine over all "
            "parameters, Algorithm 1) or 'tensor' (one cosine per parameter tensor)"
        )
