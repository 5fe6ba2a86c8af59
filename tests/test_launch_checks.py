"""recipes.launch_checks: an FSDP request that accelerate will not run is named (one process;
the 2-rank MULTI_CPU case runs in tests/test_fsdp_checkpoint.py)."""

from __future__ import annotations

import logging

from transformers import TrainingArguments

from recipes.launch_checks import fsdp_requested, warn_if_fsdp_downgraded


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
