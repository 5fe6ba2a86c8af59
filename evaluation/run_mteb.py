"""Evaluate checkpoints on an MTEB benchmark (default the paper's MTEB(eng, v1)) or the offline
suite, with resumable, per-model results; or estimate what that costs before running it.

Usage::

    python -m evaluation.run_mteb --model CKPT --name NAME --output DIR [--tasks T1 T2 ...]
    python -m evaluation.run_mteb --manifest sweep/manifest.json --output DIR [--paper_tasks]
    python -m evaluation.run_mteb --manifest M --output DIR --benchmark "MTEB(eng, v2)"
    python -m evaluation.run_mteb --manifest M --benchmark "MTEB(eng, v2)" --estimate [--tokens_per_second N]
    python -m evaluation.run_mteb --checkpoints 36 --paper_tasks --estimate
    python -m evaluation.run_mteb --manifest M --output DIR --offline_suite
    python -m evaluation.run_mteb --manifest M --output DIR --emit slurm --slurm_out eval.sbatch

Results go to mteb's result cache in ``DIR/results/<name>/<revision>/<task>.json``, where
the revision is ``<weights hash>-<settings hash>`` (precision, max_seq_length, pooling,
normalisation, suite = the benchmark and its variant: results made under other settings are never reused);
``DIR/models.json`` maps each mteb model name to its sweep metadata, settings and
provenance. Finished tasks are never re-run (a model whose tasks are all done is not even
loaded); an interrupted task resumes from its missing splits/subsets; a truncated result
file is moved aside and its task re-run. One output folder holds one task suite (one
benchmark): results of two benchmarks are never mixed.

``--estimate`` prints, without loading any data set, the texts, characters and tokens each task
encodes (from mteb's task metadata, ``evaluation.estimate``) and the GPU-hours of the plan
(the checkpoints of --manifest / --model, or --checkpoints N) at a stated or assumed speed.

Offline, each task's data is loaded with the configs of the local datasets cache (a
Reranking task with its ``top_ranked`` candidates) and checked against the task's
revision (``evaluation.task_data``); a task that fails these checks, and a model whose
checkpoint has no weights, are reported at the end (exit status 1 / 2) while the others run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from common import slurm
from evaluation.estimate import (
    TokenSetting,
    estimate_plan,
    format_estimate,
    measure_chars_per_token,
    token_setting,
)
from evaluation.manifest import ManifestError, checkpoint_problems, load_manifest
from evaluation.model_index import read_model_index, update_model_index
from evaluation.models import (
    DEFAULT_PRECISION,
    PRECISIONS,
    CheckpointError,
    EvalSettings,
    ModelSpec,
    build_mteb_model,
    check_checkpoint,
    eval_settings,
    result_revision,
    sanitise_name,
    transformer_dir,
    weights_revision,
)
from evaluation.result_files import result_folder, set_aside_corrupt
from evaluation.slurm import array_job
from evaluation.task_data import TaskDataError, load_task_data, offline_config_names
from evaluation.tasks import DEFAULT_BENCHMARK, UnknownTaskError, select_tasks, suite_benchmark, suite_name

logger = logging.getLogger("evaluation.run_mteb")

OVERWRITE_STRATEGY = "only-missing"


@dataclass
class ModelRun:
    """What happened for one model."""

    spec: ModelSpec
    revision: str = "?"
    evaluated: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    failure: str | None = None  # the model itself could not be evaluated (bad checkpoint, load error)
    throughput: dict[str, tuple[int, float]] = field(default_factory=dict)  # task -> (texts, seconds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.run_mteb", description=__doc__.split("\n\n")[0]
    )
    source = parser.add_argument_group("models (either --model/--name or --manifest)")
    source.add_argument(
        "--model", type=Path, help="checkpoint folder (HF transformers or sentence-transformers)"
    )
    source.add_argument("--name", help="result name of --model (sanitised; results go under adatamw/<name>)")
    source.add_argument(
        "--manifest",
        type=Path,
        help='sweep manifest JSON: {"selected": [{model, optimizer, epochs, lr, checkpoint}, ...]}',
    )
    meta = parser.add_argument_group("metadata for --model (stored in models.json)")
    meta.add_argument("--base_model", help="base model name, e.g. bert-base-uncased (default: --name)")
    meta.add_argument("--optimizer")
    meta.add_argument("--epochs", type=int)
    meta.add_argument("--lr", type=float)
    tasks = parser.add_argument_group("tasks")
    tasks.add_argument(
        "--benchmark",
        default=DEFAULT_BENCHMARK,
        metavar="NAME",
        help=(
            "any benchmark mteb.get_benchmark knows, e.g. 'MTEB(eng, v2)' "
            f"(default: the paper's {DEFAULT_BENCHMARK!r})"
        ),
    )
    tasks.add_argument(
        "--paper_tasks",
        action="store_true",
        help="swap CQADupstackRetrieval for CQADupstackTexRetrieval (the paper's tables; MTEB(eng, v1) only)",
    )
    tasks.add_argument("--tasks", nargs="+", metavar="TASK", help="run only these tasks of the suite")
    tasks.add_argument(
        "--offline_suite",
        action="store_true",
        help="mteb mock tasks (7 categories) + the project's local tasks; no hub needed",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--output",
        type=Path,
        help="result folder (shared by all models and array jobs); required unless --estimate",
    )
    run.add_argument("--batch_size", type=int, default=32, help="encode batch size (default 32)")
    run.add_argument(
        "--embedding_cache",
        type=Path,
        help="cache embeddings here (mteb CachedEmbeddingWrapper), keyed by model name and revision",
    )
    run.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    run.add_argument(
        "--precision",
        default=DEFAULT_PRECISION,
        choices=PRECISIONS,
        help=(
            "weights and activations dtype (default fp32: bf16/fp16 move scores by about the 0.2 %% "
            "'similar' threshold, docs/evaluation.md)"
        ),
    )
    run.add_argument(
        "--max_seq_length",
        type=int,
        help=(
            "truncate inputs to this many tokens "
            "(default: the checkpoint's; a sentence-transformers folder's own)"
        ),
    )
    cost = parser.add_argument_group("cost before the run (--estimate: nothing is loaded or evaluated)")
    cost.add_argument(
        "--estimate",
        action="store_true",
        help="print texts / tokens per task and the plan's GPU-hours, then stop",
    )
    cost.add_argument(
        "--checkpoints",
        type=int,
        metavar="N",
        help="plan size without a manifest, e.g. 36 for the paper's grid",
    )
    cost.add_argument(
        "--tokens_per_second",
        type=float,
        help="measured encode speed (default: an assumed 100k tokens/s, labelled as such)",
    )
    cost.add_argument(
        "--chars_per_token",
        type=float,
        help="characters per token (default: measured with each checkpoint's tokenizer, else 4.82)",
    )
    emit = parser.add_argument_group("cluster (common/slurm.py)")
    emit.add_argument(
        "--emit",
        choices=["slurm"],
        help="write a SLURM array script (one command per model and task) instead of running",
    )
    slurm.add_arguments(emit, job_name="adatamw-mteb")
    return parser


def specs_from_args(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> tuple[list[ModelSpec], dict[str, str]]:
    """The models to evaluate, from --manifest or --model/--name, and name -> why a checkpoint is unusable."""
    if args.manifest and args.model:
        parser.error("pass either --manifest or --model/--name, not both")
    if args.manifest:
        specs = load_manifest(args.manifest)
        return specs, checkpoint_problems(specs)
    if not args.model:
        parser.error("no models: pass --model CKPT --name NAME, or --manifest FILE")
    if not args.name:
        parser.error(
            "--model needs --name (the result identity of this checkpoint), "
            "e.g. --name bert-base__adatamw__ep3"
        )
    check_checkpoint(args.model)  # clear error now rather than after task setup
    spec = ModelSpec(
        name=sanitise_name(args.name),
        checkpoint=args.model.resolve(),
        model=args.base_model,
        optimizer=args.optimizer,
        epochs=args.epochs,
        lr=args.lr,
    )
    return [spec], {}


def pending_tasks(cache, mteb_name: str, revision: str, tasks: Sequence) -> list:
    """Tasks with no complete result in ``cache`` for this model name and revision."""
    pending = []
    for task in tasks:
        result = cache.load_task_result(task.metadata.name, mteb_name, model_revision=revision)
        if result is None or result.get_missing_evaluations(task):
            pending.append(task)
    return pending


def _parts(task) -> list:
    """The task objects whose data is loaded.

    The subtasks of an aggregate (CQADupstackRetrieval), else the task itself.
    """
    from mteb.abstasks.aggregated_task import AbsTaskAggregate

    return list(task.metadata.tasks) if isinstance(task, AbsTaskAggregate) else [task]


def _load(parts: list) -> str | None:
    """Load the data of ``parts`` (guarded: evaluation.task_data).

    Returns the error text if one fails (all unloaded then), else None.
    """
    try:
        for part in parts:
            load_task_data(part)
    except TaskDataError as err:
        error = str(err)
    except Exception as err:  # noqa: BLE001 - a task whose data cannot be read fails alone
        error = f"its data could not be loaded: {type(err).__name__}: {err}"
    else:
        return None
    for part in parts:
        part.unload_data()
    return error


def settings_for(spec: ModelSpec, args: argparse.Namespace) -> EvalSettings:
    """The evaluation settings of ``spec`` under this run's flags."""
    return eval_settings(
        spec.checkpoint, precision=args.precision, max_seq_length=args.max_seq_length, suite=run_suite(args)
    )


def run_suite(args: argparse.Namespace) -> str:
    """The suite name of this run's task flags (--benchmark, --paper_tasks, --offline_suite)."""
    return suite_name(args.paper_tasks, args.offline_suite, benchmark=args.benchmark)


def check_one_suite(output: Path, suite: str) -> None:
    """Refuse to add results of ``suite`` to an output folder that holds another suite's.

    One folder = one suite, so collect and the report never mix two benchmarks (MTEB(eng, v1)
    and v2), (and double-count) CQADupstackRetrieval and CQADupstackTexRetrieval, or mock tasks
    and real ones.
    """
    others = {
        name: entry["settings"]["suite"]
        for name, entry in read_model_index(output).items()
        if isinstance(entry.get("settings"), dict) and entry["settings"].get("suite") not in (None, suite)
    }
    if others:
        shown = ", ".join(
            f"{name} ({other}: {suite_benchmark(other)})" for name, other in sorted(others.items())
        )
        raise ValueError(
            f"{output} already holds results of another task suite: {shown}; this run is suite {suite!r} "
            f"({suite_benchmark(suite)}). Mixing suites in one output would mix benchmarks, count "
            "CQADupstack twice or mix mock and real tasks. Use another --output for this suite, or the "
            "same task flags (--benchmark / --paper_tasks / --offline_suite) as before."
        )


def evaluate_model(spec: ModelSpec, tasks: Sequence, output: Path, args: argparse.Namespace) -> ModelRun:
    """Evaluate one model on ``tasks``, reusing every finished result in ``output``."""
    import mteb
    from mteb.cache import ResultCache

    start = time.monotonic()
    weights = weights_revision(spec.checkpoint)
    settings = settings_for(spec, args)
    revision = result_revision(weights, settings)
    run = ModelRun(spec=spec, revision=revision)
    task_names = [t.metadata.name for t in tasks]
    entry = {
        **spec.metadata(revision, settings),
        "weights_revision": weights,
        "tasks": task_names,
        "benchmark": suite_benchmark(settings.suite),
    }
    update_model_index(output, {spec.mteb_name: entry})

    folder = result_folder(output, spec.mteb_name, revision)
    result_names = {
        name: None
        for task in tasks
        for name in [task.metadata.name, *(p.metadata.name for p in _parts(task))]
    }
    set_aside_corrupt(folder, list(result_names))
    cache = ResultCache(output)
    todo = pending_tasks(cache, spec.mteb_name, revision, tasks)
    run.cached = [t.metadata.name for t in tasks if t not in todo]
    if not todo:
        logger.info("%s@%s: all %d task(s) already done in %s", spec.mteb_name, revision, len(tasks), output)
        run.seconds = time.monotonic() - start
        return run

    model = build_mteb_model(
        spec, settings=settings, revision=revision, device=args.device, embedding_cache=args.embedding_cache
    )
    for task in todo:
        name = task.metadata.name
        parts = _parts(task)
        model.encode_meter.reset()
        error = _load(parts)
        if error:
            run.errors[name] = error
            continue
        try:
            with offline_config_names():
                result = mteb.evaluate(
                    model,
                    task,
                    cache=cache,
                    overwrite_strategy=OVERWRITE_STRATEGY,
                    encode_kwargs={"batch_size": args.batch_size},
                    co2_tracker=False,
                    raise_error=False,
                )
        finally:
            for part in parts:
                part.unload_data()
        run.evaluated += [r.task_name for r in result.task_results]
        run.errors.update({e.task_name: e.exception for e in result.exceptions or []})
        meter = model.encode_meter
        run.throughput[name] = (meter.texts, meter.seconds)
        if meter.texts:
            print(
                f"  {name}: encoded {meter.texts} texts in {meter.seconds:.2f} s "
                f"= {meter.per_second:.1f} sentences/s",
                flush=True,
            )
    run.seconds = time.monotonic() - start
    return run


def emit_slurm(
    specs: Sequence[ModelSpec], tasks: Sequence, args: argparse.Namespace, parser: argparse.ArgumentParser
) -> int:
    """Write the array script (``evaluation/slurm.py``) and pre-register every model in models.json."""
    if not args.slurm_out:
        parser.error("--emit slurm needs --slurm_out FILE")
    names = [t.metadata.name for t in tasks]
    job = array_job(specs, names, args, parser)  # checks the SLURM options before anything is written
    entries = {}
    for s in specs:
        weights, settings = weights_revision(s.checkpoint), settings_for(s, args)
        entries[s.mteb_name] = {
            **s.metadata(result_revision(weights, settings), settings),
            "weights_revision": weights,
            "tasks": names,
        }
    update_model_index(args.output, entries)
    slurm.emit(args, job)
    return 0


def checkpoint_token_setting(
    spec: ModelSpec, args: argparse.Namespace, measured: dict[Path, float]
) -> TokenSetting:
    """The characters per token (stated, or measured with the checkpoint's tokenizer) and the
    max_seq_length this run would use for ``spec``."""
    settings = settings_for(spec, args)
    if args.chars_per_token:
        return token_setting(args.chars_per_token, settings.max_seq_length)
    folder = transformer_dir(spec.checkpoint)
    if folder not in measured:
        measured[folder] = measure_chars_per_token(folder)
    return token_setting(
        round(measured[folder], 2),
        settings.max_seq_length,
        "measured: this checkpoint's tokenizer on the bundled English sample",
    )


def estimate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``--estimate``: print the plan's cost (checkpoints x benchmark) from mteb's task metadata;
    no data set is loaded and nothing is evaluated or written."""
    tasks = select_tasks(
        args.tasks, paper_tasks=args.paper_tasks, offline_suite=args.offline_suite, benchmark=args.benchmark
    )
    groups: Counter[TokenSetting] = Counter()
    if args.checkpoints:
        groups[token_setting(args.chars_per_token, args.max_seq_length)] += args.checkpoints
    if args.manifest or args.model:
        specs, bad = specs_from_args(args, parser)
        measured: dict[Path, float] = {}
        for spec in specs:
            if spec.name in bad:
                print(f"warning: {spec.name} is left out of the estimate: {bad[spec.name]}", file=sys.stderr)
                continue
            groups[checkpoint_token_setting(spec, args, measured)] += 1
    if not groups:
        parser.error(
            "--estimate needs the plan's checkpoints: --manifest FILE, --model CKPT --name NAME, "
            "or --checkpoints N"
        )
    label = suite_benchmark(run_suite(args)) + (
        " with the paper's CQADupstackTexRetrieval" if args.paper_tasks else ""
    )
    print(
        format_estimate(
            estimate_plan(tasks, benchmark=label, groups=groups, tokens_per_second=args.tokens_per_second)
        )
    )
    return 0


def report(runs: Sequence[ModelRun], bad_checkpoints: dict[str, str] | None = None) -> int:
    """Print a one-line summary per model and what failed.

    Exit status: 2 if a model could not be evaluated at all (bad checkpoint, load error),
    1 if a task failed or was refused, else 0.
    """
    status = 0
    for run in runs:
        if run.failure:
            status = 2
            print(f"{run.spec.mteb_name}: NOT EVALUATED: {run.failure}", file=sys.stderr)
            continue
        texts = sum(n for n, _ in run.throughput.values())
        seconds = sum(t for _, t in run.throughput.values())
        speed = f", {texts / seconds:.1f} sentences/s encoding" if seconds > 0 else ""
        print(
            f"{run.spec.mteb_name} (revision {run.revision}): {len(run.evaluated)} evaluated, "
            f"{len(run.cached)} reused, {len(run.errors)} failed, {run.seconds:.1f}s{speed}"
        )
        for task, message in run.errors.items():
            status = max(status, 1)
            print(f"  FAILED {task}: {message}", file=sys.stderr)
    for name, message in (bad_checkpoints or {}).items():
        status = 2
        print(f"{name}: NOT EVALUATED (checkpoint): {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mteb").setLevel(logging.WARNING)
    try:
        if args.estimate:
            return estimate(args, parser)
        if args.output is None:
            parser.error("--output DIR is required (the result folder), unless --estimate")
        specs, bad = specs_from_args(args, parser)
        tasks = select_tasks(
            args.tasks,
            paper_tasks=args.paper_tasks,
            offline_suite=args.offline_suite,
            benchmark=args.benchmark,
        )
        check_one_suite(args.output, run_suite(args))
    except (CheckpointError, ManifestError, UnknownTaskError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, message in bad.items():  # up front, then again at the end
        print(f"warning: {name} will not be evaluated: {message}", file=sys.stderr)
    healthy = [spec for spec in specs if spec.name not in bad]
    if args.emit == "slurm":
        if bad:
            print(
                f"error: {len(bad)} checkpoint(s) cannot be used; fix them before writing the array script.",
                file=sys.stderr,
            )
            return 2
        return emit_slurm(specs, tasks, args, parser)

    args.output.mkdir(parents=True, exist_ok=True)
    runs = []
    for spec in tqdm(healthy, desc="Models", unit="model"):
        try:
            runs.append(evaluate_model(spec, tasks, args.output, args))
        except Exception as err:  # one bad model must not stop the others; reported at the end
            logger.exception("%s could not be evaluated", spec.mteb_name)
            runs.append(ModelRun(spec=spec, failure=f"{type(err).__name__}: {err}"))
    return report(runs, bad)


if __name__ == "__main__":
    sys.exit(main())
