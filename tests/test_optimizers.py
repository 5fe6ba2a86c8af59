"""AdaTAMW and its family against an independent float64 reference, plus exact cases,
torch.optim conventions (state_dict, GradScaler, dtypes, errors) and real learning."""

from __future__ import annotations

import contextlib
import io
import itertools
import math

import pytest
import torch
from torch import nn

from adatamw import TAM, AdaTAM, AdaTAMW, CoupledAdamW, embedding_param_groups, transfer_lr, update
from adatamw.kernels import cpu_fused
from tests.support.reference_tam import ReferenceOptimizer

SHAPES = [(11, 6), (6,), (4, 6), (4,), (1, 4), (1,)]  # the first is the "embedding"


def make_problem(seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
    targets = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
    return [p.to(dtype) for p in params], targets, gen


def gradients(step, directions, noise, dtype):
    """g_t = direction * cos(0.4 t) + noise: a drift that turns back and forth, so the
    momentum meets gradients at positive and negative cosines. Gradients do not depend on
    the parameters: a feedback loop would amplify float32 storage rounding (torch's own
    AdamW is 1.2e-6 off a float64 run of such a problem) and hide what the optimizer does."""
    return [(d * math.cos(0.4 * step) + n).to(dtype) for d, n in zip(directions, noise)]


def make_optimizer(kind, params, coupled, **kw):
    groups = [{"params": [params[0]], "coupled": coupled}, {"params": params[1:]}]
    cls = {"adatamw": AdaTAMW, "adatam": AdaTAM, "tam": TAM, "coupled_adamw": CoupledAdamW}[kind]
    if kind == "tam":
        groups = [{"params": params}]
    return cls(groups, **kw)


def run_pair(
    kind,
    steps=50,
    seed=0,
    dtype=torch.float32,
    coupled=False,
    impl="loop",
    scope="global",
    momentum="tam",
    weight_decay=0.0,
    lr=1e-2,
):
    params, targets, gen = make_problem(seed, dtype)
    params = [nn.Parameter(p) for p in params]
    kw = dict(lr=lr, weight_decay=weight_decay, **impl_kwargs(impl))
    if kind == "tam":
        kw.pop("fused", None)
    ref_kw = dict(lr=lr, weight_decay=weight_decay)
    if kind != "coupled_adamw":
        kw.update(cosine_scope=scope)
        ref_kw.update(scope=scope)
    if kind in ("adatamw", "adatam"):
        kw.update(momentum=momentum)
        ref_kw.update(momentum=momentum)
    opt = make_optimizer(kind, params, coupled, **kw)
    ref = ReferenceOptimizer(params, kind, coupled=[coupled] + [False] * (len(params) - 1), **ref_kw)
    ref.scale = [r.abs().max() for r in ref.p]
    for t in range(steps):
        noise = [torch.randn(s, generator=gen, dtype=torch.float64) * 0.3 for s in SHAPES]
        grads = gradients(t, targets, noise, dtype)
        for p, g in zip(params, grads):
            p.grad = g
        with kernels_for(impl):
            opt.step()
        ref.step(grads)
        ref.scale = [torch.maximum(a, r.abs().max()) for a, r in zip(ref.scale, ref.p)]
    return params, ref, opt


def max_rel_error(params, ref_params, scales=None):
    """Largest over tensors of ||p - p_ref||_inf / scale, scale = ||p_ref||_inf by default.

    For parameters, ``scales`` is the largest ||p_ref||_inf along the run: float32 storage
    rounds each step at the magnitude the tensor has then, so a tensor that shrank toward 0
    is judged against the size it had, not against a near-zero final value.
    """
    scales = scales or [r.abs().max() for r in ref_params]
    return max(
        float((p.detach().double() - r).abs().max() / s.clamp_min(1e-12))
        for p, r, s in zip(params, ref_params, scales)
    )


IMPLEMENTATIONS = ["loop", "foreach", "fused"]
COMBOS = list(
    itertools.product(["global", "tensor"], ["tam", "ema"], [False, True], [0.0, 0.1], IMPLEMENTATIONS)
)


def impl_kwargs(impl):
    return {"loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}[impl]


@contextlib.contextmanager
def kernels_for(impl):
    """ "fused" must really run the project's C++ CPU kernels (no silent fallback)."""
    assert impl != "fused" or cpu_fused.available(), "C++ kernels did not build"
    yield


@pytest.mark.parametrize("scope,momentum,coupled,weight_decay,impl", COMBOS)
def test_adatamw_matches_float64_reference(scope, momentum, coupled, weight_decay, impl):
    params, ref, opt = run_pair(
        "adatamw", scope=scope, momentum=momentum, coupled=coupled, weight_decay=weight_decay, impl=impl
    )
    assert max_rel_error(params, ref.p, ref.scale) <= 1e-6
    momenta = [opt.state[p]["exp_avg"] for p in params]
    assert max_rel_error(momenta, ref.m) <= 1e-5
    stats = opt.torque_stats()
    ref_s = ref.s if scope == "global" else sum(ref.s) / len(ref.s)
    assert stats["s_hat"] == pytest.approx(ref_s, abs=1e-6)


@pytest.mark.parametrize("kind", ["adatam", "tam", "coupled_adamw"])
@pytest.mark.parametrize("scope", ["global", "tensor"])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_family_matches_float64_reference(kind, scope, impl):
    params, ref, _ = run_pair(
        kind, scope=scope, impl=impl, weight_decay=0.05, coupled=kind == "coupled_adamw"
    )
    assert max_rel_error(params, ref.p, ref.scale) <= 1e-6


@pytest.mark.parametrize("impl", ["loop", "foreach"])
def test_float64_params_match_reference_tightly(impl):
    params, ref, _ = run_pair(
        "adatamw", dtype=torch.float64, impl=impl, coupled=True, weight_decay=0.1, scope="tensor"
    )
    assert max_rel_error(params, ref.p, ref.scale) <= 1e-12


@pytest.mark.parametrize("scope", ["global", "tensor"])
def test_bf16_params_follow_reference(scope):
    params, ref, _ = run_pair("adatamw", dtype=torch.bfloat16, steps=20, scope=scope, lr=1e-2)
    assert all(p.dtype == torch.bfloat16 for p in params)
    assert max_rel_error(params, ref.p, ref.scale) <= 3e-2  # bf16 keeps ~3 significant digits


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_implementations_agree_with_loop(impl):
    a, _, _ = run_pair("adatamw", impl="loop", coupled=True, scope="tensor", momentum="ema")
    b, _, _ = run_pair("adatamw", impl=impl, coupled=True, scope="tensor", momentum="ema")
    assert max_rel_error(a, [p.detach().double() for p in b]) <= 1e-6


# -- exact cases -------------------------------------------------------------------------------
def one_param(n=5, **kw):
    p = nn.Parameter(torch.randn(n, generator=torch.Generator().manual_seed(1)))
    return p, AdaTAMW([p], lr=1e-3, weight_decay=0.0, **kw)


def test_first_step_has_zero_cosine_and_half_damping():
    p, opt = one_param()
    g = torch.randn(5)
    p.grad = g.clone()
    opt.step()
    stats = opt.torque_stats()
    assert stats["s_hat"] == 0.0 and stats["damping"] == 0.5
    torch.testing.assert_close(opt.state[p]["exp_avg"], (0.5 + 1e-8) * g, rtol=1e-7, atol=0)


@pytest.mark.parametrize("scope", ["global", "tensor"])
def test_parallel_gradients_drive_s_to_one(scope):
    p, opt = one_param(cosine_scope=scope)
    g = torch.randn(5)
    for t in range(1, 31):
        p.grad = g.clone()
        opt.step()
        assert opt.torque_stats()["s_hat"] == pytest.approx(1 - 0.9 ** (t - 1), abs=1e-6)


@pytest.mark.parametrize("scope", ["global", "tensor"])
def test_antiparallel_gradients_drive_s_to_minus_one(scope):
    p, opt = one_param(cosine_scope=scope)
    p.grad = torch.randn(5)
    opt.step()
    for t in range(2, 31):
        p.grad = -0.1 * opt.state[p]["exp_avg"].clone()  # opposes the momentum
        opt.step()
        assert opt.torque_stats()["s_hat"] == pytest.approx(-(1 - 0.9 ** (t - 1)), abs=1e-6)


@pytest.mark.parametrize("cls", [AdaTAMW, AdaTAM, TAM])
@pytest.mark.parametrize("foreach", [False, True])
def test_zero_gradients_and_zero_momentum_give_no_nan(cls, foreach):
    p = nn.Parameter(torch.ones(3, 2))
    opt = cls([p], foreach=foreach)
    for _ in range(3):
        p.grad = torch.zeros_like(p)
        opt.step()
    # no gradient and no momentum: the cosine is 0 by definition (s = 0, d = 1/2), the update
    # is zero, and only AdaTAMW's decoupled decay (lr 1e-3, wd 1e-2 by default) moves p
    decay = (1 - 1e-3 * 1e-2) ** 3 if cls is AdaTAMW else 1.0
    assert torch.allclose(p, torch.full_like(p, decay), rtol=0, atol=1e-7)
    assert opt.torque_stats()["s_hat"] == 0.0 and opt.torque_stats()["damping"] == 0.5


def test_coupled_update_uses_row_mean_of_v():
    gen = torch.Generator().manual_seed(3)
    w0 = torch.randn(6, 4, generator=gen)
    g = torch.randn(6, 4, generator=gen)
    p = nn.Parameter(w0.clone())
    opt = AdaTAMW([{"params": [p], "coupled": True, "coupled_scale": 2.0}], lr=0.1, weight_decay=0.0)
    p.grad = g.clone()
    opt.step()
    v_hat = (1 - 0.999) * g * g / (1 - 0.999)
    v_coupled = 2.0 * v_hat.mean(dim=0, keepdim=True)
    expected = w0 - 0.1 * (0.5 + 1e-8) * g / (v_coupled.sqrt() + 1e-8)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(opt.state[p]["exp_avg_sq"], (1 - 0.999) * g * g)  # stays per element


# -- torch.optim conventions -----------------------------------------------------------------
def tiny_model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Embedding(10, 6), nn.Flatten(), nn.Linear(18, 8), nn.Tanh(), nn.Linear(8, 1)).to(
        dtype
    )


def train_steps(model, opt, steps, start=0):
    gen = torch.Generator().manual_seed(1234)
    batches = [
        (torch.randint(0, 10, (8, 3), generator=gen), torch.randn(8, 1, generator=gen))
        for _ in range(start + steps)
    ]
    for x, y in batches[start:]:
        opt.zero_grad()
        loss = ((model(x).float() - y) ** 2).mean()
        loss.backward()
        opt.step()
    return loss.item()


OPTIMIZERS = {
    "adatamw_global": lambda ps: AdaTAMW(ps, lr=1e-2),
    "adatamw_fused": lambda ps: AdaTAMW(ps, lr=1e-2, fused=True),
    "adatamw_tensor_ema": lambda ps: AdaTAMW(ps, lr=1e-2, cosine_scope="tensor", momentum="ema"),
    "adatam": lambda ps: AdaTAM(ps, lr=1e-2, weight_decay=1e-3),
    "tam": lambda ps: TAM(ps, lr=transfer_lr(0.05), cosine_scope="tensor"),
    "coupled_adamw": lambda ps: CoupledAdamW(ps, lr=1e-2),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_dict_round_trip_is_bit_exact(name, dtype):
    build = OPTIMIZERS[name]
    straight = tiny_model(dtype=dtype)
    if name.endswith("_fused") and dtype != torch.float32:  # as torch.optim: refused up front
        with pytest.raises(RuntimeError, match="float32 CPU tensors; got a torch.bfloat16"):
            build(straight.parameters())
        return
    opt = build(straight.parameters())
    train_steps(straight, opt, 10)

    first = tiny_model(dtype=dtype)
    opt1 = build(first.parameters())
    train_steps(first, opt1, 5)
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "optim": opt1.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)

    resumed = tiny_model(seed=99, dtype=dtype)
    resumed.load_state_dict(saved["model"])
    opt2 = build(resumed.parameters())
    opt2.load_state_dict(saved["optim"])
    train_steps(resumed, opt2, 5, start=5)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_grad_scaler_skipped_step_changes_nothing(name):
    model = tiny_model()
    opt = OPTIMIZERS[name](model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    train_steps(model, opt, 2)
    params_before = [p.detach().clone() for p in model.parameters()]
    state_before = io.BytesIO()
    torch.save(opt.state_dict(), state_before)
    stats_before = opt.torque_stats()

    x = torch.randint(0, 10, (8, 3))
    loss = model(x).sum()
    scaler.scale(loss).backward()
    next(iter(model.parameters())).grad.view(-1)[0] = float("inf")
    scaler.step(opt)
    scaler.update()

    for a, b in zip(params_before, model.parameters()):
        assert torch.equal(a, b)
    state_before.seek(0)
    old = torch.load(state_before, weights_only=True)["state"]
    new = opt.state_dict()["state"]
    for key in old:
        for field, value in old[key].items():
            assert torch.equal(value, new[key][field]), (key, field)
    assert opt.torque_stats() == stats_before
    assert scaler.get_scale() < 2.0**8  # the step really was skipped for inf gradients


def test_bf16_parameters_train():
    model = tiny_model(dtype=torch.bfloat16)
    opt = AdaTAMW(model.parameters(), lr=1e-2)
    first = train_steps(model, opt, 1)
    last = train_steps(model, opt, 60)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert all(s["exp_avg"].dtype == torch.bfloat16 for s in opt.state.values())
    assert last < first


@pytest.mark.parametrize("cls", [AdaTAMW, AdaTAM, TAM, CoupledAdamW])
def test_sparse_gradients_are_refused(cls):
    emb = nn.Embedding(10, 3, sparse=True)
    opt = cls(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(lr=-1.0), "lr"),
        (dict(betas=(1.0, 0.999)), r"betas\[0\]"),
        (dict(betas=(0.9, -0.1)), r"betas\[1\]"),
        (dict(eps=-1e-8), "eps"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(gamma=1.0), "gamma"),
        (dict(torque_eps=-1.0), "torque_eps"),
        (dict(cosine_scope="layer"), "cosine_scope"),
        (dict(momentum="nesterov"), "momentum"),
        (dict(coupled_scale=0.0), "coupled_scale"),
    ],
)
def test_invalid_hyperparameters_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        AdaTAMW([nn.Parameter(torch.zeros(2))], **kwargs)


def test_invalid_tam_momentum_is_named():
    with pytest.raises(ValueError, match="momentum"):
        TAM([nn.Parameter(torch.zeros(2))], momentum=1.5)


def test_global_scope_refuses_groups_with_different_gamma():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="gamma"):
        AdaTAMW([{"params": [a]}, {"params": [b], "gamma": 0.5}])
    AdaTAMW([{"params": [a]}, {"params": [b], "gamma": 0.5}], cosine_scope="tensor")


def test_transfer_lr():
    assert transfer_lr(0.1) == pytest.approx(0.2)
    assert transfer_lr(0.1, beta_sgdm=0.9, beta_tam=0.8, s_star=1.0) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="beta_tam"):
        transfer_lr(0.1, beta_tam=1.0)


def test_embedding_param_groups_hold_tied_embedding_once():
    model = nn.Module()
    model.emb = nn.Embedding(10, 4)
    model.head = nn.Linear(4, 10)
    model.head.weight = model.emb.weight  # tied
    model.norm = nn.LayerNorm(4)
    model.get_input_embeddings = lambda: model.emb
    model.get_output_embeddings = lambda: model.head
    groups = embedding_param_groups(model, weight_decay=0.01)
    coupled = [g for g in groups if g.get("coupled")]
    assert len(coupled) == 1 and len(coupled[0]["params"]) == 1
    assert coupled[0]["params"][0] is model.emb.weight
    all_params = [p for g in groups for p in g["params"]]
    assert len(all_params) == len({id(p) for p in all_params}) == len(list(model.parameters()))
    no_decay = [g for g in groups if g["weight_decay"] == 0.0][0]["params"]
    assert any(p is model.norm.weight for p in no_decay)
    assert any(p is model.head.bias for p in no_decay)
    CoupledAdamW(groups)  # builds


# -- real learning problem ----------------------------------------------------------------------
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_mlp_learns_digits(name):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = OPTIMIZERS[name](model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    with torch.no_grad():
        start = loss_fn(model(x), y).item()
    for _ in range(5):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            loss_fn(model(x[i : i + 64]), y[i : i + 64]).backward()
            opt.step()
    with torch.no_grad():
        end = loss_fn(model(x), y).item()
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert end < 0.5 * start
    assert accuracy > 0.8


def test_cpu_kernel_sums_do_not_depend_on_the_thread_count():
    """Exact in double (sizes below, at and across the 16-lane and unit boundaries), and
    bit-identical on 1 and 2 threads: one parallel region cuts every tensor into fixed units
    summed in order, so a run resumed on another thread count keeps its cosines."""
    assert cpu_fused.available()
    gen = torch.Generator().manual_seed(6)
    sizes = (0, 3, 384, 40_000, 70_001, 300_000)
    ms = [torch.randn(n, generator=gen) for n in sizes]
    gs = [torch.randn(n, generator=gen) for n in sizes]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = cpu_fused.torque_sums(ms, gs)
        torch.set_num_threads(2)
        two = cpu_fused.torque_sums(ms, gs)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    want = torch.stack(
        [
            torch.stack([m.double() @ g.double(), m.double() @ m.double(), g.double() @ g.double()])
            for m, g in zip(ms, gs)
        ]
    )
    torch.testing.assert_close(one, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["tam", "ema", "adam"])
@pytest.mark.parametrize("lr_kind", ["float", "tensor"])
def test_cpu_kernel_update_mirrors_momentum_adam_step(kind, lr_kind):
    """The C++ update against adatamw.update.adam_step (the loop), several steps, with decay,
    per-tensor damping coefficients, and tensors across the unit boundary."""
    assert cpu_fused.available()
    gen = torch.Generator().manual_seed(8)
    sizes = (3, 40_000, 70_001)
    ps = [torch.randn(n, generator=gen) for n in sizes]
    mine = [
        [t.clone() for t in ps],
        [torch.zeros(n) for n in sizes],
        [torch.zeros(n) for n in sizes],
        [torch.tensor(0.0) for _ in sizes],
    ]
    ref = [[t.clone() for t in x] for x in mine]
    lr = 1e-2 if lr_kind == "float" else torch.tensor(1e-2)
    hyper = dict(lr=lr, beta1=0.9, beta2=0.999, eps=1e-8, decoupled_wd=0.1, kind=kind)
    for _ in range(4):
        gs = [torch.randn(n, generator=gen) for n in sizes]
        coefs = [torch.tensor(0.3 + 0.1 * i) for i in range(len(sizes))] if kind != "adam" else None
        cpu_fused.adam_update(mine[0], gs, mine[1], mine[2], mine[3], coefs, **hyper)
        for i in range(len(sizes)):
            update.adam_step(
                ref[0][i], gs[i], ref[1][i], ref[2][i], ref[3][i], coefs[i] if coefs else None, **hyper
            )
    for a, b in zip(mine, ref):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)  # float32, other op order


def test_cpu_kernel_refuses_before_any_counter_moves():
    assert cpu_fused.available()
    p, g, m, v = (torch.zeros(6) for _ in range(4))
    steps = [torch.tensor(0.0), torch.tensor(0.0)]
    coefs = [torch.tensor(0.5)] * 2
    bad = torch.zeros(3, 2).t()  # not contiguous
    with pytest.raises(RuntimeError, match="contiguous float32 CPU"):
        cpu_fused.adam_update(
            [p, bad],
            [g, g],
            [m, m],
            [v, v],
            steps,
            coefs,
            lr=1e-3,
            beta1=0.9,
            beta2=0.999,
            eps=1e-8,
            decoupled_wd=0.0,
            kind="tam",
        )
    assert [float(t) for t in steps] == [0.0, 0.0]  # refused before any counter moved
    assert [cpu_fused.fits(t) for t in (p, bad, p.double(), p.bfloat16())] == [True, False, False, False]
