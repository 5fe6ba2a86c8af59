"""Worker of tests/test_distributed.py: sharded AdaTAMW runs on CPU (gloo), one process per rank.

Every rank sees the same batch, so the gradients after FSDP's reduce-scatter / DDP's all-reduce
are the single-process ones ((x + x) / 2 == x) and only the optimizer's reductions are under test.
"""

from __future__ import annotations

import datetime
import os
import time
import traceback

import torch
import torch.distributed as dist
import torch.nn as nn

from tests.support.ports import free_port

STEPS = 5
VOCAB, HIDDEN, MID, OUT = 13, 6, 5, 3  # odd sizes: shards are uneven (7/6, 3/2, 2/1 rows)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, HIDDEN)
        self.lin1 = nn.Linear(HIDDEN, MID)
        self.lin2 = nn.Linear(MID, OUT)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lin2(torch.tanh(self.lin1(self.emb(tokens))))


def make_model() -> Tiny:
    torch.manual_seed(0)
    return Tiny()


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [
        (
            torch.randint(2, VOCAB, (4, 5), generator=gen),  # rows 0, 1: zero gradient
            torch.randn(4, 5, OUT, generator=gen),
        )
        for _ in range(STEPS)
    ]


def param_groups(model: nn.Module, coupled: bool) -> list[dict]:
    """Embedding in its own group (coupled if asked, wd 0.01); the rest with wd 0.1."""
    emb = [p for n, p in model.named_parameters() if "emb" in n]
    rest = [p for n, p in model.named_parameters() if "emb" not in n]
    return [{"params": emb, "coupled": coupled, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.1}]


def make_optimizer(model: nn.Module, case: dict):
    import adatamw

    groups = param_groups(model, case["coupled"])
    if case.get("optim") == "coupled_adamw":
        return adatamw.CoupledAdamW(groups, lr=1e-2, foreach=case.get("foreach"))
    extra = {"fused": True} if case.get("fused") else {}
    return adatamw.AdaTAMW(
        groups,
        lr=1e-2,
        cosine_scope=case["scope"],
        momentum=case["momentum"],
        foreach=case.get("foreach"),
        **extra,
    )


def train(model: nn.Module, opt) -> None:
    for tokens, target in batches():
        loss = nn.functional.mse_loss(model(tokens), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def reference(case: dict) -> dict[str, torch.Tensor]:
    """The unsharded single-process run."""
    model = make_model()
    train(model, make_optimizer(model, case))
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _full_params_fsdp1(model) -> dict[str, torch.Tensor]:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with FSDP.summon_full_params(model):
        return {
            n.replace("_fsdp_wrapped_module.", ""): p.detach().clone() for n, p in model.named_parameters()
        }


def sharded_run(case: dict) -> dict[str, torch.Tensor]:
    """One case under its sharding; the full parameters afterwards (on every rank)."""
    import adatamw.distributed as tad

    model = make_model()
    kind = case["sharding"]
    if kind in ("fsdp2", "fsdp2-default", "hsdp"):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        # fsdp2-default: no mesh, as accelerate without a parallelism config: each call makes
        # its own (equal) DeviceMesh object; hsdp: replicated over the ranks, "sharded" over a
        # mesh dim of size 1 (nothing to reduce)
        world = dist.get_world_size()
        mesh = (
            init_device_mesh("cpu", (world,))
            if kind == "fsdp2"
            else init_device_mesh("cpu", (world, 1), mesh_dim_names=("replicate", "shard"))
            if kind == "hsdp"
            else None
        )
        fully_shard(model.lin1, mesh=mesh)
        fully_shard(model.lin2, mesh=mesh)
        fully_shard(model, mesh=mesh)
        opt = make_optimizer(model, case)
        train(model, opt)
        return {n: p.full_tensor().detach().clone() for n, p in model.named_parameters()}
    if kind == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        wrapped = FSDP(model, use_orig_params=True, device_id=torch.device("cpu"))
        opt = make_optimizer(_Unprefixed(wrapped), case)
        if case.get("shard_aware", True):
            tad.shard_aware(opt, model=wrapped)
        train(wrapped, opt)
        return _full_params_fsdp1(wrapped)
    if kind == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp = DDP(model)
        train(ddp, make_optimizer(model, case))
        return {n: p.detach().clone() for n, p in model.named_parameters()}
    raise ValueError(kind)


class _Unprefixed:
    """named_parameters of an FSDP1 model without the wrapper prefix (for param_groups)."""

    def __init__(self, wrapped) -> None:
        self.wrapped = wrapped

    def named_parameters(self):
        for n, p in self.wrapped.named_parameters():
            yield n.replace("_fsdp_wrapped_module.", ""), p


def _no_reduction(monkey: bool):
    """Turn the DTensor / flat-shard reductions off (the negative control)."""
    import adatamw.distributed as tad

    if not monkey:
        return lambda: None
    saved = (
        tad.DTensorSharding.reduce_partials,
        tad.DTensorSharding.row_mean,
        tad.FlatShardSharding.reduce_partials,
    )
    tad.DTensorSharding.reduce_partials = lambda self, sums, sources, scope: sums
    tad.DTensorSharding.row_mean = lambda self, source: None
    tad.FlatShardSharding.reduce_partials = lambda self, sums, sources, scope: sums

    def restore() -> None:
        (
            tad.DTensorSharding.reduce_partials,
            tad.DTensorSharding.row_mean,
            tad.FlatShardSharding.reduce_partials,
        ) = saved

    return restore


def time_reduction(repeats: int = 20) -> dict:
    """Cost of the reductions under FSDP2 (global scope, a coupled embedding).

    ``step_s`` / ``step_unreduced_s``: seconds per optimizer step with the reductions and with
    them switched off (the difference is what they cost, waiting for the other rank included);
    ``allreduce_s``: one all_reduce of the [N, 3] partial sums alone, after a barrier;
    ``allreduce_numels``: the size of each all_reduce one step makes.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    import adatamw

    torch.manual_seed(0)
    layers = [nn.Linear(256, 256) for _ in range(8)]
    model = nn.Sequential(nn.Embedding(4096, 256), *layers)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    params = list(model.parameters())
    opt = adatamw.AdaTAMW([{"params": params[:1], "coupled": True}, {"params": params[1:]}])
    for p in params:
        p.grad = DTensor.from_local(torch.randn_like(p.to_local()), p.device_mesh, p.placements)

    def per_step() -> float:
        opt.step()  # warm-up (resolves the layout)
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(repeats):
            opt.step()
        return (time.perf_counter() - t0) / repeats

    step = per_step()
    calls = []  # the collectives one step makes: (op, numel) of each all_reduce
    all_reduce = dist.all_reduce
    dist.all_reduce = lambda t, *a, **k: (calls.append(t.numel()), all_reduce(t, *a, **k))[1]
    try:
        opt.step()
    finally:
        dist.all_reduce = all_reduce
    restore = _no_reduction(True)
    try:
        unreduced = per_step()
    finally:
        restore()
    sums = torch.zeros(len(params), 3)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(repeats):
        dist.all_reduce(sums)
    allreduce = (time.perf_counter() - t0) / repeats
    return {
        "params": sum(p.numel() for p in params),
        "tensors": len(params),
        "step_s": step,
        "step_unreduced_s": unreduced,
        "allreduce_s": allreduce,
        "allreduce_numels": calls,
        "embedding_dim": params[0].shape[1],
    }


def spawn(fn, *args, nprocs: int = 2) -> None:
    """Run ``fn(rank, nprocs, port, *args)`` in ``nprocs`` fresh processes (spawn, not fork);
    a second try on a fresh port if the first start fails (another job may take the port)."""
    from torch.multiprocessing.spawn import ProcessException

    for attempt in range(2):
        try:
            torch.multiprocessing.start_processes(
                fn, args=(nprocs, free_port(), *args), nprocs=nprocs, join=True, start_method="spawn"
            )
            return
        except ProcessException:
            if attempt:
                raise


def export_launcher_env(rank: int, world: int, port: int, **extra: str) -> None:
    """What a launcher (torchrun, ``accelerate launch``, ``deepspeed``) exports for ``rank`` of
    ``world`` on this host, plus ``extra``; then one intra-op thread per rank (2 CPU cores)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        **extra,
    )
    torch.set_num_threads(1)


def join_gloo_group(rank: int, world: int, port: int, timeout_s: int = 120, accelerate: bool = False) -> None:
    """Start ``rank``'s process as a launcher would and join the gloo group; with ``accelerate``,
    also set up accelerate's state (MULTI_CPU here), which its logging needs."""
    export_launcher_env(rank, world, port, OMP_NUM_THREADS="1")
    timeout = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timeout)
    if accelerate:
        from accelerate import PartialState

        PartialState(cpu=True)


def run_cases(cases: list[dict], run_one, switch_off=None, errors=(Exception,)) -> dict:
    """``run_one(case)`` for each case on this rank, keyed by the case's name. A failure is a
    result too (its error and trace: refusals are what some tests check), and every rank meets
    at a barrier after each case. ``switch_off(case)`` may patch something for the case and
    return the function that undoes it."""
    results = {}
    for case in cases:
        restore = switch_off(case) if switch_off is not None else None
        try:
            results[case["name"]] = run_one(case)
        except errors as err:
            results[case["name"]] = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()}
        finally:
            if restore is not None:
                restore()
        dist.barrier()
    return results


def worker(rank: int, world: int, port: int, cases: list[dict], out: str) -> None:
    join_gloo_group(rank, world, port)
    results = {}
    try:
        results = run_cases(
            cases,
            lambda case: time_reduction() if case.get("measure") else sharded_run(case),
            switch_off=lambda case: _no_reduction(case.get("no_reduction", False)),
        )
    finally:
        if rank == 0:
            torch.save(results, out)
        dist.destroy_process_group()
