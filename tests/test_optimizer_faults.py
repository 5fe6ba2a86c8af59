"""Faults the optimizer must contain: non-finite gradient elements, another optimizer's state,
complex parameters."""

from __future__ import annotations

import copy
import itertools
import warnings

import pytest
import torch
from torch import nn

from adatamw import TAM, AdaTAMW, update
from tests.support.reference_tam import ReferenceOptimizer

PATHS = {"loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}
CASES = [
    c
    for c in itertools.product(
        ["adatamw", "tam"], ["global", "tensor"], list(PATHS), [float("inf"), float("nan")]
    )
    if c[:3:2] != ("tam", "fused")
]  # TAM has no fused kernel


def build(kind, scope, path, params):
    if kind == "tam":
        return TAM(params, lr=1e-2, cosine_scope=scope, **PATHS[path])
    return AdaTAMW(params, lr=1e-2, weight_decay=0.1, cosine_scope=scope, **PATHS[path])


def grads_at(t, params):
    gen = torch.Generator().manual_seed(t)
    return [torch.randn(p.shape, generator=gen) for p in params]


def expected_local_update(kind, opt, params, grads, s_prev):
    """What an AdamW-style local update gives each element: the equations of adatamw.update on
    a copy of the state, with the damping of the kept s (c = torque_eps + (1 + s_prev) / 2)."""
    out = []
    for i, (p, g) in enumerate(zip(params, grads)):
        st = copy.deepcopy(opt.state[p])
        q = p.detach().clone()
        s = s_prev[i] if isinstance(s_prev, list) else s_prev
        c = torch.tensor(1e-8 + (1.0 + s) / 2.0)
        if kind == "tam":
            update.sgd_step(q, g, st["momentum_buffer"], c, lr=1e-2, beta=0.9)
        else:
            update.adam_step(
                q,
                g,
                st["exp_avg"],
                st["exp_avg_sq"],
                st["step"],
                c,
                lr=1e-2,
                beta1=0.9,
                beta2=0.999,
                eps=1e-8,
                decoupled_wd=0.1,
                kind="tam",
            )
        out.append(q)
    return out


def s_values(opt, params, scope):
    if scope == "global":
        return float(opt.state[params[0]]["torque_s"])
    return [float(opt.state[p]["torque_s"]) for p in params]


@pytest.mark.parametrize("kind,scope,path,bad", CASES)
def test_one_non_finite_gradient_element_damages_only_itself(kind, scope, path, bad):
    """An inf or NaN in one gradient element: s is kept (finite), the step is counted and warned
    about, and every other element moves exactly as the local update with the kept s says. Later
    finite steps (m now holds a non-finite element, which counts as 0 in Eq. 2) are defined: not
    counted, and s moves."""
    gen = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(6, 5, generator=gen)), nn.Parameter(torch.randn(5, generator=gen))]
    opt = build(kind, scope, path, params)
    for t in range(3):
        for p, g in zip(params, grads_at(t, params)):
            p.grad = g
        opt.step()
    s_before = s_values(opt, params, scope)
    grads = grads_at(3, params)
    grads[0][2, 3] = bad
    state_before = {p: copy.deepcopy(opt.state[p]) for p in params}
    for p, g in zip(params, grads):
        p.grad = g
    before = [p.detach().clone() for p in params]
    with pytest.warns(RuntimeWarning, match="undefined"):
        opt.step()
    s_after = s_values(opt, params, scope)
    if scope == "global":
        assert s_after == s_before  # s kept, bit for bit
    else:  # the tensor with the bad element keeps its s; the other's cosine is defined
        assert s_after[0] == s_before[0] and s_after[1] != s_before[1]
    shadow = [nn.Parameter(b) for b in before]
    shadow_opt = type(opt)(shadow)
    for q, p in zip(shadow, params):
        shadow_opt.state[q] = state_before[p]
    want = expected_local_update(kind, shadow_opt, shadow, grads, s_after)
    damaged = torch.zeros(6, 5, dtype=torch.bool)
    damaged[2, 3] = True
    assert not torch.isfinite(params[0][2, 3])
    torch.testing.assert_close(params[0].detach()[~damaged], want[0][~damaged], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(params[1].detach(), want[1], rtol=1e-6, atol=1e-7)
    assert opt.torque_stats()["undefined_steps"] == 1
    for t in range(4, 6):  # m[0][2, 3] is non-finite now; it counts as 0 in Eq. 2's sums
        for p, g in zip(params, grads_at(t, params)):
            p.grad = g
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # warned once, not at every step
            opt.step()
    stats = opt.torque_stats()
    assert stats["undefined_steps"] == 1  # only the step with the bad gradient
    assert s_values(opt, params, scope) != s_after  # the torque keeps working
    assert torch.isfinite(params[1]).all() and torch.isfinite(params[0][~damaged]).all()


@pytest.mark.parametrize("kind,scope,path", sorted({c[:3] for c in CASES}))
def test_a_poisoned_element_does_not_freeze_the_torque(kind, scope, path):
    """One NaN gradient element, then 20 finite steps: only the bad step is undefined, s keeps
    moving and equals the float64 reference of the stated rule (m's non-finite elements count
    as 0 in Eq. 2's sums), and every finite element follows the reference."""
    gen = torch.Generator().manual_seed(3)
    params = [nn.Parameter(torch.randn(6, 5, generator=gen)), nn.Parameter(torch.randn(5, generator=gen))]
    opt = build(kind, scope, path, params)
    ref_kw = dict(lr=1e-2, scope=scope) if kind == "tam" else dict(lr=1e-2, weight_decay=0.1, scope=scope)
    ref = ReferenceOptimizer(params, kind, **ref_kw)
    for t in range(24):
        grads = grads_at(t, params)
        if t == 3:
            grads[0][2, 3] = float("nan")
        for p, g in zip(params, grads):
            p.grad = g
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            opt.step()
        ref.step(grads)
        if t == 3:
            s_bad = s_values(opt, params, scope)
    stats = opt.torque_stats()
    assert stats["undefined_steps"] == ref.undefined == 1
    s = s_values(opt, params, scope)
    assert s != s_bad
    assert s == pytest.approx(ref.s, abs=1e-6)
    finite = torch.isfinite(ref.p[0])
    assert int((~finite).sum()) == 1 and not torch.isfinite(params[0][2, 3])  # as in AdamW
    torch.testing.assert_close(params[0].detach().double()[finite], ref.p[0][finite], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(params[1].detach().double(), ref.p[1], rtol=1e-5, atol=1e-6)


def test_tensor_scope_keeps_the_other_tensors_cosines_moving():
    """Tensor scope: only the tensor with the non-finite element keeps its s."""
    gen = torch.Generator().manual_seed(1)
    params = [nn.Parameter(torch.randn(4, generator=gen)), nn.Parameter(torch.randn(4, generator=gen))]
    opt = AdaTAMW(params, cosine_scope="tensor")
    for p in params:
        p.grad = torch.ones(4)
    opt.step()
    before = [float(opt.state[p]["torque_s"]) for p in params]
    params[0].grad = torch.tensor([1.0, float("inf"), 1.0, 1.0])
    params[1].grad = torch.ones(4)
    with pytest.warns(RuntimeWarning):
        opt.step()
    after = [float(opt.state[p]["torque_s"]) for p in params]
    assert after[0] == before[0] and after[1] > before[1]


@pytest.mark.parametrize(
    "source,target,reason",
    [
        ("adamw", "adatamw", "lacks"),  # AdamW's groups have no gamma, torque_eps, ...
        ("tam", "adatamw", "lacks"),  # TAM's groups have no betas
        ("adatamw", "tam", "foreign keys"),  # the groups fit (momentum="tam"), the state does not
        ("sgd", "tam", "lacks"),
    ],
)  # SGD's groups have no gamma
def test_another_optimizers_state_is_refused_at_load(source, target, reason):
    params = [nn.Parameter(torch.randn(3, 2))]
    params[0].grad = torch.randn(3, 2)
    make = {
        "adamw": lambda: torch.optim.AdamW(params),
        "sgd": lambda: torch.optim.SGD(params, momentum=0.9),
        "tam": lambda: TAM(params),
        "adatamw": lambda: AdaTAMW(params),
    }
    saved = make[source]()
    saved.step()
    opt = make[target]()
    with pytest.raises(ValueError, match="saved by another optimizer") as err:
        opt.load_state_dict(saved.state_dict())
    assert reason in str(err.value)
    own = make[target]()
    own.step()
    opt.load_state_dict(own.state_dict())  # its own state still loads
    opt.step()


def test_complex_parameters_are_refused_at_construction():
    with pytest.raises(ValueError, match="complex parameter.*view_as_real"):
        AdaTAMW([nn.Parameter(torch.zeros(3, dtype=torch.complex64))])
    with pytest.raises(ValueError, match="complex parameter"):
        TAM([nn.Parameter(torch.zeros(3, dtype=torch.complex64))])
