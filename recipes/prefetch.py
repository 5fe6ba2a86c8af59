"""Fill the Hugging Face cache for a plan on a machine with network, or check it with none.

Compute nodes are usually offline: before the grid runs, the cache must hold the models, the
training text and the data of every MTEB task, with the configs and splits mteb's loaders read,
at the revisions mteb pins. This module lists those *items* for a plan and, per item, whether
the cache holds it; it fills the missing ones with the libraries' own loaders:

* a **model** (the sweep's six by default, ``recipes.sweep.PAPER_MODELS``): config, tokenizer and
  one kind of weights in the hub cache (``recipes.hub.download_model``, what the recipe itself
  fetches); present when ``snapshot_download(local_files_only=True)`` finds a config and weights;
* the **training data** (``Salesforce/wikitext`` / ``wikitext-2-raw-v1``, as ``recipes/data.py``
  loads it): ``datasets.load_dataset`` into the datasets cache;
* an **MTEB task** (the paper's 56 of MTEB(eng, v1) by default, ``evaluation.tasks``): mteb's own
  ``task.load_data()`` (through ``evaluation.task_data.load_task_data``, which also refuses a
  Reranking task without its ``top_ranked`` candidates and data of another revision).

Offline, ``datasets`` 5.x reads a hub data set only from its Arrow cache
``HF_DATASETS_CACHE/<org>___<name>/<config>/<version>/<commit>/`` (``evaluation/task_data.py``):
the raw files ``hf download --repo-type dataset`` puts in the hub cache are not read, so a data
set counts as present only when that Arrow folder holds every split it needs, and the command
printed for a missing data set or task is this module's, which runs the loader. A task needs
(:func:`task_configs`, the rules of mteb 2.x's ``AbsTask.load_data`` and
``RetrievalDatasetLoader``): its config (or one per language subset) with the evaluation split
and, for Classification, the training split; a Retrieval / Reranking task its ``corpus``,
``queries`` and qrels (``default``) configs, the qrels with the evaluation split (MSMARCO:
``dev``), and for Reranking the ``top_ranked`` candidates; everything at the task's revision.

    python -m recipes.prefetch                 # fill: 6 models, WikiText-2, the paper's 56 tasks
    python -m recipes.prefetch --check         # no network: present / missing, the command for each
    python -m recipes.prefetch --models bert-base-uncased --tasks SciFact MSMARCO
    python -m recipes.prefetch --only tasks --benchmark "MTEB(eng, v1)" --standard_tasks

Filling is idempotent: present items are skipped. ``--check`` exits 1 when something is missing.
The caches are the libraries' defaults (``HF_HOME``, ``HF_HUB_CACHE``, ``HF_DATASETS_CACHE``).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import glob
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # `python recipes/prefetch.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recipes import hub

KINDS = ("models", "train_data", "tasks")
DEFAULT_BENCHMARK = "MTEB(eng, v1)"
PROGRAM = "python -m recipes.prefetch"


# ---- what the cache holds ------------------------------------------------------------------


def arrow_splits(folder: Path) -> set[str]:
    """Splits of one cached config folder whose Arrow files are all there (per ``dataset_info.json``)."""
    try:
        info = json.loads((folder / "dataset_info.json").read_text())
    except (OSError, ValueError):
        return set()
    present = set()
    for split, split_info in (info.get("splits") or {}).items():
        shards = len(split_info.get("shard_lengths") or [None])
        name = glob.escape(split)
        patterns = (
            [f"*-{name}.arrow"]
            if shards == 1
            else [f"*-{name}-{i:05d}-of-{shards:05d}.arrow" for i in range(shards)]
        )
        if all(glob.glob(str(Path(glob.escape(str(folder))) / pattern)) for pattern in patterns):
            present.add(split)
    return present


def cached_splits(repo_id: str, config: str, revision: str | None) -> set[str]:
    """Splits of ``repo_id``'s ``config`` in the datasets Arrow cache (at ``revision``; any when None)."""
    from evaluation.task_data import cache_root

    splits: set[str] = set()
    for folder in glob.glob(str(cache_root(repo_id) / glob.escape(config) / "*" / (revision or "*"))):
        splits |= arrow_splits(Path(folder))
    return splits


@dataclass(frozen=True)
class ConfigNeed:
    """One config of a hub data set a loader reads.

    ``splits`` are all needed; with ``any_split``, one of them is enough.

    ``alternatives`` are config names the loader takes instead when this one does not exist.
    """

    repo_id: str
    config: str
    revision: str | None
    splits: tuple[str, ...] = ()
    alternatives: tuple[str, ...] = ()

    def present(self) -> bool:
        for config in (self.config, *self.alternatives):
            found = cached_splits(self.repo_id, config, self.revision)
            if found and set(self.splits) <= found:
                return True
        return False

    def label(self) -> str:
        splits = f" [{', '.join(self.splits)}]" if self.splits else ""
        at = f" at {self.revision}" if self.revision else ""
        return f"{self.repo_id} {self.config}{splits}{at}"


def _retrieval_configs(task) -> list[ConfigNeed]:
    """mteb 2.x ``RetrievalDatasetLoader``: per language subset and evaluation split, corpus, queries,
    qrels (the split itself) and, for Reranking, ``top_ranked`` (``evaluation.task_data`` requires it)."""
    dataset = task.metadata.dataset
    repo_id, revision = dataset["path"], dataset["revision"]
    subsets = list(task.hf_subsets) if task.metadata.is_multilingual else ["default"]
    needs: list[ConfigNeed] = []
    for subset in subsets:
        prefix = "" if subset == "default" else f"{subset}-"
        for split in task.eval_splits:
            needs.append(
                ConfigNeed(
                    repo_id,
                    f"{prefix}qrels" if prefix else "default",
                    revision,
                    (split,),
                    alternatives=() if prefix else ("qrels",),
                )
            )
            needs.append(ConfigNeed(repo_id, f"{prefix}corpus", revision))
            needs.append(ConfigNeed(repo_id, f"{prefix}queries", revision, alternatives=("query",)))
            if task.metadata.type == "Reranking":
                needs.append(ConfigNeed(repo_id, f"{prefix}top_ranked", revision, (split,)))
    return list(dict.fromkeys(needs))


def _plain_configs(task) -> list[ConfigNeed]:
    """mteb 2.x ``AbsTask.load_data``: one config (``default`` or the metadata's ``name``), or one per
    language subset for a multilingual task that does not fast-load; the evaluation splits and, for
    Classification, the training split."""
    dataset = task.metadata.dataset
    splits = list(task.eval_splits)
    train_split = getattr(task, "train_split", None)
    if task.metadata.type == "Classification" and train_split:
        splits.append(train_split)
    if task.metadata.is_multilingual and not getattr(task, "fast_loading", False):
        configs = list(task.hf_subsets)
    else:
        configs = [dataset.get("name") or "default"]
    return [
        ConfigNeed(dataset["path"], config, dataset["revision"], tuple(dict.fromkeys(splits)))
        for config in configs
    ]


def own_loader(task) -> bool:
    """Whether ``task``'s class replaces mteb's ``load_data`` (then the rules above do not apply)."""
    from mteb.abstasks.abstask import AbsTask
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    return type(task).load_data not in (AbsTask.load_data, AbsTaskRetrieval.load_data)


def task_configs(task) -> list[ConfigNeed]:
    """The configs and splits mteb's loader reads for ``task`` (a leaf task, not an aggregate)."""
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    return _retrieval_configs(task) if isinstance(task, AbsTaskRetrieval) else _plain_configs(task)


# ---- the plan's items ----------------------------------------------------------------------


@dataclass
class Item:
    """One thing the plan needs in the cache: its kind, name, what is missing, and how to fill it."""

    kind: str
    name: str
    missing: Callable[[], list[str]]  # descriptions of the missing parts; [] when present
    fill: Callable[[], None] | None  # None: nothing to fetch (a local folder)
    command: str  # the command that fills it, on a machine with network
    note: str = ""


def model_item(name: str) -> Item:
    """A hub model (a local folder or the embedded stand-in: nothing to fetch)."""
    if name == hub.OFFLINE_MODEL_ALIAS or Path(name).expanduser().is_dir():
        return Item("model", name, lambda: [], None, "", note="local, nothing to fetch")

    def missing() -> list[str]:
        return [] if hub.cached_snapshot(name, None) else ["config and weights in the hub cache"]

    return Item(
        "model", name, missing, lambda: hub.download_model(name, None), f"hf download {shlex.quote(name)}"
    )


def train_data_item(name: str, config: str, command: str) -> Item:
    """The training text as ``recipes/data.py`` loads it (no revision: whatever commit is cached)."""
    need = ConfigNeed(name, config, None)

    def missing() -> list[str]:
        return [] if need.present() else [f"{need.label()} in the datasets cache"]

    def fill() -> None:
        from datasets import load_dataset

        load_dataset(name, config)

    return Item("train data", f"{name} ({config})", missing, fill, command)


def task_item(task, command: str, parent: str | None = None) -> Item:
    """One MTEB task: every config its loader reads, at the task's revision."""
    needs = task_configs(task)
    custom = own_loader(task)

    def missing() -> list[str]:
        if custom:  # none of MTEB(eng, v1) / v2: their classes all load through mteb's two loaders
            return [
                f"{type(task).__name__} loads its data itself: the check cannot tell; run the fill command"
            ]
        return [need.label() for need in needs if not need.present()]

    def fill() -> None:
        from evaluation.task_data import load_task_data

        try:
            load_task_data(task)
        finally:
            task.unload_data()

    return Item(
        "MTEB task", task.metadata.name, missing, fill, command, note=f"part of {parent}" if parent else ""
    )


# ---- the plan ------------------------------------------------------------------------------


def benchmark_tasks(benchmark: str, standard_tasks: bool) -> list:
    """The benchmark's tasks (``evaluation.tasks.benchmark_tasks``): for the paper's MTEB(eng, v1)
    the paper's selection unless ``standard_tasks``; any other ``mteb.get_benchmark`` name as mteb
    gives it."""
    from evaluation.tasks import UnknownBenchmarkError, is_paper_benchmark
    from evaluation.tasks import benchmark_tasks as tasks_of

    try:
        return tasks_of(benchmark, paper_tasks=is_paper_benchmark(benchmark) and not standard_tasks)
    except UnknownBenchmarkError as err:
        raise SystemExit(f"--benchmark: {err}") from None


def leaf_tasks(tasks) -> list[tuple[object, str | None]]:
    """(task, aggregate name or None): an aggregate task (e.g. CQADupstackRetrieval) as its sub-tasks."""
    from mteb.abstasks.aggregated_task import AbsTaskAggregate

    leaves = []
    for task in tasks:
        if isinstance(task, AbsTaskAggregate):
            leaves += [(part, task.metadata.name) for part in task.metadata.tasks]
        else:
            leaves.append((task, None))
    return leaves


def _pick(leaves, names: Sequence[str] | None, benchmark: str):
    if not names:
        return leaves
    by_name: dict[str, list] = {}
    for task, parent in leaves:
        by_name.setdefault(task.metadata.name, []).append((task, parent))
        if parent:
            by_name.setdefault(parent, []).append((task, parent))
    unknown = [n for n in names if n not in by_name]
    if unknown:
        hints = "; ".join(
            f"{n!r}"
            + (
                f" (did you mean {', '.join(close)}?)"
                if (close := difflib.get_close_matches(n, list(by_name), n=3))
                else ""
            )
            for n in unknown
        )
        raise SystemExit(
            f"--tasks: not in {benchmark} as selected: {hints}. Available: {', '.join(sorted(by_name))}"
        )
    picked = [leaf for n in dict.fromkeys(names) for leaf in by_name[n]]
    return list({id(task): (task, parent) for task, parent in picked}.values())


def train_data_defaults() -> tuple[str, str]:
    """The recipe's ``--dataset_name`` / ``--dataset_config_name`` defaults (``recipes/mlm_finetune.py``)."""
    from recipes.mlm_finetune import DataArguments

    defaults = {f.name: f.default for f in dataclasses.fields(DataArguments)}
    return defaults["dataset_name"], defaults["dataset_config_name"]


def _command(*args: str) -> str:
    return " ".join([PROGRAM, *(shlex.quote(a) for a in args)])


def plan_items(args: argparse.Namespace) -> list[Item]:
    """The items of the plan ``args`` describes, models first, then the training data, then the tasks."""
    from recipes.sweep import PAPER_MODELS

    items: list[Item] = []
    if "models" in args.only:
        items += [model_item(name) for name in (args.models or PAPER_MODELS)]
    if "train_data" in args.only:
        name, config = args.dataset_name, args.dataset_config_name
        flags = (
            []
            if (name, config) == train_data_defaults()
            else ["--dataset_name", name, "--dataset_config_name", config]
        )
        items.append(train_data_item(name, config, _command("--only", "train_data", *flags)))
    if "tasks" in args.only:
        plan_flags = [] if args.benchmark == DEFAULT_BENCHMARK else ["--benchmark", args.benchmark]
        plan_flags += ["--standard_tasks"] if args.standard_tasks else []
        for task, parent in _pick(
            leaf_tasks(benchmark_tasks(args.benchmark, args.standard_tasks)), args.tasks, args.benchmark
        ):
            command = _command("--only", "tasks", *plan_flags, "--tasks", task.metadata.name)
            items.append(task_item(task, command, parent))
    return items


# ---- check and fill ------------------------------------------------------------------------


def _progress(items, desc: str):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="item", file=sys.stderr)


def check(items: list[Item]) -> dict[str, list[str]]:
    """Item name -> its missing parts (no network: only the local caches are read)."""
    return {f"{item.kind}:{item.name}": item.missing() for item in _progress(items, "checking the cache")}


def _line(status: str, item: Item, detail: str = "") -> str:
    return f"{status:8s} {item.kind:10s} {item.name}" + (f"  ({detail})" if detail else "")


def report(items: list[Item], missing: dict[str, list[str]], fill_all: str) -> str:
    """The listing ``--check`` prints: every item present or missing, and the command for each missing one."""
    lines, n_missing = [], 0
    for item in items:
        parts = missing[f"{item.kind}:{item.name}"]
        if parts:
            n_missing += 1
            lines.append(_line("missing", item, item.note))
            lines += [f"           lacks {part}" for part in parts]
            lines.append(f"           fill: {item.command}")
        else:
            lines.append(_line("present", item, item.note))
    lines.append(f"{len(items)} items: {len(items) - n_missing} present, {n_missing} missing.")
    if n_missing:
        lines.append(f"Fill everything missing on a machine with network (a login node): {fill_all}")
    return "\n".join(lines)


def force_offline() -> None:
    """Make huggingface_hub and datasets read only the local caches (what ``--check`` promises)."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[name] = "1"
    import datasets.config
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True


def fill(items: list[Item]) -> list[str]:
    """Fetch every missing item; the failures (item and cause), [] when all are present afterwards."""
    todo = [item for item in items if item.missing()]
    if todo and not hub.hub_reachable():
        raise SystemExit(
            f"{len(todo)} of {len(items)} items are missing and the Hugging Face Hub is unreachable "
            f"(offline mode or no network). Run this on a machine with network (a login node), then "
            f"copy the cache; `{PROGRAM} --check` lists what is missing."
        )
    failures = []
    for item in _progress(todo, "filling the cache"):
        try:
            item.fill()
        except Exception as err:  # noqa: BLE001 - one item's failure is reported, the others still fetched
            failures.append(f"{item.kind} {item.name}: {type(err).__name__}: {err}")
            continue
        still = item.missing()
        if still:
            failures.append(
                f"{item.kind} {item.name}: loaded, but the cache still lacks {', '.join(still)} "
                "(the installed library reads other files than this check expects)"
            )
    return failures


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROGRAM,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--check",
        action="store_true",
        help=(
            "no network: list what is present and missing, with the command for each; "
            "exit 1 if any is missing"
        ),
    )
    p.add_argument(
        "--only", nargs="+", choices=KINDS, default=list(KINDS), help="the kinds of items (default: all)"
    )
    p.add_argument(
        "--models", nargs="+", help="hub model ids (default: the sweep's grid, recipes.sweep.PAPER_MODELS)"
    )
    p.add_argument("--dataset_name", help="training data set (default: the recipe's, Salesforce/wikitext)")
    p.add_argument("--dataset_config_name", help="its config (default: the recipe's, wikitext-2-raw-v1)")
    p.add_argument(
        "--benchmark",
        default=DEFAULT_BENCHMARK,
        help=f"an mteb.get_benchmark name (default {DEFAULT_BENCHMARK!r})",
    )
    p.add_argument(
        "--standard_tasks",
        action="store_true",
        help=f"{DEFAULT_BENCHMARK}: its own list (CQADupstackRetrieval's 12 forums) instead of the paper's "
        "(CQADupstackTexRetrieval, as run_mteb --paper_tasks)",
    )
    p.add_argument(
        "--tasks", nargs="+", help="only these tasks of the benchmark (an aggregate's name: all its parts)"
    )
    return p


def fill_all_command(argv: Sequence[str]) -> str:
    """This invocation without ``--check``: the command that fills everything it checked."""
    return _command(*(a for a in argv if a != "--check"))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.check:
        force_offline()
    default_name, default_config = train_data_defaults()
    args.dataset_name = args.dataset_name or default_name
    args.dataset_config_name = args.dataset_config_name or default_config
    items = plan_items(args)
    if args.check:
        missing = check(items)
        print(report(items, missing, fill_all_command(argv)))
        return 1 if any(missing.values()) else 0
    failures = fill(items)
    if failures:
        print("Not filled:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print(f"All {len(items)} items are in the cache ({PROGRAM} --check lists them).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
