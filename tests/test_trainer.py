"""Trainer integration: TAMTrainer, the TAM warm-up switch, torque logging, drop-in resume.

Tiny random BERT / RoBERTa / DeBERTa-v2 models are saved to a temp folder and loaded back with
``from_pretrained``; the task (sequence classification on fixed random data) is deterministic, so a
resumed run can be compared with an uninterrupted one.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    BertConfig,
    DebertaV2Config,
    RobertaConfig,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from adatamw import AdaTAMW  # noqa: E402
from adatamw.callbacks import (  # noqa: E402
    TAMWarmupCallback,
    TorqueLoggingCallback,
    add_torque_logging,
    unwrap_optimizer,
)
from adatamw.trainer import OPTIM_NAMES, TAMTrainer  # noqa: E402

VOCAB, SEQ, N_EXAMPLES = 64, 8, 64
TINY = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=SEQ + 4,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    initializer_range=0.3,  # large enough for plain SGD (TAM) to learn the toy task in 30 steps
)
CONFIGS = {
    "bert": lambda: BertConfig(**TINY),
    "roberta": lambda: RobertaConfig(**TINY, pad_token_id=1, bos_token_id=0, eos_token_id=2),
    "deberta-v2": lambda: DebertaV2Config(**TINY, pooler_hidden_size=32, pooler_dropout=0.0),
}
# Learning rates that learn the toy task in a few dozen steps (TAM is SGD: larger lr).
LR = {"adamw": 3e-3, "adatamw": 1e-3, "adatam": 1e-3, "coupled_adamw": 3e-3, "tam": 0.1}
TORQUE_OPTIMS = ("adatamw", "adatam", "tam")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """This module's runs on one thread (fast, small models), restored afterwards: a thread count
    changed at import would leak into every other test module of the session."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """``model_dir(family, head)``: a folder with a tiny random model saved by save_pretrained."""
    cache = {}

    def make(family: str, head: str = "cls") -> str:
        if (family, head) not in cache:
            torch.manual_seed(0)
            config = CONFIGS[family]()
            config.num_labels = 2
            auto = AutoModelForSequenceClassification if head == "cls" else AutoModelForMaskedLM
            path = tmp_path_factory.mktemp(f"{family}-{head}")
            auto.from_config(config).save_pretrained(path)
            cache[family, head] = str(path)
        return cache[family, head]

    return make


def load(path: str, head: str = "cls"):
    auto = AutoModelForSequenceClassification if head == "cls" else AutoModelForMaskedLM
    return auto.from_pretrained(path)


class ToyClassification(torch.utils.data.Dataset):
    """Fixed random token sequences drawn from the lower (label 0) or upper (label 1) half of the
    vocabulary: every token carries the label, so a tiny model learns it in a few dozen steps, and
    the data is identical on every run."""

    def __init__(self, n: int = N_EXAMPLES, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        half = (VOCAB - 4) // 2
        self.labels = torch.randint(0, 2, (n,), generator=g)
        self.input_ids = 4 + torch.randint(0, half, (n, SEQ), generator=g) + half * self.labels[:, None]
        self.input_ids[:, 0] = 0  # a CLS-like start token

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {
            "input_ids": self.input_ids[i],
            "attention_mask": torch.ones(SEQ, dtype=torch.long),
            "labels": self.labels[i],
        }


def training_args(tmp_path, **overrides) -> TrainingArguments:
    kwargs = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        max_steps=30,
        learning_rate=3e-3,
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def train_losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def params_by_group(optimizer):
    return [list(group["params"]) for group in unwrap_optimizer(optimizer).param_groups]


# ---------------------------------------------------------------------------
# TAMTrainer
# ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "optim_name,family",
    [
        ("adamw", "bert"),
        ("adatamw", "bert"),
        ("adatamw", "roberta"),
        ("adatam", "roberta"),
        ("tam", "bert"),
        ("coupled_adamw", "deberta-v2"),
    ],
)
def test_each_optimizer_trains_and_logs_torque(optim_name, family, model_dir, tmp_path):
    trainer = TAMTrainer(
        model=load(model_dir(family)),
        args=training_args(tmp_path, learning_rate=LR[optim_name]),
        train_dataset=ToyClassification(),
        optim_name=optim_name,
    )
    trainer.train()
    losses = train_losses(trainer)
    assert len(losses) == 6
    assert losses[-1] < 0.5 * losses[0], losses

    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    if optim_name in TORQUE_OPTIMS:
        for entry in logs:
            assert -1.0 <= entry["s_hat"] <= 1.0
            assert entry["damping"] == pytest.approx((1 + entry["s_hat"]) / 2, abs=1e-6)
        assert any(entry["s_hat"] != 0.0 for entry in logs)
    else:
        assert not any("s_hat" in entry or "damping" in entry for entry in logs)


def test_tensor_scope_logs_min_and_max(model_dir, tmp_path):
    trainer = TAMTrainer(
        model=load(model_dir("bert")),
        args=training_args(tmp_path, max_steps=10),
        train_dataset=ToyClassification(),
        optim_kwargs={"cosine_scope": "tensor", "gamma": 0.8},
    )
    trainer.train()
    assert unwrap_optimizer(trainer.optimizer).param_groups[0]["gamma"] == 0.8
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logged) == 2  # steps 5 and 10
    for entry in logged:
        # one s per tensor: they differ (a shared s would give min == max), all in (-1, 1)
        assert -1 < entry["s_hat_min"] < entry["s_hat_max"] < 1
        assert entry["damping"] == pytest.approx((1 + entry["s_hat"]) / 2)
    # the last log is the optimizer's state after step 10, not an older value
    final = unwrap_optimizer(trainer.optimizer).torque_stats()
    assert {k: logged[-1][k] for k in ("s_hat", "s_hat_min", "s_hat_max")} == pytest.approx(
        {k: final[k] for k in ("s_hat", "s_hat_min", "s_hat_max")}
    )


def test_adamw_builds_what_plain_trainer_builds(model_dir, tmp_path):
    args = training_args(tmp_path, weight_decay=0.05)
    model = load(model_dir("bert"))
    ours = TAMTrainer(model=model, args=args, optim_name="adamw").create_optimizer()
    plain = Trainer(model=model, args=args).create_optimizer()
    assert type(ours) is type(plain)
    assert ours.defaults == plain.defaults
    assert len(ours.param_groups) == len(plain.param_groups)
    for a, b in zip(ours.param_groups, plain.param_groups):
        assert {k: v for k, v in a.items() if k != "params"} == {k: v for k, v in b.items() if k != "params"}
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]]


def test_decay_grouping_and_hyperparameters_from_args(model_dir, tmp_path):
    model = load(model_dir("bert"))
    args = training_args(tmp_path, weight_decay=0.1, adam_beta1=0.8, adam_beta2=0.99, adam_epsilon=1e-7)
    optimizer = TAMTrainer(model=model, args=args, optim_name="adatamw").create_optimizer()
    assert isinstance(optimizer, AdaTAMW)
    decay = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert len(decay) == sum(1 for _ in model.parameters())  # every trainable parameter, once
    for name, p in model.named_parameters():
        expected = 0.0 if ("bias" in name or "LayerNorm" in name) else 0.1
        assert decay[id(p)] == expected, name
    for group in optimizer.param_groups:
        assert (group["lr"], group["betas"], group["eps"]) == (3e-3, (0.8, 0.99), 1e-7)


@pytest.mark.parametrize("family", ["bert", "deberta-v2"])
def test_coupled_group_holds_the_tied_embedding_once(family, model_dir, tmp_path):
    model = load(model_dir(family, head="mlm"), head="mlm")
    embedding = model.get_input_embeddings().weight
    if family == "bert":
        assert model.get_output_embeddings().weight is embedding  # tied
    trainer = TAMTrainer(
        model=model,
        args=training_args(tmp_path, weight_decay=0.01),
        optim_name="adatamw",
        coupled_embeddings=True,
        optim_kwargs={"coupled_scale": 2.0},
    )
    optimizer = trainer.create_optimizer()
    coupled = [g for g in optimizer.param_groups if g.get("coupled")]
    assert len(coupled) == 1
    assert [id(p) for p in coupled[0]["params"]].count(id(embedding)) == 1
    assert coupled[0]["coupled_scale"] == 2.0
    everything = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert everything.count(id(embedding)) == 1
    assert sorted(everything) == sorted({id(p) for p in model.parameters()})


def test_invalid_arguments_are_refused_with_the_fix(model_dir, tmp_path):
    args = training_args(tmp_path)
    model = load(model_dir("bert"))
    with pytest.raises(ValueError, match="optim_name must be one of .*adatamw"):
        TAMTrainer(model=model, args=args, optim_name="adam")
    with pytest.raises(ValueError, match="coupled_embeddings"):
        TAMTrainer(model=model, args=args, optim_name="tam", coupled_embeddings=True)
    with pytest.raises(ValueError, match="optimizer_cls_and_kwargs"):
        TAMTrainer(model=model, args=args, optimizer_cls_and_kwargs=(AdaTAMW, {}))
    with pytest.raises(ValueError, match="optim_kwargs"):
        TAMTrainer(model=model, args=args, optim_name="adamw", optim_kwargs={"lr": 1.0})
    with pytest.raises(ValueError, match="not_a_hyperparameter"):
        TAMTrainer(model=model, args=args, optim_kwargs={"not_a_hyperparameter": 1}).create_optimizer()
    assert set(OPTIM_NAMES) == {"adamw", "adatamw", "adatam", "tam", "coupled_adamw"}


# ---------------------------------------------------------------------------
# TAM warm-up switch (paper §4.4)
# ---------------------------------------------------------------------------


class Probe(TrainerCallback):
    """Records, at each step end, the optimizer class and lrs and copies of the momentum buffers,
    and the gradients each optimizer step receives (keyed by the step count before it)."""

    def __init__(self):
        self.steps, self.grads = {}, {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads[state.global_step] = {
            id(p): p.grad.clone() for p in model.parameters() if p.grad is not None
        }

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        raw = unwrap_optimizer(optimizer)
        buffers = {
            id(p): s["momentum_buffer"].clone() for p, s in raw.state.items() if "momentum_buffer" in s
        }
        self.steps[state.global_step] = (type(raw), [g["lr"] for g in raw.param_groups], buffers)


def test_warmup_switches_to_sgdm_with_half_lr_and_keeps_momentum(model_dir, tmp_path):
    switch, lr, total = 10, 0.1, 20
    before, after = Probe(), Probe()
    trainer = TAMTrainer(
        model=load(model_dir("bert")),
        args=training_args(tmp_path, learning_rate=lr, max_steps=total, lr_scheduler_type="linear"),
        train_dataset=ToyClassification(),
        optim_name="tam",
        callbacks=[before, TAMWarmupCallback(switch_step=switch, to="sgdm"), after],
    )
    tam_cls = type(unwrap_optimizer(trainer.create_optimizer()))
    trainer.train()

    def scheduled(step):  # linear decay, no warm-up: lr used by step `step + 1`
        return lr * (total - step) / total

    for step in range(1, total + 1):
        cls_before = before.steps[step][0]
        cls_after, lrs_after, _ = after.steps[step]
        assert cls_before is cls_after is (tam_cls if step <= switch else torch.optim.SGD), step
        factor = 0.5 if step > switch else 1.0
        assert lrs_after == pytest.approx([factor * scheduled(step)] * len(lrs_after)), step
    # SGD's first step continues TAM's momentum buffers: buf <- 0.9 * buf + grad, per parameter.
    tam_buffers, sgd_buffers = before.steps[switch][2], after.steps[switch + 1][2]
    assert tam_buffers.keys() == sgd_buffers.keys() and tam_buffers
    grads = after.grads[switch]
    for k in tam_buffers:
        torch.testing.assert_close(sgd_buffers[k], 0.9 * tam_buffers[k] + grads[k], rtol=1e-6, atol=1e-7)

    sgd = unwrap_optimizer(trainer.optimizer)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    assert all(group["momentum"] == 0.9 for group in sgd.param_groups)
    assert [g["weight_decay"] for g in sgd.param_groups] == [0.0, 0.0]  # args.weight_decay = 0
    # The scheduler drives the new optimizer from the halved base learning rates.
    assert unwrap_optimizer(trainer.lr_scheduler.optimizer) is sgd
    assert trainer.lr_scheduler.base_lrs == pytest.approx([lr / 2] * len(sgd.param_groups))
    logged = {e["step"]: e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e}
    assert logged[5] == pytest.approx(scheduled(4))
    assert logged[15] == pytest.approx(0.5 * scheduled(14))
    # No torque telemetry once the optimizer is SGD.
    assert "s_hat" in next(e for e in trainer.state.log_history if e.get("step") == switch)
    assert "s_hat" not in next(e for e in trainer.state.log_history if e.get("step") == 15)


def test_warmup_switch_to_adamw_carries_moments(model_dir, tmp_path):
    probe = Probe()
    trainer = TAMTrainer(
        model=load(model_dir("bert")),
        args=training_args(tmp_path, max_steps=6),
        train_dataset=ToyClassification(),
        optim_name="adatamw",
        callbacks=[TAMWarmupCallback(switch_step=3, to="adamw"), probe],
    )
    trainer.train()
    adamw = unwrap_optimizer(trainer.optimizer)
    assert type(adamw) is torch.optim.AdamW
    state = next(iter(adamw.state.values()))
    assert float(state["step"]) == 6.0  # continued from AdaTAMW's step count
    assert probe.steps[3][0] is not torch.optim.AdamW and probe.steps[4][0] is torch.optim.AdamW
    assert unwrap_optimizer(trainer.lr_scheduler.optimizer) is adamw


def test_warmup_callback_validates_arguments():
    with pytest.raises(ValueError, match="switch_step"):
        TAMWarmupCallback(switch_step=0)
    with pytest.raises(ValueError, match="to must be one of"):
        TAMWarmupCallback(switch_step=5, to="sgd")
    with pytest.raises(ValueError, match="lr_factor"):
        TAMWarmupCallback(switch_step=5, lr_factor=-1.0)
    assert TAMWarmupCallback(5).lr_factor == 0.5 and TAMWarmupCallback(5, to="adamw").lr_factor == 1.0


# ---------------------------------------------------------------------------
# Drop-in: plain transformers.Trainer with optimizer_cls_and_kwargs
# ---------------------------------------------------------------------------


def plain_trainer(path, out, callbacks=(), **overrides):
    return Trainer(
        model=load(path),
        args=training_args(
            out, max_steps=12, save_steps=6, save_strategy="steps", logging_steps=3, **overrides
        ),
        train_dataset=ToyClassification(),
        optimizer_cls_and_kwargs=(AdaTAMW, {"lr": 3e-3, "weight_decay": 0.01, "cosine_scope": "global"}),
        callbacks=list(callbacks),
    )


@pytest.mark.slow
def test_dropin_trainer_resume_is_bit_identical(model_dir, tmp_path):
    path = model_dir("roberta")
    full = plain_trainer(path, tmp_path / "full", callbacks=[TorqueLoggingCallback()])
    full.train()
    assert any("s_hat" in e and "damping" in e for e in full.state.log_history)

    resumed = plain_trainer(path, tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-6"))
    assert resumed.state.global_step == 12
    # CPU kernels are deterministic, the data order and RNG are restored and the optimizer state
    # round-trips exactly, so the resumed run repeats the same float operations: bit-identical.
    full_params, resumed_params = dict(full.model.named_parameters()), dict(resumed.model.named_parameters())
    for name, p in full_params.items():
        assert torch.equal(p, resumed_params[name]), name
    s_full = unwrap_optimizer(full.optimizer).torque_stats()
    s_resumed = unwrap_optimizer(resumed.optimizer).torque_stats()
    assert s_full == s_resumed


@pytest.mark.slow
@pytest.mark.parametrize("switch_step", [4, 8], ids=["checkpoint-after-switch", "checkpoint-at-switch"])
def test_warmup_resume_equals_uninterrupted(switch_step, model_dir, tmp_path):
    path = model_dir("bert")
    run = lambda out: TAMTrainer(  # noqa: E731
        model=load(path),
        args=training_args(out, max_steps=12, save_steps=8, save_strategy="steps", learning_rate=0.1),
        train_dataset=ToyClassification(),
        optim_name="tam",
        callbacks=[TAMWarmupCallback(switch_step=switch_step)],
    )
    full = run(tmp_path / "full")
    full.train()
    resumed = run(tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-8"))
    assert isinstance(unwrap_optimizer(resumed.optimizer), torch.optim.SGD)
    assert resumed.lr_scheduler.base_lrs == pytest.approx([0.05] * 2)
    for (name, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), name


def test_add_torque_logging_runs_before_report_integrations(model_dir, tmp_path):
    trainer = Trainer(model=load(model_dir("bert")), args=training_args(tmp_path))
    callback = add_torque_logging(trainer)
    assert trainer.callback_handler.callbacks[0] is callback


# ---------------------------------------------------------------------------
# BitFit: only biases and LayerNorm train, so the Trainer's decay group is empty
# ---------------------------------------------------------------------------


def bitfit(model):
    for name, p in model.named_parameters():
        p.requires_grad = name.endswith("bias") or "LayerNorm" in name
    return model


@pytest.mark.parametrize("how", ["optimizer_cls_and_kwargs", "TAMTrainer"])
def test_bitfit_empty_decay_group_keeps_the_torque(how, model_dir, tmp_path):
    """HF's groups for BitFit are [decay: 0 tensors, no_decay: all]: the empty first group must not
    switch the global torque off; s_hat equals the one of AdaTAMW built from the trained tensors
    alone, bit for bit."""
    path = model_dir("bert")
    args = training_args(tmp_path / how, max_steps=6, logging_steps=3, weight_decay=0.01, learning_rate=1e-3)
    kwargs = {"lr": 1e-3, "cosine_scope": "global"}
    if how == "TAMTrainer":
        trainer = TAMTrainer(
            model=bitfit(load(path)),
            args=args,
            train_dataset=ToyClassification(),
            optim_name="adatamw",
            optim_kwargs={"cosine_scope": "global"},
        )
    else:
        trainer = Trainer(
            model=bitfit(load(path)),
            args=args,
            train_dataset=ToyClassification(),
            optimizer_cls_and_kwargs=(AdaTAMW, kwargs),
        )
    trainer.train()
    sizes = [len(g) for g in params_by_group(trainer.optimizer)]
    if how != "TAMTrainer":
        assert sizes[0] == 0 and sizes[1] > 0, sizes  # what the issue found: [0, 12]
    model = bitfit(load(path))
    alone = AdaTAMW([p for p in model.parameters() if p.requires_grad], weight_decay=0.0, **kwargs)
    reference = Trainer(
        model=model,
        args=training_args(tmp_path / "alone", max_steps=6, logging_steps=3, learning_rate=1e-3),
        train_dataset=ToyClassification(),
        optimizers=(alone, None),
    )
    reference.train()
    got = unwrap_optimizer(trainer.optimizer).torque_stats()
    want = alone.torque_stats()
    assert got["s_hat"] != 0.0
    assert got == want
