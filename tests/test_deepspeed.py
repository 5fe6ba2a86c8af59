"""DeepSpeed ZeRO-1, 2 and 3 (adatamw/sharding/zero.py) are exact on 2 gloo CPU ranks; what cannot be
exact is refused.

One spawned 2-process run covers every case (process start-up and DeepSpeed's import dominate
the time). Each exact case trains 5 steps of tests/support/dist_worker.py's model (two param groups,
partitions that cut the embedding, padding in the second group) on different batches per
rank; the parameters must match plain data parallel (one process, the mean of both ranks'
losses) within 1e-6 relative, and ``s`` must be the same on both ranks. Negative control:
without the reduction over the ranks the run differs. Run
``pytest -s -m distributed tests/test_deepspeed.py`` to see the measured differences.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("DS_ACCELERATOR", "cpu")
pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install -e '.[deepspeed]')")

from tests.support import dist_worker as D  # noqa: E402
from tests.support import ds_worker as W  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

pytestmark = pytest.mark.distributed

TOL = 1e-6
OPTIMS = ("adatamw", "adatam", "tam")
ZERO3_SMALL = {"sub_group_size": 10, "stage3_param_persistence_threshold": 0}


def _case(name: str, **kw) -> dict:
    return dict(name=name, **kw)


EXACT = (
    [_case(f"{o}-zero{st}", optim=o, stage=st) for o in OPTIMS for st in (1, 2)]
    + [
        _case("adatamw-zero2-ema", optim="adatamw", momentum="ema"),
        _case("adatamw-zero2-clip-accumulation", optim="adatamw", clip=0.05, accumulation=2),
        _case("adatamw-zero1-one-group-detected", optim="adatamw", stage=1, one_group=True, zero_aware=False),
        _case("coupled_adamw-zero2", optim="coupled_adamw"),
        _case("adatamw-zero2-offload-optimizer", optim="adatamw", offload=True),
        _case("adatamw-zero1-offload-optimizer-clip", optim="adatamw", stage=1, offload=True, clip=0.05),
    ]
    # ZeRO-3: 4 sub-groups (sub_group_size 10), parameters partitioned outside forward
    + [_case(f"{o}-zero3", optim=o, stage=3, zero=ZERO3_SMALL) for o in OPTIMS]
    # the padding of ZeRO-3's pieces filled with 7 (uninitialised memory): zeroed, exact
    + [_case("tam-zero3-dirty-padding", optim="tam", stage=3, zero=ZERO3_SMALL, dirty_padding=True)]
)
RESUMED = [_case(f"{o}-zero2-resumed", optim=o, resume=True) for o in OPTIMS] + [
    _case("adatamw-zero3-resumed", optim="adatamw", stage=3, zero=ZERO3_SMALL, resume=True)
]
OVERFLOW = _case("adatamw-zero2-overflow-skipped", optim="adatamw", overflow_at=2)
BF16 = [
    _case("adatamw-zero2-bf16", optim="adatamw", bf16=True),
    _case("adatamw-zero3-bf16", optim="adatamw", stage=3, zero=ZERO3_SMALL, bf16=True),
]
ZERO_INIT = _case("adatamw-zero3-zero-init", optim="adatamw", stage=3, zero=ZERO3_SMALL, zero_init=True)
UNREDUCED = _case("adatamw-zero2-unreduced", optim="adatamw", no_reduction=True)
UNDEFERRED = _case("adatamw-zero2-one-step-per-group", optim="adatamw", no_deferral=True)
REFUSED = {
    "tensor-scope": _case("refused-tensor-scope", optim="adatamw", scope="tensor"),
    "coupled": _case("refused-coupled", optim="adatamw", coupled=True),
    "zero3-offload": _case("refused-zero3-offload", optim="adatamw", stage=3, offload=True),
    "undeclared-groups": _case("refused-two-groups-without-zero-aware", optim="adatamw", zero_aware=False),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deepspeed")
    out = str(tmp / "results.pt")
    cases = (
        EXACT
        + [dict(c, ckpt_dir=str(tmp / c["name"])) for c in RESUMED]
        + [OVERFLOW, *BF16, ZERO_INIT, UNREDUCED, UNDEFERRED]
        + list(REFUSED.values())
    )
    D.spawn(W.worker, cases, out, nprocs=W.WORLD)
    return torch.load(out, weights_only=False)


def max_rel_diff(got: dict, want: dict) -> float:
    """max over tensors of max|got - want| / max|want|."""
    assert got.keys() == want.keys()
    return max(float((got[n] - want[n]).abs().max() / want[n].abs().max()) for n in want)


def _ran(results, case: dict) -> dict:
    res = results[case["name"]]
    if "error" in res:
        pytest.fail(f"{case['name']} failed in the worker:\n{res['trace']}")
    return res


def _check_exact(res: dict, case: dict) -> float:
    diff = max_rel_diff(res["params"], W.reference(case))
    print(
        f"\n{case['name']}: max relative difference to plain data parallel {diff:.2e}, s per rank {res['s']}"
    )
    assert diff < TOL
    if case["optim"] != "coupled_adamw":  # one s, on every rank
        assert res["s"][0] is not None and res["s"][0] == res["s"][1]
    return diff


@pytest.mark.parametrize("case", EXACT, ids=[c["name"] for c in EXACT])
def test_zero_matches_plain_data_parallel(results, case):
    _check_exact(_ran(results, case), case)


@pytest.mark.parametrize("case", RESUMED, ids=[c["name"] for c in RESUMED])
def test_resumed_from_checkpoint_matches_uninterrupted(results, case):
    res = _ran(results, case)
    uninterrupted = _ran(results, {"name": case["name"].replace("-resumed", "")})
    diff = max_rel_diff(res["params"], uninterrupted["params"])
    print(f"\n{case['name']}: max relative difference to the uninterrupted run {diff:.2e}")
    assert diff < TOL
    assert res["s"] == uninterrupted["s"]
    _check_exact(res, case)


def test_overflow_step_is_skipped_without_touching_s_or_step(results):
    """An inf gradient: DeepSpeed skips the step before calling the optimizer, so the run
    equals the one without that batch, and the step counters count 4 of 5 steps."""
    res = _ran(results, OVERFLOW)
    assert res["skipped"] == 1
    assert all(steps == [float(W.STEPS - 1)] * len(steps) for steps in res["steps"])
    _check_exact(res, OVERFLOW)


@pytest.mark.parametrize("case", BF16, ids=[c["name"] for c in BF16])
def test_bf16_runs_with_one_s_on_every_rank(results, case):
    res = _ran(results, case)
    assert res["s"][0] is not None and res["s"][0] == res["s"][1]
    diff = max_rel_diff(res["params"], W.reference(case))
    print(f"\n{case['name']}: max relative difference to the fp32 reference {diff:.2e}")
    assert diff < 5e-2  # bf16 forward/backward: close, not exact


# -- ZeRO-3 cases the optimizer core handles (adatamw/base.py, adatamw/sharding/resolve.py) ------
def test_zero3_model_built_under_zero_init(results):
    res = results[ZERO_INIT["name"]]
    assert "error" not in res, res.get("trace")
    _check_exact(res, ZERO_INIT)


def test_torque_stats_between_zero3_steps(results):
    case = next(c for c in EXACT if c["name"] == "adatamw-zero3")
    stats = _ran(results, case)["torque_stats"]
    assert "error" not in stats, stats
    assert stats["s_hat"] == pytest.approx(_ran(results, case)["s"][0])


def test_torque_stats_after_zero2_steps(results):
    res = _ran(results, _case("adatamw-zero2"))
    assert res["torque_stats"]["s_hat"] == pytest.approx(res["s"][0])


def test_without_reduction_the_zero_run_differs(results):
    res = _ran(results, UNREDUCED)
    diff = max_rel_diff(res["params"], W.reference(UNREDUCED))
    print(f"\nunreduced: max relative difference {diff:.2e}, s per rank {res['s']}")
    assert diff > 100 * TOL and res["s"][0] != res["s"][1]


def test_with_deepspeeds_step_per_group_the_run_differs(results):
    """Without the deferral each param group gets its own cosine (and its own s)."""
    res = _ran(results, UNDEFERRED)
    diff = max_rel_diff(res["params"], W.reference(UNDEFERRED))
    print(f"\none step per group: max relative difference {diff:.2e}")
    assert diff > 100 * TOL


@pytest.mark.parametrize(
    "kind,words",
    [
        ("tensor-scope", ("cosine_scope='tensor'", "flat partition")),
        ("coupled", ("coupled", "rows")),
        ("zero3-offload", ("ZeRO-3", "offload_optimizer")),
        ("undeclared-groups", ("zero_aware", "2 param groups")),
    ],
)
def test_refused_with_the_reason(results, kind, words):
    err = results[REFUSED[kind]["name"]].get("error", "")
    assert err and all(w in err for w in words), err


# -- the Trainer end to end: TrainingArguments(deepspeed=ds_zero2.json) under torchrun ---------
REPO = Path(__file__).resolve().parent.parent
DS_ZERO2 = REPO / "recipes" / "accelerate" / "ds_zero2.json"


@pytest.mark.slow
def test_trainer_with_zero_configs_resumes_exactly(tmp_path):
    """The project's ZeRO-2 config, and the same at stage 3, through
    ``TrainingArguments(deepspeed=...)`` on 2 CPU ranks (tests/support/ds_trainer_script.py): AdaTAMW made
    exact by ``zero_aware_callback``, a checkpoint at step 4, ``resume_from_checkpoint`` equals
    the uninterrupted run, and ``s`` equals plain data parallel's (the parameters of this BERT
    differ from DDP's by float noise with torch's AdamW too: its attention key biases get a zero
    gradient up to rounding, which Adam normalizes)."""
    from tests.support.tiny_models import save_tiny_model

    model = save_tiny_model("bert", tmp_path / "model")
    zero3 = json.loads(DS_ZERO2.read_text())
    zero3["zero_optimization"] = {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True}
    (tmp_path / "ds_zero3.json").write_text(json.dumps(zero3))
    out = tmp_path / "out"
    env = dict(
        os.environ,
        DS_ACCELERATOR="cpu",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    for attempt in range(2):  # a second try on a fresh port: another job may take the first
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc_per_node",
                "2",
                "--master_port",
                str(free_port()),
                str(REPO / "tests" / "support" / "ds_trainer_script.py"),
                str(model),
                str(out),
                str(DS_ZERO2),
                str(tmp_path / "ds_zero3.json"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode == 0 or attempt:
            break
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ddp = torch.load(out / "ddp.pt", weights_only=False)
    for stage in ("zero2", "zero3"):
        full = torch.load(out / f"{stage}.pt", weights_only=False)
        resumed = torch.load(out / f"{stage}-resumed.pt", weights_only=False)
        assert full["sharding"] == resumed["sharding"] == "ZeroSharding"
        assert full["step"] == resumed["step"] == 8
        diff = max_rel_diff(resumed["params"], full["params"])
        s_diff = abs(full["s"][0] - ddp["s"][0]) / abs(ddp["s"][0])
        print(
            f"\nTrainer {stage}: resumed vs uninterrupted {diff:.2e}; s {full['s']} vs DDP "
            f"{ddp['s'][0]:.8f} (relative {s_diff:.1e})"
        )
        assert diff < TOL and resumed["s"] == full["s"]
        assert full["s"][0] == full["s"][1] and s_diff < 1e-5


# -- single process: bad input to zero_aware ------------------------------------------------------
def test_zero_aware_names_what_it_needs():
    import adatamw
    from adatamw.zero import zero_aware

    model = torch.nn.Linear(3, 2)
    with pytest.raises(TypeError, match="holds no adatamw optimizer"):
        zero_aware(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(RuntimeError, match="not wrapped by a DeepSpeed ZeRO optimizer"):
        zero_aware(adatamw.AdaTAMW(model.parameters()))
