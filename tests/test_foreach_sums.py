"""Eq. 2's sums on the foreach path: a number of kernels that does not grow with the number of
tensors (counted with a TorchDispatchMode), the same values as the loop's statement, and an
error bounded relative to ||m|| ||g|| in an adversarial case."""

from __future__ import annotations

import collections
import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from adatamw import TAM, AdaTAM, AdaTAMW, torque
from adatamw.kernels import cpu_fused, foreach


class AtenCalls(TorchDispatchMode):
    """Counts the non-view aten calls made inside it (each is at least one kernel launch on an
    accelerator)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.calls[str(func)] += 1
        return func(*args, **(kwargs or {}))


OPTIMIZERS = {"adatamw": AdaTAMW, "adatam": AdaTAM, "tam": TAM}


def calls_of_one_step(cls, n_tensors, dtype, scope):
    gen = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(64, 8, generator=gen).to(dtype)) for _ in range(n_tensors)]
    opt = cls(params, lr=1e-3, foreach=True, cosine_scope=scope)
    for t in range(3):  # two warm-up steps create the state; the third is counted
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(dtype)
        if t < 2:
            opt.step()
    with AtenCalls() as counter:
        opt.step()
    return counter.calls


@pytest.fixture(params=["cpp-sums", "multi-tensor-sums"])
def sums_form(request, monkeypatch):
    """Both forms of foreach's sums: the C++ op (CPU default) and the multi-tensor kernels
    (accelerators, or a CPU without a compiler)."""
    if request.param == "cpp-sums":
        assert cpu_fused.available(), "C++ kernels did not build"
    else:
        monkeypatch.setattr(foreach.cpu_fused, "available", lambda: False)
    return request.param


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("scope", ["global", "tensor"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_foreach_step_makes_the_same_calls_for_10_and_200_tensors(name, scope, dtype, sums_form):
    few = calls_of_one_step(OPTIMIZERS[name], 10, dtype, scope)
    many = calls_of_one_step(OPTIMIZERS[name], 200, dtype, scope)
    assert few == many, {k: (few[k], many[k]) for k in set(few) | set(many) if few[k] != many[k]}
    assert sum(few.values()) <= 80


def test_multi_tensor_sums_make_the_same_calls_for_any_number_of_tensors():
    def count(n):
        ms = [torch.randn(5, 3) for _ in range(n)]
        gs = [torch.randn(5, 3) for _ in range(n)]
        with AtenCalls() as counter:
            foreach.multi_tensor_sums(ms, gs)
        return counter.calls

    assert count(3) == count(300)


def _pairs(seed, dtype):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(17, 5), (5,), (1,), (300,), (2, 3, 4)]
    ms = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]
    gs = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]
    ms[0][3, 2] = float("nan")  # a poisoned element of m counts as 0
    ms[3][7] = float("-inf")
    return ms, gs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("form", ["cpp", "multi-tensor"])
def test_foreach_sums_equal_the_loop_statement(dtype, form):
    ms, gs = _pairs(0, dtype)
    got = cpu_fused.torque_sums(ms, gs) if form == "cpp" else foreach.multi_tensor_sums(ms, gs)
    want = torque.partial_sums([m.double() for m in ms], [g.double() for g in gs])
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, rtol=1e-12 if dtype == torch.float64 else 1e-6, atol=0)
    gs[1][2] = float("inf")  # a non-finite gradient: that tensor's sums are not finite
    bad = foreach.multi_tensor_sums(ms, gs) if form == "multi-tensor" else cpu_fused.torque_sums(ms, gs)
    assert not torch.isfinite(bad[1]).all() and torch.isfinite(bad[[0, 2, 3, 4]]).all()


def _adversarial(ratio, n=10_000_000):
    """m almost orthogonal to g, ||m|| / ||g|| = ratio, n float32 elements; the exact cosine
    from float64 sums of the float32 values."""
    gen = torch.Generator().manual_seed(7)
    g = torch.randn(n, generator=gen, dtype=torch.float64)
    m = torch.randn(n, generator=gen, dtype=torch.float64)
    m -= (m @ g) / (g @ g) * g  # orthogonal in float64 ...
    m += 1e-4 * g  # ... then a small component along g: S about 1e-4
    m *= ratio * g.norm() / m.norm()
    m32, g32 = m.float(), g.float()
    m64, g64 = m32.double(), g32.double()
    exact = float((m64 @ g64) / (m64.norm() * g64.norm()))
    return m32, g32, exact


@pytest.mark.slow
@pytest.mark.parametrize("ratio", [1e3, 1e-3])
@pytest.mark.parametrize("form", ["cpp", "multi-tensor", "multi-tensor-float32"])
def test_adversarial_cosine_stays_within_1e6(ratio, form):
    """The bound of foreach.multi_tensor_sums: the dot's error is at most a few gamma_n
    ||m|| ||g||, so |S - S_ref| stays <= 1e-6 at 1e7 elements, near-orthogonal m and g and
    norms 1e3 apart. ``multi-tensor-float32`` is the accelerator's form (float32 accumulation),
    run here on CPU."""
    m, g, exact = _adversarial(ratio)
    if form == "cpp":
        sums = cpu_fused.torque_sums([m], [g])
    elif form == "multi-tensor":
        sums = foreach.multi_tensor_sums([m], [g])
    else:  # the float32 statement of the accelerator's form, through torch's CPU kernels
        sums = _float32_multi_tensor_sums(m, g)
    cos, defined = torque.cosine(sums.sum(0))
    assert bool(defined)
    assert abs(float(cos) - exact) <= 1e-6, (float(cos), exact)
    assert abs(exact) > 1e-5  # not trivially 0


def _float32_multi_tensor_sums(m, g):
    """multi_tensor_sums' formulas in float32 accumulation on chunks of 65536 elements (the
    multi-tensor kernels' chunk), partial results added in float32 as the second kernel does."""
    chunk = 65536
    parts = torch.stack(
        [
            torch.stack(
                ((mc * gc).clamp_min(0).sum(), (mc * gc).abs().sum(), (mc * mc).sum(), (gc * gc).sum())
            )
            for mc, gc in zip(m.split(chunk), g.split(chunk))
        ]
    ).sum(0)
    pos, absolute, mm, gg = parts.unbind()
    return torch.stack((pos * 2 - absolute, mm, gg)).unsqueeze(0)


def test_foreach_and_fused_share_the_cpu_sums():
    """On CPU foreach takes its sums from the fused implementation's op: the same s."""
    gen = torch.Generator().manual_seed(2)
    a = [nn.Parameter(torch.randn(30, 4, generator=gen)) for _ in range(3)]
    b = [nn.Parameter(p.detach().clone()) for p in a]
    fa, fb = AdaTAMW(a, foreach=True), AdaTAMW(b, fused=True)
    for _ in range(5):
        for p, q in zip(a, b):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        fa.step()
        fb.step()
    assert torch.equal(fa.torque_state["torque_s"], fb.torque_state["torque_s"])
    assert math.isfinite(fa.torque_stats()["s_hat"])


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["global", "tensor"])
def test_multi_tensor_form_traces_as_one_graph(scope, monkeypatch):
    """The accelerator's form of the sums compiles with fullgraph (no host sync, no branch on a
    value): dynamo's own graph-break count is 0."""
    monkeypatch.setattr(foreach.cpu_fused, "available", lambda: False)
    gen = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(20, 8, generator=gen)), nn.Parameter(torch.randn(8, generator=gen))]
    opt = AdaTAMW(params, lr=torch.tensor(1e-2), foreach=True, cosine_scope=scope)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    explained = torch._dynamo.explain(opt.step)()
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
