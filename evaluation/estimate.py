"""What a plan (checkpoints x benchmark) will cost before it runs, from mteb's task metadata.

Nothing is downloaded or loaded: every figure comes from ``TaskMetadata.descriptive_stats``
(which mteb ships with each task) and the task's own evaluation parameters, read the way
mteb 2.x's evaluators encode:

* Retrieval / Reranking: every document of the corpus and every query of each evaluated
  split (a hard-negative task such as FEVERHardNegatives has a much smaller corpus);
* STS / PairClassification: both texts of every pair;
* Classification: the evaluated texts plus the training texts mteb undersamples, at most
  ``n_experiments x samples_per_label x labels`` (the union over the experiments, so an upper
  bound), or all of them when the training split is smaller;
* Clustering: every text (the v1 "legacy" tasks), or the sample the fast (``.v2``) tasks embed,
  ``max_document_to_embed`` or ``int(max_fraction_of_documents_to_embed x texts)``;
* Summarization: the human and the machine summaries (the source text is not encoded);
* an aggregate (CQADupstackRetrieval): the sum of its parts.

Only the subsets the benchmark evaluates are counted (``hf_subset_descriptive_stats``). The
number of texts of a kind is ``total_text_length / average_text_length`` of its statistics
block, which mteb computes from the same list. Tokens per text are
``min(average characters / chars_per_token + 2 special tokens, max_seq_length)``: since
truncation caps each text, this is an upper bound for the given characters per token.

    device-hours = checkpoints x tokens per checkpoint / tokens per second / 3600

k-means, retrieval search and data loading are not in it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mteb.abstasks.aggregated_task import AbsTaskAggregate
from mteb.abstasks.classification import AbsTaskClassification
from mteb.abstasks.clustering import AbsTaskClustering

# Characters per token of the bert-base-uncased WordPiece vocabulary (all-MiniLM-L6-v2's) on
# real English prose, the bundled Wikipedia sample recipes/sample_data/wiki.train.raw:
# 2,230,439 characters / 462,584 tokens = 4.82 (special tokens not counted). With a
# checkpoint, run_mteb --estimate measures its own tokenizer on wiki.valid.raw instead
# (measure_chars_per_token; 4.87 for this vocabulary).
DEFAULT_CHARS_PER_TOKEN = 4.82
SAMPLE_TEXT = Path(__file__).resolve().parents[1] / "recipes" / "sample_data" / "wiki.valid.raw"
SPECIAL_TOKENS = 2  # [CLS] ... [SEP] (<s> ... </s>) around every text
DEFAULT_MAX_SEQ_LENGTH = 512
# An assumption, not a measurement (no GPU was available to this project): a base-size encoder
# in fp32 on one data-centre GPU. State a measured speed with --tokens_per_second
# (run_mteb prints each task's sentences/s; benchmarks/encode_throughput.py measures tokens/s).
ASSUMED_TOKENS_PER_SECOND = 100_000.0


@dataclass(frozen=True)
class TextBlock:
    """One kind of text of one split and subset (e.g. the corpus of ArguAna's test split)."""

    name: str
    texts: int
    characters: int

    def tokens(self, chars_per_token: float, max_seq_length: int) -> float:
        """Tokens to encode: texts x min(mean characters / chars_per_token + special, max_seq_length)."""
        if not self.texts:
            return 0.0
        per_text = self.characters / self.texts / chars_per_token + SPECIAL_TOKENS
        return self.texts * min(per_text, max_seq_length)


@dataclass
class TaskSize:
    """What one checkpoint encodes for one task."""

    task: str
    category: str
    blocks: list[TextBlock] = field(default_factory=list)
    missing: str | None = None  # why no figure could be given (no descriptive statistics)

    @property
    def texts(self) -> int:
        return sum(b.texts for b in self.blocks)

    @property
    def characters(self) -> int:
        return sum(b.characters for b in self.blocks)

    def tokens(self, chars_per_token: float, max_seq_length: int) -> float:
        return sum(b.tokens(chars_per_token, max_seq_length) for b in self.blocks)


def _text_block(
    name: str, stats: Mapping[str, Any] | None, scale: float = 1.0, cap: int | None = None
) -> TextBlock | None:
    """A block from mteb's ``TextStatistics`` (total / average length), optionally subsampled."""
    if not isinstance(stats, Mapping):
        return None
    total, average = stats.get("total_text_length"), stats.get("average_text_length")
    if not total or not average:
        return None
    texts = round(total / average)
    kept = min(texts, cap) if cap is not None else math.floor(texts * scale) if scale != 1.0 else texts
    return TextBlock(name, kept, round(total * kept / texts))


def _encoded_keys(task, split_stats: Mapping[str, Any]) -> list[str]:
    """The ``*_statistics`` text blocks of a split that mteb encodes for this task type."""
    keys = [
        k
        for k, v in split_stats.items()
        if k.endswith("_statistics") and isinstance(v, Mapping) and "total_text_length" in v
    ]
    if task.metadata.type == "Summarization":  # the summaries are encoded, not the source text
        keys = [k for k in keys if k != "text_statistics"]
    return keys


def _subset_stats(task, split_stats: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(subset, statistics) for the subsets the task evaluates; the whole split when mteb has no
    per-subset statistics (a monolingual task) or the split holds only the evaluated subsets."""
    per_subset = split_stats.get("hf_subset_descriptive_stats")
    subsets = list(getattr(task, "hf_subsets", None) or [])
    if isinstance(per_subset, Mapping) and subsets and set(subsets) <= set(per_subset):
        return [(s, per_subset[s]) for s in subsets]
    return [("", split_stats)]


def _clustering_limit(task) -> tuple[float, int | None]:
    """(fraction, cap) of the texts a fast clustering task embeds; (1, None) for legacy tasks."""
    if not isinstance(task, AbsTaskClustering):
        return 1.0, None
    if task.max_document_to_embed is not None:
        return 1.0, int(task.max_document_to_embed)
    if task.max_fraction_of_documents_to_embed is not None:
        return float(task.max_fraction_of_documents_to_embed), None
    return 1.0, None


def _training_block(task, stats: Mapping[str, Any], subset: str) -> TextBlock | None:
    """The undersampled training texts of a classification task (None: cross-validation)."""
    train_split = getattr(task, "train_split", None)
    if (
        not isinstance(task, AbsTaskClassification)
        or train_split in task.eval_splits
        or train_split not in stats
    ):
        return None
    train = stats[train_split]
    if subset:
        train = (train.get("hf_subset_descriptive_stats") or {}).get(subset, train)
    block = _text_block(f"{train_split}{'/' + subset if subset else ''}/text", train.get("text_statistics"))
    labels = (train.get("label_statistics") or {}).get("unique_labels")
    if block is None or not labels:
        return None
    cap = task.n_experiments * task.samples_per_label * int(labels)
    return _text_block(block.name, train.get("text_statistics"), cap=cap)


def task_size(task) -> TaskSize:
    """The texts and characters one checkpoint encodes for ``task`` (see the module docstring)."""
    size = TaskSize(task.metadata.name, task.metadata.type)
    if isinstance(task, AbsTaskAggregate):
        for part in task.metadata.tasks:
            sub = task_size(part)
            if sub.missing:
                size.missing = f"{part.metadata.name}: {sub.missing}"
            size.blocks += [
                TextBlock(f"{part.metadata.name}/{b.name}", b.texts, b.characters) for b in sub.blocks
            ]
        return size
    stats = task.metadata.descriptive_stats or {}
    fraction, cap = _clustering_limit(task)
    for split in task.eval_splits:
        if split not in stats:
            size.missing = f"mteb has no descriptive statistics for split {split!r}"
            continue
        for subset, sub_stats in _subset_stats(task, stats[split]):
            where = f"{split}{'/' + subset if subset else ''}"
            for key in _encoded_keys(task, sub_stats):
                block = _text_block(
                    f"{where}/{key.removesuffix('_statistics')}", sub_stats[key], fraction, cap
                )
                if block is not None:
                    size.blocks.append(block)
            train = _training_block(task, stats, subset)
            if train is not None:
                size.blocks.append(train)
    if not size.blocks and size.missing is None:
        size.missing = "mteb has no text statistics for it"
    return size


def measure_chars_per_token(tokenizer_dir: str | Path, sample: Path = SAMPLE_TEXT) -> float:
    """Characters per token of a checkpoint's tokenizer on the bundled English sample text
    (special tokens not counted): a measurement of this tokenizer, not of the benchmark's texts."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    lines = [
        line.strip()
        for line in sample.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("=")
    ]
    tokens = sum(len(ids) for ids in tokenizer(lines, add_special_tokens=False)["input_ids"])
    return sum(len(line) for line in lines) / tokens


@dataclass(frozen=True)
class TokenSetting:
    """How one group of checkpoints turns characters into tokens."""

    chars_per_token: float
    max_seq_length: int
    source: str  # where chars_per_token comes from

    @property
    def label(self) -> str:
        return f"tokens@{self.chars_per_token:.2f}c/t,{self.max_seq_length}"


@dataclass
class PlanEstimate:
    """A plan's cost: per-task sizes for one checkpoint, and the totals over all checkpoints
    (grouped by their tokenizer's characters per token and their max_seq_length)."""

    benchmark: str
    sizes: list[TaskSize]
    groups: dict[TokenSetting, int]  # setting -> number of checkpoints
    tokens_per_second: float
    speed_source: str

    @property
    def checkpoints(self) -> int:
        return sum(self.groups.values())

    def tokens_per_checkpoint(self, setting: TokenSetting) -> float:
        return sum(s.tokens(setting.chars_per_token, setting.max_seq_length) for s in self.sizes)

    @property
    def tokens(self) -> float:
        """Tokens of the whole plan."""
        return sum(n * self.tokens_per_checkpoint(setting) for setting, n in self.groups.items())

    @property
    def gpu_hours(self) -> float:
        return self.tokens / self.tokens_per_second / 3600


def token_setting(
    chars_per_token: float | None = None, max_seq_length: int | None = None, source: str | None = None
) -> TokenSetting:
    """A checkpoint's setting; the measured default characters per token when none is given."""
    for label, value in (("--chars_per_token", chars_per_token), ("--max_seq_length", max_seq_length)):
        if value is not None and value <= 0:
            raise ValueError(f"{label} must be positive, got {value}")
    return TokenSetting(
        chars_per_token or DEFAULT_CHARS_PER_TOKEN,
        max_seq_length or DEFAULT_MAX_SEQ_LENGTH,
        source
        or ("stated" if chars_per_token else "bert-base-uncased vocabulary on the bundled English sample"),
    )


def estimate_plan(
    tasks: Sequence,
    *,
    benchmark: str,
    groups: Mapping[TokenSetting, int],
    tokens_per_second: float | None = None,
    speed_source: str = "stated",
) -> PlanEstimate:
    """The cost of evaluating the checkpoints of ``groups`` on ``tasks`` (nothing is loaded);
    ``speed_source`` says where a given ``tokens_per_second`` comes from (e.g. a measurement).

    Raises:
        ValueError: no checkpoint, or a non-positive speed.
    """
    if not groups or min(groups.values()) <= 0:
        raise ValueError("the plan has no checkpoint: pass --manifest, --model or --checkpoints N")
    if tokens_per_second is not None and tokens_per_second <= 0:
        raise ValueError(f"--tokens_per_second must be positive, got {tokens_per_second}")
    return PlanEstimate(
        benchmark=benchmark,
        sizes=[task_size(t) for t in tasks],
        groups=dict(groups),
        tokens_per_second=tokens_per_second or ASSUMED_TOKENS_PER_SECOND,
        speed_source=speed_source
        if tokens_per_second
        else "ASSUMED for a base-size encoder, fp32, one data-centre GPU: "
        "state yours with --tokens_per_second",
    )


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f}"


def _hours(value: float) -> str:
    return f"{value:,.1f}" if value >= 10 else f"{value:.3g}"


def format_estimate(plan: PlanEstimate) -> str:
    """The per-task table and the plan's totals, as printed by ``run_mteb --estimate``.

    One row per task: ``task category texts characters tokens...`` (integers, per checkpoint),
    one tokens column per group of checkpoints (characters per token, max_seq_length).
    """
    settings = list(plan.groups)
    rows = [
        (
            s.task,
            s.category,
            str(s.texts),
            str(s.characters),
            *(str(round(s.tokens(g.chars_per_token, g.max_seq_length))) for g in settings),
        )
        for s in plan.sizes
        if s.blocks
    ]
    header = ("task", "category", "texts", "characters", *(g.label for g in settings))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        f"Estimate: {plan.checkpoints} checkpoint(s) x {plan.benchmark} ({len(plan.sizes)} tasks); "
        f"texts, characters and tokens per checkpoint:",
        "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
    ]
    lines += [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    reasons: dict[str, list[str]] = {}
    for size in plan.sizes:
        if size.missing:
            reasons.setdefault(size.missing, []).append(size.task)
    for reason, names in reasons.items():
        lines.append(f"Not counted ({reason}): {', '.join(names)}")
    texts = sum(s.texts for s in plan.sizes)
    chars = sum(s.characters for s in plan.sizes)
    lines.append(f"Per checkpoint: {_si(texts)} texts, {_si(chars)} characters")
    for setting, n in plan.groups.items():
        tokens = plan.tokens_per_checkpoint(setting)
        top = (
            ", ".join(
                f"{s.task} {100 * s.tokens(setting.chars_per_token, setting.max_seq_length) / tokens:.0f} %"
                for s in largest(plan.sizes, setting)
            )
            if tokens
            else "-"
        )
        lines.append(
            f"  {n} checkpoint(s) at {setting.chars_per_token:.2f} characters/token ({setting.source}), "
            f"at most {setting.max_seq_length} tokens per text: {_si(tokens)} tokens each; most: {top}"
        )
    lines += [
        f"Encode speed: {plan.tokens_per_second:,.0f} tokens/s ({plan.speed_source})",
        f"Plan: {_si(plan.tokens)} tokens / {plan.tokens_per_second:,.0f} tokens/s / 3600 = "
        f"{_hours(plan.gpu_hours)} GPU-hours "
        "(encoding only: k-means, retrieval search and data loading come on top)",
    ]
    return "\n".join(lines)


def largest(sizes: Iterable[TaskSize], setting: TokenSetting, n: int = 4) -> list[TaskSize]:
    """The ``n`` tasks with the most tokens at ``setting`` (where the time goes)."""
    return sorted(
        sizes, key=lambda s: s.tokens(setting.chars_per_token, setting.max_seq_length), reverse=True
    )[:n]
