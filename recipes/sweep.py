#!/usr/bin/env python
"""Run, or emit for a cluster, the paper's grid of MLM fine-tuning runs (docs/reproducing.md).

One *cell* = (model, optimizer, epochs); each cell is one ``recipes/mlm_finetune.py``
run over the learning-rate grid, in ``OUTPUT_ROOT/<model>/<optimizer>/ep<epochs>/``.
The default grid is the paper's: 6 models x {adamw, adatamw} x {3, 5, 10} epochs x
lrs {5e-6, 1e-5, 5e-5}, all overridable. Unrecognised arguments go to the recipe.

    python recipes/sweep.py --dry-run                                   # print the cells
    python recipes/sweep.py --models bert-base-uncased --epochs 3       # run locally, one after another
    python recipes/sweep.py --emit slurm --slurm_out sweep.sbatch \\
        --launch_args "--multi_gpu --num_processes 4" \\
        --slurm_directive=--gres=gpu:4 --slurm_directive=--time=24:00:00  # a SLURM array, one task per cell
    python recipes/sweep.py --collect                                   # rebuild manifest.json

The SLURM script (``common/slurm.py``) runs each cell with the interpreter of the environment
that wrote it (``<python> -m accelerate.commands.launch``, nothing from PATH), in the folder it
was written from, and refreshes the manifest at the end of every array task.

A cell is finished when its ``selection.json`` records the same identity as the cell asks for
(``recipes/identity.py``: model weights, data fingerprint, every setting that changes the
weights, the lr grid), decided by the recipe's own rule (``identity.reusable``); a cell
recorded with other settings is refused, naming each differing key. The recipe itself skips
finished lrs and resumes interrupted ones. Each cell runs under a lock (a second sweep on the
same root is refused); the recipe runs as a child in its own process group that gets SIGTERM
and SIGINT forwarded and dies with the sweep (``PR_SET_PDEATHSIG``), so no run is orphaned.
Before training, every model and the data set are resolved: one missing from an offline cache
stops the sweep naming it (nothing is substituted; ``--offline_defaults`` asks for the
embedded stand-ins). ``OUTPUT_ROOT/manifest.json`` (read by the evaluation) lists every
finished cell under the root::

    {"selected": [{"model": ..., "optimizer": ..., "epochs": 3, "lr": 5e-05,
                   "checkpoint": "<path relative to the manifest folder>", "val_perplexity": 12.3,
                   "provenance": {"model": {"name", "resolved", "weights_sha256"},
                                  "data": {"name", "config", "fingerprint"}}}]}

It is rebuilt from the cells' ``selection.json`` files (atomically, under a lock) after
every cell, locally and at the end of every SLURM array task.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # `python recipes/sweep.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adatamw.registry import OPTIM_NAMES
from common import slurm
from common.locks import hold, wait_for
from recipes import identity, results
from recipes.hub import OFFLINE_MODEL_ALIAS

PAPER_MODELS = (
    "bert-base-uncased",
    "bert-large-uncased",
    "microsoft/deberta-base",
    "microsoft/deberta-large",
    "roberta-base",
    "roberta-large",
)
PAPER_OPTIMIZERS = ("adamw", "adatamw")
PAPER_EPOCHS = (3, 5, 10)
PAPER_LRS = (5e-6, 1e-5, 5e-5)
RECIPE = "recipes/mlm_finetune.py"
REPO = Path(__file__).resolve().parent.parent
MANIFEST = "manifest.json"
MANIFEST_KEYS = ("model", "optimizer", "epochs", "lr", "checkpoint", "val_perplexity", "provenance")


@dataclass(frozen=True)
class Cell:
    """One (model, optimizer, epochs) recipe run over the lr grid."""

    model: str
    optimizer: str
    epochs: int
    learning_rates: tuple[float, ...]
    output_dir: Path

    def recipe_args(self, extra: list[str]) -> list[str]:
        return [
            "--model_name_or_path",
            self.model,
            "--optim",
            self.optimizer,
            "--num_train_epochs",
            str(self.epochs),
            "--learning_rates",
            *(f"{lr:g}" for lr in self.learning_rates),
            "--output_dir",
            str(self.output_dir),
            *extra,
        ]

    def finished(self, extra: list[str], world_size: int | None = 1) -> bool:
        """Its selection.json records this cell's identity over exactly these lrs and its checkpoint exists.

        Decided by ``recipes.identity.reusable`` (the recipe's rule for its lr runs): another
        identity is refused (SystemExit naming the keys); another lr grid only means "not
        finished" (the recipe then reuses the lr runs that match). ``world_size``: the
        launcher's process count, None when unknown (the global batch size is then left to the
        recipe's own check).
        """
        selection = results.read_json(self.output_dir / results.SELECTION_FILE)
        if not selection:
            return False
        if parsed_cell(self, extra)[2].overwrite_runs:
            return False  # the recipe deletes and retrains its lr runs
        expected = expected_identity(self, extra, world_size)
        ignore = (identity.GRID_KEY,) + (() if world_size else ("global_batch_size",))
        recorded = selection.get("identity")
        complete = (
            recorded is not None
            and recorded.get(identity.GRID_KEY) == expected[identity.GRID_KEY]
            and (self.output_dir / str(selection.get("checkpoint", ""))).is_dir()
        )
        return identity.reusable(self.output_dir, recorded, expected, complete or recorded is None, ignore)


_PROVENANCE: dict[tuple, dict] = {}  # (model, data arguments) -> provenance, resolved once per sweep


def parsed_cell(cell: Cell, extra: list[str]):
    """The recipe's parsed arguments for ``cell`` and the provenance of its model and data.

    Resolving is what the recipe does before training (``mlm_finetune.load_sources``): a model
    or data set missing from an offline cache stops here, naming it.
    """
    from recipes import mlm_finetune

    model_args, data_args, recipe, training_args = mlm_finetune.parse_args(cell.recipe_args(list(extra)))
    key = (
        model_args.model_name_or_path,
        model_args.cache_dir,
        data_args.train_file,
        data_args.validation_file,
        data_args.offline_sample,
        data_args.dataset_name,
        data_args.dataset_config_name,
        data_args.validation_split_percentage,
    )
    if key not in _PROVENANCE:
        _PROVENANCE[key] = mlm_finetune.load_sources(model_args, data_args)[2]
    return model_args, data_args, recipe, training_args, _PROVENANCE[key]


def expected_identity(cell: Cell, extra: list[str], world_size: int | None) -> dict:
    """The identity the recipe will give ``cell``, without tokenizing.

    As ``recipes.mlm_finetune.identity_of`` computes it.
    """
    from recipes import mlm_finetune

    *args, provenance = parsed_cell(cell, extra)
    return mlm_finetune.identity_of(*args, provenance, world_size or 1)


def model_slug(model: str) -> str:
    """Folder name of a model: hub ids ``org/name`` -> ``org--name``; local folders by their name."""
    path = Path(model)
    if path.is_dir() or model.startswith((".", "/", "~")):
        return path.name
    return model.replace("/", "--")


def grid_cells(models, optimizers, epochs, learning_rates, output_root: Path) -> list[Cell]:
    """Cells in a stable order: model, then optimizer, then epochs."""
    return [
        Cell(m, o, int(e), tuple(learning_rates), output_root / model_slug(m) / o / f"ep{int(e)}")
        for m in models
        for o in optimizers
        for e in epochs
    ]


def launch_prefix(launcher: str, launch_args: str) -> list[str]:
    if launcher == "accelerate":
        return ["accelerate", "launch", *shlex.split(launch_args)]
    if launch_args:
        raise SystemExit("--launch_args applies to --launcher accelerate only")
    return ["python"]


def command(
    cell: Cell, extra: list[str], launcher: str = "accelerate", launch_args: str = "", recipe: str = RECIPE
) -> list[str]:
    """The shell command of one cell (run from the repository root unless ``recipe`` is absolute)."""
    return [*launch_prefix(launcher, launch_args), recipe, *cell.recipe_args(extra)]


# ---- manifest -------------------------------------------------------------------------


def collect_manifest(output_root: Path) -> dict:
    """Rebuild ``manifest.json`` from every cell's selection.json under ``output_root``."""
    output_root = Path(output_root)
    output_root.mkdir(parents=True, exist_ok=True)
    with wait_for(output_root / f".{MANIFEST}.lock"):
        entries = []
        for path in sorted(output_root.glob(f"**/{results.SELECTION_FILE}")):
            selection = results.read_json(path)
            if not selection or any(k not in selection for k in MANIFEST_KEYS if k != "checkpoint"):
                why = "unreadable" if not selection else "no provenance recorded"
                print(f"manifest: {path} left out: {why}", file=sys.stderr)
                continue
            checkpoint = (path.parent / selection["checkpoint"]).relative_to(output_root)
            entries.append(
                {
                    "model": selection["model"],
                    "optimizer": selection["optimizer"],
                    "epochs": selection["epochs"],
                    "lr": selection["lr"],
                    "checkpoint": checkpoint.as_posix(),
                    "val_perplexity": selection["val_perplexity"],
                    "provenance": selection["provenance"],
                }
            )
        entries.sort(key=lambda e: (e["model"], e["optimizer"], e["epochs"]))
        manifest = {"selected": entries}
        results.write_json_atomic(output_root / MANIFEST, manifest)
    return manifest


# ---- outputs of the three modes -------------------------------------------------------


def print_cells(cells: list[Cell], extra, launcher, launch_args) -> None:
    world = launch_world_size(launcher, launch_args, in_process=False)
    status = {cell: cell.finished(extra, world) for cell in cells}
    print(
        f"{len(cells)} runs ({sum(status.values())} finished), each over lrs "
        f"{', '.join(f'{lr:g}' for lr in cells[0].learning_rates)}:"
    )
    for cell in cells:
        state = "done" if status[cell] else "todo"
        print(f"[{state}] {shlex.join(command(cell, extra, launcher, launch_args))}")


def launch_world_size(launcher: str, launch_args: str, in_process: bool) -> int | None:
    """Processes per cell: 1 for ``python`` / in-process, ``--num_processes`` of the accelerate
    options, None when accelerate decides (its config file or the device count)."""
    if in_process or launcher == "python":
        return 1
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--num_processes", "--num-processes", type=int)
    return options.parse_known_args(shlex.split(launch_args))[0].num_processes


def slurm_job(
    cells: list[Cell], extra, launcher, launch_args, output_root: Path, job_name: str, directives=()
) -> slurm.ArrayJob:
    """The SLURM array job: command i runs cell i with this interpreter, from the folder the sweep was
    started in (as ``--in_process`` would); each array task then refreshes the manifest."""
    python = slurm.interpreter()
    return slurm.ArrayJob(
        name=job_name,
        commands=[
            _this_interpreter(command(c, extra, launcher, launch_args, str(REPO / RECIPE)), python)
            for c in cells
        ],
        workdir=Path.cwd(),
        log_dir=output_root / "slurm_logs",
        directives=tuple(directives),
        final_command=[
            python,
            str(REPO / "recipes" / "sweep.py"),
            "--collect",
            "--output_root",
            str(output_root),
        ],
        python_path=REPO,
        about=(
            f"Written by recipes/sweep.py: {len(cells)} cells (model, optimizer, epochs), each over its "
            f"lr grid, into {output_root}; every array task then rebuilds {output_root / MANIFEST}.",
        ),
    )


def _this_interpreter(cmd: list[str], python: str | None = None) -> list[str]:
    """Run ``python ...`` / ``accelerate launch ...`` with this interpreter (no PATH lookup)."""
    python = python or sys.executable
    if cmd[:2] == ["accelerate", "launch"]:
        return [python, "-m", "accelerate.commands.launch", *cmd[2:]]
    if cmd[0] == "python":
        return [python, *cmd[1:]]
    return cmd


def _die_with_parent(parent: int) -> None:
    """``preexec_fn`` of a cell's child: SIGTERM when the sweep dies, even by ``kill -9`` (Linux prctl)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the sweep died before prctl took effect
            os._exit(1)


def run_child(cmd: list[str]) -> int:
    """Run a cell's command in its own process group; SIGTERM / SIGINT to the sweep go to the whole
    group, and the child gets SIGTERM if the sweep dies. Returns the exit status; a forwarded
    signal ends the sweep too (exit 128 + signal) once the child has stopped."""
    parent = os.getpid()
    received: list[int] = []
    group: list[int] = []  # the child's process group, once started

    def forward(signum, frame):
        received.append(signum)
        for pgid in group:
            try:
                os.killpg(pgid, signum)
            except ProcessLookupError:
                pass

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):  # before the child starts: no signal is lost
            try:
                previous[sig] = signal.signal(sig, forward)
            except ValueError:  # not the main thread: the child still dies with this process
                break
        proc = subprocess.Popen(
            cmd, cwd=REPO, start_new_session=True, preexec_fn=lambda: _die_with_parent(parent)
        )
        group.append(proc.pid)
        if received:  # arrived while the child was starting
            forward(received.pop(), None)
        try:
            rc = proc.wait()
        finally:
            if proc.poll() is None:  # the sweep is leaving through an exception: take the child along
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        name = signal.Signals(received[0]).name
        print(
            f"sweep: {name} received and forwarded to the running cell (PID {proc.pid}), which stopped "
            f"(exit {rc}); re-run the sweep to resume it.",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(128 + received[0])
    return rc


def cell_lock(cell: Cell):
    """The lock of one cell, beside its folder (``--overwrite_runs`` may delete the folder's content)."""
    return hold(cell.output_dir.parent / f".{cell.output_dir.name}.lock", f"sweep cell {cell.output_dir}")


def run_local(
    cells: list[Cell], extra, launcher, launch_args, output_root: Path, in_process: bool, keep_going: bool
):
    """Run unfinished cells one after another, each under its lock; refresh the manifest after each.

    Every model and the data are resolved first, so a missing one stops the sweep before any training.
    """
    from tqdm.auto import tqdm

    world = launch_world_size(launcher, launch_args, in_process)
    for cell in {c.model: c for c in cells}.values():
        parsed_cell(cell, extra)
    failures = []
    for cell in tqdm(cells, desc="sweep", unit="cell"):
        with cell_lock(cell):
            if cell.finished(extra, world):
                print(f"skip (finished): {cell.output_dir}")
                continue
            if in_process:
                from recipes import mlm_finetune

                mlm_finetune.main(cell.recipe_args(extra))
                rc = 0
            else:
                cmd = command(cell, extra, launcher, launch_args)
                print(f"run: {shlex.join(cmd)}", flush=True)
                rc = run_child(_this_interpreter(cmd))
        if rc != 0:
            failures.append(cell)
            print(f"FAILED (exit {rc}): {cell.output_dir}", file=sys.stderr)
            if not keep_going:
                break
        collect_manifest(output_root)
    collect_manifest(output_root)
    if failures:
        raise SystemExit(
            f"{len(failures)} run(s) failed; rerun the sweep to resume them (finished runs are skipped)"
        )


# ---- CLI ----------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Other arguments are passed to recipes/mlm_finetune.py (e.g. --max_seq_length 128 --seed 1).",
    )
    p.add_argument(
        "--models",
        nargs="+",
        help=f"hub ids or local folders (default: the paper's {len(PAPER_MODELS)}; "
        f"with --offline_defaults: {OFFLINE_MODEL_ALIAS})",
    )
    p.add_argument(
        "--offline_defaults",
        action="store_true",
        help=f"the offline stand-ins: --models {OFFLINE_MODEL_ALIAS} unless --models is given, and the "
        "recipe's --offline_defaults (the bundled text unless --train_file / --dataset_name is given)",
    )
    p.add_argument("--optims", nargs="+", default=list(PAPER_OPTIMIZERS), choices=list(OPTIM_NAMES))
    p.add_argument("--epochs", nargs="+", type=int, default=list(PAPER_EPOCHS))
    p.add_argument("--learning_rates", nargs="+", type=float, default=list(PAPER_LRS))
    p.add_argument("--output_root", type=Path, default=Path("runs/sweep"))
    p.add_argument(
        "--dry-run", "--dry_run", dest="dry_run", action="store_true", help="print the cells and exit"
    )
    p.add_argument(
        "--emit", choices=["local", "slurm"], default="local", help="run here, or write a SLURM script"
    )
    slurm.add_arguments(
        p.add_argument_group("SLURM (with --emit slurm; common/slurm.py)"), job_name="tam-mlm"
    )
    p.add_argument("--launcher", choices=["accelerate", "python"], default="accelerate")
    p.add_argument(
        "--launch_args", default="", help='accelerate launch options, e.g. "--multi_gpu --num_processes 4"'
    )
    p.add_argument("--in_process", action="store_true", help="local: call the recipe in this process")
    p.add_argument("--keep_going", action="store_true", help="local: continue after a failed run")
    p.add_argument("--collect", action="store_true", help="only rebuild OUTPUT_ROOT/manifest.json")
    return p


def validate(args, extra: list[str]) -> None:
    for name in ("models", "optims", "epochs", "learning_rates"):
        if not getattr(args, name):
            raise SystemExit(f"--{name} is empty")
    if any(e <= 0 for e in args.epochs):
        raise SystemExit(f"--epochs must be positive, got {args.epochs}")
    if any(not lr > 0 for lr in args.learning_rates):
        raise SystemExit(f"--learning_rates must all be positive, got {args.learning_rates}")
    owned = {
        "--model_name_or_path",
        "--optim",
        "--optimizer",
        "--num_train_epochs",
        "--learning_rates",
        "--output_dir",
    }
    clash = sorted({a.split("=")[0] for a in extra} & owned)
    if clash:
        raise SystemExit(
            f"{', '.join(clash)}: set by the sweep per run; use --models/--optims/--epochs/"
            "--learning_rates/--output_root instead"
        )
    if args.emit == "slurm" and not args.slurm_out and not args.dry_run:
        raise SystemExit("--emit slurm needs --slurm_out FILE")


def main(argv: list[str] | None = None) -> list[Cell]:
    args, extra = parser().parse_known_args(argv)
    if args.models is None:
        args.models = [OFFLINE_MODEL_ALIAS] if args.offline_defaults else list(PAPER_MODELS)
    if args.offline_defaults:
        extra = [*extra, "--offline_defaults"]
    # Commands run from the repository root (the recipe path is relative to it): make the root absolute.
    args.output_root = args.output_root.expanduser().resolve()
    if args.collect:
        manifest = collect_manifest(args.output_root)
        print(f"{args.output_root / MANIFEST}: {len(manifest['selected'])} selected checkpoints")
        return []
    validate(args, extra)
    cells = grid_cells(args.models, args.optims, args.epochs, args.learning_rates, args.output_root)
    if args.dry_run:
        print_cells(cells, extra, args.launcher, args.launch_args)
    elif args.emit == "slurm":
        job = slurm_job(
            cells,
            extra,
            args.launcher,
            args.launch_args,
            args.output_root,
            args.slurm_job_name,
            slurm.directives_of(args),
        )
        slurm.emit(args, job)
    else:
        run_local(
            cells, extra, args.launcher, args.launch_args, args.output_root, args.in_process, args.keep_going
        )
    return cells


if __name__ == "__main__":
    main()
