"""Worker of tests/test_fsdp_checkpoint.py: resume through torch.distributed.checkpoint.

A tiny BERT masked LM (word embedding and decoder in a coupled group) or, under FSDP1,
tests/support/dist_worker.py's small model is trained on 2 gloo CPU ranks, one process per rank, under
one of four layouts:

- ``fsdp2-accelerate``: prepared by the recipe (``recipes.fsdp_prep.prepare_for_fsdp2``: one
  registration of the tied decoder bias) and wrapped by accelerate's own FSDP2 preparation
  (``fsdp2_prepare_model``, what ``accelerate launch`` with ``fsdp_version: 2`` runs) without a
  parallelism config, so
  every ``fully_shard`` call builds its own (equal) default ``DeviceMesh``;
- ``fsdp2``: the same by hand on the tied model, ``fully_shard(layer)`` per ``BertLayer`` and
  the root, no ``mesh``;
- ``fsdp1``: ``FullyShardedDataParallel(use_orig_params=True)`` with
  :func:`adatamw.distributed.shard_aware` (no coupled group: FSDP1 refuses it);
- ``ddp``: ``DistributedDataParallel``.

Phase ``first`` trains 3 steps and saves the model and optimizer state through
``get_model_state_dict`` / ``get_optimizer_state_dict`` (``sharded``: ``dcp.save``; ``full``:
full state dicts, ``torch.save`` d by rank 0), or through accelerate's own
``save_fsdp_model`` / ``save_fsdp_optimizer`` (``accelerate-sharded`` / ``accelerate-full``: what
the Trainer's and ``Accelerator.save_state``'s FSDP checkpoints call), and, for FSDP2,
trains another copy 6 steps without interruption. Phase ``resume`` runs in fresh processes:
builds the same layout, loads (``dcp.load`` / ``broadcast_from_rank0``), ``set_*_state_dict``
and trains steps 4-6. Every rank sees the same batch, so gradients equal the single-process ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException  # a BaseException

from tests.support import dist_worker as D
from tests.support.fsdp2_mlm_worker import accelerator_view

STEPS, FIRST = 6, 3
VOCAB, SEQ, BATCH = 37, 6, 4
WRAP_CLASSES = ["BertLayer"]
#: The prepared model's name of the tied decoder bias -> the original model's first name of it.
PREPARED_NAMES = {"cls.predictions.decoder.bias": "cls.predictions.bias"}


def _bert(case: dict) -> bool:
    """FSDP1 runs tests/support/dist_worker.py's small model: with this BERT (frozen key biases),
    FSDP1 use_orig_params differs from one process by 7e-3 already in memory, for
    torch.optim.AdamW too (torch 2.13), so it could not tell a checkpoint error apart."""
    return case["sharding"] != "fsdp1"


def make_model(case: dict):
    """Tiny BERT MLM, dropout 0 (deterministic), decoder tied to the word embedding and its bias
    to the head's; FSDP1: tests/support/dist_worker.py's model (:func:`_bert`)."""
    from transformers import BertConfig, BertForMaskedLM

    if not _bert(case):
        return D.make_model()

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=12,
        max_position_embeddings=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = BertForMaskedLM(config)
    for layer in model.bert.encoder.layer:
        # softmax is invariant to the key bias: its gradient is 0 up to rounding, and Adam's
        # normalised step turns that rounding (which differs with the reduction order) into
        # +-lr steps. Frozen, so the comparisons measure the optimizer, not rounding noise.
        layer.attention.self.key.bias.requires_grad_(False)
    return model


def batches(case: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input ids, MLM labels) for BERT; (tokens, regression target) for the small model."""
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(STEPS):
        if _bert(case):
            ids = torch.randint(5, VOCAB, (BATCH, SEQ), generator=gen)
            labels = torch.where(torch.rand(BATCH, SEQ, generator=gen) < 0.5, ids, -100)
        else:
            ids = torch.randint(2, D.VOCAB, (BATCH, SEQ), generator=gen)
            labels = torch.randn(BATCH, SEQ, D.OUT, generator=gen)
        out.append((ids, labels))
    return out


def loss(model, case: dict, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if _bert(case):
        return model(input_ids=ids, labels=labels).loss
    return torch.nn.functional.mse_loss(model(ids), labels)


def make_optimizer(model, case: dict):
    """The case's optimizer over embedding_param_groups (BERT, coupled) or the small model's
    two groups (FSDP1, not coupled: FSDP1 refuses a coupled group)."""
    import adatamw

    if _bert(case):
        groups = adatamw.embedding_param_groups(model, weight_decay=0.1)
    else:
        groups = D.param_groups(model, coupled=False)
    optim, scope = case["optim"], case.get("scope", "global")
    if optim == "torch_adamw":  # the control: torch's own optimizer through the same harness
        return torch.optim.AdamW(
            [{k: v for k, v in g.items() if k not in ("coupled", "coupled_scale")} for g in groups], lr=1e-2
        )
    if optim == "coupled_adamw":
        return adatamw.CoupledAdamW(groups, lr=1e-2)
    if optim == "tam":
        return adatamw.TAM(groups, lr=1e-2, cosine_scope=scope)
    cls = {"adatamw": adatamw.AdaTAMW, "adatam": adatamw.AdaTAM}[optim]
    return cls(groups, lr=1e-2, cosine_scope=scope)


def train(model, opt, case: dict, steps: range) -> None:
    data = batches(case)
    for i in steps:
        loss(model, case, *data[i]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def reference(case: dict) -> dict[str, torch.Tensor]:
    """The uninterrupted single-process run of 6 steps, on one thread as the workers (the
    thread count changes the matmuls' summation order, hence the gradients' last bits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = make_model(case)
        train(model, make_optimizer(model, case), case, range(STEPS))
    finally:
        torch.set_num_threads(threads)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _accelerate(case: dict):
    """(FSDP plugin, the parts of an Accelerator that accelerate's FSDP2 functions read) of
    ``accelerate launch`` with ``fsdp_version: 2`` and no parallelism config. On CPU accelerate
    itself never selects FSDP (it picks MULTI_CPU, see recipes/launch_checks.py), so the
    Accelerator is reduced to these attributes; the functions called are accelerate's own."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    full = case["state_dict"] == "accelerate-full"
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=WRAP_CLASSES,
        reshard_after_forward=True,
        state_dict_type="FULL_STATE_DICT" if full else "SHARDED_STATE_DICT",
    )
    return plugin, accelerator_view(plugin)


def accelerate_fsdp2(model, case: dict):
    """The recipe's preparation (``recipes.fsdp_prep``), then accelerate's FSDP2 preparation
    (``fsdp2_prepare_model``): ``mesh=None`` to every ``fully_shard``, so each call builds its
    own (equal) default ``DeviceMesh``."""
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    from recipes.fsdp_prep import prepare_for_fsdp2

    prepare_for_fsdp2(model, "TRANSFORMER_BASED_WRAP", WRAP_CLASSES)
    return fsdp2_prepare_model(_accelerate(case)[1], model)


def build(case: dict):
    """(wrapped model, optimizer) of the case's layout."""
    model = make_model(case)
    kind = case["sharding"]
    if kind == "fsdp2-accelerate":
        model = accelerate_fsdp2(model, case)
        return model, make_optimizer(model, case)
    if kind == "fsdp2":  # the same default meshes by hand, one fully_shard per layer
        from torch.distributed.fsdp import fully_shard

        for layer in model.bert.encoder.layer:
            fully_shard(layer)
        fully_shard(model)
        return model, make_optimizer(model, case)
    if kind == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        import adatamw.distributed as tad

        wrapped = FSDP(model, use_orig_params=True, device_id=torch.device("cpu"))
        opt = tad.shard_aware(make_optimizer(wrapped.module, case), model=wrapped)
        return wrapped, opt
    if kind == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp = DDP(model)
        return ddp, make_optimizer(model, case)
    raise ValueError(kind)


def full_params(model, case: dict) -> dict[str, torch.Tensor]:
    """The full parameters under the unwrapped model's names (the prepared model's decoder bias
    under the head's name, which ``named_parameters`` gives the tied bias)."""
    kind = case["sharding"]
    if kind.startswith("fsdp2"):
        return {
            PREPARED_NAMES.get(n, n): p.full_tensor().detach().clone() for n, p in model.named_parameters()
        }
    if kind == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        with FSDP.summon_full_params(model):
            return {
                n.replace("_fsdp_wrapped_module.", ""): p.detach().clone()
                for n, p in model.named_parameters()
            }
    return {n.replace("module.", "", 1): p.detach().clone() for n, p in model.named_parameters()}


def _rank0_only(case: dict) -> bool:
    """Full state dicts gathered to rank 0 and broadcast back on load: the DTensor (FSDP2) way.
    FSDP1's ``cpu_offload`` (rank 0 only) segfaults on CPU tensors in torch 2.13, so FSDP1 and
    DDP keep the full state dict on every rank and every rank reads the file."""
    return case["sharding"].startswith("fsdp2")


def _options(case: dict, loading: bool):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    if case["state_dict"] == "full":
        rank0 = _rank0_only(case)
        return StateDictOptions(
            full_state_dict=True, cpu_offload=rank0, broadcast_from_rank0=loading and rank0
        )
    return StateDictOptions()


def save(model, opt, case: dict, folder: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    if case["state_dict"].startswith("accelerate"):  # what Trainer / save_state call for FSDP
        from accelerate.utils.fsdp_utils import save_fsdp_model, save_fsdp_optimizer

        plugin, accelerator = _accelerate(case)
        save_fsdp_model(plugin, accelerator, model, str(folder))
        save_fsdp_optimizer(plugin, accelerator, opt, model, str(folder))
        return
    msd, osd = get_state_dict(model, opt, options=_options(case, loading=False))
    if case["state_dict"] == "sharded":
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(folder))
    elif dist.get_rank() == 0:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"model": msd, "optim": osd}, folder / "full.pt")


def load(model, opt, case: dict, folder: Path) -> None:
    """The saved state into ``model`` and ``opt`` (``None``: the model only)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    if case["state_dict"].startswith("accelerate"):
        from accelerate.utils.fsdp_utils import load_fsdp_model, load_fsdp_optimizer

        plugin, accelerator = _accelerate(case)
        load_fsdp_model(plugin, accelerator, model, str(folder))
        if opt is not None:
            load_fsdp_optimizer(plugin, accelerator, opt, model, str(folder))
        return
    if case["state_dict"] == "sharded":
        state = {"model": get_model_state_dict(model)}
        if opt is not None:
            state["optim"] = get_optimizer_state_dict(model, opt)
        dcp.load(state, checkpoint_id=str(folder))
    elif dist.get_rank() == 0 or not _rank0_only(case):
        state = torch.load(folder / "full.pt", weights_only=False)
    else:
        state = {"model": {}, "optim": {}}
    # Two calls: set_state_dict takes an empty model_state_dict (every rank but 0 under
    # broadcast_from_rank0) as "optimizer only" and skips the model's broadcast (torch 2.13).
    options = _options(case, loading=True)
    set_model_state_dict(model, state["model"], options=options)
    if opt is not None:
        set_optimizer_state_dict(model, opt, state["optim"], options=options)


def mesh_objects(model) -> dict:
    """How many DeviceMesh objects the parameters hold, and how many distinct by equality."""
    meshes = [p.device_mesh for p in model.parameters()]
    return {"objects": len({id(m) for m in meshes}), "distinct": len(set(meshes))}


def different_meshes() -> str:
    """Two layers on meshes that really differ (dim names): the optimizer must refuse."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    import adatamw

    model = make_model({"sharding": "fsdp2"})
    fully_shard(
        model.bert.encoder.layer[0],
        mesh=init_device_mesh("cpu", (dist.get_world_size(),), mesh_dim_names=("fsdp",)),
    )
    fully_shard(model)
    opt = adatamw.AdaTAMW(model.parameters(), lr=1e-2)
    try:
        train(model, opt, {"sharding": "fsdp2"}, range(1))
    except RuntimeError as err:
        return str(err)
    return ""


def fsdp_launch_check(rank: int, world: int, root: str) -> str:
    """What ``accelerate launch`` with an FSDP config exports, then TrainingArguments on CPU as
    the recipe builds them: accelerate sets up MULTI_CPU (DDP), and the recipe's check says so."""
    from transformers import TrainingArguments

    from recipes.launch_checks import warn_if_fsdp_downgraded

    os.environ.update(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2")
    args = TrainingArguments(output_dir=str(Path(root) / "trainer"), use_cpu=True, report_to=[])
    return warn_if_fsdp_downgraded(args) or ""


def run_case(phase: str, case: dict, root: Path) -> dict:
    folder = root / case["name"]
    model, opt = build(case)
    if phase == "first":
        train(model, opt, case, range(FIRST))
        save(model, opt, case, folder)
        if not case["sharding"].startswith("fsdp2"):
            return {}  # the in-memory FSDP1 / DDP runs: tests/test_distributed.py
        whole, whole_opt = build(case)
        train(whole, whole_opt, case, range(STEPS))
        return {"uninterrupted": full_params(whole, case), "meshes": mesh_objects(model)}
    if case.get("model_only"):  # negative control: a fresh optimizer
        case = {**case, "state_dict": "sharded"}
        load(model, None, case, folder)
    else:
        load(model, opt, case, folder)
    train(model, opt, case, range(FIRST, STEPS))
    return {"resumed": full_params(model, case)}


def worker(rank: int, world: int, port: int, phase: str, cases: list[dict], root: str, out: str) -> None:
    D.join_gloo_group(rank, world, port, accelerate=True)
    results: dict = {}
    try:
        results = D.run_cases(
            cases, lambda case: run_case(phase, case, Path(root)), errors=(Exception, CheckpointException)
        )
        if phase == "first":
            results["different-meshes"] = different_meshes()
            results["fsdp-launch-check"] = fsdp_launch_check(rank, world, root)
    finally:
        if rank == 0:
            torch.save(results, out)
        dist.destroy_process_group()
