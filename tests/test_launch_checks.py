"""recipes.launch_checks: an FSDP request that accelerate will not run is named (one process;
the 2-rank MULTI_CPU case runs in tests/test_fsdp_checkpoint.py). recipes.fsdp_prep: the masked
LMs prepared for accelerate's FSDP2 preparation keep their forward, weights and checkpoints, and
what cannot run is refused before training."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoTokenizer, TrainingArguments

from recipes import mlm_finetune
from recipes.fsdp_prep import (
    Fsdp2Unsupported,
    fsdp2_requested,
    prepare_for_fsdp2,
    requested_wrapping,
    shared_registrations,
)
from recipes.launch_checks import fsdp_requested, warn_if_fsdp_downgraded
from tests.support.recipe_args import tiny_recipe_args
from tests.support.tiny_models import ALL_FAMILIES, minilm_tokenizer_path, tiny_config


def _args(tmp_path, **kwargs) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], **kwargs)


def test_no_fsdp_request_no_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    with caplog.at_level(logging.WARNING, logger="recipes.launch_checks"):
        assert warn_if_fsdp_downgraded(_args(tmp_path)) is None
    assert not caplog.records


def test_accelerate_fsdp_launch_on_cpu_warns(tmp_path, monkeypatch, caplog):
    """What `accelerate launch --config_file fsdp.yaml` exports, in one CPU process."""
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    with caplog.at_level(logging.WARNING, logger="recipes.launch_checks"):
        msg = warn_if_fsdp_downgraded(_args(tmp_path))
    assert msg is not None and "fsdp_version 2" in msg and "DistributedType.NO" in msg
    assert "nothing is sharded" in msg and "docs/distributed.md" in msg
    assert [r.getMessage() for r in caplog.records] == [msg]


def test_trainer_fsdp_argument_is_a_request(tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    args = _args(tmp_path, fsdp="full_shard")
    assert "TrainingArguments(fsdp=" in fsdp_requested(args)
    assert "DistributedType.NO" in warn_if_fsdp_downgraded(args)


# ---- recipes.fsdp_prep: the masked LMs fitted to accelerate's FSDP2 preparation ----------------
# (the 2-rank runs through accelerate's own fsdp2_prepare_model: tests/test_fsdp2_masked_lm.py)

FSDP2_ENV = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}
ALIAS = {
    "bert": "cls.predictions.bias",
    "roberta": "lm_head.bias",
    "deberta": "cls.predictions.bias",
    "deberta-v2": "cls.predictions.bias",
}
LAYER = {
    "bert": "BertLayer",
    "roberta": "RobertaLayer",
    "deberta": "DebertaLayer",
    "deberta-v2": "DebertaV2Layer",
}


def _tiny(family: str, **config_changes):
    config, model_cls = tiny_config(family, AutoTokenizer.from_pretrained(minilm_tokenizer_path()))
    for key, value in config_changes.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    return model_cls(config).eval()


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_prepared_model_has_one_registration_per_parameter_and_computes_the_same(family):
    model, original = _tiny(family), _tiny(family)
    done = prepare_for_fsdp2(model)
    kept = ALIAS[family].replace(".bias", ".decoder.bias")
    assert done.aliases == {ALIAS[family]: kept} and done.wrap_classes == [LAYER[family]]
    assert model._no_split_modules == {LAYER[family]} and shared_registrations(model) == {}
    names = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    assert names == {n for n, _ in original.named_parameters(remove_duplicate=False)} - {ALIAS[family]}
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
    ids = torch.randint(1000, 30000, (2, 9), generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(input_ids=ids).logits, original(input_ids=ids).logits)
    model.tie_weights()  # what accelerate calls with fsdp_cpu_ram_efficient_loading: no alias back
    assert shared_registrations(model) == {}
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_prepared_model_saves_a_checkpoint_that_loads_every_weight(tmp_path):
    """The bias is saved once, under the decoder's name; from_pretrained ties the alias back."""
    model = _tiny("bert")
    with torch.no_grad():
        model.cls.predictions.decoder.bias.uniform_(-1, 1)  # not the zeros of a fresh head
    prepare_for_fsdp2(model)
    model.save_pretrained(tmp_path)
    assert "cls.predictions.decoder.bias" in load_file(tmp_path / "model.safetensors")
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert loaded.cls.predictions.bias is loaded.cls.predictions.decoder.bias
    assert torch.equal(loaded.cls.predictions.bias, model.cls.predictions.decoder.bias)
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight
    want = dict(model.named_parameters(remove_duplicate=False))
    for name, p in loaded.named_parameters(remove_duplicate=False):
        assert torch.equal(p, want.get(name, want.get(name.replace(".bias", ".decoder.bias")))), name


@pytest.mark.parametrize(
    "policy,classes,config,message",
    [
        (None, (), {"legacy": False}, "config.legacy=False cannot run under FSDP2"),
        ("SIZE_BASED_WRAP", (), {}, "SIZE_BASED_WRAP cannot run this model under FSDP2"),
        (
            "TRANSFORMER_BASED_WRAP",
            ("DebertaV2Layer", "DebertaV2Embeddings"),
            {},
            "names DebertaV2Embeddings, which is or holds an embedding",
        ),
    ],
)
def test_what_cannot_run_is_refused_with_the_fix(policy, classes, config, message):
    model = _tiny("deberta-v2", **config)
    before = ([n for n, _ in model.named_parameters(remove_duplicate=False)], set(model._no_split_modules))
    with pytest.raises(Fsdp2Unsupported, match=message) as err:
        prepare_for_fsdp2(model, policy, classes)
    assert "recipes/accelerate/" in str(err.value) or "DebertaV2Layer" in str(err.value)
    # refused before anything changed
    assert ([n for n, _ in model.named_parameters(remove_duplicate=False)], model._no_split_modules) == before


def test_fsdp2_requests(tmp_path, monkeypatch):
    for key in (
        "ACCELERATE_USE_FSDP",
        "FSDP_VERSION",
        "FSDP_AUTO_WRAP_POLICY",
        "FSDP_TRANSFORMER_CLS_TO_WRAP",
    ):
        monkeypatch.delenv(key, raising=False)
    assert not fsdp2_requested(_args(tmp_path))
    assert fsdp2_requested(_args(tmp_path, fsdp="full_shard"))  # transformers 5: version 2 by default
    assert not fsdp2_requested(_args(tmp_path, fsdp="full_shard", fsdp_config={"version": 1}))
    assert requested_wrapping(
        _args(tmp_path, fsdp="full_shard", fsdp_config={"transformer_layer_cls_to_wrap": "BertLayer"})
    ) == (None, ["BertLayer"])  # None: the default
    assert requested_wrapping(
        _args(tmp_path, fsdp="full_shard", fsdp_config={"auto_wrap_policy": "SIZE_BASED_WRAP"})
    ) == ("SIZE_BASED_WRAP", [])
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert not fsdp2_requested(_args(tmp_path))  # accelerate launch's default is version 1
    monkeypatch.setenv("FSDP_VERSION", "2")
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "BertLayer,BertEmbeddings")
    assert fsdp2_requested(_args(tmp_path))
    assert requested_wrapping(_args(tmp_path)) == (None, ["BertLayer", "BertEmbeddings"])


def _recipe_argv(model, out, files) -> list[str]:
    return tiny_recipe_args(
        files,
        model=model,
        max_train_samples=8,
        max_eval_samples=4,
        per_device_eval_batch_size=None,
        run=[
            *("--num_train_epochs", "1", "--learning_rates", "1e-3", "--optim", "adatamw"),
            *("--coupled_embeddings", "--output_dir", str(out)),
        ],
        extra=["--use_cpu", "true"],
    )


def test_recipe_refuses_an_fsdp2_launch_that_cannot_run_before_training(
    tiny_model_dir, text_files, tmp_path, monkeypatch
):
    """An explicit wrap class that holds the word embedding: refused with the fix, no lr run started."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for key, value in {**FSDP2_ENV, "FSDP_TRANSFORMER_CLS_TO_WRAP": "BertLayer,BertEmbeddings"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(
        SystemExit,
        match="names BertEmbeddings, which is or holds an embedding.*Name the encoder "
        "layers only \\(BertLayer\\)",
    ):
        mlm_finetune.main(_recipe_argv(tiny_model_dir("bert"), tmp_path, text_files))
    assert not (tmp_path / "lr_0.001").exists()


@pytest.mark.slow
def test_recipe_under_an_fsdp2_launch_trains_the_prepared_model(
    tiny_model_dir, text_files, tmp_path, monkeypatch, caplog
):
    """What `accelerate launch --config_file fsdp.yaml` exports, in one CPU process (accelerate
    runs it without sharding, and the recipe says so): the recipe prepares the model and trains it,
    and the selected checkpoint loads with every weight, the decoder bias tied back."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for key, value in FSDP2_ENV.items():
        monkeypatch.setenv(key, value)
    with caplog.at_level(logging.INFO, logger="recipes"):
        selection = mlm_finetune.main(_recipe_argv(tiny_model_dir("bert"), tmp_path, text_files))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "FSDP was requested" in logged and "FSDP2: one registration per parameter" in logged
    checkpoint = tmp_path / selection["checkpoint"]
    assert "cls.predictions.bias" not in load_file(checkpoint / "model.safetensors")
    loaded = AutoModelForMaskedLM.from_pretrained(checkpoint)
    assert loaded.cls.predictions.bias is loaded.cls.predictions.decoder.bias
    start = AutoModelForMaskedLM.from_pretrained(tiny_model_dir("bert"))
    assert not torch.equal(loaded.cls.predictions.bias, start.cls.predictions.bias)  # trained
