"""Emit a SLURM array script: one array task per (model, MTEB task), all into one output.

Each element runs ``python -m evaluation.run_mteb --model ... --name ... --tasks <one>
--output DIR``; results land in the shared mteb result cache under ``DIR`` and, being
keyed by (model name, revision, task), never overwrite each other.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from common.files import atomic_write_text
from evaluation.models import ModelSpec

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def element_command(spec: ModelSpec, task_name: str, output: Path, extra_args: Sequence[str], python: str) -> list[str]:
    """The argv of one array element."""
    argv = [python, "-m", "evaluation.run_mteb", "--model", str(spec.checkpoint), "--name", spec.name]
    for flag, value in (("--base_model", spec.model), ("--optimizer", spec.optimizer), ("--epochs", spec.epochs), ("--lr", spec.lr)):
        if value is not None:
            argv += [flag, str(value)]
    return [*argv, "--tasks", task_name, "--output", str(output), *extra_args]


def render_array_script(
    specs: Sequence[ModelSpec],
    task_names: Sequence[str],
    output: Path,
    *,
    extra_args: Sequence[str] = (),
    directives: Sequence[str] = (),
    python: str | None = None,
    job_name: str = "adatamw-mteb",
) -> tuple[str, int]:
    """The script text and its number of array tasks (models x tasks)."""
    python = python or sys.executable
    output = Path(output).resolve()
    commands = [
        shlex.join(element_command(spec, task, output, extra_args, python))
        for spec in specs
        for task in task_names
    ]
    n = len(commands)
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --array=0-{n - 1}",
        f"#SBATCH --output={output / 'slurm_logs'}/%A_%a.out",
        *(f"#SBATCH {d if d.startswith('-') else '--' + d}" for d in directives),
        "",
        f"# {len(specs)} model(s) x {len(task_names)} task(s) = {n} array tasks, all writing to {output}",
        "set -euo pipefail",
        f"cd {shlex.quote(str(PROJECT_ROOT))}",
        "COMMANDS=(",
        *(f"  {shlex.quote(c)}" for c in commands),
        ")",
        'echo "${COMMANDS[$SLURM_ARRAY_TASK_ID]}"',
        'eval "${COMMANDS[$SLURM_ARRAY_TASK_ID]}"',
        "",
    ]
    return "\n".join(lines), n


def write_array_script(path: Path, text: str) -> None:
    """Write the script atomically and make it executable; create the log folder it names."""
    path = Path(path)
    atomic_write_text(path, text, mode=0o755)
