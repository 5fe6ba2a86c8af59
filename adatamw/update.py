"""The whole update of the family, written once (arXiv 2412.18790, Eqs. 7 and 8, Algorithm 1):
the momentum m, the second moment v, the bias corrections and the decoupled weight decay.

Every function takes either single tensors (the loop implementation: the readable statement) or
lists of tensors (the foreach implementation: ``torch._foreach_*`` kernels, no host sync); the
few elementary operations below dispatch on which. The C++ kernels of
:mod:`adatamw.kernels.cpu_fused` compute the same equations and are tested against these.

Notation: ``m`` is m_{t-1} on entry and m_t on exit, ``c = torque_eps + d_t`` (a 0-d tensor, one
per tensor or shared), ``step`` the float32 step counter t (incremented here).

- ``"tam"``  (Eq. 7):  m_t = beta1 m_{t-1} + c g_t, no bias correction (m is a sum);
- ``"ema"``  (Eq. 8):  m_t = (1 - c) m_{t-1} + c g_t;
- ``"adam"`` (Adam):   m_t = beta1 m_{t-1} + (1 - beta1) g_t, divided by 1 - beta1^t;
- second moment v_t = beta2 v_{t-1} + (1 - beta2) g_t^2, v_hat = v_t / (1 - beta2^t);
- decoupled weight decay p <- p - lr wd p (exact: not p (1 - lr wd), whose factor rounds).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
from torch import Tensor

Tensors = Union[Tensor, list]  # one tensor (loop) or a list of tensors (foreach)
Scalar = Union[float, Tensor]  # a Python number or a 0-d tensor (a tensor lr, a damping c)


# -- elementary operations on a tensor or a list of tensors --------------------------------------
def _many(x) -> bool:
    """A list of tensors (foreach ops return tuples) rather than one tensor."""
    return isinstance(x, (list, tuple))


def _mul_(x: Tensors, y) -> Tensors:
    return torch._foreach_mul_(x, y) if _many(x) else x.mul_(y)


def _mul(x: Tensors, y) -> Tensors:
    return torch._foreach_mul(x, y) if _many(x) else x * y


def _add_(x: Tensors, y) -> None:
    torch._foreach_add_(x, y) if _many(x) else x.add_(y)


def _sub(x: Tensors, y: Tensors) -> Tensors:
    return torch._foreach_sub(x, y) if _many(x) else x - y


def _lerp_(x: Tensors, y: Tensors, weight: float) -> None:
    torch._foreach_lerp_(x, y, weight) if _many(x) else x.lerp_(y, weight)


def _addcmul_(x: Tensors, a: Tensors, b: Tensors, value: float) -> None:
    torch._foreach_addcmul_(x, a, b, value) if _many(x) else x.addcmul_(a, b, value=value)


def _addcdiv_(x: Tensors, a: Tensors, b: Tensors) -> None:
    torch._foreach_addcdiv_(x, a, b) if _many(x) else x.addcdiv_(a, b)


def _sqrt(x: Tensors) -> Tensors:
    return torch._foreach_sqrt(x) if _many(x) else x.sqrt()


def _div_(x: Tensors, y) -> None:
    torch._foreach_div_(x, y) if _many(x) else x.div_(y)


def _as_dtype(c, dtype: torch.dtype):
    """A coefficient (0-d tensor or a list of them) in the update's dtype."""
    return [t.to(dtype) for t in c] if _many(c) else c.to(dtype)


# -- the equations ---------------------------------------------------------------------------------
def bias_correction(beta: float, step: Tensors) -> Tensors:
    """1 - beta^t, computed as -expm1(t log beta): the direct form cancels (in float32,
    1 - 0.999^1 is 1.3e-5 off), and the update would inherit that error."""
    log_beta = math.log(beta) if beta > 0 else -math.inf
    out = _mul(step, log_beta)
    if _many(out):
        torch._foreach_expm1_(out)
        torch._foreach_neg_(out)
        return out
    return out.expm1_().neg_()


def momentum_update(m: Tensors, g: Tensors, c, beta1: float, kind: str) -> None:
    """m_{t-1} -> m_t in place: Eq. 7 (``"tam"``), Eq. 8 (``"ema"``) or Adam's EMA (``"adam"``,
    ``c`` unused). Also Algorithm 1's SGD momentum (TAM) with ``kind="tam"``, beta1 = beta."""
    if kind == "adam":
        _lerp_(m, g, 1.0 - beta1)
        return
    dtype = (m[0] if _many(m) else m).dtype
    c = _as_dtype(c, dtype)
    if kind == "tam":
        _mul_(m, beta1)
        _add_(m, _mul(g, c))
    else:  # ema: m + c (g - m)
        _add_(m, _mul_(_sub(g, m), c))


def second_moment_update(v: Tensors, g: Tensors, beta2: float) -> None:
    """v_t = beta2 v_{t-1} + (1 - beta2) g_t^2, in place."""
    _mul_(v, beta2)
    _addcmul_(v, g, g, 1.0 - beta2)


def decoupled_decay(p: Tensors, lr: Scalar, weight_decay: float) -> None:
    """AdamW's p <- p - lr wd p, exactly (``p * (1 - lr wd)`` would round the factor first)."""
    if weight_decay == 0:
        return
    if isinstance(lr, Tensor):
        _add_(p, _mul(p, -lr * weight_decay))
    elif _many(p):
        torch._foreach_add_(p, p, alpha=-lr * weight_decay)
    else:
        p.add_(p, alpha=-lr * weight_decay)


def _exponent(step: Tensors, dtype: torch.dtype) -> Tensors:
    """The float32 step counter (as torch.optim keeps it), in float64 for float64 parameters."""
    if dtype != torch.float64:
        return step
    return [t.double() for t in step] if _many(step) else step.double()


def adam_step(
    p: Tensors,
    g: Tensors,
    m: Tensors,
    v: Tensors,
    step: Tensors,
    c,
    *,
    lr: Scalar,
    beta1: float,
    beta2: float,
    eps: float,
    decoupled_wd: float,
    kind: str,
    v_transform: Optional[Callable[[Tensor], Tensor]] = None,
) -> None:
    """One step of AdaTAMW / AdaTAM / CoupledAdamW on p, in place (module docstring):

        t += 1;  p <- p - lr wd p;  m_t (Eq. 7 / Eq. 8 / Adam);  v_t;
        p <- p - lr m_t / (b1 (sqrt(v_t) / sqrt(1 - beta2^t) + eps)),  b1 = 1 - beta1^t (Adam) or 1.

    ``v_transform`` maps v_t to what the denominator uses instead (one tensor: Coupled Adam's
    ``coupled_scale * mean(v_t, dim=0)``, broadcast over the rows).
    """
    _add_(step, 1)
    dtype = (p[0] if _many(p) else p).dtype
    decoupled_decay(p, lr, decoupled_wd)
    momentum_update(m, g, c, beta1, kind)
    second_moment_update(v, g, beta2)
    t = _exponent(step, dtype)
    denom = _sqrt(v if v_transform is None else v_transform(v))
    _div_(denom, _sqrt(bias_correction(beta2, t)))
    _add_(denom, eps)
    if kind == "adam":
        _mul_(denom, bias_correction(beta1, t))
    _div_(denom, -lr)
    _addcdiv_(p, m, denom)


def sgd_step(p: Tensors, g: Tensors, buf: Tensors, c, *, lr: Scalar, beta: float) -> None:
    """TAM, Algorithm 1: m_t = beta m_{t-1} + c g_t;  p <- p - lr m_t (``beta``: TAM's
    ``momentum`` hyperparameter, as torch.optim.SGD names it)."""
    momentum_update(buf, g, c, beta, "tam")
    if isinstance(lr, Tensor):
        _add_(p, _mul(buf, -lr))
    elif _many(p):
        torch._foreach_add_(p, buf, alpha=-lr)
    else:
        p.add_(buf, alpha=-lr)
