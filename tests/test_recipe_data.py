"""Units of the MLM recipe: masking, loss, perplexity, data blocks, offline fallbacks, bundled sample."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoConfig, AutoTokenizer, EvalPrediction

from recipes import data, hub, masking
from recipes.results import select_best
from tests.support.tiny_models import minilm_tokenizer_path, save_tiny_model

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(minilm_tokenizer_path())


def _features(tokenizer, n=6, length=40):
    words = "the quick brown fox jumps over the lazy dog and keeps running through the field".split()
    out = []
    for i in range(n):
        text = " ".join(words[(i + j) % len(words)] for j in range(length))
        enc = tokenizer(text, truncation=True, max_length=length, return_special_tokens_mask=True)
        out.append({**enc, data.INDEX_COLUMN: i})
    return out


# ---- masking ------------------------------------------------------------------------------


def test_training_masks_depend_only_on_seed_epoch_and_index(tokenizer):
    feats = _features(tokenizer)
    collator = masking.IndexedMLMCollator(tokenizer, mask_seed=3)
    whole = collator(feats)
    # Same examples in other batches / order: same masks per example.
    halves = [collator(feats[3:]), collator(feats[:3])]
    assert torch.equal(torch.cat([halves[1]["labels"], halves[0]["labels"]]), whole["labels"])
    assert torch.equal(torch.cat([halves[1]["input_ids"], halves[0]["input_ids"]]), whole["input_ids"])
    # The global random stream plays no part.
    torch.manual_seed(123)
    assert torch.equal(collator(feats)["labels"], whole["labels"])
    collator.epoch = 1
    assert not torch.equal(collator(feats)["labels"], whole["labels"])
    assert not torch.equal(
        masking.IndexedMLMCollator(tokenizer, mask_seed=4)(feats)["labels"], whole["labels"]
    )


def test_masking_follows_bert_rule(tokenizer):
    ids = list(range(1000, 1000 + 20_000))
    special = [1] + [0] * (len(ids) - 2) + [1]
    masked, labels = masking.mask_tokens(
        ids, special, masking.example_generator(0, 0, 0, 0), 103, len(tokenizer)
    )
    masked, labels, ids = map(np.asarray, (masked, labels, ids))
    chosen = labels != -100
    assert not chosen[0] and not chosen[-1]
    assert abs(chosen.mean() - 0.15) < 0.01
    assert (labels[chosen] == ids[chosen]).all() and (masked[~chosen] == ids[~chosen]).all()
    assert abs((masked[chosen] == 103).mean() - 0.8) < 0.03
    assert abs((masked[chosen] == ids[chosen]).mean() - 0.1) < 0.03


def test_collator_pads_and_passes_premasked_through(tokenizer):
    collator = masking.IndexedMLMCollator(tokenizer, mask_seed=0)
    feats = [
        {"input_ids": [101, 7, 8, 102], "attention_mask": [1] * 4, "labels": [-100, 7, -100, -100], "idx": 0},
        {"input_ids": [101, 9, 102], "attention_mask": [1] * 3, "labels": [-100, -100, 9], "idx": 1},
    ]
    batch = collator(feats)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].tolist() == [[101, 7, 8, 102], [101, 9, 102, tokenizer.pad_token_id]]
    assert batch["labels"].tolist() == [[-100, 7, -100, -100], [-100, -100, 9, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]


def test_fixed_eval_masking_is_stable(tokenizer):
    ds = Dataset.from_list(_features(tokenizer))
    a = masking.fixed_eval_masking(ds, tokenizer, mask_seed=5)
    b = masking.fixed_eval_masking(ds, tokenizer, mask_seed=5)
    assert masking.masking_fingerprint(a) == masking.masking_fingerprint(b)
    assert masking.masking_fingerprint(
        masking.fixed_eval_masking(ds, tokenizer, 6)
    ) != masking.masking_fingerprint(a)
    assert "labels" in a.column_names and "special_tokens_mask" not in a.column_names
    # Evaluation masks differ from epoch-0 training masks of the same blocks (a separate stream).
    train = masking.IndexedMLMCollator(tokenizer, mask_seed=5)(list(ds))
    assert train["labels"].tolist() != a["labels"]


def test_loss_and_perplexity_are_token_weighted():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[1, -100, 3, -100, -100], [-100, -100, -100, -100, 4]])
    flat = torch.nn.functional.cross_entropy(logits.view(-1, 11), labels.view(-1))
    out = {"logits": logits}
    assert torch.allclose(masking.masked_lm_loss(out, labels), flat)
    # With the step's global count (e.g. 6 masked tokens over 2 processes) it is sum / 6.
    assert torch.allclose(masking.masked_lm_loss(out, labels, torch.tensor(6)), flat * 3 / 6)
    stats = masking.per_example_nll(logits, labels)
    assert stats[:, 1].tolist() == [2, 1]
    metrics = masking.perplexity_metrics(EvalPrediction(predictions=stats.numpy(), label_ids=None))
    assert metrics["perplexity"] == pytest.approx(math.exp(flat.item()), rel=1e-6)
    assert metrics["masked_tokens"] == 3


def test_select_best_prefers_lowest_finite_perplexity():
    runs = {
        5e-6: {"best_perplexity": 20.0},
        1e-5: {"best_perplexity": float("nan")},
        5e-5: {"best_perplexity": 12.0},
    }
    assert select_best(runs)[0] == 5e-5
    assert select_best({1e-5: {"best_perplexity": 3.0}, 5e-6: {"best_perplexity": 3.0}})[0] == 5e-6


# ---- data --------------------------------------------------------------------------------


def _data_args(**kw):
    base = dict(
        dataset_name="Salesforce/wikitext",
        dataset_config_name="wikitext-2-raw-v1",
        train_file=None,
        validation_file=None,
        offline_sample=False,
        validation_split_percentage=5,
    )
    return SimpleNamespace(**{**base, **kw})


def test_hub_dataset_not_cached_stops_naming_it(tmp_path):
    """Offline with an empty cache: no silent bundled sample, a message with the fix instead."""
    with pytest.raises(SystemExit) as err:
        data.load_raw_datasets(_data_args(), cache_dir=str(tmp_path))
    message = str(err.value)
    assert "--dataset_name Salesforce/wikitext --dataset_config_name wikitext-2-raw-v1" in message
    assert "load_dataset('Salesforce/wikitext', 'wikitext-2-raw-v1'" in message
    assert (
        "--offline_sample" in message and "--offline_defaults" in message and "Nothing was trained" in message
    )


def test_bundled_sample_only_when_asked_for():
    raw, source = data.load_raw_datasets(_data_args(offline_sample=True))
    assert source == {"name": "enwiki-excerpt", "config": None} and set(raw) == {"train", "validation"}
    assert any(line.startswith(" = ") for line in raw["train"]["text"][:5])


def test_blocks_have_fixed_length_and_an_index(tokenizer, tmp_path):
    train = tmp_path / "t.txt"
    train.write_text(hub.SAMPLE_FILES["train"].read_text(encoding="utf-8")[:10_000], encoding="utf-8")
    raw, _ = data.load_raw_datasets(_data_args(train_file=str(train), validation_split_percentage=20))
    blocks = data.tokenize_and_group(raw, tokenizer, 64)
    for split in ("train", "validation"):
        assert all(len(ids) == 64 for ids in blocks[split]["input_ids"])
        assert blocks[split][data.INDEX_COLUMN] == list(range(len(blocks[split])))
    with pytest.raises(SystemExit, match="no block of 100000 tokens"):
        data.tokenize_and_group(raw, tokenizer, 100_000)


def test_block_size_is_capped_by_the_model(tmp_path):
    for family, cap in (("bert", 128), ("roberta", 128)):
        folder = save_tiny_model(family, tmp_path / family)
        tok, cfg = AutoTokenizer.from_pretrained(folder), AutoConfig.from_pretrained(folder)
        assert data.block_size_for(512, tok, cfg) == cap
        assert data.block_size_for(32, tok, cfg) == 32
    with pytest.raises(SystemExit, match="--max_seq_length must be positive"):
        data.block_size_for(0, tok, cfg)


def test_data_file_errors(tmp_path):
    with pytest.raises(SystemExit, match="--validation_file .*: no such file"):
        data.check_files(str(hub.SAMPLE_FILES["train"]), str(tmp_path / "missing.txt"))
    bad = tmp_path / "train.parquet"
    bad.write_text("x")
    with pytest.raises(SystemExit, match="unsupported extension"):
        data.load_raw_datasets(_data_args(train_file=str(bad)))


# ---- offline model resolution -------------------------------------------------------------


def test_default_model_is_not_substituted(tmp_path):
    """Offline with an empty cache, bert-base-uncased stops naming it; the MiniLM only by its alias."""
    with pytest.raises(SystemExit) as err:
        hub.resolve_model("bert-base-uncased", cache_dir=str(tmp_path))
    message = str(err.value)
    assert "--model_name_or_path bert-base-uncased" in message and "Nothing was trained" in message
    assert f"hf download bert-base-uncased --cache-dir {tmp_path}" in message
    assert "--model_name_or_path minilm-offline" in message and "--offline_defaults" in message
    path = hub.resolve_model("minilm-offline")
    assert Path(path) == hub.offline_model_path() and (Path(path) / "config.json").exists()
    with pytest.raises(SystemExit, match="Hub is unreachable"):
        hub.resolve_model("roberta-large", cache_dir=str(tmp_path))


def test_local_folder_without_config_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no config.json"):
        hub.resolve_model(str(tmp_path))


def test_connection_errors_are_recognised():
    try:
        try:
            raise ConnectionError("Name or service not known")
        except ConnectionError as inner:
            raise OSError("We couldn't connect to 'https://huggingface.co'") from inner
    except OSError as err:
        assert hub.is_connection_error(err)
    assert not hub.is_connection_error(FileNotFoundError("Dataset 'foo/bar' doesn't exist on the Hub"))


def test_minilm_head_is_reported_as_new(caplog):
    from recipes.mlm_finetune import load_model

    with caplog.at_level(logging.WARNING, logger="recipes"):
        _, head_initialised = load_model(str(hub.offline_model_path()), None)
    assert head_initialised and "no trained MLM head" in caplog.text


# ---- the bundled sample ---------------------------------------------------------------------


# The sample's content, its extraction from Wikipedia and its source note:
# tests/test_offline_real_tasks.py (recipes/wiki_sample.py).
