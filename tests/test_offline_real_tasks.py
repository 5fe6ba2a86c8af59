"""The offline default on real data (issue 15).

* the bundled text sample is English Wikipedia in WikiText layout (recipes/wiki_sample.py):
  headings and paragraphs, no markup, split by article, reproducible from gensim's dump excerpt;
* the human-judged offline tasks (evaluation/offline_tasks/human_judged.py): SimLex-999 and
  WordSim-353 as STS, Pang-Lee polarity as Classification with 10-fold cross-validation; two
  different random models score differently on every one (no saturated or tied score);
* the report keeps mteb's mock tasks and the tiny tasks (code-path checks) out of the win rates
  and category figures, and lists them apart (evaluation/code_path.py);
* the seed-to-seed spread of two demo runs (evaluation/seed_spread.py).
"""

from __future__ import annotations

import hashlib
import re

import pandas as pd
import pytest

from evaluation import report
from evaluation.code_path import CODE_PATH_CHECKS
from evaluation.offline_tasks.human_judged import (
    HUMAN_JUDGED_TASK_CLASSES,
    PangLeePolarityClassification,
    SimLex999,
    WordSim353,
    gensim_data_dir,
)
from evaluation.seed_spread import seed_spread
from recipes import hub, wiki_sample

needs_gensim = pytest.mark.skipif(
    gensim_data_dir() is None, reason="gensim (the offline extra) is not installed"
)
MARKUP = re.compile(r"\[\[|\]\]|\{\{|\}\}|\{\||<ref|</?[a-z]+[ >/]|'''|''|&[a-z]+;|https?://|\|")


# ---- the Wikipedia text ---------------------------------------------------------------------

PAGE = """{{Short description|Test page}}
{{Infobox thing
| name = Thing
| image = {{nested|template}}
}}
[[File:Thing.png|thumb|A [[caption]] with a link]]
'''Thing''' is a [[concept|notion]] studied in [[philosophy]].<ref name="a">{{cite book|title=Ref}}</ref>
It was named by [http://example.org Someone] in 1900 &ndash; see <!-- hidden --> below.

== History ==
{| class="wikitable"
|-
| cell || other cell
|}
The history of the thing is long and has many parts.<ref>Plain reference</ref>

* a list item that goes away
# another one

=== Early period ===
In the early period the thing was mostly ignored by everyone.

== See also ==
* [[Other thing]]

== References ==
{{Reflist}}
[[Category:Things]]
[[de:Ding]]
"""


def test_wiki_markup_becomes_wikitext_headings_and_paragraphs():
    text = wiki_sample.article("Thing", PAGE)
    assert text == (
        " \n = Thing = \n"
        " \n Thing is a notion studied in philosophy. It was named by Someone in 1900 – see below. \n"
        " \n = = History = = \n"
        " \n The history of the thing is long and has many parts. \n"
        " \n = = = Early period = = = \n"
        " \n In the early period the thing was mostly ignored by everyone. \n"
    )


def test_bundled_sample_is_wikipedia_in_wikitext_layout_split_by_article():
    train, valid = (hub.SAMPLE_FILES[s].read_text(encoding="utf-8") for s in ("train", "validation"))
    assert 1_000_000 < len(train.encode()) < 4_000_000 and 100_000 < len(valid.encode()) < 500_000

    def titles(text: str) -> list[str]:
        return re.findall(r"^ = ([^=].*?) = $", text, flags=re.M)

    train_titles, valid_titles = titles(train), titles(valid)
    assert len(train_titles) > 80 and len(valid_titles) >= 8
    assert {"Anarchism", "Aristotle", "Algae"} <= set(train_titles) | set(valid_titles)
    assert not set(train_titles) & set(valid_titles)  # split by article
    assert re.search(r"^ = = [^=].* = = $", train, flags=re.M)  # sections
    for text in (train, valid):
        lines = text.split("\n")
        assert all(
            line.startswith(" ") for line in lines[:-1]
        )  # WikiText raw: every line starts with a space
        paragraphs = [line for line in lines if line.strip() and not line.startswith(" = ")]
        assert len(paragraphs) > 50 and all(
            len(p.split()) >= wiki_sample.MIN_PARAGRAPH_WORDS for p in paragraphs
        )
        leftovers = [p[:120] for p in paragraphs if MARKUP.search(p)]
        assert not leftovers, leftovers[:5]


def test_sample_source_note_names_source_licence_command_and_hashes():
    note = (hub.SAMPLE_DIR / "SOURCE.md").read_text(encoding="utf-8")
    assert wiki_sample.DUMP_NAME in note and "CC BY-SA" in note and "python -m recipes.wiki_sample" in note
    for name in ("wiki.train.raw", "wiki.valid.raw"):
        digest = hashlib.sha256((hub.SAMPLE_DIR / name).read_bytes()).hexdigest()
        assert f"sha256 ({name}) {digest}" in note


@pytest.mark.slow  # extracts the whole Wikipedia sample: ~2-4 s
@needs_gensim
def test_wiki_sample_reproduces_the_bundled_files(tmp_path, capsys):
    wiki_sample.main(["--out", str(tmp_path)])
    for name in ("wiki.train.raw", "wiki.valid.raw"):
        assert (tmp_path / name).read_bytes() == (hub.SAMPLE_DIR / name).read_bytes(), name
    assert "91 articles" in capsys.readouterr().out


def test_wiki_sample_without_gensim_names_the_install(monkeypatch):
    monkeypatch.setattr(wiki_sample.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match=r"pip install gensim"):
        wiki_sample.find_dump()


# ---- the human-judged tasks -------------------------------------------------------------------


@needs_gensim
def test_human_judged_tasks_read_the_published_data_and_cite_it():
    expected = {
        SimLex999: (999, "simlex999.txt"),
        WordSim353: (353, "wordsim353.tsv"),
        PangLeePolarityClassification: (200, "pang_lee_polarity.cor"),
    }
    for cls, (n, filename) in expected.items():
        task = cls()
        task.load_data()
        rows = task.dataset["test"]
        assert len(rows) == n
        meta = task.metadata
        assert (
            meta.reference.startswith("https://")
            and "@" in meta.bibtex_citation
            and filename in meta.description
        )
        digest = hashlib.sha256((gensim_data_dir() / filename).read_bytes()).hexdigest()
        assert meta.dataset["revision"] == digest[:12]
        assert meta.name not in CODE_PATH_CHECKS
    sts = SimLex999()
    sts.load_data()
    scores = sts.dataset["test"]["score"]
    assert 0 <= min(scores) < 1 and 9 < max(scores) <= 10 and sts.max_score == 10
    assert sts.dataset["test"][1] == {"sentence1": "smart", "sentence2": "intelligent", "score": 9.2}
    polarity = PangLeePolarityClassification()
    polarity.load_data()
    labels = polarity.dataset["test"]["label"]
    assert labels.count(0) == labels.count(1) == 100
    assert any("clichés" in t for t in polarity.dataset["test"]["text"])  # Windows-1252 decoded


def test_polarity_task_uses_mteb_cross_validation_on_every_sentence():
    task = PangLeePolarityClassification()
    assert task.is_cross_validation and task.n_splits == 10
    assert task.train_split == task.metadata.eval_splits[0] == "test"
    # each fold trains on all of its 180 sentences (at most 100 of a label): no undersampling
    assert task.samples_per_label >= 100
    assert "cross-validation" in task.metadata.description


def test_offline_suite_holds_the_human_judged_tasks_and_code_path_checks_cover_the_mocks():
    from evaluation.tasks import MOCK_TASK_NAMES, select_tasks

    names = {t.metadata.name for t in select_tasks(offline_suite=True)}
    real = {cls.metadata.name for cls in HUMAN_JUDGED_TASK_CLASSES}
    assert real <= names and not real & CODE_PATH_CHECKS
    assert set(MOCK_TASK_NAMES.values()) <= CODE_PATH_CHECKS
    assert CODE_PATH_CHECKS <= names  # no stale name
    assert names - CODE_PATH_CHECKS == real


@needs_gensim
@pytest.mark.slow
def test_two_random_models_score_differently_on_every_real_task(tmp_path, tiny_model_dir):
    from mteb.results import TaskResult

    from evaluation import run_mteb
    from evaluation.collect import collect_scores

    real = [cls.metadata.name for cls in HUMAN_JUDGED_TASK_CLASSES]
    scores = {}
    for seed in (0, 1):
        out = tmp_path / f"out{seed}"
        args = [
            "--model",
            str(tiny_model_dir("bert", seed)),
            "--name",
            f"m{seed}",
            "--optimizer",
            "adamw",
            "--output",
            str(out),
            "--offline_suite",
            "--tasks",
            *real,
        ]
        assert run_mteb.main(args) == 0
        scores[seed] = collect_scores(out).set_index("task")["score"]
    for task in real:
        a, b = scores[0][task], scores[1][task]
        assert a != b, f"{task}: both random models score {a}"
        for s in (a, b):
            assert -100 < s < 100, f"{task}: saturated score {s}"
    # the polarity score is the mean of 10 cross-validation folds
    result = TaskResult.from_disk(next((tmp_path / "out0").rglob("PangLeePolarityClassification.json")))
    folds = result.scores["test"][0]["scores_per_experiment"]
    assert len(folds) == 10
    assert result.scores["test"][0]["accuracy"] == pytest.approx(sum(f["accuracy"] for f in folds) / 10)


# ---- the report: code-path checks outside the comparison -----------------------------------


def _scores(tasks: dict[str, str], delta: dict[str, float]) -> pd.DataFrame:
    rows = []
    for optimizer in ("adamw", "adatamw"):
        for epochs in (1, 2):
            for j, (task, category) in enumerate(tasks.items()):
                score = 40.0 + j + (delta.get(task, 0.0) if optimizer == "adatamw" else 0.0)
                rows.append(
                    {
                        "model": "minilm",
                        "optimizer": optimizer,
                        "epochs": epochs,
                        "task": task,
                        "category": category,
                        "score": score,
                    }
                )
    return pd.DataFrame(rows)


def test_report_leaves_code_path_checks_out_of_win_rates_and_categories(tmp_path):
    tasks = {
        "SimLex999": "STS",
        "WordSim353": "STS",
        "PangLeePolarityClassification": "Classification",
        "MockSTSTask": "STS",
        "MockClusteringTask": "Clustering",
        "TinyEnglishRetrieval": "Retrieval",
    }
    # the real tasks: AdaTAMW loses two of three; the code-path checks: it wins all three by a lot
    df = _scores(
        tasks,
        {
            "SimLex999": -5,
            "WordSim353": -5,
            "PangLeePolarityClassification": 5,
            "MockSTSTask": 50,
            "MockClusteringTask": 50,
            "TinyEnglishRetrieval": 50,
        },
    )
    result = report.build_report(df, tmp_path)
    stats = result["win_rate_stats"]
    assert (stats["n_datasets"] == 3).all() and (stats["better_pct"] == 33).all()
    assert (stats["sign_test_wins"] == 1).all() and (stats["sign_test_losses"] == 2).all()
    assert set(result["category_improvement"]["category"]) == {"STS", "Classification"}
    assert set(result["code_path_checks"]["task"]) == {
        "MockSTSTask",
        "MockClusteringTask",
        "TinyEnglishRetrieval",
    }
    compared = pd.read_csv(tmp_path / "scores_compared.csv")
    assert set(compared["task"]) == {"SimLex999", "WordSim353", "PangLeePolarityClassification"}
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    section = md[md.index("## Code-path checks") :]
    assert "MockClusteringTask" in section and "not in the win rates" in section
    assert "Datasets compared: 3" in md
    per_dataset = (tmp_path / "per_dataset_tables.md").read_text(encoding="utf-8")
    assert "SimLex999" in per_dataset and "MockSTSTask" not in per_dataset


def test_report_on_code_path_checks_only_says_they_measure_nothing(tmp_path):
    df = _scores({"MockSTSTask": "STS", "TinyEnglishClassification": "Classification"}, {"MockSTSTask": 1})
    result = report.build_report(df, tmp_path)
    assert (result["win_rate_stats"]["n_datasets"] == 2).all()
    assert any("measure nothing" in note for note in result["notes"])
    assert "measure nothing" in (tmp_path / "report.md").read_text(encoding="utf-8")


# ---- seed-to-seed spread ----------------------------------------------------------------------


def test_seed_spread_compares_the_optimizer_difference_with_the_seed_difference(tmp_path):
    from evaluation import seed_spread as module

    run_a = _scores({"SimLex999": "STS", "WordSim353": "STS"}, {"SimLex999": 4.0, "WordSim353": 1.0})
    run_b = run_a.copy()
    run_b.loc[run_b["task"] == "SimLex999", "score"] += 1.0  # both arms move by 1: spread 1, diff kept
    run_b.loc[(run_b["task"] == "WordSim353") & (run_b["optimizer"] == "adatamw"), "score"] -= (
        3.0  # diff 1 -> -2
    )
    table = seed_spread({"a": run_a, "b": run_b}).set_index(["task", "epochs"])
    simlex, wordsim = table.loc[("SimLex999", 1)], table.loc[("WordSim353", 1)]
    assert (
        simlex["seed_spread"] == 1.0 and simlex["diff_a"] == simlex["diff_b"] == 4.0 and simlex["same_sign"]
    )
    assert simlex["diff_over_spread"] == 4.0
    assert wordsim["seed_spread"] == 1.5 and (wordsim["diff_a"], wordsim["diff_b"]) == (1.0, -2.0)
    assert not wordsim["same_sign"]
    # the CLI reads two demo folders' scores_compared.csv
    for name, df in (("demo_output", run_a), ("demo_output_seed1", run_b)):
        (tmp_path / name).mkdir()
        df.assign(optimizer=df["optimizer"].map({"adamw": "AdamW", "adatamw": "AdaTAMW"})).to_csv(
            tmp_path / name / "scores_compared.csv", index=False
        )
    assert (
        module.main(
            [
                str(tmp_path / "demo_output"),
                str(tmp_path / "demo_output_seed1"),
                "--out",
                str(tmp_path / "spread.csv"),
            ]
        )
        == 0
    )
    assert len(pd.read_csv(tmp_path / "spread.csv")) == 4
    assert module.main([str(tmp_path / "demo_output"), str(tmp_path / "missing")]) == 2
