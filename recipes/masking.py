"""Deterministic MLM masking, the token-weighted loss and the fixed-mask perplexity.

Why not ``DataCollatorForLanguageModeling`` as is: it draws masks from the global
torch random stream, so a run resumed mid-epoch (the Trainer re-collates and skips
batches) and a 2-process run (each rank draws its own) see different masks than an
uninterrupted 1-process run. Here each block's mask comes from its own generator
seeded by ``(mask_seed, stream, epoch, idx)``: the same block gets the same mask in
the same epoch whatever the process count, batch layout or resume point. The
masking rule is BERT's (as the HF collator): 15 % of the non-special tokens are
chosen; of those 80 % become ``[MASK]``, 10 % a random token, 10 % stay.

Validation uses ``stream=EVAL`` once: the masked validation set is built a single
time and reused every epoch and by every optimizer and learning rate, so
perplexities are compared on the same masked tokens.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from recipes.data import INDEX_COLUMN

TRAIN, EVAL = 0, 1
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def example_generator(mask_seed: int, stream: int, epoch: int, index: int) -> torch.Generator:
    """A torch generator private to one (seed, stream, epoch, example)."""
    state = np.random.SeedSequence([mask_seed, stream, epoch, index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def mask_tokens(
    input_ids: list[int],
    special_tokens_mask: list[int],
    generator: torch.Generator,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
) -> tuple[list[int], list[int]]:
    """BERT masking of one example; returns (masked input ids, labels with -100 off the mask)."""
    ids = torch.tensor(input_ids, dtype=torch.long)
    probability = torch.full(ids.shape, mlm_probability)
    probability.masked_fill_(torch.tensor(special_tokens_mask, dtype=torch.bool), 0.0)
    chosen = torch.bernoulli(probability, generator=generator).bool()
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    replaced = torch.bernoulli(torch.full(ids.shape, 0.8), generator=generator).bool() & chosen
    randomised = torch.bernoulli(torch.full(ids.shape, 0.5), generator=generator).bool() & chosen & ~replaced
    random_words = torch.randint(vocab_size, ids.shape, dtype=torch.long, generator=generator)
    ids = torch.where(replaced, torch.full_like(ids, mask_token_id), ids)
    ids = torch.where(randomised, random_words, ids)
    return ids.tolist(), labels.tolist()


def _special_mask(feature: dict, tokenizer) -> list[int]:
    if "special_tokens_mask" in feature:
        return list(feature["special_tokens_mask"])
    return tokenizer.get_special_tokens_mask(feature["input_ids"], already_has_special_tokens=True)


def _check_tokenizer(tokenizer) -> None:
    if tokenizer.mask_token_id is None:
        raise SystemExit("the tokenizer has no mask token, so it cannot be used for masked language modeling")


class IndexedMLMCollator:
    """Collate blocks; mask training blocks by (mask_seed, epoch, idx), pass pre-masked ones through.

    A feature that already has ``labels`` (the fixed validation masking) is only padded.
    ``epoch`` is set by :class:`MaskEpochCallback` at the start of every epoch.
    """

    def __init__(self, tokenizer, mask_seed: int, mlm_probability: float = 0.15):
        _check_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        self.mask_seed = mask_seed
        self.mlm_probability = mlm_probability
        self.epoch = 0

    def _mask(self, feature: dict) -> dict:
        if INDEX_COLUMN not in feature:
            raise ValueError(
                f"training examples need an {INDEX_COLUMN!r} column (see recipes.data.tokenize_and_group)"
            )
        generator = example_generator(self.mask_seed, TRAIN, self.epoch, int(feature[INDEX_COLUMN]))
        ids, labels = mask_tokens(
            feature["input_ids"],
            _special_mask(feature, self.tokenizer),
            generator,
            self.tokenizer.mask_token_id,
            len(self.tokenizer),
            self.mlm_probability,
        )
        return {**feature, "input_ids": ids, "labels": labels}

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        features = [f if "labels" in f else self._mask(f) for f in features]
        length = max(len(f["input_ids"]) for f in features)
        pad_values = {"input_ids": self.tokenizer.pad_token_id or 0, "labels": -100}
        batch = {}
        for key in (*_MODEL_INPUTS, "labels"):
            if key not in features[0]:
                continue
            pad = pad_values.get(key, 0)
            rows = [list(f[key]) + [pad] * (length - len(f[key])) for f in features]
            batch[key] = torch.tensor(rows, dtype=torch.long)
        return batch


class MaskEpochCallback(TrainerCallback):
    """Tell the collator which epoch starts (also right after a resume: state.epoch is restored)."""

    def __init__(self, collator: IndexedMLMCollator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.epoch = math.floor((state.epoch or 0.0) + 1e-6)


def fixed_eval_masking(dataset, tokenizer, mask_seed: int, mlm_probability: float = 0.15):
    """Mask the validation blocks once (stream EVAL); adds ``labels``, drops the special-token mask."""
    _check_tokenizer(tokenizer)

    def apply(example):
        generator = example_generator(mask_seed, EVAL, 0, int(example[INDEX_COLUMN]))
        ids, labels = mask_tokens(
            example["input_ids"],
            _special_mask(example, tokenizer),
            generator,
            tokenizer.mask_token_id,
            len(tokenizer),
            mlm_probability,
        )
        return {"input_ids": ids, "labels": labels}

    remove = [c for c in ("special_tokens_mask",) if c in dataset.column_names]
    return dataset.map(apply, remove_columns=remove, desc=f"Masking validation once (mask_seed={mask_seed})")


def masking_fingerprint(dataset) -> str:
    """Short hash of the masked validation inputs and labels: equal fingerprints, same masked tokens."""
    digest = hashlib.sha256()
    for column in ("input_ids", "labels"):
        for row in dataset[column]:
            digest.update(np.asarray(row, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def masked_lm_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Cross-entropy summed over masked tokens / the number of masked tokens in the whole step.

    Given to the Trainer as ``compute_loss_func``: with ``num_items_in_batch`` (counted
    over all gradient-accumulation micro-batches and all processes) a 2-process run and
    a 1-process run with the same global batch minimise the same loss. The models'
    built-in loss is a per-micro-batch mean, which differs when processes hold
    different numbers of masked tokens.
    """
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    labels = labels.to(logits.device)
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else (labels != -100).sum()
    count = torch.as_tensor(count, device=total.device)
    return total / count.clamp(min=1)


def per_example_nll(logits, labels: torch.Tensor) -> torch.Tensor:
    """``preprocess_logits_for_metrics``: keep only (summed NLL, masked count) per example."""
    if isinstance(logits, tuple):
        logits = logits[0]
    nll = F.cross_entropy(
        logits.float().transpose(1, 2), labels.to(logits.device), reduction="none", ignore_index=-100
    ).sum(dim=1)
    count = (labels != -100).sum(dim=1).to(nll.dtype)
    return torch.stack([nll, count], dim=1)


def perplexity_metrics(eval_prediction) -> dict[str, float]:
    """``compute_metrics``: exp(total masked-token NLL / masked tokens) over the whole validation set."""
    stats = np.asarray(eval_prediction.predictions, dtype=np.float64).reshape(-1, 2)
    nll, count = stats[:, 0].sum(), stats[:, 1].sum()
    if count == 0:
        raise ValueError("the validation masking selected no token; use more or longer validation blocks")
    mean = nll / count
    return {"perplexity": float(math.exp(mean)) if mean < 700 else float("inf"), "masked_tokens": int(count)}
