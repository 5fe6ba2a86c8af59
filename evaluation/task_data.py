"""Load a task's data the way an offline cluster node must: the right configs, the right revision.

Offline (``HF_HUB_OFFLINE=1`` / ``HF_DATASETS_OFFLINE=1``, the usual case on compute nodes
whose cache was filled beforehand), ``datasets`` 5.x reads a hub dataset only from its Arrow
cache ``HF_DATASETS_CACHE/<org>___<name>/<config>/0.0.0/<commit>/`` and two of its answers
silently change what mteb evaluates:

* ``get_dataset_config_names`` returns only ``default``, so mteb's retrieval loader never
  loads the ``top_ranked`` config and a Reranking task (AskUbuntuDupQuestions, SciDocsRR,
  MindSmallReranking, StackOverflowDupQuestions) is scored as full-corpus retrieval;
* the cache takes the newest cached commit of a config, whatever revision was asked for.

:func:`load_task_data` loads a task with the config names read from the cache itself
(offline only; online the hub's answer is used), then refuses, naming the task, the cause
and the fix, a Reranking task without its candidates and data of another revision than the
task's.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class TaskDataError(RuntimeError):
    """A task's data cannot be evaluated faithfully (missing candidates, wrong revision)."""


def offline() -> bool:
    """True when ``datasets`` will not contact the hub (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)."""
    import datasets.config

    return bool(datasets.config.HF_HUB_OFFLINE)


def cache_root(repo_id: str) -> Path:
    """``HF_DATASETS_CACHE/<org>___<name>``: where ``datasets`` caches the hub dataset ``repo_id``."""
    import datasets.config
    from datasets.naming import camelcase_to_snakecase

    parts = repo_id.split("/")
    parts[-1] = camelcase_to_snakecase(parts[-1])
    return Path(os.path.expanduser(str(datasets.config.HF_DATASETS_CACHE))) / "___".join(parts)


def cached_configs(repo_id: str) -> dict[str, list[str]]:
    """Config name -> the commits cached for it (``<config>/<version>/<commit>`` folders)."""
    configs: dict[str, list[str]] = {}
    for path in sorted(glob.glob(str(cache_root(repo_id) / "*" / "*" / "*"))):
        if os.path.isdir(path):
            parts = Path(path).parts
            configs.setdefault(parts[-3], []).append(parts[-1])
    return configs


def fill_cache_command(repo_id: str, config: str, revision: str) -> str:
    """The command that caches one config at one revision (run on a machine with network)."""
    return (
        f"python -c \"from datasets import load_dataset; load_dataset('{repo_id}', '{config}', "
        f"revision='{revision}')\""
    )


@contextlib.contextmanager
def offline_config_names() -> Iterator[None]:
    """Offline, mteb's retrieval loader sees the configs of the local cache, not just ``default``."""
    from mteb.abstasks import retrieval_dataset_loaders as loaders

    original = loaders.get_dataset_config_names

    def config_names(path: str, revision: str | None = None, *args: Any, **kwargs: Any) -> list[str]:
        if offline():
            cached = cached_configs(path)
            if cached:
                return sorted(cached)
        return original(path, revision, *args, **kwargs)

    loaders.get_dataset_config_names = config_names
    try:
        yield
    finally:
        loaders.get_dataset_config_names = original


def _datasets_in(obj: Any, seen: set[int] | None = None) -> Iterator[Any]:
    """Every ``datasets.Dataset`` reachable through dicts / lists / DatasetDicts of ``obj``."""
    from datasets import Dataset

    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, Dataset):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _datasets_in(value, seen)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _datasets_in(value, seen)


def loaded_revisions(task) -> dict[str, set[str]]:
    """Config folder -> commit folders of the cache files the task's loaded data was read from."""
    found: dict[str, set[str]] = {}
    for dataset in _datasets_in(getattr(task, "dataset", None)):
        for cache_file in dataset.cache_files:
            folder = Path(cache_file["filename"]).parent
            if len(folder.parts) >= 4:
                found.setdefault(f"{folder.parts[-4]}/{folder.parts[-3]}", set()).add(folder.name)
    return found


def check_revision(task) -> None:
    """Refuse data read from another commit than the task's ``metadata.dataset['revision']``."""
    wanted = task.metadata.dataset.get("revision")
    repo_id = task.metadata.dataset.get("path")
    if not wanted:
        return
    wrong = {
        config: sorted(commits - {wanted})
        for config, commits in loaded_revisions(task).items()
        if commits - {wanted}
    }
    if wrong:
        loaded = ", ".join(sorted({commit for commits in wrong.values() for commit in commits}))
        config = sorted(wrong)[0].split("/")[-1]
        raise TaskDataError(
            f"{task.metadata.name}: the data loaded for {repo_id} is revision {loaded} (cache folders "
            f"{', '.join(sorted(wrong))}), but the task asks for revision {wanted}. The offline datasets "
            "cache serves the newest cached commit of a config, whatever revision is requested. Fix: cache "
            f"revision {wanted} ({fill_cache_command(repo_id, config, wanted)}) and remove the other "
            f"commit's folder under {cache_root(repo_id)}."
        )


def _is_retrieval(task) -> bool:
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    return isinstance(task, AbsTaskRetrieval)


def check_reranking_candidates(task) -> None:
    """A Reranking task must carry its ``top_ranked`` candidates in every subset and split."""
    if task.metadata.type != "Reranking" or not _is_retrieval(task):
        return
    missing = [
        f"{subset}/{split}"
        for subset, splits in (task.dataset or {}).items()
        for split, data in splits.items()
        if not data.get("top_ranked")
    ]
    if missing:
        repo_id, revision = task.metadata.dataset.get("path"), task.metadata.dataset.get("revision")
        cached = sorted(cached_configs(repo_id)) if offline() else []
        where = (
            f"the offline datasets cache {cache_root(repo_id)} holds configs {cached} and no top_ranked"
            if offline()
            else "the dataset has no top_ranked config"
        )
        raise TaskDataError(
            f"{task.metadata.name} (Reranking): no top_ranked candidates were loaded for "
            f"{', '.join(missing)}; "
            f"{where}, so the task would be scored as full-corpus retrieval (different, lower scores). "
            f"Fix: cache the candidates on a machine with network "
            f"({fill_cache_command(repo_id, 'top_ranked', revision)}) and copy the cache over."
        )


def load_task_data(task) -> None:
    """``task.load_data()`` with the offline config names, then the reranking and revision checks.

    Raises:
        TaskDataError: a Reranking task without candidates, or data of another revision.
    """
    with offline_config_names():
        task.load_data()
    try:
        check_reranking_candidates(task)
        check_revision(task)
    except TaskDataError:
        task.unload_data()
        raise
