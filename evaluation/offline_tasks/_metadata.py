"""The one factory of the offline tasks' ``TaskMetadata``: what every local task shares (text to
text, English, one test split), and what differs by where its data comes from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mteb.abstasks.task_metadata import TaskMetadata


@dataclass(frozen=True)
class DataSource:
    """Where the data files of a family of local tasks come from."""

    path: str  #: the ``dataset.path`` prefix, e.g. ``local/adatamw-offline``
    license: str
    sample_creation: str  #: mteb's ``sample_creation``: ``"created"``, ``"found"``, ...
    revision: Callable[[str], str]  #: data file name -> content hash (the dataset revision)


def task_metadata(
    source: DataSource,
    filename: str,
    *,
    name: str,
    task_type: str,
    main_score: str,
    description: str,
    reference: str,
    annotations: str,
    date: tuple[str, str],
    domains: list[str],
    bibtex: str = "",
) -> TaskMetadata:
    """The ``TaskMetadata`` of the local task ``name`` reading ``filename`` of ``source``."""
    return TaskMetadata(
        name=name,
        type=task_type,
        main_score=main_score,
        description=description,
        reference=reference,
        dataset={"path": f"{source.path}/{filename}", "revision": source.revision(filename)},
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        date=date,
        domains=domains,
        task_subtypes=[],
        license=source.license,
        annotations_creators=annotations,
        dialect=[],
        sample_creation=source.sample_creation,
        bibtex_citation=bibtex,
    )
