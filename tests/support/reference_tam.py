"""An independent float64 statement of the TAM updates (Eqs. 2-4, 7, 8, Algorithm 1).

Plain Python over lists of float64 tensors; it shares no code with ``adatamw``. Parameters
are lists of tensors; ``scope="global"`` treats them as one vector (Algorithm 1). Non-finite
values follow the package's stated rule (docs/optimizers.md): a non-finite element of m counts
as 0 in Eq. 2's sums; a non-finite gradient makes the step's cosine undefined (s kept).
"""

from __future__ import annotations

import math

import torch


class ReferenceOptimizer:
    """kind: 'adatamw' | 'adatam' | 'tam' | 'coupled_adamw'."""

    def __init__(
        self,
        params,
        kind,
        lr,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        gamma=0.9,
        torque_eps=1e-8,
        scope="global",
        momentum="tam",
        coupled=None,
        coupled_scale=1.0,
        sgd_momentum=0.9,
    ):
        self.p = [q.detach().double().clone() for q in params]
        self.kind, self.lr, self.eps, self.wd = kind, lr, eps, weight_decay
        self.b1, self.b2 = betas
        self.gamma, self.teps, self.scope, self.mode = gamma, torque_eps, scope, momentum
        self.coupled = coupled or [False] * len(self.p)
        self.cscale, self.sgd_beta = coupled_scale, sgd_momentum
        self.m = [torch.zeros_like(q) for q in self.p]
        self.v = [torch.zeros_like(q) for q in self.p]
        self.s = 0.0 if scope == "global" else [0.0] * len(self.p)
        self.undefined = 0  # steps whose cosine was undefined
        self.t = 0

    @staticmethod
    def _cos(dot, mm, gg):
        if mm == 0.0 or gg == 0.0:
            return 0.0
        return max(-1.0, min(1.0, dot / (math.sqrt(mm) * math.sqrt(gg))))

    def _dampings(self, grads):
        """Eqs. 2-4 under the package's rule for non-finite values: an element of m that is
        not finite counts as 0 in the sums; where a sum is still not finite (an inf or NaN in
        g), the cosine is undefined, s is kept and the step is counted in ``self.undefined``."""
        finite_m = [torch.where(torch.isfinite(m), m, torch.zeros_like(m)) for m in self.m]
        dots = [float((m * g).sum()) for m, g in zip(finite_m, grads)]
        mms = [float((m * m).sum()) for m in finite_m]
        ggs = [float((g * g).sum()) for g in grads]
        if self.scope == "global":
            sums = (sum(dots), sum(mms), sum(ggs))
            if all(map(math.isfinite, sums)):
                self.s = self.gamma * self.s + (1 - self.gamma) * self._cos(*sums)
            else:
                self.undefined += 1
            return [(1 + self.s) / 2] * len(grads)
        out, undefined = [], False
        for i in range(len(grads)):
            sums = (dots[i], mms[i], ggs[i])
            if all(map(math.isfinite, sums)):
                self.s[i] = self.gamma * self.s[i] + (1 - self.gamma) * self._cos(*sums)
            else:
                undefined = True
            out.append((1 + self.s[i]) / 2)
        self.undefined += undefined
        return out

    def step(self, grads):
        grads = [g.detach().double().clone() for g in grads]
        self.t += 1
        if self.kind in ("adatam", "tam") and self.wd:
            grads = [g + self.wd * p for g, p in zip(grads, self.p)]
        d = self._dampings(grads) if self.kind != "coupled_adamw" else None
        for i, g in enumerate(grads):
            p = self.p[i]
            if self.kind == "tam":
                self.m[i] = self.sgd_beta * self.m[i] + (self.teps + d[i]) * g
                self.p[i] = p - self.lr * self.m[i]
                continue
            if self.kind in ("adatamw", "coupled_adamw"):
                p = p - self.lr * self.wd * p
            if self.kind == "coupled_adamw":
                self.m[i] = self.b1 * self.m[i] + (1 - self.b1) * g
                m_used = self.m[i] / (1 - self.b1**self.t)
            elif self.mode == "tam":
                self.m[i] = self.b1 * self.m[i] + (self.teps + d[i]) * g
                m_used = self.m[i]
            else:
                c = self.teps + d[i]
                self.m[i] = (1 - c) * self.m[i] + c * g
                m_used = self.m[i]
            self.v[i] = self.b2 * self.v[i] + (1 - self.b2) * g * g
            v_hat = self.v[i] / (1 - self.b2**self.t)
            if self.coupled[i] and v_hat.dim() == 2:
                v_hat = self.cscale * v_hat.mean(dim=0, keepdim=True).expand_as(v_hat)
            self.p[i] = p - self.lr * m_used / (v_hat.sqrt() + self.eps)
