"""Shared test set-up: the one offline environment (no Hugging Face Hub: every test and every
subprocess it starts inherits it) and one tiny-model factory as a fixture. The helpers live in
:mod:`tests.support` (``tests`` is a package, so pytest puts the repository root on sys.path)."""

import os
from pathlib import Path

import pytest

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
for _name, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_name, _value)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """``tiny_model_dir(family="bert", seed=0) -> Path``: a tiny random masked-LM folder
    (``tests/support/tiny_models.py``: bert / roberta / deberta-v2, 2 layers, hidden 32, MiniLM's
    tokenizer), saved once per session and shared by every test that asks for the same one."""
    made: dict[tuple[str, int], Path] = {}

    def make(family: str = "bert", seed: int = 0) -> Path:
        if (family, seed) not in made:
            from tests.support.tiny_models import save_tiny_model  # transformers only for tests that use it

            folder = tmp_path_factory.mktemp(f"tiny-{family}-{seed}")
            made[family, seed] = save_tiny_model(family, folder, seed=seed)
        return made[family, seed]

    return make


@pytest.fixture(scope="module")
def text_files(tmp_path_factory) -> tuple[Path, Path]:
    """A 30 KB / 8 KB slice of the bundled sample, so tests tokenize little."""
    from recipes.hub import SAMPLE_FILES

    root = tmp_path_factory.mktemp("text")
    train, valid = root / "train.txt", root / "valid.txt"
    train.write_text(SAMPLE_FILES["train"].read_text(encoding="utf-8")[:30_000], encoding="utf-8")
    valid.write_text(SAMPLE_FILES["validation"].read_text(encoding="utf-8")[:8_000], encoding="utf-8")
    return train, valid
