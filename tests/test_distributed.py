"""Sharded training is exact (docs/distributed.md): FSDP2, FSDP1 use_orig_params and DDP on CPU/gloo.

Two processes run 5 AdaTAMW steps of a small model (an embedding in a coupled group, uneven
shapes so shards are uneven, weight decay) per case; the full parameters must match the
unsharded single-process run within 1e-6 relative. Negative controls: with the reductions
switched off the sharded runs differ, and the layouts that cannot be exact are refused.
Run ``pytest -s -m distributed tests/test_distributed.py`` to see the measured differences.
"""

from __future__ import annotations

import pytest
import torch

import adatamw
from tests.support import dist_worker as W

pytestmark = pytest.mark.distributed

TOL = 1e-6
SCOPES, MOMENTA = ("global", "tensor"), ("tam", "ema")


def _case(sharding: str, scope: str = "global", momentum: str = "tam", coupled: bool = True, **extra) -> dict:
    name = "-".join(
        [sharding, scope, momentum, "coupled" if coupled else "plain"]
        + [f"{k}={v}" for k, v in sorted(extra.items())]
    )
    return dict(name=name, sharding=sharding, scope=scope, momentum=momentum, coupled=coupled, **extra)


EXACT = (
    [_case(s, sc, mo) for s in ("fsdp2", "ddp") for sc in SCOPES for mo in MOMENTA]
    + [_case("fsdp1", sc, mo, coupled=False) for sc in SCOPES for mo in MOMENTA]
    + [
        _case("fsdp2", "tensor", "ema", foreach=False),
        _case("fsdp2", "global", "tam", fused=True),
        _case("fsdp2", "tensor", "ema", fused=True),
        _case("fsdp2", optim="coupled_adamw"),
    ]
    + [
        _case("fsdp2-default", "global", "tam"),
        _case("fsdp2-default", "tensor", "ema"),
        _case("fsdp2-default", optim="coupled_adamw"),
        _case("hsdp", "tensor", "tam"),
    ]
)
UNREDUCED = [
    _case("fsdp2", "global", "tam", no_reduction=True),
    _case("fsdp2", "tensor", "ema", no_reduction=True),
    _case("fsdp2", optim="coupled_adamw", no_reduction=True),
    _case("fsdp1", "tensor", "tam", coupled=False, no_reduction=True),
    _case("fsdp1", "global", "ema", coupled=False, no_reduction=True),
]
REFUSED = {
    "fsdp1-no-shard-aware": _case("fsdp1", coupled=False, shard_aware=False),
    "fsdp1-coupled": _case("fsdp1", coupled=True),
}
MEASURE = {"name": "measure", "measure": True}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """All cases in one 2-process gloo group (process start-up dominates the time)."""
    out = str(tmp_path_factory.mktemp("dist") / "results.pt")
    W.spawn(W.worker, EXACT + UNREDUCED + list(REFUSED.values()) + [MEASURE], out)
    return torch.load(out, weights_only=False)


def max_rel_diff(got: dict, want: dict) -> float:
    """max over tensors of max|got - want| / max|want|."""
    assert got.keys() == want.keys()
    return max(float((got[n] - want[n]).abs().max() / want[n].abs().max()) for n in want)


def _check_ran(res, name: str) -> dict:
    if "error" in res:
        pytest.fail(f"{name} failed in the worker:\n{res['trace']}")
    return res


@pytest.mark.parametrize("case", EXACT, ids=[c["name"] for c in EXACT])
def test_sharded_run_matches_single_process(results, case):
    got = _check_ran(results[case["name"]], case["name"])
    want = W.reference(case)
    diff = max_rel_diff(got, want)
    print(f"\n{case['name']}: max relative difference {diff:.2e}")
    assert diff < TOL
    moved = max_rel_diff(W.reference(case), {n: p.detach() for n, p in W.make_model().named_parameters()})
    assert moved > 1e-3  # the run did train


@pytest.mark.parametrize("case", UNREDUCED, ids=[c["name"] for c in UNREDUCED])
def test_without_reduction_the_sharded_run_differs(results, case):
    got = _check_ran(results[case["name"]], case["name"])
    diff = max_rel_diff(got, W.reference(case))
    print(f"\n{case['name']}: max relative difference {diff:.2e}")
    assert diff > 100 * TOL


def test_fsdp1_without_shard_aware_is_refused(results):
    err = results[REFUSED["fsdp1-no-shard-aware"]["name"]].get("error", "")
    assert "FSDP1 flattened" in err and "shard_aware" in err


def test_fsdp1_coupled_group_is_refused(results):
    err = results[REFUSED["fsdp1-coupled"]["name"]].get("error", "")
    assert "coupled" in err and "FSDP2" in err


def test_reduction_cost(results):
    m = _check_ran(results["measure"], "measure")
    print(
        f"\nFSDP2 AdaTAMW step, {m['params']} params in {m['tensors']} tensors (coupled "
        f"embedding), 2 gloo CPU ranks: {m['step_s'] * 1e3:.2f} ms with the reductions, "
        f"{m['step_unreduced_s'] * 1e3:.2f} ms without; one [N, 3] all_reduce alone "
        f"{m['allreduce_s'] * 1e3:.3f} ms"
    )
    # What docs/distributed.md promises: one all_reduce of the [N, 3] partial sums per step,
    # plus one of H floats (the column sums) for the coupled Shard(0) embedding; nothing else.
    assert sorted(m["allreduce_numels"]) == sorted([3 * m["tensors"], m["embedding_dim"]])


# -- single process: no sharding machinery, DeepSpeed layouts refused -------------------------
def test_unsharded_path_resolves_to_nothing():
    model = W.make_model()
    opt = adatamw.AdaTAMW(W.param_groups(model, coupled=True), lr=1e-2)
    W.train(model, opt)
    assert opt._sharding() is None and opt.sharding is None


def test_deepspeed_zero3_parameters_are_refused_at_the_first_step():
    """Construction accepts them (adatamw.zero.zero_aware may follow); without it the first
    step refuses."""
    p = torch.nn.Parameter(torch.zeros(3))
    p.ds_id = 0  # what ZeRO-3 puts on its partitioned parameters
    p.grad = torch.ones(3)
    opt = adatamw.AdaTAMW([p])
    with pytest.raises(RuntimeError, match="ZeRO-3.*FSDP2"):
        opt.step()


def test_layout_is_resolved_again_when_a_parameter_is_swapped_in_place():
    """The layout is cached between steps; replacing one entry of a group's list (not the
    list) must still be seen, here a ZeRO-3 partitioned parameter after a first step."""
    model = W.make_model()
    opt = adatamw.AdaTAMW(model.parameters(), lr=1e-2)
    W.train(model, opt)
    swapped = torch.nn.Parameter(opt.param_groups[0]["params"][0].detach().clone())
    swapped.ds_id = 0
    opt.param_groups[0]["params"][0] = swapped
    with pytest.raises(RuntimeError, match="ZeRO-3"):
        opt.step()


def test_flat_partitions_swapped_in_are_refused():
    """DeepSpeed ZeRO-1/2/3 (and its fp16/bf16 optimizers) replace a group by a flat partition."""
    model = W.make_model()
    opt = adatamw.AdaTAMW(model.parameters(), lr=1e-2)
    flat = torch.nn.Parameter(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    flat.grad = torch.ones_like(flat)
    opt.param_groups[0]["params"] = [flat]
    with pytest.raises(RuntimeError, match="replaced after construction.*DeepSpeed"):
        opt.step()
