"""mteb's result files ``DIR/results/<name>/<revision>/<task>.json``: find, read, set aside.

mteb writes them non-atomically, so a job killed mid-write leaves half a JSON file.
:func:`read_result` names such a file (:class:`CorruptResultError`) instead of the bare
JSONDecodeError mteb raises; ``run_mteb`` moves it aside (:func:`set_aside`) and re-runs
the task, ``collect`` warns and leaves the task out.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

NOT_RESULTS = {"model_meta.json"}


class CorruptResultError(ValueError):
    """A result file that is not a readable mteb TaskResult (truncated or corrupt)."""

    def __init__(self, path: Path, cause: Exception):
        self.path = Path(path)
        super().__init__(
            f"{path} is not a readable mteb result ({type(cause).__name__}: {cause}); "
            f"it was probably truncated by a job killed while mteb wrote it."
        )


def result_folder(output: str | Path, mteb_name: str, revision: str) -> Path:
    """Where mteb's ResultCache(output) files ``mteb_name`` at ``revision``."""
    return Path(output) / "results" / mteb_name.replace("/", "__").replace(" ", "_") / revision


def result_files(output: str | Path, mteb_name: str, revision: str) -> list[Path]:
    """The task result files of one model revision (model_meta.json excluded), sorted."""
    folder = result_folder(output, mteb_name, revision)
    return sorted(p for p in folder.glob("*.json") if p.name not in NOT_RESULTS)


def read_result(path: str | Path):
    """The ``TaskResult`` stored at ``path``.

    Raises:
        CorruptResultError: the file is truncated, not JSON, or not a TaskResult.
    """
    from mteb.results import TaskResult

    try:
        return TaskResult.from_disk(Path(path))
    except FileNotFoundError:
        raise
    except Exception as err:  # JSONDecodeError, pydantic ValidationError, KeyError, ...
        raise CorruptResultError(Path(path), err) from err


def set_aside(path: str | Path) -> Path:
    """Rename a corrupt result file to ``<name>.corrupt-<UTC time>`` (kept for inspection)."""
    path = Path(path)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    path.replace(target)
    return target


def set_aside_corrupt(folder: Path, task_names: list[str]) -> list[tuple[Path, Path]]:
    """Check the result files of ``task_names`` in ``folder``; move the unreadable ones aside.

    Returns (original, new path) for every file moved, after logging a warning naming it.
    """
    moved = []
    for name in task_names:
        path = folder / f"{name}.json"
        if not path.is_file():
            continue
        try:
            read_result(path)
        except CorruptResultError as err:
            target = set_aside(path)
            logger.warning("%s Moved it to %s; the task will be re-run.", err, target.name)
            moved.append((path, target))
    return moved
