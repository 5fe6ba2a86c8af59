"""The Hugging Face Trainer with DeepSpeed ZeRO-2 and ZeRO-3 ds_configs on CPU (run by
tests/test_deepspeed.py under ``torchrun --nproc_per_node 2``).

``python ds_trainer_script.py MODEL_DIR OUT_DIR ZERO2_JSON ZERO3_JSON`` runs, one after the other
in the same processes, 8 steps of AdaTAMW (``optimizer_cls_and_kwargs``, checkpoints every 4
steps): ``zero2``, ``zero2-resumed`` (from ``zero2/checkpoint-4``), the same two under ZeRO-3,
and ``ddp`` (no DeepSpeed: plain data parallel, the reference). Rank 0 writes the final
parameters and ``s`` of each to ``OUT_DIR/NAME.pt``. A masked-LM model on fixed token sequences
(the labels are the inputs: no random masking, so runs are repeatable).
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from transformers import AutoModelForMaskedLM, Trainer, TrainingArguments

from adatamw import AdaTAMW
from adatamw.zero import zero_aware_callback

STEPS, SAVE_EVERY, BATCH, SEQ = 8, 4, 4, 16
OPTIMIZERS = {"adatamw": AdaTAMW, "adamw": torch.optim.AdamW}


class FixedTokens(torch.utils.data.Dataset):
    def __init__(self, vocab: int, n: int = 64) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(5, vocab, (n, SEQ), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(SEQ, dtype=torch.long),
            "labels": self.ids[i],
        }


def run(model_dir: str, out: str, name: str, ds_config, resume_from=None) -> None:
    """One Trainer run into ``OUT_DIR/name``; ``ds_config`` None: plain data parallel."""
    import deepspeed

    model = AutoModelForMaskedLM.from_pretrained(model_dir)  # before TrainingArguments: no zero.Init
    args = TrainingArguments(
        output_dir=os.path.join(out, name),
        per_device_train_batch_size=BATCH,
        max_steps=STEPS,
        learning_rate=3e-3,
        weight_decay=0.01,
        save_strategy="steps",
        save_steps=SAVE_EVERY,
        logging_steps=SAVE_EVERY,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
        deepspeed=ds_config,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=FixedTokens(model.config.vocab_size),
        optimizer_cls_and_kwargs=(
            OPTIMIZERS[os.environ.get("DS_TEST_OPTIM", "adatamw")],
            {"lr": 3e-3, "weight_decay": 0.01},
        ),
        callbacks=[zero_aware_callback()],
    )
    resume = os.path.join(out, resume_from, f"checkpoint-{SAVE_EVERY}") if resume_from else None
    trainer.train(resume_from_checkpoint=resume)
    inner = trainer.optimizer
    while not isinstance(inner, torch.optim.Optimizer) or hasattr(inner, "optimizer"):
        inner = inner.optimizer  # accelerate's wrapper, DeepSpeed's ZeRO optimizer
    # s from the optimizer state (ZeRO-3 empties the param groups between steps)
    s = next((float(st["torque_s"]) for st in inner.state.values() if "torque_s" in st), None)
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, s)
    with deepspeed.zero.GatheredParameters(list(trainer.model.parameters())):  # ZeRO-3
        params = {n: p.detach().float().clone() for n, p in trainer.model.named_parameters()}
    if dist.get_rank() == 0:
        torch.save(
            {
                "params": params,
                "s": gathered,
                "step": trainer.state.global_step,
                "sharding": type(getattr(inner, "sharding", None)).__name__,
            },
            os.path.join(out, f"{name}.pt"),
        )


def main(model_dir: str, out: str, zero2: str, zero3: str) -> None:
    from accelerate.state import AcceleratorState, GradientState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    for name, config, resume_from in (
        ("zero2", zero2, None),
        ("zero2-resumed", zero2, "zero2"),
        ("zero3", zero3, None),
        ("zero3-resumed", zero3, "zero3"),
        ("ddp", None, None),
    ):
        run(model_dir, out, name, config, resume_from)
        # TrainingArguments(deepspeed=...) leaves DeepSpeed switched on for the process: off
        # before the next run (another config, or the plain data-parallel reference)
        os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
        unset_hf_deepspeed_config()
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()


if __name__ == "__main__":
    main(*sys.argv[1:5])
