"""Worker of tests/test_deepspeed.py: DeepSpeed ZeRO-1, 2 and 3 runs on CPU (gloo), one process per rank.

Each rank trains on its own batches (DeepSpeed averages the gradients over the data-parallel
group), so the reference is one process on the mean of both ranks' losses: plain data
parallel. The model and param groups are those of tests/support/dist_worker.py: an embedding group
(78 elements, cut in the middle by the two partitions) and a group of the rest (53 elements,
padded to 54), weight decay 0.01 / 0.1.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn

from tests.support import dist_worker as D

STEPS = 5
WORLD = 2
TORQUE_KEY = "torque_s"


def batches(rank: int, steps: int = STEPS, accumulation: int = 1) -> list[list[tuple]]:
    """Per optimizer step, the micro-batches of ``rank`` (different on every rank)."""
    gen = torch.Generator().manual_seed(100 + rank)
    return [
        [
            (torch.randint(2, D.VOCAB, (4, 5), generator=gen), torch.randn(4, 5, D.OUT, generator=gen))
            for _ in range(accumulation)
        ]
        for _ in range(steps)
    ]


def make_optimizer(model: nn.Module, case: dict):
    import adatamw

    groups = (
        list(model.parameters())
        if case.get("one_group")
        else D.param_groups(model, case.get("coupled", False))
    )
    scope = case.get("scope", "global")
    if case["optim"] == "coupled_adamw":  # no coupled group: AdamW, nothing to reduce
        return adatamw.CoupledAdamW(groups, lr=1e-2)
    if case["optim"] == "tam":
        return adatamw.TAM(groups, lr=5e-2, momentum=0.9, cosine_scope=scope)
    cls = {"adatamw": adatamw.AdaTAMW, "adatam": adatamw.AdaTAM}[case["optim"]]
    return cls(groups, lr=1e-2, cosine_scope=scope, momentum=case.get("momentum", "tam"))


def _poisoned(case: dict, step: int, rank: int, target: torch.Tensor) -> torch.Tensor:
    """The overflow case: rank 0's target is inf at step ``case['overflow_at']``."""
    if case.get("overflow_at") == step and rank == 0:
        return torch.full_like(target, float("inf"))
    return target


def reference(case: dict) -> dict[str, torch.Tensor]:
    """Plain data parallel in one process: grad = mean over ranks and micro-batches."""
    model = D.make_model()
    opt = make_optimizer(model, case)
    acc = case.get("accumulation", 1)
    per_rank = [batches(r, accumulation=acc) for r in range(WORLD)]
    for step in range(STEPS):
        if case.get("overflow_at") == step:  # DeepSpeed skips the step
            continue
        for r in range(WORLD):
            for tokens, target in per_rank[r][step]:
                loss = nn.functional.mse_loss(model(tokens), target) / (WORLD * acc)
                loss.backward()
        if case.get("clip"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), case["clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def ds_config(case: dict) -> dict:
    cfg = {
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": case.get("accumulation", 1),
        "gradient_clipping": case.get("clip", 0.0),
        "zero_optimization": {"stage": case.get("stage", 2), **case.get("zero", {})},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**6,
        "wall_clock_breakdown": False,
    }
    if case.get("offload"):  # a client optimizer on the offloaded fp32 partitions
        cfg["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
        cfg["zero_force_ds_cpu_optimizer"] = False
    if case.get("bf16"):
        cfg["bf16"] = {"enabled": True}
    return cfg


def _engine(case: dict):
    import deepspeed

    from adatamw.zero import zero_aware

    if case.get("zero_init"):  # ZeRO-3 partitions the parameters as they are created
        with deepspeed.zero.Init(config_dict_or_path=ds_config(case)):
            model = D.make_model()
    else:
        model = D.make_model()
    opt = make_optimizer(model, case)
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=ds_config(case))
    if case.get("dirty_padding"):  # what DeepSpeed's torch.empty may leave there, made sure
        from adatamw.sharding.zero import _fill_stage3_padding

        _fill_stage3_padding(engine.optimizer, 7.0)
    if case.get("zero_aware", True):
        zero_aware(engine)
    if case.get("stage") == 3:
        _check_partitions_hold_the_parameters(engine)
    return engine, opt


def _check_partitions_hold_the_parameters(engine) -> None:
    """sum over ranks of ||fp32 partitions||^2 == ||parameters||^2: nothing but zeros beyond them."""
    flats = engine.optimizer.fp32_partitioned_groups_flat
    local = torch.stack([f.detach().double().square().sum() for f in flats]).sum()
    dist.all_reduce(local)
    whole = sum(p.double().square().sum() for p in _full_params(engine.module).values())
    assert torch.allclose(local, whole, rtol=1e-12, atol=0), (float(local), float(whole))


def _train(engine, case: dict, rank: int, steps: range) -> None:
    acc = case.get("accumulation", 1)
    mine = batches(rank, accumulation=acc)
    dtype = next(engine.module.parameters()).dtype
    for step in steps:
        for tokens, target in mine[step]:
            out = engine(tokens)
            loss = nn.functional.mse_loss(out, _poisoned(case, step, rank, target).to(dtype))
            engine.backward(loss)
            engine.step()


def _torque_state(engine, opt) -> tuple[list, list]:
    """(s of every rank, step counters of every rank) after the run."""
    holders = opt.param_groups[0]["params"]  # ZeRO-3 empties them between steps
    first = opt.state[holders[0] if holders else engine.optimizer.fp32_partitioned_groups_flat[0]]
    s = float(first[TORQUE_KEY]) if TORQUE_KEY in first else None
    steps = [float(st["step"]) for st in opt.state.values() if "step" in st]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (s, steps))
    return [g[0] for g in gathered], [g[1] for g in gathered]


def _full_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole parameters (ZeRO-3 keeps only partitions outside forward/backward)."""
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        return {n: p.detach().float().clone() for n, p in model.named_parameters()}


def ds_run(case: dict, rank: int) -> dict:
    """One case; the full parameters afterwards, with ``s`` and the step counters per rank."""
    engine, opt = _engine(case)
    if case.get("resume"):  # 3 steps, save, a fresh engine loads them, 2 more steps
        _train(engine, case, rank, range(3))
        engine.save_checkpoint(case["ckpt_dir"], tag="step3")
        engine, opt = _engine(case)
        engine.load_checkpoint(case["ckpt_dir"], tag="step3")
        _train(engine, case, rank, range(3, STEPS))
    else:
        _train(engine, case, rank, range(STEPS))
    s, steps = _torque_state(engine, opt)
    params = _full_params(engine.module)
    try:  # what the Trainer's torque logging calls between steps
        stats = opt.torque_stats()
    except Exception as err:
        stats = {"error": f"{type(err).__name__}: {err}"}
    return {
        "params": params,
        "s": s,
        "steps": steps,
        "torque_stats": stats,
        "skipped": int(getattr(engine, "skipped_steps", 0)),
    }


def _switch_off(case: dict):
    """The negative controls: ``no_reduction``, each rank's own sums, not reduced over the
    ranks; ``no_deferral``, DeepSpeed's one inner step per param group left as it is."""
    import adatamw.sharding.zero as Z

    saved = (Z.ZeroSharding.reduce_partials, Z._step_all_groups_at_once)
    if case.get("no_reduction"):
        Z.ZeroSharding.reduce_partials = lambda self, sums, sources, scope: sums.sum(0, keepdim=True)
    if case.get("no_deferral"):
        Z._step_all_groups_at_once = lambda wrapper, optimizer: None

    def restore() -> None:
        Z.ZeroSharding.reduce_partials, Z._step_all_groups_at_once = saved

    return restore


def worker(rank: int, world: int, port: int, cases: list[dict], out: str) -> None:
    D.export_launcher_env(rank, world, port, DS_ACCELERATOR="cpu")
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    results = {}
    try:
        results = D.run_cases(cases, lambda case: ds_run(case, rank), switch_off=_switch_off)
    finally:
        if rank == 0:
            torch.save(results, out)
        dist.destroy_process_group()
