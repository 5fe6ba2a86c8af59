"""The Hugging Face Trainer with a DeepSpeed ZeRO-2 ds_config on CPU (run by tests/test_deepspeed.py
under ``torchrun --nproc_per_node 2``).

``python ds_trainer_script.py MODEL_DIR OUT_DIR DS_CONFIG`` runs, one after the other in the
same processes:

- ``full``: 8 steps of AdaTAMW (``optimizer_cls_and_kwargs``), checkpoints every 4 steps;
- ``resumed``: the same run resumed from ``OUT_DIR/full/checkpoint-4``;
- ``ddp``: the same run without DeepSpeed (plain data parallel, the reference).

Rank 0 writes the final parameters and ``s`` of each to ``OUT_DIR/MODE.pt``. A masked-LM model on fixed
token sequences (the labels are the inputs: no random masking, so runs are repeatable).
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
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(SEQ, dtype=torch.long),
                "labels": self.ids[i]}


def run(model_dir: str, out: str, ds_config: str, mode: str) -> None:
    model = AutoModelForMaskedLM.from_pretrained(model_dir)
    args = TrainingArguments(
        output_dir=os.path.join(out, "resumed" if mode == "resumed" else mode),
        per_device_train_batch_size=BATCH, max_steps=STEPS, learning_rate=3e-3, weight_decay=0.01,
        save_strategy="steps", save_steps=SAVE_EVERY, logging_steps=SAVE_EVERY, report_to="none",
        disable_tqdm=True, use_cpu=True, seed=0, dataloader_num_workers=0,
        deepspeed=None if mode == "ddp" else ds_config)
    trainer = Trainer(
        model=model, args=args, train_dataset=FixedTokens(model.config.vocab_size),
        optimizer_cls_and_kwargs=(OPTIMIZERS[os.environ.get("DS_TEST_OPTIM", "adatamw")],
                                  {"lr": 3e-3, "weight_decay": 0.01}),
        callbacks=[zero_aware_callback()])
    resume = os.path.join(out, "full", f"checkpoint-{SAVE_EVERY}") if mode == "resumed" else None
    trainer.train(resume_from_checkpoint=resume)
    inner = trainer.optimizer
    while not isinstance(inner, torch.optim.Optimizer) or hasattr(inner, "optimizer"):
        inner = inner.optimizer  # accelerate's wrapper, DeepSpeed's ZeRO optimizer
    s = inner.torque_stats()["s_hat"] if isinstance(inner, AdaTAMW) else None
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, s)
    if dist.get_rank() == 0:
        params = {n: p.detach().float().clone() for n, p in trainer.model.named_parameters()}
        torch.save({"params": params, "s": gathered, "step": trainer.state.global_step,
                    "sharding": type(getattr(inner, "sharding", None)).__name__},
                   os.path.join(out, f"{mode}.pt"))


def main(model_dir: str, out: str, ds_config: str) -> None:
    from accelerate.state import AcceleratorState, GradientState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    for mode in ("full", "resumed", "ddp"):
        run(model_dir, out, ds_config, mode)
        # TrainingArguments(deepspeed=...) leaves DeepSpeed switched on for the process: off for
        # the next run (the plain data-parallel reference)
        os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
        unset_hf_deepspeed_config()
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()


if __name__ == "__main__":
    main(*sys.argv[1:4])
