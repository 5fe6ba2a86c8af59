"""The torch.optim API the optimizers promise beyond the update rule: ``maximize``,
``step(closure)``, the warm-up callback's carried momentum (paper §4.4), and AdaTAM with a
coupled group against the float64 reference (Eq. 7 with Coupled Adam's row-mean second moment).

Only the public names of ``adatamw`` are used here."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adatamw import TAM, AdaTAM, AdaTAMW
from tests.support.reference_tam import ReferenceOptimizer

SHAPES = [(7, 5), (5,), (3, 5)]  # the first is the "embedding" (a coupled group when asked)


def _problem(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen) for s in SHAPES]
    targets = [torch.randn(s, generator=gen) for s in SHAPES]
    return params, targets


def _loss(params, targets):
    """A smooth non-quadratic objective, so gradients change direction from step to step."""
    return sum(((p - t) ** 2).sum() + 0.3 * torch.sin(3 * p).sum() for p, t in zip(params, targets))


# -- maximize -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (AdaTAMW, dict(lr=1e-2, weight_decay=0.1)),
        (AdaTAMW, dict(lr=1e-2, weight_decay=0.1, cosine_scope="tensor", momentum="ema")),
        (TAM, dict(lr=1e-2, weight_decay=0.1)),
    ],
)
@pytest.mark.parametrize("foreach", [False, True])
def test_maximize_equals_minimizing_the_negated_loss(cls, kwargs, foreach):
    """maximize=True ascends f exactly as the default descends -f (decay still shrinks p)."""
    init, targets = _problem()
    up = [nn.Parameter(p.clone()) for p in init]
    down = [nn.Parameter(p.clone()) for p in init]
    opt_up = cls(up, maximize=True, foreach=foreach, **kwargs)
    opt_down = cls(down, foreach=foreach, **kwargs)
    start = -_loss(init, targets).item()
    for _ in range(20):
        for opt, params, sign in ((opt_up, up, -1.0), (opt_down, down, 1.0)):
            opt.zero_grad()
            (sign * _loss(params, targets)).backward()  # up: maximise -f; down: minimise f
            opt.step()
        for a, b in zip(up, down):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert -_loss(up, targets).item() > start  # it did ascend
    assert opt_up.torque_stats() == pytest.approx(opt_down.torque_stats())


def test_maximize_differs_from_minimize():
    """The flag is not ignored: same gradients, maximize moves p the other way."""
    init, targets = _problem()
    a, b = ([nn.Parameter(p.clone()) for p in init] for _ in range(2))
    for params, flag in ((a, True), (b, False)):
        opt = AdaTAMW(params, lr=1e-2, weight_decay=0.0, maximize=flag)
        _loss(params, targets).backward()
        opt.step()
    for pa, pb, p0 in zip(a, b, init):
        torch.testing.assert_close(pa - p0, -(pb - p0))


# -- closure --------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [AdaTAMW, AdaTAM, TAM])
def test_step_with_closure_returns_its_loss_and_uses_its_gradients(cls):
    init, targets = _problem(1)
    with_closure = [nn.Parameter(p.clone()) for p in init]
    plain = [nn.Parameter(p.clone()) for p in init]
    opt_c, opt_p = cls(with_closure, lr=1e-2), cls(plain, lr=1e-2)
    calls = []

    def closure():
        calls.append(1)
        opt_c.zero_grad()
        loss = _loss(with_closure, targets)
        loss.backward()
        return loss

    for step in range(5):
        expected = _loss(with_closure, targets).detach()
        returned = opt_c.step(closure)
        assert len(calls) == step + 1  # called once per step
        assert torch.is_tensor(returned) and torch.equal(returned.detach(), expected)
        opt_p.zero_grad()
        _loss(plain, targets).backward()
        assert opt_p.step() is None  # no closure: returns None, as torch.optim does
        for a, b in zip(with_closure, plain):
            assert torch.equal(a, b)  # the step used the closure's gradients


def test_closure_runs_with_grad_enabled():
    """step() runs under no_grad, the closure must not (torch.optim's enable_grad contract)."""
    p = nn.Parameter(torch.ones(3))
    opt = AdaTAMW([p], lr=1e-2)

    def closure():
        assert torch.is_grad_enabled()
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 3.0
    assert torch.all(p < 1)


# -- AdaTAM with a coupled group -------------------------------------------------------------


@pytest.mark.parametrize("scope", ["global", "tensor"])
@pytest.mark.parametrize("foreach", [False, True])
def test_adatam_coupled_group_follows_the_reference(scope, foreach):
    """AdaTAM (L2 decay added to g before the cosine) with the embedding in a coupled group:
    v_hat of that 2-D tensor is the mean over its rows (Coupled Adam), float64 reference."""
    init, targets = _problem(2)
    params = [nn.Parameter(p.clone()) for p in init]
    opt = AdaTAM(
        [{"params": params[:1], "coupled": True}, {"params": params[1:]}],
        lr=1e-2,
        weight_decay=0.05,
        cosine_scope=scope,
        foreach=foreach,
    )
    ref = ReferenceOptimizer(
        init, "adatam", lr=1e-2, weight_decay=0.05, scope=scope, coupled=[True, False, False]
    )
    uncoupled = [nn.Parameter(p.clone()) for p in init]
    opt_uncoupled = AdaTAM(uncoupled, lr=1e-2, weight_decay=0.05, cosine_scope=scope, foreach=foreach)
    for _ in range(30):
        for o, ps in ((opt, params), (opt_uncoupled, uncoupled)):
            o.zero_grad()
            _loss(ps, targets).backward()
        ref.step([p.grad for p in params])
        opt.step()
        opt_uncoupled.step()
    for p, r in zip(params, ref.p):
        torch.testing.assert_close(p.double(), r, rtol=1e-5, atol=1e-6)
    # the coupling matters: the uncoupled run's embedding is elsewhere
    assert (uncoupled[0] - params[0]).abs().max() > 1e-3


# -- the warm-up callback's carried momentum -----------------------------------------------------


class _Regression(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(6, 1)

    def forward(self, x, labels=None):
        out = self.linear(x).squeeze(-1)
        return {"loss": ((out - labels) ** 2).mean(), "logits": out}


class _Data(torch.utils.data.Dataset):
    def __init__(self):
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 6, generator=gen)
        self.y = self.x @ torch.randn(6, generator=gen)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


class _Snapshot:
    """The inner optimizer's state at the end of step `before` and at the start of step
    `before + 1` (after TAMWarmupCallback switched it, which runs first)."""

    def __init__(self, before: int):
        self.before, self.old, self.new = before, None, None

    @staticmethod
    def state(optimizer):
        from adatamw.callbacks import unwrap_optimizer

        inner = unwrap_optimizer(optimizer)
        return inner, {
            id(p): {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}
            for p, s in inner.state.items()
        }

    def callback(self, transformers):
        snap = self

        class Callback(transformers.TrainerCallback):
            def on_step_end(self, args, state, control, optimizer=None, **kwargs):
                if state.global_step == snap.before:
                    snap.old = snap.state(optimizer)

            def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
                if state.global_step == snap.before:
                    snap.new = snap.state(optimizer)

        return Callback()


def _train_with_switch(tmp_path, optim_name, optim_kwargs, to):
    transformers = pytest.importorskip("transformers")  # optional: the [hf] extra

    from adatamw.callbacks import TAMWarmupCallback
    from adatamw.trainer import TAMTrainer

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=5,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        adam_beta1=0.8,
        lr_scheduler_type="constant",
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        logging_steps=1,
    )
    snapshot = _Snapshot(before=3)
    trainer = TAMTrainer(
        model=_Regression(),
        args=args,
        train_dataset=_Data(),
        optim_name=optim_name,
        optim_kwargs=optim_kwargs,
        callbacks=[TAMWarmupCallback(switch_step=3, to=to), snapshot.callback(transformers)],
    )
    trainer.train()
    return snapshot


@pytest.mark.parametrize("momentum, factor", [("tam", 1 - 0.8), ("ema", 1.0)])
def test_warmup_switch_to_adamw_rescales_tam_momentum(tmp_path, momentum, factor):
    """AdaTAMW's sum-form momentum (Eq. 7: m = beta1 m + d g, no 1 - beta1) becomes AdamW's
    average: exp_avg x (1 - beta1) at the switch; the EMA form (Eq. 8) is carried as it is.
    exp_avg_sq and step carry over unchanged."""
    snap = _train_with_switch(tmp_path, "adatamw", {"momentum": momentum}, to="adamw")
    (old_opt, old), (new_opt, new) = snap.old, snap.new
    assert isinstance(old_opt, AdaTAMW) and type(new_opt) is torch.optim.AdamW
    assert new_opt.param_groups[0]["betas"][0] == 0.8
    assert set(old) == set(new) and old
    for key in old:
        torch.testing.assert_close(new[key]["exp_avg"], factor * old[key]["exp_avg"], rtol=1e-6, atol=0)
        assert torch.equal(new[key]["exp_avg_sq"], old[key]["exp_avg_sq"])
        assert float(new[key]["step"]) == 3.0


def test_warmup_switch_to_sgdm_keeps_tam_momentum_buffer(tmp_path):
    """TAM's buffer is already SGD's (m = beta m + d g ~ SGD's m = beta m + g): carried as is."""
    snap = _train_with_switch(tmp_path, "tam", {}, to="sgdm")
    (old_opt, old), (new_opt, new) = snap.old, snap.new
    assert isinstance(old_opt, TAM) and type(new_opt) is torch.optim.SGD
    assert new_opt.param_groups[0]["lr"] == pytest.approx(0.5e-2)  # lr_factor 0.5 (§4.4)
    for key in old:
        assert torch.equal(new[key]["momentum_buffer"], old[key]["momentum_buffer"])


def test_adatamw_trains_a_tiny_masked_lm(tiny_model_dir):
    """A real transformers model (the conftest factory's tiny BERT, tied embeddings): the MLM
    loss on a fixed batch falls and the damping stays in (0, 1)."""
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForMaskedLM.from_pretrained(tiny_model_dir("bert"))
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    opt = AdaTAMW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, model.config.vocab_size, (4, 16), generator=gen)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert 0 < opt.torque_stats()["damping"] < 1
    assert tiny_model_dir("bert") == tiny_model_dir("bert")  # built once per session
