"""Small MTEB tasks the project ships, loaded from JSON files next to this module.

They run the real mteb evaluators (STS, Classification, Retrieval) on real English
sentences written for this project (see ``data/SOURCE.md``), with no hub access.
Each task's ``dataset.revision`` is a content hash of its data file, so editing a
file gives results a new dataset revision.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from mteb.abstasks.classification import AbsTaskClassification
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata

from evaluation.offline_tasks._metadata import DataSource, task_metadata

DATA_DIR = Path(__file__).parent / "data"

__all__ = [
    "DATA_DIR",
    "LOCAL_TASK_CLASSES",
    "TinyEnglishClassification",
    "TinyEnglishRetrieval",
    "TinyEnglishSTS",
]


@cache
def _file_revision(filename: str) -> str:
    """Short sha256 of a data file, used as the task's dataset revision."""
    return hashlib.sha256((DATA_DIR / filename).read_bytes()).hexdigest()[:12]


_SOURCE = DataSource(
    "local/adatamw-offline", license="apache-2.0", sample_creation="created", revision=_file_revision
)
_PAPER = "https://arxiv.org/abs/2412.18790"


def _hand_written_task(filename: str, **fields: Any) -> TaskMetadata:
    """The metadata of a task over ``filename``: what every task here shares (sentences written
    for this project in 2025, expert-annotated, the paper as reference) and its own ``fields``."""
    return task_metadata(
        _SOURCE,
        filename,
        reference=_PAPER,
        annotations="expert-annotated",
        date=("2025-01-01", "2025-01-01"),
        domains=["Written"],
        **fields,
    )


def _read(filename: str) -> dict[str, Any]:
    with (DATA_DIR / filename).open(encoding="utf-8") as handle:
        return json.load(handle)


class TinyEnglishSTS(AbsTaskSTS):
    """24 hand-written English sentence pairs scored 0-5."""

    metadata = _hand_written_task(
        "tiny_sts.json",
        name="TinyEnglishSTS",
        task_type="STS",
        main_score="cosine_spearman",
        description="Hand-written English sentence pairs with 0-5 similarity scores (offline smoke task).",
    )
    min_score = 0
    max_score = 5

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Read the pairs into a DatasetDict with sentence1/sentence2/score columns."""
        if self.data_loaded:
            return
        rows = _read("tiny_sts.json")["test"]
        self.dataset = DatasetDict({"test": Dataset.from_list(rows)})
        self.data_loaded = True


class TinyEnglishClassification(AbsTaskClassification):
    """Four-topic sentence classification (sport, cooking, weather, computing)."""

    metadata = _hand_written_task(
        "tiny_classification.json",
        name="TinyEnglishClassification",
        task_type="Classification",
        main_score="accuracy",
        description="Hand-written English sentences labelled with one of four topics (offline smoke task).",
    )
    samples_per_label = 8

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Read train/test splits; labels become integer ids in the file's label order."""
        if self.data_loaded:
            return
        raw = _read("tiny_classification.json")
        label_id = {label: i for i, label in enumerate(raw["labels"])}
        self.dataset = DatasetDict(
            {
                split: Dataset.from_list(
                    [{"text": r["text"], "label": label_id[r["label"]]} for r in raw[split]]
                )
                for split in ("train", "test")
            }
        )
        self.data_loaded = True


class TinyEnglishRetrieval(AbsTaskRetrieval):
    """Ten questions over twenty short passages."""

    metadata = _hand_written_task(
        "tiny_retrieval.json",
        name="TinyEnglishRetrieval",
        task_type="Retrieval",
        main_score="ndcg_at_10",
        description="Hand-written English questions over a 20-passage corpus (offline smoke task).",
    )

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Build mteb's retrieval split (corpus, queries, qrels) from the JSON file."""
        if self.data_loaded:
            return
        raw = _read("tiny_retrieval.json")
        split = RetrievalSplitData(
            corpus=Dataset.from_list(raw["corpus"]),
            queries=Dataset.from_list([{"id": q["id"], "text": q["text"]} for q in raw["queries"]]),
            relevant_docs={q["id"]: {doc: 1 for doc in q["relevant"]} for q in raw["queries"]},
            top_ranked=None,
        )
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True


LOCAL_TASK_CLASSES = (TinyEnglishSTS, TinyEnglishClassification, TinyEnglishRetrieval)
