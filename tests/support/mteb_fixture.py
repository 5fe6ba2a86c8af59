"""Real MTEB task classes, offline: small synthetic data written into a ``datasets`` cache.

With ``HF_HUB_OFFLINE=1`` / ``HF_DATASETS_OFFLINE=1``, ``datasets`` (5.x) loads a hub
dataset only from its Arrow cache ``HF_DATASETS_CACHE/<org>___<name>/<config>/0.0.0/<commit>/``
(``dataset_info.json`` + ``<name>-<split>.arrow``), the folder one online ``load_dataset``
leaves. :func:`write_offline_cache` writes such folders for real MTEB(eng, v1) tasks, in
the repo id and revision the task's metadata names and with the configs, splits and
columns its loader reads (learned from mteb 2.x's task classes and loaders):

* STS (``STSBenchmark``): ``default`` / ``test``: ``sentence1``, ``sentence2``, ``score`` in [0, 5];
* Classification (``Banking77Classification``): ``default`` / ``train`` + ``test``: ``text``, ``label``;
* Clustering (``TwentyNewsgroupsClustering``, legacy v1 format): ``default`` / ``test``: one row
  per cluster set with lists ``sentences`` and ``labels``;
* PairClassification (``SprintDuplicateQuestions``): ``default`` / ``test``: one row of lists
  ``sent1``, ``sent2``, ``labels`` (the task renames ``sent1`` / ``sent2``);
* Reranking (``AskUbuntuDupQuestions``) and Retrieval (``SciFact``, ``CQADupstackTexRetrieval``),
  mteb's retrieval layout: configs ``corpus`` (``_id``, ``title``, ``text``), ``queries``
  (``_id``, ``text``), ``default`` (qrels ``query-id``, ``corpus-id``, ``score``) and, for
  reranking, ``top_ranked`` (``query-id``, ``corpus-ids``: the candidates of each query);
* multilingual tasks: ``AmazonCounterfactualClassification`` the same columns in one config per
  language subset (``en``); ``STS17`` (fast loading) one ``default`` config with a ``lang`` column
  (``en-en``); ``MSMARCO`` its qrels in the ``dev`` split;
* Summarization (``SummEval``): ``default`` / ``test``: ``text``, ``human_summaries``,
  ``machine_summaries``, ``relevance`` (one list entry per machine summary).

Tasks that only MTEB(eng, v2) has (:data:`V2_ONLY_TASKS`): ``FEVERHardNegatives`` (the
hard-negative version of FEVER: its own repo, the retrieval layout) and
``SummEvalSummarization.v2`` (SummEval with mteb #1156's scoring fixed; the same repo and
revision as SummEval, so the same data). :data:`V2_TASKS` are the fixture's tasks of
MTEB(eng, v2): six categories, no Clustering (v2 has only fast ``.v2`` clustering tasks).

The texts are template sentences on a few topics, so a real encoder gets non-trivial
scores; sizes are a few dozen texts per task, so the whole suite runs in seconds.

    from tests.support.mteb_fixture import write_offline_cache, REAL_TASKS
    write_offline_cache(tmp_path / "hf_datasets")   # then point HF_DATASETS_CACHE at it
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

Columns = dict[str, list]
Configs = dict[str, dict[str, Columns]]  # config -> split -> columns

TOPICS = {
    "cooking": ["soup", "bread", "pasta", "oven", "recipe", "garlic", "sauce", "kitchen"],
    "football": ["goal", "striker", "referee", "match", "league", "penalty", "coach", "stadium"],
    "computers": ["kernel", "compiler", "laptop", "keyboard", "software", "server", "driver", "bug"],
    "weather": ["rain", "storm", "forecast", "snow", "wind", "cloud", "sunshine", "thunder"],
}
TEMPLATES = [
    "The {0} and the {1} were discussed at length.",
    "I read an article about the {0} yesterday.",
    "Why does the {0} need a new {1}?",
    "Everyone talks about the {1} near the {0}.",
    "She asked how the {0} changes the {1}.",
]


def _sentences(topic: str, n: int, rng: random.Random) -> list[str]:
    words = TOPICS[topic]
    return [rng.choice(TEMPLATES).format(*rng.sample(words, 2)) for _ in range(n)]


def _topic_texts(n_per_topic: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for label, topic in enumerate(TOPICS):
        texts += _sentences(topic, n_per_topic, rng)
        labels += [label] * n_per_topic
    return texts, labels


def _sts(seed: int = 0, lang: str | None = None) -> Configs:
    rng = random.Random(seed)
    topics = list(TOPICS)
    s1, s2, score = [], [], []
    for i in range(24):
        a = topics[i % len(topics)]
        b = a if i % 3 else topics[(i + 1) % len(topics)]
        s1 += _sentences(a, 1, rng)
        s2 += _sentences(b, 1, rng)
        score.append(round(rng.uniform(3.0, 5.0) if a == b else rng.uniform(0.0, 2.0), 2))
    columns = {"sentence1": s1, "sentence2": s2, "score": score}
    if lang:  # a multilingual task that fast-loads one "default" config and groups it by "lang"
        columns["lang"] = [lang] * len(s1)
    return {"default": {"test": columns}}


def _classification(seed: int = 1, config: str = "default") -> Configs:
    train, train_labels = _topic_texts(10, seed)
    test, test_labels = _topic_texts(6, seed + 100)
    return {
        config: {
            "train": {"text": train, "label": train_labels},
            "test": {"text": test, "label": test_labels},
        }
    }


def _clustering(seed: int = 2) -> Configs:
    rows = {"sentences": [], "labels": []}
    for r in range(2):
        texts, labels = _topic_texts(5, seed + r)
        rows["sentences"].append(texts)
        rows["labels"].append([list(TOPICS)[label] for label in labels])
    return {"default": {"test": rows}}


def _pair_classification(seed: int = 3) -> Configs:
    rng = random.Random(seed)
    topics = list(TOPICS)
    s1, s2, labels = [], [], []
    for i in range(24):
        a = topics[i % len(topics)]
        same = i % 2 == 0
        b = a if same else topics[(i + 2) % len(topics)]
        s1 += _sentences(a, 1, rng)
        s2 += _sentences(b, 1, rng)
        labels.append(int(same))
    return {"default": {"test": {"sent1": [s1], "sent2": [s2], "labels": [labels]}}}


def _retrieval(seed: int = 4, *, top_ranked: bool = False, split: str = "test") -> Configs:
    """Corpus of topic sentences; each query's relevant documents are those of its topic."""
    rng = random.Random(seed)
    corpus = {"_id": [], "title": [], "text": []}
    queries = {"_id": [], "text": []}
    qrels = {"query-id": [], "corpus-id": [], "score": []}
    ranked = {"query-id": [], "corpus-ids": []}
    by_topic: dict[str, list[str]] = {}
    for topic in TOPICS:
        for text in _sentences(topic, 6, rng):
            doc = f"d{len(corpus['_id'])}"
            corpus["_id"].append(doc)
            corpus["title"].append(topic if len(corpus["_id"]) % 2 else "")
            corpus["text"].append(text)
            by_topic.setdefault(topic, []).append(doc)
    docs = corpus["_id"]
    for i, topic in enumerate(TOPICS):
        for j, text in enumerate(_sentences(topic, 2, rng)):
            qid = f"q{i}_{j}"
            queries["_id"].append(qid)
            queries["text"].append(text)
            for doc in by_topic[topic][:3]:
                qrels["query-id"].append(qid)
                qrels["corpus-id"].append(doc)
                qrels["score"].append(1)
            if top_ranked:
                others = [d for d in docs if d not in by_topic[topic]]
                ranked["query-id"].append(qid)
                ranked["corpus-ids"].append(by_topic[topic][:4] + rng.sample(others, 4))
    configs: Configs = {
        "corpus": {"corpus": corpus},
        "queries": {"queries": queries},
        "default": {split: qrels},
    }
    if top_ranked:
        configs["top_ranked"] = {split: ranked}
    return configs


def _summarization(seed: int = 5) -> Configs:
    rng = random.Random(seed)
    rows = {"id": [], "text": [], "human_summaries": [], "machine_summaries": [], "relevance": []}
    for i, topic in enumerate(TOPICS):
        other = list(TOPICS)[(i + 1) % len(TOPICS)]
        rows["id"].append(f"doc{i}")
        rows["text"].append(" ".join(_sentences(topic, 4, rng)))
        rows["human_summaries"].append(_sentences(topic, 2, rng))
        machine = _sentences(topic, 3, rng) + _sentences(other, 3, rng)
        rows["machine_summaries"].append(machine)
        rows["relevance"].append(
            [round(rng.uniform(3.5, 5.0), 2) for _ in range(3)]
            + [round(rng.uniform(1.0, 2.5), 2) for _ in range(3)]
        )
    return {"default": {"test": rows}}


# Task name -> writer of its configs. One task per MTEB(eng, v1) category, a reranking task
# with top_ranked candidates, and the paper's CQADupstackTexRetrieval (--paper_tasks).
BUILDERS: dict[str, Callable[[], Configs]] = {
    "STSBenchmark": _sts,
    "Banking77Classification": _classification,
    "TwentyNewsgroupsClustering": _clustering,
    "SprintDuplicateQuestions": _pair_classification,
    "AskUbuntuDupQuestions": lambda: _retrieval(6, top_ranked=True),
    "SciFact": lambda: _retrieval(7),
    "SummEval": _summarization,
    "CQADupstackTexRetrieval": lambda: _retrieval(8),
    # multilingual tasks read one config per language subset; MSMARCO evaluates its dev split
    "STS17": lambda: _sts(9, lang="en-en"),
    "AmazonCounterfactualClassification": lambda: _classification(10, config="en"),
    "MSMARCO": lambda: _retrieval(11, split="dev"),
    # only in MTEB(eng, v2): a hard-negative retrieval task and a ".v2" task
    "FEVERHardNegatives": lambda: _retrieval(12),
    "SummEvalSummarization.v2": _summarization,
}
REAL_TASKS = tuple(BUILDERS)
V2_ONLY_TASKS = ("FEVERHardNegatives", "SummEvalSummarization.v2")
# The tasks of the standard suite (MTEB(eng, v1) has the CQADupstack aggregate instead).
STANDARD_TASKS = tuple(t for t in REAL_TASKS if t != "CQADupstackTexRetrieval" and t not in V2_ONLY_TASKS)
# The fixture's tasks that MTEB(eng, v2) has (checked against mteb in tests/test_mteb_real.py).
V2_TASKS = (
    "STSBenchmark",
    "STS17",
    "Banking77Classification",
    "AmazonCounterfactualClassification",
    "SprintDuplicateQuestions",
    "AskUbuntuDupQuestions",
    *V2_ONLY_TASKS,
)
# MTEB's seven task categories, written out here (not taken from evaluation.scores) so the tests
# check the code's categories against an independent list.
CATEGORIES = {
    "Classification",
    "Clustering",
    "PairClassification",
    "Reranking",
    "Retrieval",
    "STS",
    "Summarization",
}


def task_dataset(name: str) -> tuple[str, str]:
    """(repo id, revision) that mteb's task ``name`` loads."""
    import mteb

    dataset = mteb.get_task(name).metadata.dataset
    return dataset["path"], dataset["revision"]


def cache_folder(cache_dir: Path, repo_id: str) -> Path:
    """``<cache>/<org>___<name>``, as ``datasets`` names a hub dataset's cache folder."""
    from datasets.naming import camelcase_to_snakecase

    org, name = repo_id.split("/")
    return Path(cache_dir) / f"{org}___{camelcase_to_snakecase(name)}"


def write_config(
    cache_dir: Path, repo_id: str, config: str, revision: str, splits: Mapping[str, Columns]
) -> Path:
    """Write one config of ``repo_id`` at ``revision`` as ``load_dataset`` would have cached it."""
    from datasets import Dataset, DatasetInfo, SplitDict, SplitInfo
    from datasets.arrow_writer import ArrowWriter

    folder = cache_folder(cache_dir, repo_id)
    dataset_name = folder.name.split("___", 1)[1]
    folder = folder / config / "0.0.0" / revision
    folder.mkdir(parents=True, exist_ok=True)
    split_dict = SplitDict(dataset_name=dataset_name)
    features = None
    for split, columns in splits.items():
        table = Dataset.from_dict(columns)
        features = table.features
        with ArrowWriter(path=str(folder / f"{dataset_name}-{split}.arrow"), features=features) as writer:
            writer.write_table(table.data.table)
            n_rows, n_bytes = writer.finalize()
        split_dict.add(
            SplitInfo(name=split, num_bytes=n_bytes, num_examples=n_rows, dataset_name=dataset_name)
        )
    DatasetInfo(
        features=features, splits=split_dict, config_name=config, dataset_name=dataset_name, version="0.0.0"
    ).write_to_directory(str(folder))
    return folder


def write_offline_cache(
    cache_dir: str | Path,
    tasks: Iterable[str] = REAL_TASKS,
    *,
    revision: str | None = None,
    skip_configs: Iterable[str] = (),
) -> Path:
    """Write every config of ``tasks`` into the datasets cache ``cache_dir``; return it.

    ``revision`` replaces the tasks' own revision (to test the revision guard);
    ``skip_configs`` leaves configs out (e.g. ``top_ranked``, as an incomplete cache would).
    """
    cache_dir = Path(cache_dir)
    skip = set(skip_configs)
    written: set[tuple[str, str]] = set()  # SummEval and SummEvalSummarization.v2 share one dataset
    for name in tasks:
        repo_id, task_revision = task_dataset(name)
        if (repo_id, task_revision) in written:
            continue
        written.add((repo_id, task_revision))
        for config, splits in BUILDERS[name]().items():
            if config not in skip:
                write_config(cache_dir, repo_id, config, revision or task_revision, splits)
    return cache_dir
