"""Offline MTEB tasks on real human judgements: SimLex-999, WordSim-353, Pang-Lee polarity.

Unlike mteb's mock tasks and the project's hand-written tiny tasks (code-path checks, see
``evaluation.tasks.CODE_PATH_CHECKS``), these are published data sets scored by people, large
enough that two different models do not tie. Their files come with the gensim wheel (PyPI
``gensim``, in ``gensim/test/test_data/``, installed by the ``offline`` extra) and are read
from there at run time, not copied into this repository; each task's ``dataset.revision`` is
the sha256 of its file, so another gensim with another copy gives results a new revision.

* :class:`SimLex999` and :class:`WordSim353` are word-similarity benchmarks run as MTEB STS:
  each word is encoded as a one-word text, the cosine of the two embeddings is compared with
  the mean human rating (0-10) by Spearman correlation (main score ``cosine_spearman``,
  exactly mteb's ``AbsTaskSTS``).
* :class:`PangLeePolarityClassification` is MTEB Classification (logistic regression on the
  frozen embeddings, main score accuracy). The file holds only 200 sentences (100 negative,
  100 positive) and no train / test split, so the task uses mteb's own cross-validation
  protocol (``is_cross_validation``): 10 folds (``KFold``, shuffled with the task seed), each
  trains on the other 180 sentences, all of them (``samples_per_label`` covers every label's
  count), and is scored on its 20; the main score is the mean accuracy over the 10 folds.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import cache
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from mteb.abstasks.classification import AbsTaskClassification
from mteb.abstasks.sts import AbsTaskSTS

from evaluation.offline_tasks._metadata import DataSource, task_metadata

__all__ = [
    "HUMAN_JUDGED_TASK_CLASSES",
    "GensimDataError",
    "PangLeePolarityClassification",
    "SimLex999",
    "WordSim353",
    "gensim_data_dir",
]

_INSTALL = 'pip install gensim (or pip install -e ".[offline]")'


class GensimDataError(FileNotFoundError):
    """The gensim test-data file a task reads is not installed."""


@cache
def gensim_data_dir() -> Path | None:
    """``gensim/test/test_data`` of the installed gensim, found without importing gensim (None if absent)."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "test" / "test_data"


def _path(filename: str) -> Path:
    folder = gensim_data_dir()
    if folder is None:
        raise GensimDataError(
            f"gensim is not installed, and the offline task data {filename} comes with it: {_INSTALL}"
        )
    path = folder / filename
    if not path.is_file():
        raise GensimDataError(
            f"{path} not found: this gensim does not ship its test data; reinstall it: {_INSTALL}"
        )
    return path


@cache
def _revision(filename: str) -> str:
    """Short sha256 of the data file; ``gensim-missing`` when gensim is not installed (loading then fails)."""
    try:
        return hashlib.sha256(_path(filename).read_bytes()).hexdigest()[:12]
    except GensimDataError:
        return "gensim-missing"


def read_word_pairs(filename: str) -> list[dict[str, Any]]:
    """``word1 <tab> word2 <tab> mean human score`` lines ('#' comments skipped) as STS rows."""
    rows = []
    for n, line in enumerate(_path(filename).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{filename} line {n}: expected word1<TAB>word2<TAB>score, got {line!r}")
        rows.append({"sentence1": parts[0].strip(), "sentence2": parts[1].strip(), "score": float(parts[2])})
    return rows


def read_polarity(filename: str = "pang_lee_polarity.cor") -> list[dict[str, Any]]:
    """``__label__neg|__label__pos sentence`` lines as classification rows (0 = negative, 1 = positive).

    The file is Windows-1252, as Pang and Lee's release (``clich\xe9s``, ``\x97`` for an em dash).
    """
    labels = {"__label__neg": 0, "__label__pos": 1}
    rows = []
    for n, line in enumerate(_path(filename).read_text(encoding="cp1252").splitlines(), 1):
        if not line.strip():
            continue
        label, _, text = line.partition(" ")
        if label not in labels or not text.strip():
            raise ValueError(
                f"{filename} line {n}: expected '__label__neg|__label__pos <sentence>', got {line!r}"
            )
        rows.append({"text": text.strip(), "label": labels[label]})
    return rows


_SOURCE = DataSource(
    "local/gensim-test-data", license="not specified", sample_creation="found", revision=_revision
)


class _WordPairSTS(AbsTaskSTS):
    """Word pairs with a mean human rating 0-10, scored as MTEB STS (cosine Spearman)."""

    filename: str
    min_score = 0
    max_score = 10

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Read the pairs from gensim's test data into a ``test`` split (sentence1, sentence2, score)."""
        if self.data_loaded:
            return
        self.dataset = DatasetDict({"test": Dataset.from_list(read_word_pairs(self.filename))})
        self.data_loaded = True


class SimLex999(_WordPairSTS):
    """SimLex-999 (Hill, Reichart and Korhonen 2015): 999 pairs rated for similarity, not relatedness."""

    filename = "simlex999.txt"
    metadata = task_metadata(
        _SOURCE,
        "simlex999.txt",
        name="SimLex999",
        task_type="STS",
        main_score="cosine_spearman",
        description=(
            "SimLex-999: 999 English word pairs (nouns, verbs, adjectives) with the mean rating of about 50 "
            "annotators each for similarity (0-10), relatedness explicitly not rewarded. Each word is "
            "embedded alone; cosine vs rating, Spearman. "
            "File: gensim/test/test_data/simlex999.txt (PyPI gensim)."
        ),
        reference="https://fh295.github.io/simlex.html",
        annotations="human-annotated",
        date=("2014-01-01", "2015-12-31"),
        domains=["Written"],
        bibtex="""@article{hill2015simlex,
  author = {Hill, Felix and Reichart, Roi and Korhonen, Anna},
  journal = {Computational Linguistics},
  number = {4},
  pages = {665--695},
  title = {{SimLex-999}: Evaluating Semantic Models With (Genuine) Similarity Estimation},
  volume = {41},
  year = {2015},
}""",
    )


class WordSim353(_WordPairSTS):
    """WordSim-353 (Finkelstein et al. 2002): 353 pairs rated for relatedness."""

    filename = "wordsim353.tsv"
    metadata = task_metadata(
        _SOURCE,
        "wordsim353.tsv",
        name="WordSim353",
        task_type="STS",
        main_score="cosine_spearman",
        description=(
            "WordSimilarity-353: 353 English word pairs with the mean rating of 13-16 annotators each for "
            "similarity / relatedness (0-10). Each word is embedded alone; cosine vs rating, Spearman. "
            "File: gensim/test/test_data/wordsim353.tsv (PyPI gensim)."
        ),
        reference="https://gabrilovich.com/resources/data/wordsim353/wordsim353.html",
        annotations="human-annotated",
        date=("2001-01-01", "2002-01-31"),
        domains=["Written"],
        bibtex="""@article{finkelstein2002placing,
  author = {Finkelstein, Lev and Gabrilovich, Evgeniy and Matias, Yossi and Rivlin, Ehud and
    Solan, Zach and Wolfman, Gadi and Ruppin, Eytan},
  journal = {ACM Transactions on Information Systems},
  number = {1},
  pages = {116--131},
  title = {Placing Search in Context: The Concept Revisited},
  volume = {20},
  year = {2002},
}""",
    )


class PangLeePolarityClassification(AbsTaskClassification):
    """200 movie-review sentences (Pang and Lee 2005), positive / negative, 10-fold cross-validation."""

    metadata = task_metadata(
        _SOURCE,
        "pang_lee_polarity.cor",
        name="PangLeePolarityClassification",
        task_type="Classification",
        main_score="accuracy",
        description=(
            "200 English movie-review snippets (Rotten Tomatoes) from Pang and Lee's sentence polarity data "
            "set v1.0, 100 negative and 100 positive. MTEB classification protocol (logistic regression on "
            "the embeddings) with 10-fold cross-validation, since there is no train/test split: mean "
            "accuracy over the folds. File: gensim/test/test_data/pang_lee_polarity.cor (PyPI gensim)."
        ),
        reference="https://www.cs.cornell.edu/people/pabo/movie-review-data/",
        annotations="derived",
        date=("2002-01-01", "2005-06-30"),
        domains=["Reviews", "Written"],
        bibtex="""@inproceedings{pang2005seeing,
  author = {Pang, Bo and Lee, Lillian},
  booktitle = {Proceedings of the 43rd Annual Meeting of the Association for Computational Linguistics},
  pages = {115--124},
  title = {Seeing Stars: Exploiting Class Relationships for Sentiment Categorization with Respect to
    Rating Scales},
  year = {2005},
}""",
    )
    # mteb's cross-validation path: folds over the one split, every training sentence used.
    is_cross_validation = True
    n_splits = 10
    n_experiments = 10
    train_split = "test"
    samples_per_label = 200

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Read the 200 labelled sentences into the one ``test`` split the folds are drawn from."""
        if self.data_loaded:
            return
        self.dataset = DatasetDict({"test": Dataset.from_list(read_polarity())})
        self.data_loaded = True


HUMAN_JUDGED_TASK_CLASSES = (SimLex999, WordSim353, PangLeePolarityClassification)
