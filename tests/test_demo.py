"""End to end: `python -m recipes.demo --quick` leaves a parseable report, and a re-run reuses everything.

The quick demo is the real pipeline (sweep of AdamW and AdaTAMW over 2 lrs x epochs {1, 2},
selection by validation perplexity, offline MTEB tasks, geometry, report) on 16 blocks of
32 tokens and three offline tasks (WordSim353, PangLeePolarityClassification and the code-path
check MockRetrievalTask): about 1 minute on 2 idle CPU cores (75 s at load 3).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def _run_demo(out: Path) -> tuple[str, float]:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "recipes.demo", "--quick", "--out", str(out)],
        cwd=REPO,
        env={**os.environ, **OFFLINE},
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        pytest.fail(
            f"demo exited {proc.returncode}\n"
            f"--- stdout (tail)\n{proc.stdout[-6000:]}\n"
            f"--- stderr (tail)\n{proc.stderr[-6000:]}"
        )
    return proc.stdout, seconds


def _csv(path: Path) -> list[dict]:
    assert path.is_file(), f"missing {path}"
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows, f"{path} has no rows"
    return rows


def _snapshot(root: Path) -> dict[str, float]:
    """mtime of every training and evaluation result file (metrics, checkpoints' weights, mteb results)."""
    files = [
        *root.glob("sweep/**/metrics.json"),
        *root.glob("sweep/**/model.safetensors"),
        *root.glob("mteb/results/**/*.json"),
    ]
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in files}


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_quick_demo_outputs_and_reuse(tmp_path):
    out = tmp_path / "demo"
    stdout, first = _run_demo(out)

    # the sweep: 2 optimizers x 2 epoch settings, each selected over both lrs
    manifest = json.loads((out / "sweep" / "manifest.json").read_text())
    cells = {(e["optimizer"], e["epochs"]) for e in manifest["selected"]}
    assert cells == {("adamw", 1), ("adamw", 2), ("adatamw", 1), ("adatamw", 2)}
    for entry in manifest["selected"]:
        assert entry["lr"] in (5e-5, 2e-4)
        assert (out / "sweep" / entry["checkpoint"] / "config.json").is_file()
        selection = json.loads(
            (out / "sweep" / Path(entry["checkpoint"]).parent.parent / "selection.json").read_text()
        )
        assert set(selection["grid"]) == {"5e-05", "0.0002"}
        assert selection["val_perplexity"] == min(selection["grid"].values())

    # the report
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "Figure 4" in report and "Figure 3" in report and "Embedding geometry" in report
    win = _csv(out / "win_rates.csv")
    assert {int(r["epochs"]) for r in win} == {1, 2}
    for row in win:
        assert 0 <= float(row["better_pct"]) <= float(row["similar_or_better_pct"]) <= 100
    categories = _csv(out / "category_improvement.csv")
    # the human-judged tasks carry the comparison; MockRetrievalTask is a code-path check, outside it
    assert {r["category"] for r in categories} == {"STS", "Classification"}
    assert "## Code-path checks" in report and "MockRetrievalTask" in report
    geometry = _csv(out / "geometry.csv")
    assert len(geometry) == 4
    for row in geometry:
        assert 0 < float(row["iso"]) <= 1 and float(row["mean_norm"]) > 0

    pngs = sorted(out.glob("*.png"))
    assert pngs, "no PNG figure"
    from PIL import Image  # matplotlib's dependency

    for png in pngs:
        with Image.open(png) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100

    # the printed summary points at the report
    assert f"Report:   {out / 'report.md'}" in stdout
    assert "Selected checkpoints" in stdout and "adatamw" in stdout

    # a second run reuses everything: nothing retrained, no MTEB task re-run
    before = _snapshot(out)
    assert any("model.safetensors" in k for k in before) and any(k.startswith("mteb/") for k in before)
    stdout2, second = _run_demo(out)
    assert _snapshot(out) == before, "the second run rewrote training or evaluation results"
    assert "every cell finished: nothing retrained" in stdout2
    assert "0 evaluated, 3 reused" in stdout2
    assert "unchanged selection: reusing" in stdout2
    assert second < max(90.0, first / 3), f"re-run took {second:.0f}s (first run {first:.0f}s)"
    assert (out / "report.md").is_file()

    # another size into the same folder is refused (the sweep would otherwise reuse the other size's cells)
    proc = subprocess.run(
        [sys.executable, "-m", "recipes.demo", "--quick", "--max_train_samples", "8", "--out", str(out)],
        cwd=REPO,
        env={**os.environ, **OFFLINE},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "other settings (max_train_samples)" in proc.stderr + proc.stdout
