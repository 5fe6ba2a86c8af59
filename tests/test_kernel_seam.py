"""The kernel seam: one dispatch, compile-friendly on every implementation, the C++ extension built
only for the fused CPU path, and the AdamW -> AdaTAMW learning-rate scale."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch._dynamo.testing
from torch import nn

from adatamw import OPTIMIZERS, TAM, AdaTAM, AdaTAMW, CoupledAdamW, adamw_lr_to_adatamw, kernels
from adatamw.kernels import cpu_fused

PATHS = {"loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}


def make(kw, lr=1e-2, cls=AdaTAMW, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(20, 8, generator=gen)), nn.Parameter(torch.randn(8, generator=gen))]
    return params, cls(params, lr=lr, **kw)


def set_grads(params, t):
    gen = torch.Generator().manual_seed(100 + t)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)


@pytest.mark.slow
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("scope", ["global", "tensor"])
def test_step_traces_as_one_graph(path, scope):
    """torch.compile(fullgraph=True) needs no graph break: dynamo's own count is 0."""
    params, opt = make(dict(PATHS[path], cosine_scope=scope))
    set_grads(params, 0)
    explained = torch._dynamo.explain(opt.step)()
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


@pytest.mark.slow
@pytest.mark.parametrize("path", list(PATHS))
def test_compiled_step_equals_eager_and_tensor_lr_does_not_recompile(path):
    """fullgraph compile (aot_eager: the functionalised graph, custom ops included) gives the eager
    result; a scheduler moving a tensor lr reuses the compiled step (one compile in all)."""
    torch._dynamo.reset()
    eager_params, eager = make(PATHS[path], lr=torch.tensor(1e-2))
    params, opt = make(PATHS[path], lr=torch.tensor(1e-2))
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled_step = torch.compile(opt.step, fullgraph=True, backend=counter)
    for t in range(4):
        for o in (eager, opt):
            o.param_groups[0]["lr"].fill_(1e-2 / (t + 1))  # what a scheduler does to a tensor lr
        set_grads(eager_params, t)
        set_grads(params, t)
        eager.step()
        compiled_step()
    for a, b in zip(params, eager_params):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert opt.torque_stats()["s_hat"] == pytest.approx(eager.torque_stats()["s_hat"], abs=1e-7)
    # the first call compiles the step that creates the state, the second the steady step; no more
    assert counter.frame_count <= 2


def test_dispatch_picks_one_implementation_per_bucket():
    f32 = torch.zeros(3)
    plan = kernels.pick(
        [f32, f32.double(), f32.bfloat16(), torch.zeros(4, 2)],
        foreach=None,
        fused=None,
        coupled=[False, False, False, True],
    )
    names = {impl.name: idx for impl, idx in plan}
    assert names["loop"] == [3]  # coupled 2-D: Coupled Adam's row mean
    assert sorted(i for impl, idx in plan if impl.name == "foreach" for i in idx) == [1, 2]
    assert cpu_fused.available(), "C++ kernels did not build"
    assert names["fused"] == [0]
    assert [impl.name for impl, _ in kernels.pick([f32], foreach=False, fused=None, coupled=[False])] == [
        "loop"
    ]
    assert [impl.name for impl, _ in kernels.pick([f32], foreach=True, fused=None, coupled=[False])] == [
        "foreach"
    ]
    assert [
        impl.name for impl, _ in kernels.pick([f32], foreach=None, fused=None, coupled=[False], sgd=True)
    ] == ["foreach"]


def test_fused_refuses_what_its_kernels_cannot_take():
    with pytest.raises(RuntimeError, match="float32 CPU tensors; got a torch.float64"):
        AdaTAMW([nn.Parameter(torch.zeros(3, dtype=torch.float64))], fused=True)
    transposed = nn.Parameter(torch.zeros(4, 3).t())
    with pytest.raises(RuntimeError, match="got a non-contiguous float32 CPU tensor of shape"):
        AdaTAMW([transposed], fused=True)
    assert not cpu_fused.fits(transposed)  # the one predicate: pick sends it to foreach
    plan = kernels.pick([transposed], foreach=None, fused=None, coupled=[False])
    assert [impl.name for impl, _ in plan] == ["foreach"]
    with pytest.raises(ValueError, match="no fused implementation"):
        TAM([{"params": [nn.Parameter(torch.zeros(3))], "fused": True}])  # as a group key


@pytest.mark.parametrize("impl", [kernels.FOREACH, kernels.FUSED])
def test_implementations_refuse_a_v_transform_they_cannot_apply(impl):
    """Coupled Adam's row mean runs only in the loop; the others refuse it, never ignore it."""
    p, g, m, v = (torch.zeros(2, 3) for _ in range(4))
    with pytest.raises(ValueError, match="no per-tensor v transform"):
        impl.adam_update(
            [p],
            [g],
            [m],
            [v],
            [torch.tensor(0.0)],
            [torch.tensor(0.5)],
            lr=1e-3,
            beta1=0.9,
            beta2=0.999,
            eps=1e-8,
            decoupled_wd=0.0,
            kind="tam",
            v_transforms=[lambda v: v],
        )
    with pytest.raises(ValueError, match="cannot both be True"):
        AdaTAMW([nn.Parameter(torch.zeros(3))], fused=True, foreach=True)


def test_flags_are_keyword_only_as_in_torch_optim():
    p = [nn.Parameter(torch.zeros(3))]
    with pytest.raises(TypeError):
        AdaTAMW(p, 1e-3, (0.9, 0.999), 1e-8, 0.0, 0.9)  # gamma positionally
    with pytest.raises(TypeError):
        TAM(p, 1e-3, 0.9, 0.0, 0.9)


def test_registry_names_every_optimizer_once():
    assert set(OPTIMIZERS) == {"adamw", "adatamw", "adatam", "tam", "coupled_adamw"}
    assert OPTIMIZERS["adatamw"].cls is AdaTAMW and OPTIMIZERS["adatam"].cls is AdaTAM
    assert OPTIMIZERS["coupled_adamw"].cls is CoupledAdamW and not OPTIMIZERS["coupled_adamw"].torque
    assert OPTIMIZERS["adamw"].cls is torch.optim.AdamW and not OPTIMIZERS["tam"].adam


_NO_BUILD = textwrap.dedent("""
    import logging, warnings, torch
    from torch import nn
    logging.basicConfig(level=logging.INFO)
    from adatamw import AdaTAMW, TAM, CoupledAdamW
    from adatamw.kernels import cpu_fused
    def run(opt, params):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
    for make in (lambda ps: AdaTAMW(ps, foreach=False), lambda ps: TAM(ps, foreach=False),
                 lambda ps: CoupledAdamW(ps, foreach=False)):
        ps = [nn.Parameter(torch.zeros(4, 3))]
        run(make(ps), ps)
    ps = [nn.Parameter(torch.zeros(4, 3, device="meta"))]
    AdaTAMW(ps)  # no CPU tensor: nothing would use the kernels
    assert cpu_fused._loaded is None, "the extension was loaded for the loop"
    print("NO-BUILD-OK")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ps = [nn.Parameter(torch.zeros(4, 3))]
        opt = AdaTAMW(ps)  # default on float32 CPU: tries to build, cannot, falls back to foreach
        run(opt, ps)
    assert cpu_fused._loaded is False
    assert any("could not be built" in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert [impl.name for impl, _ in opt._gather(opt.param_groups[0]).plan] == ["foreach"]
    for make in (lambda ps: TAM(ps), lambda ps: AdaTAMW(ps, foreach=True)):
        ps = [nn.Parameter(torch.zeros(4, 3, dtype=torch.bfloat16))]
        run(make(ps), ps)  # foreach's sums without the C++ op: the multi-tensor form
        assert opt.torque_stats()["undefined_steps"] == 0
    print("FALLBACK-OK")
""")


@pytest.mark.slow
def test_no_compiler_is_invoked_for_loop_foreach_or_other_dtypes(tmp_path):
    """With the extension made unbuildable (no compiler, an empty extension folder), the loop
    never tries to build it; the float32 default tries once (at construction), warns, and runs
    foreach, whose sums then take the multi-tensor form (on CPU foreach's sums are the C++ op
    when it builds)."""
    env = dict(
        os.environ, CXX="/nonexistent/c++", CC="/nonexistent/cc", TORCH_EXTENSIONS_DIR=str(tmp_path / "ext")
    )
    env.pop("ADATAMW_NO_CPU_KERNELS", None)
    out = subprocess.run(
        [sys.executable, "-c", _NO_BUILD], env=env, capture_output=True, text=True, timeout=300
    )
    assert "NO-BUILD-OK" in out.stdout and "FALLBACK-OK" in out.stdout, out.stderr[-3000:]
    assert not (tmp_path / "ext").exists() or not any((tmp_path / "ext").rglob("*.so"))


def test_extension_name_carries_the_cpu_signature():
    """A shared extension cache never hands one CPU's -march=native build to another."""
    name = cpu_fused.extension_name()
    assert name.startswith("adatamw_cpu_kernels_") and len(name.rsplit("_", 1)[-1]) == 12


def test_adamw_lr_to_adatamw_formula():
    assert adamw_lr_to_adatamw(1e-3) == pytest.approx(1e-3 / 5, rel=1e-7)  # s* = 0: d = 1/2
    assert adamw_lr_to_adatamw(1e-3, s_star=1.0) == pytest.approx(1e-4, rel=1e-7)
    assert adamw_lr_to_adatamw(1e-3, beta1=0.95, s_star=1.0) == pytest.approx(5e-5, rel=1e-7)
    with pytest.raises(ValueError, match="s_star"):
        adamw_lr_to_adatamw(1e-3, s_star=-1.0)


def test_adamw_lr_to_adatamw_equalises_steps_on_a_quadratic():
    """f(x) = 0.5 ||x||^2 far from its minimum: the gradient keeps its direction, s -> 1, and at
    the transferred lr (s* = 1) AdaTAMW's steady step equals AdamW's (within 1 %); at AdamW's
    own lr it is 10x larger."""

    def steady_step(cls, lr):
        x = nn.Parameter(torch.full((64,), 1e4, dtype=torch.float64))
        opt = cls([x], lr=lr, weight_decay=0.0)
        for _ in range(200):
            before = x.detach().clone()
            x.grad = x.detach().clone()
            opt.step()
        return float((before - x.detach()).abs().mean())

    lr = 1e-2
    adamw = steady_step(torch.optim.AdamW, lr)
    assert steady_step(AdaTAMW, adamw_lr_to_adatamw(lr, s_star=1.0)) == pytest.approx(adamw, rel=1e-2)
    assert steady_step(AdaTAMW, lr) == pytest.approx(10 * adamw, rel=1e-2)
