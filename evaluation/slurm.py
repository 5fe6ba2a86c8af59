"""The MTEB evaluation as a SLURM array (rendered by ``common/slurm.py``): one command per
(model, MTEB task), all into one output folder.

Each command runs ``<python> -m evaluation.run_mteb --model CKPT --name NAME [metadata] <the
arguments run_mteb was given> --tasks TASK --output DIR``; results land in mteb's result cache
under ``DIR`` and, being keyed by (model name, revision, task), never overwrite each other. The
arguments are forwarded from the parsed command line (``common.slurm.forwarded_arguments``), so
whatever selects the suite and the settings (``--paper_tasks``, ``--offline_suite``,
``--precision``, ...) reaches every job, and ``--tasks`` picks one task of that suite.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from common import slurm
from evaluation.models import ModelSpec

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# What each command sets itself (the model, the task, the output), besides the SLURM options.
PER_COMMAND_DESTS = (
    "model",
    "name",
    "manifest",
    "base_model",
    "optimizer",
    "epochs",
    "lr",
    "tasks",
    "output",
    "emit",
    "estimate",
    "checkpoints",
    "tokens_per_second",
    "chars_per_token",
)


def element_command(
    spec: ModelSpec, task_name: str, output: Path, forwarded: Sequence[str], python: str
) -> list[str]:
    """The argv of one (model, task) command."""
    argv = [python, "-m", "evaluation.run_mteb", "--model", str(spec.checkpoint), "--name", spec.name]
    for flag, value in (
        ("--base_model", spec.model),
        ("--optimizer", spec.optimizer),
        ("--epochs", spec.epochs),
        ("--lr", spec.lr),
    ):
        if value is not None:
            argv += [flag, str(value)]
    return [*argv, *forwarded, "--tasks", task_name, "--output", str(output)]


def array_job(
    specs: Sequence[ModelSpec],
    task_names: Sequence[str],
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
) -> slurm.ArrayJob:
    """The array job of ``specs`` x ``task_names`` under the parsed command line ``args``."""
    output = Path(args.output).resolve()
    forwarded = slurm.forwarded_arguments(parser, args, (*PER_COMMAND_DESTS, *slurm.DESTS))
    python = slurm.interpreter()
    return slurm.ArrayJob(
        name=args.slurm_job_name,
        commands=[
            element_command(spec, task, output, forwarded, python) for spec in specs for task in task_names
        ],
        workdir=Path.cwd(),
        log_dir=output / "slurm_logs",
        directives=tuple(slurm.directives_of(args)),
        python_path=PROJECT_ROOT,
        about=(
            f"Written by evaluation/run_mteb.py: {len(specs)} model(s) x {len(task_names)} task(s), "
            f"one command per (model, task), all writing to {output}.",
        ),
    )
