"""The documented ``report_to="tensorboard"`` (docs/optimizers.md, the paper's Figure 8) works in the
installed environment: a tiny Trainer run writes TensorBoard events holding the torque scalars,
equal to the Trainer's own log history (the reference)."""

from __future__ import annotations

import pytest
import torch

# no importorskip: the [hf] extra installs tensorboard, and a missing one must fail here
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForMaskedLM, TrainingArguments

from adatamw.trainer import TAMTrainer

STEPS = 3


class Blocks(torch.utils.data.Dataset):
    """A few fixed token blocks with labels (every token predicted)."""

    def __init__(self, vocab: int, n: int = 8, length: int = 16):
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(5, vocab, (n, length), generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones_like(self.ids[i]),
            "labels": self.ids[i],
        }


def test_tensorboard_receives_the_torque_logs(tiny_model_dir, tmp_path, monkeypatch):
    logdir = tmp_path / "tb"
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(logdir))  # transformers 5's way to place the events
    model = AutoModelForMaskedLM.from_pretrained(tiny_model_dir("bert"))
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        report_to="tensorboard",
        logging_steps=1,
        max_steps=STEPS,
        per_device_train_batch_size=4,
        learning_rate=1e-4,
        save_strategy="no",
        use_cpu=True,
        seed=0,
    )
    trainer = TAMTrainer(
        model=model, args=args, train_dataset=Blocks(model.config.vocab_size), optim_name="adatamw"
    )
    trainer.train()

    logs = [entry for entry in trainer.state.log_history if "s_hat" in entry]
    assert [entry["step"] for entry in logs] == list(range(1, STEPS + 1))
    events = EventAccumulator(str(logdir)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/s_hat", "train/damping", "train/loss"} <= tags, tags
    for tag in ("s_hat", "damping", "loss"):
        written = {event.step: event.value for event in events.Scalars(f"train/{tag}")}
        expected = {entry["step"]: entry[tag] for entry in logs}
        assert written == pytest.approx(expected, rel=1e-6), tag
