"""Torque damping of TAM (arXiv 2412.18790, Eqs. 2-4), shared by every optimizer of the family.

Given the previous momentum m_{t-1} and the (effective) gradient g_t:

- Eq. 2, cosine:     S_t = <m_{t-1}, g_t> / (||m_{t-1}|| ||g_t||),  S_t := 0 when a norm is 0;
- Eq. 3, smoothing:  s_t = gamma s_{t-1} + (1 - gamma) S_t,  s_0 = 0;
- Eq. 4, damping:    d_t = (1 + s_t) / 2, in [0, 1].

The cosine is reduced over a *scope*: ``"global"`` (Algorithm 1's theta as one vector: one
cosine over every parameter of the optimizer) or ``"tensor"`` (one per parameter tensor).
Everything here stays on the device: no ``.item()``, no Python branch on a tensor value. The
sums themselves come from the step's implementation (:mod:`adatamw.kernels`).

Non-finite values (the rule of this package, the same on every implementation and scope):

- an element of m_{t-1} that is not finite (a NaN or inf it took from an earlier non-finite
  gradient, as AdamW's m does) counts as 0 in Eq. 2's sums: S_t = cos(m~_{t-1}, g_t) with
  m~ = m where finite, else 0. The poisoned element itself stays as AdamW leaves it (its m and p
  are not repaired); the torque of every other element keeps working;
- a step whose sums are still not finite (an inf or NaN in g_t, or sums that overflow) has an
  undefined cosine: s keeps its previous value (:func:`smooth`) and the step is counted.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

COSINE_SCOPES = ("global", "tensor")

#: One row per parameter tensor: <m, g>, ||m||^2, ||g||^2.
PartialSums = Tensor


def _accumulation_view(t: Tensor) -> Tensor:
    """Flat view in a precision fit for reductions (bf16/fp16 are upcast to fp32)."""
    flat = t.reshape(-1)
    return flat if flat.dtype in (torch.float32, torch.float64) else flat.float()


def finite_or_zero(m: Tensor) -> Tensor:
    """m~ of the module docstring: ``m`` with its NaN and +-inf elements replaced by 0."""
    return torch.nan_to_num(m, nan=0.0, posinf=0.0, neginf=0.0)


def partial_sums(momenta: Sequence[Tensor], grads: Sequence[Tensor]) -> PartialSums:
    """The three scalars of Eq. 2 for each tensor, ``(<m~, g>, ||m~||^2, ||g||^2)``: ``[N, 3]``.

    ``momenta[i]`` is m_{t-1} and ``grads[i]`` g_t of the i-th parameter; m~ is m with its
    non-finite elements as 0 (module docstring). Three dot products per tensor, in float32
    (bf16/fp16 upcast) or float64 when a tensor is float64: the loop implementation's statement.
    (The fused CPU implementation computes the same in one read of m and g,
    :mod:`adatamw.kernels.cpu_fused`; foreach in a number of kernels that does not grow with the
    number of tensors, :mod:`adatamw.kernels.foreach`.)
    """
    rows = []
    for m, g in zip(momenta, grads):
        mf, gf = finite_or_zero(_accumulation_view(m)), _accumulation_view(g)
        rows.append(torch.stack((torch.dot(mf, gf), torch.dot(mf, mf), torch.dot(gf, gf))))
    if not rows:
        return torch.zeros(0, 3)
    dtype = torch.float64 if any(r.dtype == torch.float64 for r in rows) else torch.float32
    return torch.stack([r.to(dtype) for r in rows])


def cosine(sums: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. 2 from ``(..., 3)`` sums ``(<m,g>, ||m||^2, ||g||^2)``: ``(S_t, defined)``.

    S_t is 0 where a norm is 0 (so the first step, with m_0 = 0, has S_1 = 0), and is clamped to
    [-1, 1] so rounding never pushes the damping out of [0, 1]. ``defined`` is False where a sum
    is not finite (an inf or NaN in g; m's non-finite elements are already left out of the
    sums): S_t is undefined there, returned as 0, and :func:`smooth` keeps the previous s (the
    rule of the module docstring: a non-finite gradient element damages only the elements it
    touches, as in AdamW, never s).
    """
    dot, m_sq, g_sq = sums.unbind(-1)
    defined = torch.isfinite(sums).all(-1)
    denom = m_sq.sqrt() * g_sq.sqrt()
    usable = defined & (denom > 0)
    safe = torch.where(usable, denom, torch.ones_like(denom))
    cos = torch.where(usable, dot / safe, torch.zeros_like(dot)).clamp(-1.0, 1.0)
    return cos, defined


def smooth(s_prev: Tensor, cos: Tensor, gamma: float, defined: Tensor | None = None) -> Tensor:
    """Eq. 3: s_t = gamma s_{t-1} + (1 - gamma) S_t; s_t = s_{t-1} where S_t is undefined."""
    s = s_prev * gamma + cos * (1.0 - gamma)
    return s if defined is None else torch.where(defined, s, s_prev.to(s.dtype))


def damping(s: Tensor) -> Tensor:
    """Eq. 4: d_t = (1 + s_t) / 2."""
    return (1.0 + s) * 0.5


def validate_scope(cosine_scope: str) -> None:
    if cosine_scope not in COSINE_SCOPES:
        raise ValueError(
            f"Invalid cosine_scope: {cosine_scope!r}; use 'global' (one cosine over all "
            "parameters, Algorithm 1) or 'tensor' (one cosine per parameter tensor)"
        )
