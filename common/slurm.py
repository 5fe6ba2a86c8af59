"""SLURM array scripts: the one renderer of the sweep's and the evaluation's arrays.

A job is a list of commands (argv lists). :func:`render` writes them into one ``sbatch`` script
whose array fits the cluster:

* **MaxArraySize.** Slurm refuses an array with an index at or above the cluster's
  ``MaxArraySize`` (``Invalid job array specification``; Slurm's default is 1001). The limit is
  read from ``scontrol show config`` where it answers, else taken as 1001, or given
  (``--slurm_max_array_size``). When there are more commands than that, several are *packed*
  into each array task: array task ``i`` runs commands ``i*k .. i*k+k-1`` one after another
  (``k = ceil(commands / MaxArraySize)``), so one script and one ``sbatch`` cover the whole
  job, and the throttle below holds for all of it. (Packing rather than splitting into several
  scripts also keeps the job under per-user submission limits, which count array tasks.)
  ``--time`` must then cover ``k`` commands; the script's header and the emission's message say
  ``k``.
* **Throttle.** ``--slurm_throttle N`` writes ``--array=0-M%N``: at most N array tasks at once.
* **The environment that wrote it.** Every command runs with the interpreter of the emitting
  process (``sys.executable``, not resolved through symlinks, so a virtual environment stays
  itself); nothing is looked up on ``PATH`` (``accelerate launch`` is ``<python> -m
  accelerate.commands.launch``). The script checks that the interpreter exists on the node.
* **Failures.** A task runs all its commands even when one fails, then the job's final command
  (e.g. the sweep's manifest refresh), and exits 1 if any failed, so ``sacct`` shows it.

The extra ``#SBATCH`` options of both command lines are given one per ``--slurm_directive``
(``--slurm_directive=--gres=gpu:1`` or ``--slurm_directive gres=gpu:1``); the older
``--slurm_options "A B"`` still works with a deprecation message.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.files import atomic_write_text

DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize (slurm.conf(5))
# Options the renderer writes itself, with the flag of ours that sets them.
OWNED_DIRECTIVES = {
    "--array": "--slurm_throttle (the array range is computed)",
    "-a": "--slurm_throttle (the array range is computed)",
    "--job-name": "--slurm_job_name",
    "-J": "--slurm_job_name",
    "--output": "nothing: the logs go to the job's log folder, created when the script is written",
    "-o": "nothing: the logs go to the job's log folder, created when the script is written",
}
_MAX_ARRAY_SIZE = re.compile(r"^\s*MaxArraySize\s*=\s*(\d+)\s*$", re.M)


# ---- the cluster's limit --------------------------------------------------------------


def parse_max_array_size(config: str) -> int | None:
    """``MaxArraySize`` from the text of ``scontrol show config``, None if it is not there."""
    match = _MAX_ARRAY_SIZE.search(config)
    return int(match.group(1)) if match else None


def cluster_max_array_size(timeout: float = 20.0) -> tuple[int, str]:
    """The cluster's ``MaxArraySize`` and where it came from: ``scontrol show config`` where it
    answers, else Slurm's default 1001."""
    try:
        proc = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return DEFAULT_MAX_ARRAY_SIZE, "Slurm's default (no scontrol on this machine)"
    except subprocess.TimeoutExpired:
        return (
            DEFAULT_MAX_ARRAY_SIZE,
            f"Slurm's default (`scontrol show config` did not answer in {timeout:g} s)",
        )
    value = parse_max_array_size(proc.stdout) if proc.returncode == 0 else None
    if value is None:
        why = (proc.stderr.strip().splitlines() or ["no MaxArraySize in its output"])[-1]
        return DEFAULT_MAX_ARRAY_SIZE, f"Slurm's default (`scontrol show config` did not answer: {why})"
    return value, "`scontrol show config`"


# ---- packing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Packing:
    """How ``commands`` commands fill an array of at most ``max_array_size`` tasks."""

    commands: int
    max_array_size: int
    per_task: int  # commands run one after another by one array task
    tasks: int  # array tasks: indices 0 .. tasks - 1

    def commands_of(self, task: int) -> range:
        """The command indices array task ``task`` runs."""
        return range(task * self.per_task, min((task + 1) * self.per_task, self.commands))


def pack(commands: int, max_array_size: int) -> Packing:
    """The fewest commands per array task that keep every index below ``max_array_size``."""
    if commands < 1:
        raise ValueError("a SLURM array needs at least one command")
    if max_array_size < 1:
        raise ValueError(
            f"MaxArraySize = {max_array_size}: this cluster accepts no job arrays (slurm.conf sets "
            "MaxArraySize=0); ask its administrators, or run the commands another way"
        )
    per_task = math.ceil(commands / max_array_size)
    return Packing(commands, max_array_size, per_task, math.ceil(commands / per_task))


# ---- directives ---------------------------------------------------------------------------


def normalise_directive(directive: str) -> str:
    """One ``#SBATCH`` option: ``gres=gpu:1`` -> ``--gres=gpu:1``; ``-p gpu`` stays. Refuses the
    options the renderer writes itself and anything that would break the script's header."""
    text = directive.strip()
    if not text or "\n" in text or "\r" in text:
        raise ValueError(
            f"--slurm_directive {directive!r}: give one sbatch option per --slurm_directive, on one line"
        )
    if not text.startswith("-"):
        text = "--" + text
    name = re.split(r"[=\s]", text, maxsplit=1)[0]
    if name in OWNED_DIRECTIVES:
        raise ValueError(
            f"--slurm_directive {directive!r}: {name} is written by the script's renderer; "
            f"use {OWNED_DIRECTIVES[name]}"
        )
    return text


# ---- the script ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrayJob:
    """What one array script runs."""

    name: str  # --job-name
    commands: Sequence[Sequence[str]]  # one argv per command
    workdir: Path  # every command runs here (relative paths in the commands mean this folder)
    log_dir: Path  # %A_%a.out per array task
    directives: Sequence[str] = ()  # extra #SBATCH options (normalised by normalise_directive)
    final_command: Sequence[str] | None = None  # after the task's commands, whatever their status
    python_path: Path | None = None  # prepended to PYTHONPATH (the checkout, for `python -m`)
    about: Sequence[str] = field(default_factory=tuple)  # comment lines for the header


def interpreter() -> str:
    """This process's interpreter as an absolute path, symlinks kept (a venv's bin/python is the venv)."""
    return os.path.abspath(sys.executable)


def render(
    job: ArrayJob,
    packing: Packing,
    *,
    throttle: int | None = None,
    limit_source: str = "",
    python: str | None = None,
) -> str:
    """The text of the ``sbatch`` script of ``job`` laid out as ``packing``."""
    if packing.commands != len(job.commands):
        raise ValueError(f"packing is for {packing.commands} commands, the job has {len(job.commands)}")
    if throttle is not None and throttle < 1:
        raise ValueError(f"the throttle must be at least 1, got {throttle}")
    python = python or interpreter()
    directives = [normalise_directive(d) for d in job.directives]
    array = f"0-{packing.tasks - 1}" + (f"%{throttle}" if throttle else "")
    per_task = (
        "one per array task"
        if packing.per_task == 1
        else f"{packing.per_task} per array task, one after another"
    )
    limit = f"MaxArraySize {packing.max_array_size}" + (f" from {limit_source}" if limit_source else "")
    final = shlex.join(job.final_command) if job.final_command else ""
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job.name}",
        f"#SBATCH --array={array}",
        f"#SBATCH --output={Path(job.log_dir) / '%A_%a.out'}",
        *(f"#SBATCH {d}" for d in directives),
        "#",
        *(f"# {line}" for line in job.about),
        f"# {packing.commands} command(s), {per_task}: {packing.tasks} array task(s) ({limit})"
        + (f", at most {throttle} at a time." if throttle else "."),
        "# A task runs all its commands even if one fails, then the final command; it exits 1 if any failed.",
        f"# Every command uses the interpreter that wrote this script: {python}",
        "set -uo pipefail",
        f"PYTHON={shlex.quote(python)}",
        'if [ ! -x "$PYTHON" ]; then',
        '  echo "$PYTHON is not on $(hostname): this script runs the Python environment that wrote it;'
        ' write it again from an environment the compute nodes can see" >&2',
        "  exit 2",
        "fi",
        f"cd {shlex.quote(str(job.workdir))}",
        *(
            [f"export PYTHONPATH={shlex.quote(str(job.python_path))}${{PYTHONPATH:+:$PYTHONPATH}}"]
            if job.python_path
            else []
        ),
        "COMMANDS=(",
        *(f"  {shlex.quote(shlex.join(command))}" for command in job.commands),
        ")",
        f"PER_TASK={packing.per_task}",
        'TASK="${SLURM_ARRAY_TASK_ID:?submit with sbatch, '
        'or set SLURM_ARRAY_TASK_ID=i to run array task i here}"',
        "FIRST=$((TASK * PER_TASK))",
        "LAST=$((FIRST + PER_TASK < ${#COMMANDS[@]} ? FIRST + PER_TASK : ${#COMMANDS[@]}))",
        "STATUS=0",
        "for ((i = FIRST; i < LAST; i++)); do",
        '  echo "[$(date +%FT%T)] command $((i + 1)) of ${#COMMANDS[@]}: ${COMMANDS[$i]}"',
        '  eval "${COMMANDS[$i]}" || { rc=$?; echo "command $((i + 1)) failed (exit $rc)" >&2; STATUS=1; }',
        "done",
        *([f"{final} || STATUS=1"] if final else []),
        'exit "$STATUS"',
        "",
    ]
    return "\n".join(lines)


def write(path: Path, text: str, log_dir: Path) -> None:
    """Write the script atomically, executable, and create its log folder (sbatch does not)."""
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text, mode=0o755)


# ---- the command-line side, shared by recipes/sweep.py and evaluation/run_mteb.py ---------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# The dests of add_arguments' options (a job's command never forwards them).
DESTS = (
    "slurm_out",
    "slurm_directive",
    "slurm_options",
    "slurm_throttle",
    "slurm_max_array_size",
    "slurm_job_name",
)


def add_arguments(group, job_name: str) -> None:
    """The SLURM options of a command line (their dests: :data:`DESTS`)."""
    actions = [
        group.add_argument(
            "--slurm_out", type=Path, metavar="FILE", help="where --emit slurm writes the array script"
        ),
        group.add_argument(
            "--slurm_directive",
            action="append",
            default=[],
            metavar="OPTION",
            help="an extra #SBATCH option, repeatable: --slurm_directive=--gres=gpu:1 "
            "--slurm_directive=--time=08:00:00 (the leading -- may be left out)",
        ),
        group.add_argument("--slurm_options", help=argparse.SUPPRESS),  # deprecated: --slurm_directive
        group.add_argument(
            "--slurm_throttle",
            type=_positive_int,
            metavar="N",
            help="run at most N array tasks at a time (#SBATCH --array=...%%N)",
        ),
        group.add_argument(
            "--slurm_max_array_size",
            type=_positive_int,
            metavar="N",
            help="the cluster's MaxArraySize (default: read from `scontrol show config`, else "
            f"Slurm's default {DEFAULT_MAX_ARRAY_SIZE}); more commands than N are packed several "
            "per array task",
        ),
        group.add_argument("--slurm_job_name", "--job_name", default=job_name, help=f"default {job_name}"),
    ]
    assert tuple(action.dest for action in actions) == DESTS


def directives_of(args: argparse.Namespace) -> list[str]:
    """``--slurm_directive`` values, with the deprecated ``--slurm_options`` split into them."""
    directives = list(args.slurm_directive)
    if args.slurm_options:
        split = shlex.split(args.slurm_options)
        print(
            "warning: --slurm_options is deprecated and will be removed; give each option as "
            f"{' '.join(shlex.quote('--slurm_directive=' + o) for o in split)}",
            file=sys.stderr,
        )
        directives += split
    try:
        return [normalise_directive(d) for d in directives]
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None


def emit(args: argparse.Namespace, job: ArrayJob) -> Packing:
    """Write ``job``'s script to ``args.slurm_out`` under the options of :func:`add_arguments`; print
    what was written and how to submit it."""
    if not args.slurm_out:
        raise SystemExit("--emit slurm needs --slurm_out FILE")
    if args.slurm_max_array_size:
        limit, source = args.slurm_max_array_size, "--slurm_max_array_size"
    else:
        limit, source = cluster_max_array_size()
    packing = pack(len(job.commands), limit)
    text = render(job, packing, throttle=args.slurm_throttle, limit_source=source)
    write(args.slurm_out, text, job.log_dir)
    packed = (
        (
            f"; {packing.per_task} commands per array task (MaxArraySize {limit} from {source}): "
            f"give --time for {packing.per_task} of them"
        )
        if packing.per_task > 1
        else ""
    )
    print(
        f"Wrote {args.slurm_out}: {packing.commands} command(s) in {packing.tasks} array task(s){packed}. "
        f"Submit with: sbatch {args.slurm_out}   (logs: {job.log_dir})"
    )
    return packing


def forwarded_arguments(
    parser: argparse.ArgumentParser, args: argparse.Namespace, exclude: Sequence[str]
) -> list[str]:
    """The options of ``args`` that differ from ``parser``'s defaults, as command-line arguments again
    (for a job that must run with the same settings), leaving out the dests in ``exclude``.

    Path values are made absolute (the job may start in another folder). An option kind this
    function cannot write back raises ValueError naming it, rather than being dropped.
    """
    argv: list[str] = []
    for action in parser._actions:  # argparse has no public list of its actions
        if (
            action.dest in exclude
            or action.dest == argparse.SUPPRESS
            or isinstance(action, argparse._HelpAction)
        ):
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default or value is None:
            continue
        if not action.option_strings:
            raise ValueError(f"positional argument {action.dest!r} cannot be forwarded; exclude it")
        flag = next((s for s in action.option_strings if s.startswith("--")), action.option_strings[0])
        if isinstance(action, argparse.BooleanOptionalAction):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(
            action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)
        ):
            argv.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for item in value[len(action.default or []) :]:
                argv += [flag, _argument_text(item)]
        elif isinstance(action, argparse._StoreAction):
            many = action.nargs not in (None, "?")
            argv += [flag, *(_argument_text(v) for v in (value if many else [value]))]
        else:
            raise ValueError(f"{flag}: its action {type(action).__name__} cannot be forwarded to a job")
    return argv


def _argument_text(value) -> str:
    return os.path.abspath(value) if isinstance(value, Path) else str(value)
