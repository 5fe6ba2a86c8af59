"""How far bf16 / fp16 evaluation moves MTEB scores from fp32, against the paper's 0.2 % threshold.

Runs ``evaluation.run_mteb`` on one checkpoint (default: the embedded all-MiniLM-L6-v2, a
trained sentence encoder) at fp32, bf16 and fp16 on the offline suite and on the real MTEB
task classes of the synthetic offline datasets cache (``tests/support/mteb_fixture.py``), and prints,
per task, the score at each precision and the relative change
``|s_p - s_fp32| / max(|s_p|, |s_fp32|)``, the quantity the "similar" test of Figure 4 compares
with 0.002. A precision that cannot run here (fp16 on some CPUs) is reported as such.

    python -m benchmarks.precision_shift [--checkpoint DIR] [--device cpu] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

THRESHOLD = 0.002


def run(
    checkpoint: Path, precision: str, out: Path, suite_flags: list[str], device: str
) -> dict[str, float] | str:
    """Task -> score (percent) at ``precision``, or the error text when it cannot run."""
    from evaluation import run_mteb
    from evaluation.collect import collect_scores

    args = [
        "--model",
        str(checkpoint),
        "--name",
        "probe",
        "--output",
        str(out),
        "--precision",
        precision,
        "--device",
        device,
        "--batch_size",
        "64",
        *suite_flags,
    ]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = run_mteb.main(args)
    if status != 0:
        return stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else f"exit {status}"
    table = collect_scores(out)
    return dict(zip(table["task"], table["score"]))


def main(argv: list[str] | None = None) -> int:
    import datasets.config

    from tests.support.mteb_fixture import STANDARD_TASKS, write_offline_cache
    from tests.support.tiny_models import minilm_tokenizer_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=minilm_tokenizer_path())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    args = parser.parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="precision_shift_"))
    datasets.config.HF_DATASETS_CACHE = write_offline_cache(work / "hf_datasets")

    suites = {"offline suite": ["--offline_suite"], "real-task fixture": ["--tasks", *STANDARD_TASKS]}
    worst: dict[str, float] = {}
    for suite, flags in suites.items():
        scores = {
            p: run(args.checkpoint, p, work / f"{suite.replace(' ', '_')}_{p}", flags, args.device)
            for p in ("fp32", "bf16", "fp16")
        }
        print(f"\n## {suite} ({args.checkpoint.name}, {args.device})\n")
        for precision in ("bf16", "fp16"):
            if isinstance(scores[precision], str):
                print(f"{precision}: could not run here: {scores[precision]}")
        usable = [p for p in ("bf16", "fp16") if isinstance(scores[p], dict)]
        print("| Task | fp32 | " + " | ".join(f"{p} | rel. change {p}" for p in usable) + " |")
        print("|---|---|" + "---|---|" * len(usable))
        for task, base in sorted(scores["fp32"].items()):
            cells = []
            for p in usable:
                value = scores[p].get(task, float("nan"))
                rel = abs(value - base) / max(abs(value), abs(base)) if max(abs(value), abs(base)) else 0.0
                worst[p] = max(worst.get(p, 0.0), rel)
                flag = " (> 0.2 %)" if rel >= THRESHOLD else ""
                cells.append(f"{value:.3f} | {100 * rel:.3f} %{flag}")
            print(f"| {task} | {base:.3f} | " + " | ".join(cells) + " |")
    print(
        "\nLargest relative change over both suites: "
        + ", ".join(
            f"{p} {100 * v:.3f} % ({v / THRESHOLD:.2f}x the 0.2 % threshold)" for p, v in worst.items()
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
