"""Isotropy metrics of input embedding matrices (Coupled Adam, arXiv 2502.08441).

Coupled Adam (Stollenwerk & Stollenwerk, 2025) argues that Adam's per-element
second moment makes embedding vectors drift collectively away from the origin,
which makes the embedding space anisotropic.  This module measures that on a
checkpoint's input embedding matrix ``E`` of shape ``[V, H]`` (one row ``e_i``
per token id):

===========  ==================================================================
key          definition
===========  ==================================================================
iso          ``min_c Z(c) / max_c Z(c)`` with ``Z(c) = sum_i exp(e_i . c)`` over
             the unit eigenvectors ``c`` of ``E^T E`` (Mu et al., 2018)
mu_norm      ``||mu||``, ``mu = (1/V) sum_i e_i``
mean_norm    ``r = (1/V) sum_i ||e_i||``
mu_ratio     ``||mu|| / r``
rho          Pearson correlation between ``||e_i||`` and ``log p(i)`` (the log
             unigram frequency of token ``i`` in a corpus)
kappa        ``sigma_min(E) / sigma_max(E)``
===========  ==================================================================

Everything is computed in float64 with numpy.

Command line::

    python -m evaluation.geometry --manifest sweep/manifest.json --out geometry.csv \\
        [--corpus train.txt]
    python -m evaluation.geometry --checkpoint runs/bert-base/adatamw [--corpus train.txt]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from common.files import atomic_write

__all__ = [
    "CSV_COLUMNS",
    "embedding_geometry",
    "token_log_frequencies",
    "checkpoint_geometry",
    "geometry_rows",
    "write_csv_atomic",
    "main",
]

#: Columns of the CSV written by the command line, in order.
CSV_COLUMNS = ("model", "optimizer", "epochs", "iso", "mu_norm", "mean_norm", "mu_ratio", "rho", "kappa")

#: Texts are tokenized this many at a time (bounds memory on large corpora).
_TOKENIZE_BATCH = 1000


def _as_float64_matrix(E: Any) -> tuple[np.ndarray, float]:
    """Return ``E`` (torch tensor, numpy array or nested list) as a float64 [V, H] array,
    with the machine epsilon of the dtype it was stored in (2**-23 for float32, 2**-7 for bf16)."""
    if hasattr(E, "detach"):  # torch.Tensor (any device / dtype, incl. bf16)
        eps = _torch_eps(E.dtype)
        E = E.detach().to(device="cpu").double().numpy()
    else:
        E = np.asarray(E)
        eps = (
            float(np.finfo(E.dtype).eps)
            if np.issubdtype(E.dtype, np.floating)
            else float(np.finfo(np.float64).eps)
        )
    E = np.asarray(E, dtype=np.float64)
    if E.ndim != 2 or E.shape[0] == 0 or E.shape[1] == 0:
        raise ValueError(
            f"embedding_geometry expects a non-empty 2-D matrix [V, H] (one row per token), "
            f"got shape {tuple(E.shape)}; pass model.get_input_embeddings().weight"
        )
    bad = int(np.size(E) - np.count_nonzero(np.isfinite(E)))
    if bad:
        raise ValueError(
            f"the embedding matrix has {bad} non-finite (NaN/inf) entries; the checkpoint "
            f"has diverged or was saved incorrectly - its geometry is undefined"
        )
    return E, max(eps, float(np.finfo(np.float64).eps))


def _torch_eps(dtype: Any) -> float:
    """Machine epsilon of a torch floating dtype (float64's for anything else)."""
    import torch

    return float(torch.finfo(dtype).eps) if dtype.is_floating_point else float(np.finfo(np.float64).eps)


def _logsumexp_columns(X: np.ndarray) -> np.ndarray:
    """``log sum_i exp(X[i, k])`` for every column k, stable: ``m + log sum_i exp(X[i,k] - m)``."""
    m = X.max(axis=0)
    return m + np.log(np.exp(X - m).sum(axis=0))


def _isotropy(E: np.ndarray) -> float:
    """Isotropy of Mu, Bhat & Viswanath (2018), "All-but-the-Top", Sec. 2.

    ``Iso(E) = min_c Z(c) / max_c Z(c)``, ``Z(c) = sum_i exp(e_i . c)``, where ``c``
    runs over the H unit eigenvectors of ``E^T E`` as ``numpy.linalg.eigh`` returns them
    (the definition as written; an eigenvector's sign is the solver's convention, so
    another solver may flip a direction).  Computed in float64 and in log space:
    ``log Z(c) = logsumexp_i(e_i . c)`` and ``Iso = exp(min log Z - max log Z)``.
    ``Iso`` is 1 for a perfectly isotropic cloud (e.g. the all-zero matrix, where
    ``Z(c) = V`` for every ``c``) and tends to 0 when the embeddings share a common
    direction b (``Z`` grows as exp(||b||) along it).
    """
    _, C = np.linalg.eigh(E.T @ E)  # columns of C: orthonormal eigenvectors of E^T E
    log_z = _logsumexp_columns(E @ C)  # [H]: log Z(c) for every eigenvector c
    return float(math.exp(log_z.min() - log_z.max()))


def _condition_ratio(E: np.ndarray, input_eps: float) -> float:
    """``kappa = sigma_min(E) / sigma_max(E)`` over the min(V, H) singular values of E.

    In [0, 1]: the reciprocal of the 2-norm condition number.  ``sigma_min`` counts as 0
    (so a rank-deficient matrix gives exactly 0, and the all-zero matrix 0, never 0/0)
    when it is at or below the larger of
      * the float64 SVD's own rank tolerance ``sigma_max * max(V, H) * eps64``
        (``np.linalg.matrix_rank``), and
      * the rounding noise of the stored dtype: ``input_eps * rms(E) * (sqrt(V) + sqrt(H))``,
        the spectral norm of a V x H matrix of independent errors of relative size
        ``input_eps`` (random-matrix bound).  A rank-deficient matrix rounded to float32
        or bf16 is full rank in exact arithmetic, with sigma_min about 0.2x this or less.
    """
    V, H = E.shape
    sigma = np.linalg.svd(E, compute_uv=False)  # descending
    sigma_max, sigma_min = float(sigma[0]), float(sigma[-1])
    rms = float(np.sqrt(np.mean(E * E)))
    tol = max(
        sigma_max * max(V, H) * np.finfo(np.float64).eps, input_eps * rms * (math.sqrt(V) + math.sqrt(H))
    )
    if sigma_max == 0.0 or sigma_min <= tol:
        return 0.0
    return sigma_min / sigma_max


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation ``cov(x, y) / (std(x) std(y))``; NaN when either is constant."""
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return float(dx @ dy) / denom if denom > 0.0 else float("nan")


def embedding_geometry(E: Any, log_freq: Any = None) -> dict[str, float | None]:
    """Isotropy metrics of an input embedding matrix ``E`` [V, H] (float64 throughout).

    Args:
        E: the embedding matrix, one row per token id (torch tensor of any dtype or
            device, or array-like).  Must be finite.
        log_freq: optional length-V array of log unigram frequencies, e.g. from
            :func:`token_log_frequencies`.  Entries that are -inf (token never seen
            in the corpus) or NaN are excluded from ``rho``.

    Returns:
        dict with
          ``iso``: isotropy of Mu et al. (2018), ``min_c Z(c) / max_c Z(c)``, see
          :func:`_isotropy`;
          ``mu_norm``: ``||mu||``, ``mu = (1/V) sum_i e_i``;
          ``mean_norm``: ``r = (1/V) sum_i ||e_i||``;
          ``mu_ratio``: ``||mu|| / r`` in [0, 1] (0 for the all-zero matrix), the share
          of the average embedding length that is a common offset (Coupled Adam,
          arXiv 2502.08441, Sec. 5);
          ``rho``: Pearson correlation of ``||e_i||`` with ``log_freq[i]`` over tokens
          with a finite ``log_freq`` (None without ``log_freq``; NaN when undefined:
          fewer than 2 such tokens, or constant norms or frequencies);
          ``kappa``: ``sigma_min(E) / sigma_max(E)`` in [0, 1]; 0 when E is rank-deficient
          up to the rounding of its stored dtype, see :func:`_condition_ratio`.
    """
    E, input_eps = _as_float64_matrix(E)
    V = E.shape[0]

    # mu = (1/V) sum_i e_i ;  r = (1/V) sum_i ||e_i||  (Coupled Adam, Sec. 5)
    mu_norm = float(np.linalg.norm(E.mean(axis=0)))
    norms = np.linalg.norm(E, axis=1)
    mean_norm = float(norms.mean())
    # ||mu|| <= r by the triangle inequality; r == 0 only for the all-zero matrix.
    mu_ratio = mu_norm / mean_norm if mean_norm > 0.0 else 0.0

    rho = None
    if log_freq is not None:
        if hasattr(log_freq, "detach"):
            log_freq = log_freq.detach().cpu().double().numpy()
        log_freq = np.asarray(log_freq, dtype=np.float64).reshape(-1)
        if log_freq.shape[0] != V:
            raise ValueError(
                f"log_freq has {log_freq.shape[0]} entries but the embedding matrix has {V} "
                f"rows; compute it with token_log_frequencies(tokenizer, texts, vocab_size={V})"
            )
        seen = np.isfinite(log_freq)  # excludes -inf (zero count) and NaN
        rho = _pearson(norms[seen], log_freq[seen]) if seen.sum() >= 2 else float("nan")

    return {
        "iso": _isotropy(E),
        "mu_norm": mu_norm,
        "mean_norm": mean_norm,
        "mu_ratio": mu_ratio,
        "rho": rho,
        "kappa": _condition_ratio(E, input_eps),
    }


def token_log_frequencies(tokenizer: Any, texts: Iterable[str], vocab_size: int) -> np.ndarray:
    """Log unigram frequency ``log(count_i / N)`` of every token id in ``texts``.

    ``count_i`` is how often id ``i`` occurs when each text is tokenized without
    special tokens (``[CLS]``/``<s>`` etc. count the chunks, not the text) and ``N``
    is the total count.  Ids never seen get ``-inf``, which :func:`embedding_geometry`
    excludes from ``rho``.  Returns a float64 array of length ``vocab_size`` (pass the
    number of embedding rows, which may exceed ``len(tokenizer)``).
    """
    counts = np.zeros(vocab_size, dtype=np.int64)
    batch: list[str] = []

    def flush() -> None:
        if not batch:
            return
        ids = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
        flat = np.fromiter((t for seq in ids for t in seq), dtype=np.int64)
        if flat.size and int(flat.max()) >= vocab_size:
            raise ValueError(
                f"the tokenizer produced id {int(flat.max())} but vocab_size={vocab_size}; "
                f"pass the embedding matrix's row count as vocab_size"
            )
        counts[:] += np.bincount(flat, minlength=vocab_size)
        batch.clear()

    for text in texts:
        if text and not text.isspace():
            batch.append(text)
        if len(batch) >= _TOKENIZE_BATCH:
            flush()
    flush()

    total = counts.sum()
    if total == 0:
        raise ValueError("the corpus produced no tokens; check that texts is a non-empty list of strings")
    with np.errstate(divide="ignore"):  # log(0) = -inf marks unseen tokens, by design
        return np.log(counts / total)


def checkpoint_geometry(checkpoint_dir: str | os.PathLike, corpus_texts: Sequence[str] | None = None) -> dict:
    """Load a Hugging Face checkpoint and return :func:`embedding_geometry` of its input embedding.

    The model is loaded with ``transformers.AutoModel`` (a masked-LM checkpoint loads
    its encoder; the head is not needed) and ``model.get_input_embeddings().weight``
    is measured.  With ``corpus_texts`` (the fine-tuning corpus) the checkpoint's
    tokenizer gives the log unigram frequencies for ``rho``; otherwise ``rho`` is None.
    """
    from transformers import AutoModel, AutoTokenizer

    path = Path(checkpoint_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no Hugging Face checkpoint at {path} (config.json missing); pass the folder "
            f"written by save_pretrained / Trainer.save_model"
        )
    model = AutoModel.from_pretrained(path)
    E = model.get_input_embeddings().weight.detach()
    del model
    log_freq = None
    if corpus_texts is not None:
        tokenizer = AutoTokenizer.from_pretrained(path)
        log_freq = token_log_frequencies(tokenizer, corpus_texts, vocab_size=E.shape[0])
    return embedding_geometry(E, log_freq)


def geometry_rows(entries: Sequence[dict], corpus_texts: Sequence[str] | None = None) -> list[dict]:
    """One CSV row (:data:`CSV_COLUMNS`) per manifest entry, with a tqdm bar over checkpoints."""
    from tqdm.auto import tqdm

    rows = []
    for entry in tqdm(entries, desc="embedding geometry", unit="ckpt"):
        metrics = checkpoint_geometry(entry["checkpoint"], corpus_texts)
        rows.append(
            {
                "model": entry.get("model", ""),
                "optimizer": entry.get("optimizer", ""),
                "epochs": entry.get("epochs", ""),
                **metrics,
            }
        )
    return rows


def write_csv_atomic(rows: Sequence[dict], out: str | os.PathLike) -> None:
    """Write ``rows`` with exactly :data:`CSV_COLUMNS` to ``out`` via a temp file and ``os.replace``,
    so a reader never sees a half-written file.  ``None`` (no corpus for rho) is an empty cell."""

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(out, write)


def _read_corpus(path: str | os.PathLike) -> list[str]:
    """Non-blank lines of a text file (WikiText format: one paragraph per line)."""
    return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.geometry",
        description=(
            "Isotropy metrics (iso, ||mu||, r, ||mu||/r, rho, kappa) of checkpoints' input embeddings."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--manifest",
        help='sweep manifest JSON {"selected": [{"model", "optimizer", "epochs", "checkpoint"}]}',
    )
    source.add_argument("--checkpoint", help="one Hugging Face checkpoint folder")
    parser.add_argument("--out", default="geometry.csv", help="CSV to write (default: geometry.csv)")
    parser.add_argument(
        "--corpus", help="text file of the fine-tuning corpus, for rho (omit: rho left empty)"
    )
    args = parser.parse_args(argv)

    if args.manifest:
        from evaluation.manifest import read_manifest  # the same reader as run_mteb

        entries = [
            {
                "model": spec.model,
                "optimizer": spec.optimizer,
                "epochs": spec.epochs,
                "checkpoint": spec.checkpoint,
            }
            for spec in read_manifest(args.manifest)
        ]
    else:
        entries = [{"model": args.checkpoint, "optimizer": "", "epochs": "", "checkpoint": args.checkpoint}]
    corpus = _read_corpus(args.corpus) if args.corpus else None
    rows = geometry_rows(entries, corpus)
    write_csv_atomic(rows, args.out)
    for row in rows:
        print(json.dumps({k: row[k] for k in CSV_COLUMNS}))
    print(f"wrote {len(rows)} row(s) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
