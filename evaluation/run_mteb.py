"""Evaluate checkpoints on MTEB(eng, v1) (or the offline suite) with resumable, per-model results.

Usage::

    python -m evaluation.run_mteb --model CKPT --name NAME --output DIR [--tasks T1 T2 ...]
    python -m evaluation.run_mteb --manifest sweep/manifest.json --output DIR [--paper_tasks]
    python -m evaluation.run_mteb --manifest M --output DIR --offline_suite
    python -m evaluation.run_mteb --manifest M --output DIR --emit slurm --slurm_out eval.sbatch

Results go to mteb's result cache in ``DIR/results/<name>/<revision>/<task>.json``;
``DIR/models.json`` maps each mteb model name to its sweep metadata. Finished tasks
are never re-run (a model whose tasks are all done is not even loaded); an
interrupted task resumes from its missing splits/subsets.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from evaluation.manifest import read_manifest
from evaluation.models import (
    CheckpointError,
    ModelSpec,
    build_mteb_model,
    pick_device_and_dtype,
    sanitise_name,
    transformer_dir,
    weights_revision,
)
from evaluation.registry import update_registry
from evaluation.tasks import UnknownTaskError, select_tasks

logger = logging.getLogger("evaluation.run_mteb")

OVERWRITE_STRATEGY = "only-missing"


@dataclass
class ModelRun:
    """What happened for one model."""

    spec: ModelSpec
    revision: str
    evaluated: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evaluation.run_mteb", description=__doc__.split("\n\n")[0])
    source = parser.add_argument_group("models (either --model/--name or --manifest)")
    source.add_argument("--model", type=Path, help="checkpoint folder (HF transformers or sentence-transformers)")
    source.add_argument("--name", help="result name of --model (sanitised; results go under adatamw/<name>)")
    source.add_argument("--manifest", type=Path, help='sweep manifest JSON: {"selected": [{model, optimizer, epochs, lr, checkpoint}, ...]}')
    meta = parser.add_argument_group("metadata for --model (stored in models.json)")
    meta.add_argument("--base_model", help="base model name, e.g. bert-base-uncased (default: --name)")
    meta.add_argument("--optimizer")
    meta.add_argument("--epochs", type=int)
    meta.add_argument("--lr", type=float)
    tasks = parser.add_argument_group("tasks")
    tasks.add_argument("--paper_tasks", action="store_true", help="swap CQADupstackRetrieval for CQADupstackTexRetrieval (the paper's tables)")
    tasks.add_argument("--tasks", nargs="+", metavar="TASK", help="run only these tasks of the suite")
    tasks.add_argument("--offline_suite", action="store_true", help="mteb mock tasks (7 categories) + the project's local tasks; no hub needed")
    run = parser.add_argument_group("run")
    run.add_argument("--output", type=Path, required=True, help="result folder (shared by all models and array jobs)")
    run.add_argument("--batch_size", type=int, default=32, help="encode batch size (default 32)")
    run.add_argument("--embedding_cache", type=Path, help="cache embeddings here (mteb CachedEmbeddingWrapper), keyed by model name and revision")
    run.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    run.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"], help="auto: bf16/fp16 on GPU, fp32 on CPU")
    run.add_argument("--max_seq_length", type=int, help="truncate inputs to this many tokens (default: the checkpoint's)")
    emit = parser.add_argument_group("cluster")
    emit.add_argument("--emit", choices=["slurm"], help="write a job script instead of running")
    emit.add_argument("--slurm_out", type=Path, help="path of the SLURM array script (with --emit slurm)")
    emit.add_argument(
        "--slurm_directive",
        action="append",
        default=[],
        metavar="OPTION",
        help="extra #SBATCH option, repeatable: 'gres=gpu:1' or '--slurm_directive=--gres=gpu:1'",
    )
    return parser


def specs_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[ModelSpec]:
    """The models to evaluate, from --manifest or --model/--name."""
    if args.manifest and args.model:
        parser.error("pass either --manifest or --model/--name, not both")
    if args.manifest:
        return read_manifest(args.manifest)
    if not args.model:
        parser.error("no models: pass --model CKPT --name NAME, or --manifest FILE")
    if not args.name:
        parser.error("--model needs --name (the result identity of this checkpoint), e.g. --name bert-base__adatamw__ep3")
    transformer_dir(args.model)  # clear error now rather than after task setup
    return [
        ModelSpec(
            name=sanitise_name(args.name),
            checkpoint=args.model.resolve(),
            model=args.base_model,
            optimizer=args.optimizer,
            epochs=args.epochs,
            lr=args.lr,
        )
    ]


def suite_flags(args: argparse.Namespace) -> list[str]:
    """The flags an array element needs to rebuild the same run settings."""
    flags = ["--batch_size", str(args.batch_size), "--precision", args.precision]
    if args.paper_tasks:
        flags.append("--paper_tasks")
    if args.offline_suite:
        flags.append("--offline_suite")
    if args.embedding_cache:
        flags += ["--embedding_cache", str(args.embedding_cache.resolve())]
    if args.max_seq_length:
        flags += ["--max_seq_length", str(args.max_seq_length)]
    return flags


def pending_tasks(cache, mteb_name: str, revision: str, tasks: Sequence) -> list:
    """Tasks with no complete result in ``cache`` for this model name and revision."""
    pending = []
    for task in tasks:
        result = cache.load_task_result(task.metadata.name, mteb_name, model_revision=revision)
        if result is None or result.get_missing_evaluations(task):
            pending.append(task)
    return pending


def evaluate_model(spec: ModelSpec, tasks: Sequence, output: Path, args: argparse.Namespace) -> ModelRun:
    """Evaluate one model on ``tasks``, reusing every finished result in ``output``."""
    import mteb
    from mteb.cache import ResultCache

    start = time.monotonic()
    revision = weights_revision(spec.checkpoint)
    run = ModelRun(spec=spec, revision=revision)
    task_names = [t.metadata.name for t in tasks]
    _, dtype = pick_device_and_dtype(args.device, args.precision)
    entry = {**spec.metadata(revision), "dtype": str(dtype).removeprefix("torch."), "tasks": task_names}
    update_registry(output, {spec.mteb_name: entry})

    cache = ResultCache(output)
    todo = pending_tasks(cache, spec.mteb_name, revision, tasks)
    run.cached = [t.metadata.name for t in tasks if t not in todo]
    if not todo:
        logger.info("%s@%s: all %d task(s) already done in %s", spec.mteb_name, revision, len(tasks), output)
        run.seconds = time.monotonic() - start
        return run

    model = build_mteb_model(
        spec,
        revision=revision,
        device=args.device,
        precision=args.precision,
        max_seq_length=args.max_seq_length,
        embedding_cache=args.embedding_cache,
    )
    result = mteb.evaluate(
        model,
        todo,
        cache=cache,
        overwrite_strategy=OVERWRITE_STRATEGY,
        encode_kwargs={"batch_size": args.batch_size},
        co2_tracker=False,
        raise_error=False,
    )
    run.evaluated = [r.task_name for r in result.task_results]
    run.errors = {e.task_name: e.exception for e in result.exceptions}
    run.seconds = time.monotonic() - start
    return run


def emit_slurm(specs: Sequence[ModelSpec], tasks: Sequence, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Write the array script and pre-register every model in models.json."""
    from evaluation.slurm import render_array_script, write_array_script

    if not args.slurm_out:
        parser.error("--emit slurm needs --slurm_out FILE")
    names = [t.metadata.name for t in tasks]
    update_registry(args.output, {s.mteb_name: {**s.metadata(weights_revision(s.checkpoint)), "tasks": names} for s in specs})
    text, n = render_array_script(specs, names, args.output, extra_args=suite_flags(args), directives=args.slurm_directive)
    write_array_script(args.slurm_out, text)
    (args.output / "slurm_logs").mkdir(parents=True, exist_ok=True)  # SLURM does not create it
    print(f"Wrote {args.slurm_out}: {n} array tasks ({len(specs)} model(s) x {len(names)} task(s)). Submit with: sbatch {args.slurm_out}")
    return 0


def report(runs: Sequence[ModelRun]) -> int:
    """Print a one-line summary per model; exit status 1 if any task failed."""
    failed = False
    for run in runs:
        print(
            f"{run.spec.mteb_name} (revision {run.revision}): {len(run.evaluated)} evaluated, "
            f"{len(run.cached)} reused, {len(run.errors)} failed, {run.seconds:.1f}s"
        )
        for task, message in run.errors.items():
            failed = True
            print(f"  FAILED {task}: {message}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mteb").setLevel(logging.WARNING)
    try:
        specs = specs_from_args(args, parser)
        tasks = select_tasks(args.tasks, paper_tasks=args.paper_tasks, offline_suite=args.offline_suite)
    except (CheckpointError, UnknownTaskError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.emit == "slurm":
        return emit_slurm(specs, tasks, args, parser)

    args.output.mkdir(parents=True, exist_ok=True)
    runs = [evaluate_model(spec, tasks, args.output, args) for spec in tqdm(specs, desc="Models", unit="model")]
    return report(runs)


if __name__ == "__main__":
    sys.exit(main())
