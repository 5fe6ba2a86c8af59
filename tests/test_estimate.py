"""``run_mteb --estimate``: a plan's cost from mteb's task metadata, without loading any data set.

The expected figures are computed here from other fields of mteb's descriptive statistics
than the estimate reads (``num_documents`` / ``num_queries`` / ``num_samples`` /
``number_of_characters`` instead of total / average text length), or from what the datasets
are known to hold (SummEval: 100 articles, 11 human and 16 machine summaries each).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("mteb")

import mteb  # noqa: E402
from mteb.abstasks.abstask import AbsTask  # noqa: E402

from evaluation import run_mteb  # noqa: E402
from evaluation.estimate import DEFAULT_CHARS_PER_TOKEN, SPECIAL_TOKENS, task_size  # noqa: E402

V1, V2 = "MTEB(eng, v1)", "MTEB(eng, v2)"
PAPER_PLAN = 36  # 6 models x 2 optimizers x 3 epoch settings (recipes/sweep.py --dry-run)


@pytest.fixture
def no_data(monkeypatch):
    """Any attempt to load a task's data fails the test."""

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"--estimate loaded the data of {self.metadata.name}")

    monkeypatch.setattr(AbsTask, "load_data", refuse)


def _estimate(capsys, *args: str) -> tuple[dict[str, list[str]], str]:
    """Run ``run_mteb --estimate``; (task -> its row's cells, the whole output)."""
    assert run_mteb.main([*args, "--estimate"]) == 0
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        cells = line.split()
        if len(cells) >= 5 and all(c.isdigit() for c in cells[2:]):
            rows[cells[0]] = cells[1:]
    return rows, out


def _stats(name: str, split: str = "test") -> dict:
    return mteb.get_task(name).metadata.descriptive_stats[split]


def _tokens(n: int, average_chars: float, max_len: int = 512, cpt: float = DEFAULT_CHARS_PER_TOKEN) -> float:
    return n * min(average_chars / cpt + SPECIAL_TOKENS, max_len)


def _hours(out: str) -> float:
    return float(re.search(r"= ([\d,.]+) GPU-hours", out).group(1).replace(",", ""))


def test_papers_plan_figures_match_mteb_metadata(capsys, no_data):
    rows, out = _estimate(
        capsys, "--checkpoints", str(PAPER_PLAN), "--paper_tasks", "--tokens_per_second", "50000"
    )
    assert len(rows) == 56 and "CQADupstackTexRetrieval" in rows and "CQADupstackRetrieval" not in rows

    arguana = _stats("ArguAna")
    docs, queries = arguana["documents_text_statistics"], arguana["queries_text_statistics"]
    expected_tokens = _tokens(arguana["num_documents"], docs["average_text_length"]) + _tokens(
        arguana["num_queries"], queries["average_text_length"]
    )
    assert rows["ArguAna"][:3] == [
        "Retrieval",
        str(arguana["num_documents"] + arguana["num_queries"]),
        str(arguana["number_of_characters"]),
    ]
    assert int(rows["ArguAna"][3]) == pytest.approx(expected_tokens, abs=1)

    summeval = _stats("SummEval")  # the summaries are encoded, not the 100 source articles
    assert rows["SummEval"][:3] == [
        "Summarization",
        str(100 * (11 + 16)),
        str(summeval["number_of_characters"] - summeval["text_statistics"]["total_text_length"]),
    ]

    banking = mteb.get_task("Banking77Classification")
    train, test = banking.metadata.descriptive_stats["train"], _stats("Banking77Classification")
    undersampled = min(train["num_samples"], banking.n_experiments * banking.samples_per_label * 77)
    assert rows["Banking77Classification"][1] == str(test["num_samples"] + undersampled) == str(3080 + 6160)

    total = sum(int(cells[3]) for cells in rows.values())
    assert _hours(out) == pytest.approx(PAPER_PLAN * total / 50000 / 3600, abs=0.05)
    assert f"{PAPER_PLAN} checkpoint(s) x {V1} with the paper's CQADupstackTexRetrieval (56 tasks)" in out
    assert "50,000 tokens/s (stated)" in out


def test_v2_plan_figures_match_mteb_metadata_and_cost_less(capsys, no_data):
    rows, out = _estimate(capsys, "--checkpoints", str(PAPER_PLAN), "--benchmark", V2)
    assert len(rows) == 41 and "ASSUMED" in out  # no speed stated: the assumption says so

    fever = _stats(
        "FEVERHardNegatives"
    )  # its statistics predate num_documents: num_samples = corpus + queries
    assert rows["FEVERHardNegatives"][:3] == [
        "Retrieval",
        str(fever["num_samples"]),
        str(fever["number_of_characters"]),
    ]
    assert rows["FEVERHardNegatives"][1] != str(
        _stats("FEVER")["num_samples"]
    )  # the hard-negative corpus, not FEVER's 5.4 M

    summ = _stats("SummEvalSummarization.v2")
    assert rows["SummEvalSummarization.v2"][:3] == [
        "Summarization",
        "2700",
        str(summ["number_of_characters"] - summ["text_statistics"]["total_text_length"]),
    ]

    v2_hours = _hours(out)
    _, v1_out = _estimate(capsys, "--checkpoints", str(PAPER_PLAN))
    assert v2_hours < _hours(v1_out) / 5  # v2's hard-negative corpora make it far cheaper


def test_fast_clustering_counts_the_sample_it_embeds():
    """A .v2 clustering task embeds max_fraction_of_documents_to_embed of its texts; v1 all of them."""
    fast, legacy = mteb.get_task("TwentyNewsgroupsClustering.v2"), mteb.get_task("TwentyNewsgroupsClustering")
    n = fast.metadata.descriptive_stats["test"]["num_samples"]
    assert task_size(fast).texts == int(fast.max_fraction_of_documents_to_embed * n)
    assert task_size(legacy).texts == legacy.metadata.descriptive_stats["test"]["num_samples"] == n


def test_only_the_benchmarks_subsets_are_counted():
    """STS22.v2 in MTEB(eng, v2) is its English subset, not all 18 language pairs."""
    from evaluation.tasks import select_tasks

    english = select_tasks(["STS22.v2"], benchmark=V2)[0]
    every = mteb.get_task("STS22.v2")
    en = english.metadata.descriptive_stats["test"]["hf_subset_descriptive_stats"]["en"]
    assert task_size(english).texts == 2 * en["num_samples"] < task_size(every).texts


def test_estimate_of_a_manifest_measures_each_tokenizer(tmp_path, capsys, no_data):
    import json

    from tests.support.tiny_models import save_tiny_model

    ckpts = [save_tiny_model("bert", tmp_path / name, seed=i) for i, name in enumerate("ab")]
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "selected": [
                    {"model": "tiny", "optimizer": opt, "epochs": 1, "checkpoint": str(c)}
                    for opt, c in zip(("adamw", "adatamw"), ckpts)
                ]
            }
        )
    )
    rows, out = _estimate(
        capsys, "--manifest", str(manifest), "--benchmark", V2, "--tasks", "STS12", "ArguAna"
    )
    measured = re.search(r"2 checkpoint\(s\) at ([\d.]+) characters/token \(measured", out)
    assert (
        measured and 4.0 < float(measured.group(1)) < 5.5
    )  # the MiniLM (bert-base-uncased) vocabulary on English prose
    assert "tokens@" in out and ",128" in out  # the tiny checkpoints' max_seq_length caps each text
    arguana = _stats("ArguAna")  # queries average 1193 characters: capped at 128 tokens each
    assert int(rows["ArguAna"][3]) <= 128 * (arguana["num_documents"] + arguana["num_queries"])
    assert not (Path(tmp_path) / "results").exists()


def test_estimate_refusals(capsys):
    with pytest.raises(SystemExit):
        run_mteb.main(["--estimate"])
    assert "--estimate needs the plan's checkpoints" in capsys.readouterr().err
    assert run_mteb.main(["--checkpoints", "2", "--estimate", "--benchmark", V2, "--paper_tasks"]) == 2
    assert "--paper_tasks swaps" in capsys.readouterr().err
    assert run_mteb.main(["--checkpoints", "2", "--estimate", "--benchmark", "MTEB(eng v2)"]) == 2
    assert "Did you mean: MTEB(eng, v2)" in capsys.readouterr().err


def _plan_lines(out: str) -> list[str]:
    """The figures of an estimate's output: its task rows and its per-checkpoint and plan totals."""
    return [
        line
        for line in out.splitlines()
        if line.startswith(("Per checkpoint:", "Plan:"))
        or (len(c := line.split()) >= 5 and all(x.isdigit() for x in c[2:]))
    ]


@pytest.mark.slow  # times the encoder and runs run_mteb --estimate: ~3 s
def test_encode_throughput_costs_the_plan_with_run_mteb_estimate(capsys, no_data):
    """The benchmark measures a speed and hands it to evaluation.estimate: the run_mteb --estimate
    command it prints gives the same figures, and the plan is costed at the measured tokens/s."""
    import shlex

    from benchmarks import encode_throughput

    assert (
        encode_throughput.main(
            [
                "--n",
                "8",
                "--batch_size",
                "8",
                "--repeats",
                "1",
                "--device",
                "cpu",
                "--estimate",
                "--grid",
                "3",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    measured = int(re.search(r"evaluation encoder: (\d+) tokens/s", out).group(1))
    command = shlex.split(re.search(r"python -m evaluation\.run_mteb (.+)$", out, re.M).group(1))
    assert command[command.index("--tokens_per_second") + 1] == str(measured) and measured > 0
    assert command[command.index("--max_seq_length") + 1] == "256"  # the embedded MiniLM's own
    chars_per_token = float(
        re.search(r"characters per token, Wikipedia sample, validation part[^:]*: ([\d.]+)", out).group(1)
    )
    assert command[command.index("--chars_per_token") + 1] == f"{chars_per_token:.2f}"
    assert f"{measured:,} tokens/s (measured" in out

    rows, reference = _estimate(capsys, *[a for a in command if a != "--estimate"])
    assert len(rows) == 56 and _plan_lines(out) == _plan_lines(reference)
    tokens = sum(int(cells[3]) for cells in rows.values())  # 3 checkpoints at the measured speed
    assert _hours(out) == pytest.approx(3 * tokens / measured / 3600, rel=1e-3)


def test_encode_throughput_has_no_sizing_of_its_own():
    """One sizing of the plan: the benchmark calls evaluation.estimate and reads no task statistics."""
    source = (Path(__file__).resolve().parents[1] / "benchmarks" / "encode_throughput.py").read_text(
        encoding="utf-8"
    )
    assert "estimate_plan" in source
    assert "descriptive_stats" not in source and "/ 3600" not in source
