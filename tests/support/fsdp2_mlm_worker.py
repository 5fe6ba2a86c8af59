"""Worker of tests/test_fsdp2_masked_lm.py: the paper's masked LMs under accelerate's FSDP2 preparation.

Tiny random BERT, RoBERTa, DeBERTa (v1) and DeBERTa-v2 masked LMs (tests/support/tiny_models.py: tied
word embedding and decoder, the decoder bias tied to the head's) train a few AdaTAMW steps on 2
gloo CPU ranks, one process per rank, in one of these layouts:

- ``fsdp2``: the recipe's preparation (``recipes.fsdp_prep.prepare_if_fsdp2``) and then
  accelerate's own ``fsdp2_prepare_model``, with the FSDP plugin that ``accelerate launch
  --config_file recipes/accelerate/fsdp.yaml`` builds: the test passes the environment
  accelerate's launcher derives from that file (``prepare_multi_gpu_env``), and the plugin and the
  recipe read it, as they do on GPUs;
- ``fsdp2-unprepared``: the same without the recipe's preparation (the failure it fixes);
- ``ddp``: ``DistributedDataParallel`` of the unchanged model, the reference.

Every rank sees the same batches, so gradients equal the single-process ones; rank 0 also runs
the single-process reference (``one-process`` result). The prepared FSDP2 run also writes its
full state dict as the Trainer's FSDP checkpoint does (``Accelerator.get_state_dict``'s options,
then ``save_pretrained`` on rank 0) for the test to load with ``from_pretrained``.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist

from tests.support import dist_worker as D

STEPS, BATCH, SEQ = 4, 4, 12
FAMILIES = ("bert", "roberta", "deberta", "deberta-v2")
#: Biases that softmax is invariant to (a constant added to every key's score: BERT's and RoBERTa's
#: key bias, DeBERTa-v2's position-key bias in the c2p term): their gradient is 0 up to rounding,
#: which differs with the reduction order, and Adam's normalised step turns that rounding into
#: +-lr steps (measured: 0.3-1.0 relative, FSDP2 vs DDP). Frozen, so the comparisons measure the
#: optimizer, not rounding noise (as tests/support/fsdp_worker.py does).
SOFTMAX_INVARIANT = ("attention.self.key.bias", "attention.self.pos_key_proj.bias")


@cache
def _tokenizer():
    from transformers import AutoTokenizer

    from tests.support import tiny_models

    return AutoTokenizer.from_pretrained(tiny_models.minilm_tokenizer_path())


def make_model(family: str, **config_changes):
    """A tiny random masked LM of ``family`` (seed 0, dropout 0, tied embeddings and bias), its
    :data:`SOFTMAX_INVARIANT` biases frozen; ``config_changes`` set on its config."""
    from tests.support import tiny_models

    config, model_cls = tiny_models.tiny_config(family, _tokenizer())
    for key, value in config_changes.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = model_cls(config)
    for name, p in model.named_parameters():
        if name.endswith(SOFTMAX_INVARIANT):
            p.requires_grad_(False)
    return model


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input ids, MLM labels): half the positions are predicted."""
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(STEPS):
        ids = torch.randint(1000, len(_tokenizer()), (BATCH, SEQ), generator=gen)
        labels = torch.where(torch.rand(BATCH, SEQ, generator=gen) < 0.5, ids, -100)
        out.append((ids, labels))
    return out


def make_optimizer(model, case: dict):
    """AdaTAMW over the recipe's groups: the (tied) word embedding in a coupled group."""
    import adatamw

    groups = adatamw.embedding_param_groups(model, weight_decay=0.01)
    return adatamw.AdaTAMW(groups, lr=1e-3, cosine_scope=case.get("scope", "global"))


def train(model, opt) -> list[float]:
    losses = []
    for ids, labels in batches():
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def all_params(model) -> dict[str, torch.Tensor]:
    """Every registration (tied ones under each name), full tensors on every rank."""
    out = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        full = p.full_tensor() if hasattr(p, "full_tensor") else p
        out[name.removeprefix("module.")] = full.detach().clone()
    return out


def accelerator_view(plugin) -> SimpleNamespace:
    """The parts of an ``Accelerator`` that accelerate's FSDP2 functions read, for ``plugin``. On
    CPU accelerate itself never selects FSDP (it picks MULTI_CPU, see recipes/launch_checks.py), so
    the Accelerator is reduced to these attributes; the functions called are accelerate's own."""
    rank = dist.get_rank()
    return SimpleNamespace(
        state=SimpleNamespace(fsdp_plugin=plugin),
        torch_device_mesh=None,
        parallelism_config=None,
        mixed_precision="no",
        device=torch.device("cpu"),
        is_main_process=rank == 0,
        process_index=rank,
        num_processes=dist.get_world_size(),
        is_fsdp2=True,
        wait_for_everyone=dist.barrier,
    )


def accelerate_fsdp2(model, env: dict[str, str], prepare: bool):
    """``fsdp2_prepare_model`` with the plugin that ``env`` (a launcher's environment) configures;
    ``prepare``: the recipe's preparation first, reading the same environment."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    from recipes.fsdp_prep import prepare_if_fsdp2

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        if prepare:
            prepare_if_fsdp2(model, None)
        plugin = FullyShardedDataParallelPlugin()  # reads FSDP_* as under accelerate launch
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return fsdp2_prepare_model(accelerator_view(plugin), model)


def save_full(model, folder: Path) -> None:
    """What the Trainer's FSDP2 ``save_model`` writes: ``Accelerator.get_state_dict`` (full,
    broadcast from rank 0, on the CPU), ``save_pretrained`` by rank 0."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    if dist.get_rank() == 0:
        model.save_pretrained(folder, state_dict=state)


def run_case(case: dict, env: dict[str, str], root: Path) -> dict:
    model = make_model(case["family"], **case.get("config", {}))
    if case["layout"] == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped = DDP(model)
        losses = train(wrapped, make_optimizer(model, case))
        return {"params": all_params(model), "losses": losses}
    model = accelerate_fsdp2(model, {**env, **case.get("env", {})}, prepare=case["layout"] == "fsdp2")
    losses = train(model, make_optimizer(model, case))
    save_full(model, root / case["name"])
    return {
        "params": all_params(model),
        "losses": losses,
        "meshes": len({p.device_mesh for p in model.parameters()}),
    }


def one_process(case: dict) -> dict:
    model = make_model(case["family"])
    losses = train(model, make_optimizer(model, case))
    return {"params": all_params(model), "losses": losses}


def worker(
    rank: int, world: int, port: int, cases: list[dict], env: dict[str, str], root: str, out: str
) -> None:
    D.join_gloo_group(rank, world, port, timeout_s=300, accelerate=True)
    results: dict = {}
    try:
        results = D.run_cases(cases, lambda case: run_case(case, env, Path(root)))
        if rank == 0:
            for case in cases:
                if case["layout"] == "ddp":
                    results[f"one-process-{case['name']}"] = one_process(case)
        dist.barrier()
    finally:
        if rank == 0:
            torch.save(results, out)
        dist.destroy_process_group()


def force_fsdp_on_cpu() -> None:
    """Let accelerate select FSDP on CPU, where it picks MULTI_CPU (DDP) whatever the config
    (recipes/launch_checks.py): after ``AcceleratorState`` sets up MULTI_CPU with an FSDP plugin
    (or once had one: the Trainer and accelerate build the state more than once), it switches to
    ``DistributedType.FSDP`` as on GPUs. Test harness only: everything else is accelerate's and the
    Trainer's own code."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    original, seen = AcceleratorState.__init__, {}

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        plugin = fsdp_plugin or seen.get("plugin")
        if self.distributed_type == DistributedType.MULTI_CPU and plugin is not None:
            seen["plugin"] = plugin
            self.distributed_type, self.fsdp_plugin = DistributedType.FSDP, plugin

    AcceleratorState.__init__ = init


def recipe_worker(rank: int, world: int, port: int, env: dict[str, str], argv: list[str]) -> None:
    """``recipes/mlm_finetune.py`` as ``accelerate launch`` starts it on each rank, with the
    launcher's environment ``env`` (FSDP2 from fsdp.yaml, forced on CPU; empty: DDP)."""
    D.export_launcher_env(rank, world, port, OMP_NUM_THREADS="1", **env)
    if env:
        force_fsdp_on_cpu()
    from recipes import mlm_finetune

    mlm_finetune.main(argv)
