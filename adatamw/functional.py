"""The per-parameter updates of the Adam family and of TAM (SGD), written twice as torch.optim
does: a plain per-tensor loop (``_single_*``) and a multi-tensor path (``_multi_*``) built on
``torch._foreach_*`` kernels. Neither syncs with the host: the damping coefficients c = eps + d
and the step counters are device tensors.

Momentum modes (``m`` is m_{t-1} on entry, m_t on exit; c = torque_eps + d_t):

- ``"tam"``  (Eq. 7):  m_t = beta1 m_{t-1} + c g_t, no bias correction (m is a sum);
- ``"ema"``  (Eq. 8):  m_t = (1 - c) m_{t-1} + c g_t;
- ``"adam"`` (Adam):   m_t = beta1 m_{t-1} + (1 - beta1) g_t, divided by 1 - beta1^t.

Second moment v_t = beta2 v_{t-1} + (1 - beta2) g_t^2 and v_hat = v_t / (1 - beta2^t). For a 2-D
tensor in a coupled group (Coupled Adam), the update uses ``coupled_scale * mean(v_hat, dim=0)``
broadcast over the rows; the stored v stays per element. Decoupled weight decay (AdamW) is
``p <- p - lr * wd * p`` before the step.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import cpu_kernels

def is_coupled(p: Tensor, coupled: bool) -> bool:
    """Coupling applies to the 2-D (embedding) tensors of a coupled group."""
    return coupled and p.dim() == 2


def _single_adam_update(
    params: Sequence[Tensor], grads: Sequence[Tensor], exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor], steps: Sequence[Tensor], coefs: Optional[Sequence[Tensor]],
    *, lr: float, beta1: float, beta2: float, eps: float, decoupled_wd: float, momentum: str,
    coupled: bool, coupled_scale: float, row_means: Optional[Sequence] = None,
) -> None:
    """Plain loop over tensors: the readable statement of the update."""
    for i, p in enumerate(params):
        g, m, v, step = grads[i], exp_avgs[i], exp_avg_sqs[i], steps[i]
        step += 1
        if decoupled_wd != 0:
            p.add_(p, alpha=-lr * decoupled_wd)  # = p * (1 - lr wd), without rounding 1 - lr wd
        if momentum == "tam":
            m.mul_(beta1).add_(g * coefs[i].to(g.dtype))
        elif momentum == "ema":
            m.lerp_(g, coefs[i].to(g.dtype))
        else:
            m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        v_used = v
        if is_coupled(p, coupled):  # row_means[i]: the mean over a sharded tensor's rows (§3)
            row_mean = row_means[i] if row_means is not None else None
            v_used = (row_mean(v) if row_mean is not None
                      else v.mean(dim=0, keepdim=True)).mul_(coupled_scale)
        exponent = _exponent(step, p.dtype)
        bias_correction2_sqrt = one_minus_pow(beta2, exponent).sqrt()
        denom = (v_used.sqrt() / bias_correction2_sqrt).add_(eps)
        if momentum == "adam":
            denom.mul_(one_minus_pow(beta1, exponent))
        p.addcdiv_(m, denom, value=-lr)


def _multi_adam_update(
    params: Sequence[Tensor], grads: Sequence[Tensor], exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor], steps: Sequence[Tensor], coefs: Optional[Sequence[Tensor]],
    *, lr: float, beta1: float, beta2: float, eps: float, decoupled_wd: float, momentum: str,
    coupled: bool, coupled_scale: float, row_means: Optional[Sequence] = None,
) -> None:
    """The same update with ``torch._foreach_*`` kernels, bucketed by device and dtype.

    Coupled 2-D tensors need a broadcast row mean, which foreach kernels do not express:
    they go through the per-tensor loop.
    """
    kwargs = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, decoupled_wd=decoupled_wd,
                  momentum=momentum, coupled=coupled, coupled_scale=coupled_scale)
    loop_idx = [i for i, p in enumerate(params) if is_coupled(p, coupled)]
    if loop_idx:
        _single_adam_update(*_subset(loop_idx, params, grads, exp_avgs, exp_avg_sqs, steps, coefs),
                            row_means=_subset(loop_idx, row_means)[0], **kwargs)
        keep = [i for i, p in enumerate(params) if not is_coupled(p, coupled)]
        params, grads, exp_avgs, exp_avg_sqs, steps, coefs = _subset(
            keep, params, grads, exp_avgs, exp_avg_sqs, steps, coefs)
    if not params:
        return
    lists = [params, grads, exp_avgs, exp_avg_sqs, steps] + ([coefs] if coefs is not None else [])
    buckets = Optimizer._group_tensors_by_device_and_dtype(lists)
    for (_, dtype), (bucket, _) in buckets.items():
        b_params, b_grads, b_m, b_v, b_steps = bucket[:5]
        b_coefs = bucket[5] if coefs is not None else None
        torch._foreach_add_(b_steps, 1)
        if decoupled_wd != 0:
            torch._foreach_add_(b_params, b_params, alpha=-lr * decoupled_wd)
        if momentum == "adam":
            torch._foreach_lerp_(b_m, b_grads, 1 - beta1)
        else:
            coef = _shared_or_list(b_coefs, dtype)
            if momentum == "tam":
                torch._foreach_mul_(b_m, beta1)
                torch._foreach_add_(b_m, torch._foreach_mul(b_grads, coef))
            else:  # ema: m + c (g - m)
                delta = torch._foreach_sub(b_grads, b_m)
                torch._foreach_mul_(delta, coef)
                torch._foreach_add_(b_m, delta)
        torch._foreach_mul_(b_v, beta2)
        torch._foreach_addcmul_(b_v, b_grads, b_grads, 1 - beta2)
        exponents = [_exponent(t, dtype) for t in b_steps] if dtype == torch.float64 else b_steps
        bias_correction2_sqrt = _foreach_one_minus_pow(beta2, exponents)
        torch._foreach_sqrt_(bias_correction2_sqrt)
        denom = torch._foreach_sqrt(b_v)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, eps)
        if momentum == "adam":
            torch._foreach_mul_(denom, _foreach_one_minus_pow(beta1, exponents))
        torch._foreach_addcdiv_(b_params, b_m, denom, value=-lr)


def one_minus_pow(beta: float, step: Tensor) -> Tensor:
    """Bias correction 1 - beta^t on the device, as -expm1(t log beta).

    The direct form cancels: in float32, 1 - 0.999^1 is off by 1.3e-5 relative, which the
    update would inherit. ``log`` is taken in double precision on the host (beta is a float).
    """
    return torch.expm1(step * _log(beta)).neg_()


def _foreach_one_minus_pow(beta: float, steps: list[Tensor]) -> list[Tensor]:
    """:func:`one_minus_pow` for each step counter."""
    out = torch._foreach_mul(steps, _log(beta))
    torch._foreach_expm1_(out)
    torch._foreach_neg_(out)
    return out


def _exponent(step: Tensor, dtype: torch.dtype) -> Tensor:
    """The step counter (float32, as torch.optim keeps it) in float64 for float64 params."""
    return step.double() if dtype == torch.float64 else step


def _log(beta: float) -> float:
    return math.log(beta) if beta > 0 else -math.inf


def _shared_or_list(coefs: list[Tensor], dtype: torch.dtype):
    """One tensor when every parameter shares the coefficient (global scope), else a list."""
    first = coefs[0]
    if all(c is first for c in coefs):
        return first.to(dtype)
    return [c.to(dtype) for c in coefs]


def _single_tam_update(params, grads, buffers, coefs, *, lr: float, momentum: float) -> None:
    """TAM, Algorithm 1: m_t = beta m_{t-1} + c g_t;  p <- p - lr m_t."""
    for p, g, buf, c in zip(params, grads, buffers, coefs):
        buf.mul_(momentum).add_(g * c.to(g.dtype))
        p.add_(buf, alpha=-lr)


def _multi_tam_update(params, grads, buffers, coefs, *, lr: float, momentum: float) -> None:
    """TAM, Algorithm 1, with ``torch._foreach_*`` kernels."""
    buckets = Optimizer._group_tensors_by_device_and_dtype([params, grads, buffers, coefs])
    for (_, dtype), ((b_params, b_grads, b_bufs, b_coefs), _) in buckets.items():
        torch._foreach_mul_(b_bufs, momentum)
        torch._foreach_add_(b_bufs, torch._foreach_mul(b_grads, _shared_or_list(b_coefs, dtype)))
        torch._foreach_add_(b_params, b_bufs, alpha=-lr)


def _fused_adam_update(
    params: Sequence[Tensor], grads: Sequence[Tensor], exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor], steps: Sequence[Tensor], coefs: Optional[Sequence[Tensor]],
    *, lr: float, beta1: float, beta2: float, eps: float, decoupled_wd: float, momentum: str,
    coupled: bool, coupled_scale: float, row_means: Optional[Sequence] = None,
) -> None:
    """The update in one pass over p, g, m, v per tensor, on one of two kernels.

    - float32 CPU tensors of ``"tam"``/``"ema"`` groups: the project's C++ kernel
      (:mod:`adatamw.cpu_kernels`), which computes Eq. 7 / Eq. 8 and the decay directly;
    - other tensors: torch's fused AdamW kernel (:func:`_torch_kernel_update`).

    Both read the damping c from the device once per step (per tensor in tensor scope): free
    on CPU, a sync on accelerators. Coupled tensors (their row mean) and, on torch's kernel, a
    damping within 1e-3 of 1 (where its rescaling of m would lose precision) take the foreach
    path.
    """
    kwargs = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, decoupled_wd=decoupled_wd,
                  momentum=momentum)
    own = cpu_kernels.load() if momentum != "adam" else None
    fitting = (cpu_kernels.fits(params, grads, exp_avgs, exp_avg_sqs) if own is not None
               else [False] * len(params))
    if own is not None and not coupled and all(fitting):  # the usual case: one kernel call
        _own_kernel_update(own, params, grads, exp_avgs, exp_avg_sqs, steps, coefs, **kwargs)
        return
    foreach_idx: list[int] = []
    own_idx: list[int] = []
    torch_idx: list[int] = []
    for i, p in enumerate(params):
        if is_coupled(p, coupled):
            foreach_idx.append(i)
        else:
            (own_idx if fitting[i] else torch_idx).append(i)
    torch_calls: dict[tuple, list[int]] = {}
    host_coefs = _host_values(_subset(torch_idx, coefs)[0]) if coefs is not None else None
    for j, i in enumerate(torch_idx):
        c = host_coefs[j] if host_coefs is not None else 0.0
        if coefs is not None and abs(1.0 - c) < 1e-3:
            foreach_idx.append(i)
        else:
            key = (params[i].device, params[i].dtype, float(steps[i]) + 1.0, c)
            torch_calls.setdefault(key, []).append(i)

    def picked(idx):
        return _subset(idx, params, grads, exp_avgs, exp_avg_sqs, steps)

    if foreach_idx:
        _multi_adam_update(*picked(foreach_idx), _subset(foreach_idx, coefs)[0], coupled=coupled,
                           coupled_scale=coupled_scale,
                           row_means=_subset(foreach_idx, row_means)[0], **kwargs)
    if own_idx:
        _own_kernel_update(own, *picked(own_idx), _subset(own_idx, coefs)[0], **kwargs)
    for (_, _, t, c), idx in torch_calls.items():
        _torch_kernel_update(*picked(idx), t=t, c=c, **kwargs)


def _own_kernel_update(kernels, params, grads, exp_avgs, exp_avg_sqs, steps, coefs, *, lr: float,
                       beta1: float, beta2: float, eps: float, decoupled_wd: float,
                       momentum: str) -> None:
    """Eq. 7 / Eq. 8 with the decay on the project's C++ kernel (float32 CPU tensors), which
    also increments the step counters and reads the damping c from each coefficient tensor."""
    kernels.adatamw_update_list(params, grads, exp_avgs, exp_avg_sqs, steps, coefs, lr,
                                decoupled_wd, beta1, beta2, eps, momentum == "ema")


def _subset(idx: Sequence[int], *seqs: Optional[Sequence]) -> list[Optional[list]]:
    """The entries ``idx`` of each parallel per-parameter list (a None list stays None)."""
    return [None if seq is None else [seq[i] for i in idx] for seq in seqs]


def _host_values(coefs: Sequence[Tensor]) -> list[float]:
    """The damping coefficients as floats, reading each distinct tensor once."""
    values: dict[int, float] = {}
    for c in coefs:
        if id(c) not in values:
            values[id(c)] = float(c)
    return [values[id(c)] for c in coefs]


def _torch_kernel_update(params, grads, exp_avgs, exp_avg_sqs, steps, *, t: float, c: float,
                         lr: float, beta1: float, beta2: float, eps: float, decoupled_wd: float,
                         momentum: str) -> None:
    """Eq. 7 / Eq. 8 (or Adam) on torch's fused AdamW kernel, for tensors at step t.

    The kernel computes m <- b m + (1 - b) g with a bias correction 1 - b^t, and v and the step
    as AdamW. With b = 1 - c it computes Eq. 8 (``"ema"``) directly; Eq. 7 (``"tam"``) first
    rescales m by beta1 / (1 - c), so that (1 - c) m' + c g = beta1 m + c g. The kernel's bias
    correction is undone by scaling lr by 1 - b^t. Weight decay is applied before the kernel
    as p - lr wd p: the kernel's p * (1 - lr wd) rounds the factor to the parameter dtype
    (float32, lr wd = 1e-7, 1000 steps: 1.15x the exact decay on weights of scale 0.05;
    p - lr wd p: 0.96x).
    """
    torch._foreach_add_(steps, 1)
    kernel_beta1 = beta1 if momentum == "adam" else 1.0 - c
    if momentum == "tam":
        torch._foreach_mul_(exp_avgs, beta1 / kernel_beta1)
    kernel_lr = lr if momentum == "adam" else lr * -math.expm1(t * math.log(kernel_beta1))
    if decoupled_wd != 0:
        torch._foreach_add_(params, params, alpha=-lr * decoupled_wd)
    torch._fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=kernel_lr,
                        beta1=kernel_beta1, beta2=beta2, weight_decay=0.0, eps=eps,
                        amsgrad=False, maximize=False, grad_scale=None, found_inf=None)


def adam_update(*args, foreach: bool, fused: bool = False, **kwargs) -> None:
    if fused:
        _fused_adam_update(*args, **kwargs)
    else:
        (_multi_adam_update if foreach else _single_adam_update)(*args, **kwargs)


def tam_update(*args, foreach: bool, **kwargs) -> None:
    (_multi_tam_update if foreach else _single_tam_update)(*args, **kwargs)
