#!/usr/bin/env python
"""The whole AdaTAMW-vs-AdamW pipeline on the embedded offline default, in one command.

``make demo`` (= ``python -m recipes.demo``) runs, into ``demo_output/`` (or ``--out``):

1. a small fine-tuning sweep (``recipes/sweep.py``): the embedded all-MiniLM-L6-v2 BERT
   (``minilm-offline``), masked LM on the bundled WikiText-format sample, both asked for
   explicitly (``--models minilm-offline --offline_defaults``),
   {AdamW, AdaTAMW} x epochs {1, 2} x lrs {5e-5, 2e-4}; each (optimizer, epochs) cell keeps
   the lr and epoch with the best validation perplexity (``sweep/manifest.json``);
2. the selected checkpoints on the offline MTEB suite (``evaluation.run_mteb --offline_suite``);
3. the embedding geometry of the selected checkpoints (``evaluation.geometry``);
4. the comparison report (``evaluation.report``): ``report.md``, ``win_rates.csv``,
   ``category_improvement.csv``, PNG figures, ``geometry.csv``.

Every step is the command a user would type (printed before it runs), started with this
interpreter. A second run reuses what is finished: finished sweep cells are not retrained,
finished MTEB tasks are not re-run, the geometry is recomputed only when the manifest changed.

    python -m recipes.demo                 # ~4-5 min on 2 CPU cores (longer when they are busy)
    python -m recipes.demo --quick --out /tmp/demo   # ~1 min, what tests/test_demo.py runs

The numbers are a smoke test of the pipeline, not a reproduction of the paper: a few
hundred optimizer steps on 22 M parameters whose MLM head starts random. The comparison rests
on the human-judged offline tasks (SimLex-999, WordSim-353, Pang-Lee polarity); mteb's mock
tasks and the tiny local ones are reported as code-path checks only (docs/demo.md).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from recipes import results, sweep

REPO = Path(__file__).resolve().parent.parent
SAMPLE_TRAIN = REPO / "recipes" / "sample_data" / "wiki.train.raw"
SAMPLE_VALID = REPO / "recipes" / "sample_data" / "wiki.valid.raw"
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_DISABLED": "true",
}


@dataclass(frozen=True)
class Size:
    """How big the demo is."""

    learning_rates: tuple[float, ...]
    epochs: tuple[int, ...]
    max_seq_length: int
    max_train_samples: int
    max_eval_samples: int
    batch_size: int
    tasks: tuple[str, ...]  # empty: the whole offline suite
    rho_corpus: Path  # text whose token frequencies give geometry's rho (tokenized once per checkpoint)
    seed: int | None = None  # --seed and --mask_seed of every training run (None: the recipe's defaults)


# Full demo: 2 optimizers x 2 epoch settings x 2 lrs = 8 training runs (12 epochs of
# 8 steps of 16 x 128 tokens), then 4 checkpoints x 10 offline tasks.
FULL = Size((5e-5, 2e-4), (1, 2), 128, 128, 32, 16, (), SAMPLE_TRAIN)
# --quick (the test): the same pipeline on tiny data and three offline tasks.
# Two human-judged tasks carry its comparison; MockRetrievalTask checks the retrieval code path.
QUICK = Size(
    (5e-5, 2e-4),
    (1, 2),
    32,
    16,
    8,
    8,
    ("WordSim353", "PangLeePolarityClassification", "MockRetrievalTask"),
    SAMPLE_VALID,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m recipes.demo",
        description="Sweep -> selection by validation perplexity -> offline MTEB -> geometry -> report, "
        "on the embedded offline default (all-MiniLM-L6-v2 BERT, bundled WikiText sample).",
    )
    p.add_argument(
        "--out", type=Path, default=Path("demo_output"), help="output folder (default: demo_output)"
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny run (~1 min): 16 blocks of 32 tokens, 3 offline tasks"
    )
    p.add_argument(
        "--model",
        default="minilm-offline",
        help="model to fine-tune (default: minilm-offline, the embedded all-MiniLM-L6-v2 BERT)",
    )
    size = p.add_argument_group("size (defaults: the full demo, or --quick)")
    size.add_argument(
        "--learning_rates",
        nargs="+",
        type=float,
        help=f"lr grid (default {' '.join(f'{x:g}' for x in FULL.learning_rates)})",
    )
    size.add_argument(
        "--epochs", nargs="+", type=int, help=f"epoch settings (default {' '.join(map(str, FULL.epochs))})"
    )
    size.add_argument(
        "--max_seq_length", type=int, help=f"block length in tokens (default {FULL.max_seq_length})"
    )
    size.add_argument(
        "--max_train_samples", type=int, help=f"training blocks (default {FULL.max_train_samples})"
    )
    size.add_argument(
        "--max_eval_samples", type=int, help=f"validation blocks (default {FULL.max_eval_samples})"
    )
    size.add_argument("--batch_size", type=int, help=f"training batch size (default {FULL.batch_size})")
    size.add_argument("--tasks", nargs="+", help="offline-suite tasks to evaluate (default: all of them)")
    size.add_argument(
        "--seed",
        type=int,
        help="training seed (--seed and --mask_seed of every run); a second demo "
        "with another seed measures the seed-to-seed spread (python -m evaluation.seed_spread)",
    )
    return p.parse_args(argv)


def resolve_size(args: argparse.Namespace) -> Size:
    base = QUICK if args.quick else FULL
    pick = lambda name: getattr(args, name) if getattr(args, name) is not None else getattr(base, name)  # noqa: E731
    size = Size(
        tuple(pick("learning_rates")),
        tuple(pick("epochs")),
        pick("max_seq_length"),
        pick("max_train_samples"),
        pick("max_eval_samples"),
        pick("batch_size"),
        tuple(pick("tasks")),
        base.rho_corpus,
    )
    if len(size.learning_rates) < 1 or len(size.epochs) < 1:
        raise SystemExit("--learning_rates and --epochs need at least one value")
    return dataclasses.replace(size, seed=args.seed)


# ---- running the steps ----------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for key, value in OFFLINE_ENV.items():
        env.setdefault(key, value)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def run_step(cmd: list[str]) -> None:
    """Run ``python -m ...`` with this interpreter from the repository root; stop the demo on failure."""
    shown = ["python", *cmd[1:]] if cmd[0] == sys.executable else cmd
    print(f"$ {shlex.join(shown)}", flush=True)
    rc = subprocess.call(cmd, cwd=REPO, env=_env())
    if rc != 0:
        raise SystemExit(
            f"demo: step failed (exit {rc}): {shlex.join(shown)}\n"
            "Re-run the demo to resume; finished work is kept."
        )


class Stages:
    """Numbered banners with elapsed times (the children draw their own progress bars)."""

    def __init__(self, total: int):
        self.total, self.n, self.t0 = total, 0, time.monotonic()
        self.timings: dict[str, float] = {}
        self._last: tuple[str, float] | None = None

    def start(self, name: str, what: str) -> None:
        self.finish()
        self.n += 1
        print(
            f"\n==> [{self.n}/{self.total}] {what}  (t = {self._fmt(time.monotonic() - self.t0)})", flush=True
        )
        self._last = (name, time.monotonic())

    def finish(self) -> None:
        if self._last:
            name, start = self._last
            self.timings[name] = round(time.monotonic() - start, 1)
            self._last = None

    @staticmethod
    def _fmt(seconds: float) -> str:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def recipe_args(size: Size) -> list[str]:
    """What the sweep passes on to every recipe run: the explicit offline stand-ins and the size."""
    return [
        "--offline_defaults",  # the bundled sample (the model is named by --models)
        "--max_seq_length",
        str(size.max_seq_length),
        "--max_train_samples",
        str(size.max_train_samples),
        "--max_eval_samples",
        str(size.max_eval_samples),
        "--per_device_train_batch_size",
        str(size.batch_size),
        "--per_device_eval_batch_size",
        str(size.batch_size),
        "--logging_steps",
        "1",
        "--report_to",
        "none",
        *(["--seed", str(size.seed), "--mask_seed", str(size.seed)] if size.seed is not None else []),
    ]


def sweep_args(args: argparse.Namespace, size: Size, root: Path) -> list[str]:
    """Arguments of ``recipes/sweep.py`` (and, after the sweep's own, of the recipe)."""
    return [
        "--models",
        args.model,
        "--optims",
        "adamw",
        "adatamw",
        "--epochs",
        *map(str, size.epochs),
        "--learning_rates",
        *(f"{lr:g}" for lr in size.learning_rates),
        "--output_root",
        str(root),
        "--launcher",
        "python",
        "--in_process",  # one process for all cells: saves a Python + transformers start per cell
        *recipe_args(size),
    ]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ---- summary ------------------------------------------------------------------------


def _table(header: list[str], rows: list[list]) -> str:
    cells = [header, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(cells[0]), fmt(["-" * w for w in widths]), *(fmt(r) for r in cells[1:])])


def summary(out: Path, manifest: dict) -> str:
    """Selected runs (lr, validation perplexity, mean offline score) and the win rates."""
    scores: dict[tuple[str, str], list[float]] = {}
    compared = out / "scores_compared.csv"
    if compared.is_file():
        for row in _read_csv(compared):
            scores.setdefault((row["optimizer"].lower(), str(int(float(row["epochs"])))), []).append(
                float(row["score"])
            )
    rows = []
    for entry in sorted(manifest["selected"], key=lambda e: (e["epochs"], e["optimizer"])):
        s = scores.get((entry["optimizer"].lower(), str(entry["epochs"])), [])
        rows.append(
            [
                entry["optimizer"],
                entry["epochs"],
                f"{entry['lr']:g}",
                f"{entry['val_perplexity']:.1f}",
                f"{sum(s) / len(s):.2f}" if s else "n/a",
                len(s),
            ]
        )
    parts = [
        "Selected checkpoints (best validation perplexity over the lr grid; mean over the compared tasks):",
        _table(["optimizer", "epochs", "lr", "val ppl", "mean score", "tasks"], rows),
    ]
    if compared.is_file():  # per task: the human-judged tasks (code-path checks are listed in report.md only)
        per_task: dict[str, dict[tuple[int, str], str]] = {}
        for row in _read_csv(compared):
            key = (int(float(row["epochs"])), row["optimizer"])
            per_task.setdefault(row["task"], {})[key] = f"{float(row['score']):.2f}"
        arms = sorted(
            {k for cells in per_task.values() for k in cells}, key=lambda k: (k[0], k[1].lower() != "adamw")
        )
        parts += [
            "",
            "Scores of the compared tasks (code-path checks, not compared: report.md):",
            _table(
                ["task", *(f"{o} {e}ep" for e, o in arms)],
                [[t, *(cells.get(k, "n/a") for k in arms)] for t, cells in sorted(per_task.items())],
            ),
        ]
    stats = out / "win_rates_stats.csv"
    if stats.is_file():
        wrows = _read_csv(stats)
        parts += [
            "",
            "AdaTAMW vs AdamW (Figures 4 / 10; win_rates.csv, win_rates_stats.csv). Better: AdaTAMW >= AdamW,"
            " so ties count as better; 'similar' = within the threshold; sign test over the rest:",
            _table(
                [
                    "epochs",
                    "threshold",
                    "better %",
                    "similar or better %",
                    "tasks",
                    "similar",
                    "wins/losses",
                    "sign p",
                ],
                [
                    [
                        r["epochs"],
                        r["threshold"],
                        r["better_pct"],
                        r["similar_or_better_pct"],
                        r["n_datasets"],
                        r["n_similar"],
                        f"{r['sign_test_wins']}/{r['sign_test_losses']}",
                        r["sign_test_p"] or "n/a",
                    ]
                    for r in wrows
                ],
            ),
        ]
    cat = out / "category_improvement.csv"
    if cat.is_file():
        crows = _read_csv(cat)
        categories = sorted({r["category"] for r in crows})
        grid = {(int(float(r["epochs"])), r["category"]): r["percent"] for r in crows}
        fmt = lambda v: "n/a" if v in (None, "", "nan") else f"{float(v):+.1f}"  # noqa: E731
        parts += [
            "",
            "Category means, % improvement of AdaTAMW over AdamW (Figure 3; category_improvement.csv):",
            _table(
                ["epochs", *categories],
                [[e, *(fmt(grid.get((e, c))) for c in categories)] for e in sorted({k[0] for k in grid})],
            ),
        ]
    return "\n".join(parts)


# ---- main ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = resolve_size(args)
    out = args.out.expanduser().resolve()
    sweep_root, mteb_dir = out / "sweep", out / "mteb"
    manifest_path = sweep_root / sweep.MANIFEST
    geometry_csv = out / "geometry.csv"
    state_path = out / "demo_state.json"
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    # The sweep would refuse cells of another size (their identity differs): say so in the demo's terms first.
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    settings = {
        "model": args.model,
        **{
            k: (list(v) if isinstance(v, tuple) else v.name if isinstance(v, Path) else v)
            for k, v in asdict(size).items()
        },
    }
    if state.get("settings", settings) != settings:
        changed = sorted(k for k in settings if state["settings"].get(k) != settings[k])
        raise SystemExit(
            f"demo: {out} holds a demo run with other settings ({', '.join(changed)}); "
            "pass another --out or delete that folder"
        )
    state["settings"] = settings
    results.write_json_atomic(state_path, state)
    stages = Stages(4)
    print(
        f"AdaTAMW demo into {out}{' (--quick)' if args.quick else ''}: {args.model}, AdamW vs AdaTAMW, "
        f"epochs {list(size.epochs)}, lrs {[f'{x:g}' for x in size.learning_rates]}, "
        f"{size.max_train_samples} blocks of {size.max_seq_length} tokens.",
        flush=True,
    )

    # 1. sweep (skipped cell by cell when finished)
    cells = sweep.grid_cells([args.model], ["adamw", "adatamw"], size.epochs, size.learning_rates, sweep_root)
    todo = [c for c in cells if not c.finished(recipe_args(size))]
    stages.start(
        "sweep",
        f"Fine-tuning sweep: {len(cells)} cells x {len(size.learning_rates)} lrs "
        f"({len(todo)} cells to run, {len(cells) - len(todo)} finished)",
    )
    if todo:
        run_step([py, "-m", "recipes.sweep", *sweep_args(args, size, sweep_root)])
    else:
        print("every cell finished: nothing retrained")
        sweep.collect_manifest(sweep_root)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    expected = {(c.optimizer, c.epochs) for c in cells}
    have = {(e["optimizer"], e["epochs"]) for e in manifest["selected"]}
    if not expected <= have:
        raise SystemExit(f"demo: {manifest_path} lacks {sorted(expected - have)}; re-run to resume the sweep")
    # Only this demo's cells (a reused --out may hold others).
    manifest = {
        "selected": [
            e
            for e in manifest["selected"]
            if (e["optimizer"], e["epochs"]) in expected and e["model"] == args.model
        ]
    }
    demo_manifest = sweep_root / "demo_manifest.json"
    if not demo_manifest.is_file() or json.loads(demo_manifest.read_text()) != manifest:
        results.write_json_atomic(demo_manifest, manifest)

    # 2. offline MTEB suite (finished tasks are reused by run_mteb)
    n_tasks = len(size.tasks) if size.tasks else "all"
    stages.start(
        "mteb", f"Offline MTEB suite ({n_tasks} tasks) on {len(manifest['selected'])} selected checkpoints"
    )
    cmd = [
        py,
        "-m",
        "evaluation.run_mteb",
        "--manifest",
        str(demo_manifest),
        "--offline_suite",
        "--output",
        str(mteb_dir),
    ]
    if size.tasks:
        cmd += ["--tasks", *size.tasks]
    run_step(cmd)

    # 3. geometry (only when the selection changed)
    stages.start("geometry", "Embedding geometry of the selected checkpoints")
    # evaluation.geometry leaves rho empty without --corpus, and evaluation.report rejects an empty
    # rho: always pass a corpus (the fine-tuning text; --quick: its smaller validation part).
    geometry_key = f"{_sha(demo_manifest)}:{size.rho_corpus.name}"
    if state.get("geometry_key") == geometry_key and geometry_csv.is_file():
        print(f"unchanged selection: reusing {geometry_csv}")
    else:
        run_step(
            [
                py,
                "-m",
                "evaluation.geometry",
                "--manifest",
                str(demo_manifest),
                "--out",
                str(geometry_csv),
                "--corpus",
                str(size.rho_corpus),
            ]
        )
        state["geometry_key"] = geometry_key
        results.write_json_atomic(state_path, state)

    # 4. report
    stages.start("report", "Comparison report (win rates, category improvements, figures, geometry)")
    run_step(
        [
            py,
            "-m",
            "evaluation.report",
            "--results",
            str(mteb_dir),
            "--geometry_csv",
            str(geometry_csv),
            "--out",
            str(out),
        ]
    )
    stages.finish()

    total = round(time.monotonic() - stages.t0, 1)
    timings = {**stages.timings, "total": total}
    state["timings_last_run"] = timings
    results.write_json_atomic(state_path, state)
    pngs = sorted(p.name for p in out.glob("*.png"))
    print("\n" + "=" * 78)
    print(summary(out, manifest))
    print("=" * 78)
    print(f"Report:   {out / 'report.md'}")
    print(f"Figures:  {', '.join(pngs)}")
    print(f"Tables:   {out / 'win_rates.csv'}, {out / 'category_improvement.csv'}, {geometry_csv}")
    print(f"Sweep:    {manifest_path}   MTEB results: {mteb_dir}")
    print("Time:     " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    print(
        "Toy numbers: a smoke test of the pipeline on the offline default, "
        "not the paper's results (README.md)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
