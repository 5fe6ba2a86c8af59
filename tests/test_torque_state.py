"""Where the optimizer-wide torque state lives: independent of the param groups' order and
contents, carried by state_dict() in every parameter's state, every key keeping its dtype."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from adatamw import TAM, AdaTAM, AdaTAMW, CoupledAdamW

PATHS = {"loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}
CASES = [
    (kind, scope, path)
    for kind, scope, path in itertools.product(["adatamw", "tam"], ["global", "tensor"], PATHS)
    if (kind, path) != ("tam", "fused")
]
SHAPES = [(7, 4), (4,), (3, 4), (3,)]


def make_params(seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in SHAPES]


def build(kind, groups, scope, path):
    if kind == "tam":
        return TAM(groups, lr=1e-2, cosine_scope=scope, **PATHS[path])
    return AdaTAMW(groups, lr=1e-2, weight_decay=0.1, cosine_scope=scope, **PATHS[path])


def run(opt, params, steps=6, seed=5):
    gen = torch.Generator().manual_seed(seed)
    for t in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(p.dtype) * (1.0 + 0.3 * t)
        opt.step()


def s_of(opt, params, scope):
    if scope == "global":
        return opt.torque_state["torque_s"].clone()
    return torch.stack([opt.state[p]["torque_s"] for p in params])


@pytest.mark.parametrize("kind,scope,path", CASES)
def test_empty_or_reordered_groups_take_the_same_trajectory(kind, scope, path):
    """An empty first group (BitFit through Trainer.create_optimizer) and the groups in the
    other order step exactly as the optimizer built from the non-empty groups alone."""
    base_params = make_params()
    base = build(kind, [{"params": base_params[:2]}, {"params": base_params[2:]}], scope, path)
    run(base, base_params)
    variants = {
        "empty first": lambda ps: [{"params": []}, {"params": ps[:2]}, {"params": ps[2:]}],
        "reordered": lambda ps: [{"params": ps[2:]}, {"params": ps[:2]}],
    }
    for name, groups in variants.items():
        params = make_params()
        opt = build(kind, groups(params), scope, path)
        run(opt, params)
        assert torch.equal(s_of(opt, params, scope), s_of(base, base_params, scope)), name
        for p, q in zip(params, base_params):
            assert torch.equal(p, q), name
    s = s_of(base, base_params, scope)
    assert (s != 0).all()  # the torque moved


def test_global_state_survives_groups_emptied_between_steps_and_added_later():
    """ZeRO-3 empties the param groups between steps; add_param_group adds parameters later:
    the global s continues, and every parameter's state holds the same s tensor."""
    params = make_params()
    opt = AdaTAMW([{"params": params[:2]}], lr=1e-2)
    run(opt, params[:2], steps=3)
    s_before = opt.torque_state["torque_s"].clone()
    saved = opt.param_groups[0]["params"]
    opt.param_groups[0]["params"] = []
    assert opt.torque_stats()["s_hat"] == float(s_before)
    opt.param_groups[0]["params"] = saved
    opt.add_param_group({"params": params[2:]})
    run(opt, params, steps=2, seed=9)
    s = opt.torque_state["torque_s"]
    assert not torch.equal(s, s_before)
    assert all(opt.state[p]["torque_s"] is s for p in params)
    assert all(
        opt.state[p]["torque_undefined_steps"] is opt.torque_state["torque_undefined_steps"] for p in params
    )


def _old_format(state_dict, scope):
    """A checkpoint as written before: the optimizer-wide tensors (the global s, the count) in
    the first parameter's state only."""
    old = copy.deepcopy(state_dict)
    first = old["param_groups"][0]["params"][0]
    shared = ["torque_undefined_steps"] + (["torque_s"] if scope == "global" else [])
    for key, st in old["state"].items():
        for name in shared if key != first else ():
            st.pop(name)
    return old


@pytest.mark.parametrize("scope", ["global", "tensor"])
def test_old_checkpoints_with_s_in_the_first_parameter_load_exactly(scope):
    params = make_params()
    opt = AdaTAMW(params, lr=1e-2, cosine_scope=scope)
    run(opt, params, steps=3)
    saved = _old_format(opt.state_dict(), scope)
    if scope == "tensor":  # per-tensor s stays per tensor; only the count was the first's
        for st in saved["state"].values():
            assert "torque_s" in st
    resumed_params = [nn.Parameter(p.detach().clone()) for p in params]
    resumed = AdaTAMW(resumed_params, lr=1e-2, cosine_scope=scope)
    resumed.load_state_dict(saved)
    assert resumed.torque_state["torque_undefined_steps"].dtype == torch.int64
    run(opt, params, steps=3, seed=7)
    run(resumed, resumed_params, steps=3, seed=7)
    for p, q in zip(params, resumed_params):
        assert torch.equal(p, q)
    assert opt.torque_stats() == resumed.torque_stats()


def test_loaded_state_is_not_shared_with_the_source_optimizer():
    """load_state_dict(other.state_dict()) copies the in-place updated torque tensors."""
    params = make_params()
    first = AdaTAMW(params, lr=1e-2)
    run(first, params, steps=2)
    s_first = first.torque_state["torque_s"].clone()
    second_params = [nn.Parameter(p.detach().clone()) for p in params]
    second = AdaTAMW(second_params, lr=1e-2)
    second.load_state_dict(first.state_dict())
    run(second, second_params, steps=2)
    assert torch.equal(first.torque_state["torque_s"], s_first)


OPTIMIZERS = {"adatamw": AdaTAMW, "adatam": AdaTAM, "tam": TAM, "coupled_adamw": CoupledAdamW}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scope", ["global", "tensor"])
def test_every_state_key_keeps_its_dtype_through_a_round_trip(name, dtype, scope):
    """torch casts every state tensor but ``step`` to the parameter's dtype at load: every key
    (torque_undefined_steps included, int64) comes back in the dtype it was saved in."""
    kw = {} if name == "coupled_adamw" else dict(cosine_scope=scope)
    params = make_params(dtype=dtype)
    opt = OPTIMIZERS[name](params, lr=1e-2, **kw)
    run(opt, params, steps=2)
    saved = opt.state_dict()
    other = OPTIMIZERS[name](make_params(seed=1, dtype=dtype), lr=1e-2, **kw)
    other.load_state_dict(saved)
    loaded = other.state_dict()
    keys = set()
    for pid, st in saved["state"].items():
        for key, value in st.items():
            keys.add(key)
            got = loaded["state"][pid][key]
            assert got.dtype == value.dtype, (key, got.dtype, value.dtype)
            assert torch.equal(got, value), key
    expected = {
        "adatamw": {"step", "exp_avg", "exp_avg_sq", "torque_s", "torque_undefined_steps"},
        "tam": {"momentum_buffer", "torque_s", "torque_undefined_steps"},
        "coupled_adamw": {"step", "exp_avg", "exp_avg_sq"},
    }
    assert keys == expected.get(name, expected["adatamw"])


def test_a_tensor_lr_must_have_one_element():
    with pytest.raises(ValueError, match="^Tensor lr must be 1-element$"):
        AdaTAMW(make_params(), lr=torch.tensor([1e-3, 2e-3]))
    with pytest.raises(ValueError, match="^Tensor lr must be 1-element$"):
        TAM(make_params(), lr=torch.tensor([1e-3, 2e-3]))
    AdaTAMW(make_params(), lr=torch.tensor([1e-3]))  # one element, as torch accepts
