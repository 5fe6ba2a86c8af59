"""Say so when an FSDP launch will not run FSDP (docs/distributed.md, "FSDP and DDP").

``accelerate`` enables FSDP only on accelerator devices: ``AcceleratorState`` switches the
distributed type to ``FSDP`` from ``MULTI_GPU`` / ``MULTI_XPU`` / ``MULTI_NPU`` / ... but never
from ``MULTI_CPU`` (accelerate 1.16, ``state.py``). So ``accelerate launch --config_file
recipes/accelerate/fsdp.yaml`` with ``use_cpu: true`` (or on a machine without GPUs, where the
recipe sets ``use_cpu``), and ``TrainingArguments(fsdp=...)`` on CPU, train with
DistributedDataParallel: whole parameters on every rank, the same numbers as a DDP launch, and
no word that FSDP was dropped. :func:`warn_if_fsdp_downgraded` is that word.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

logger = logging.getLogger(__name__)

#: Distributed types from which accelerate never turns FSDP on.
_NO_FSDP_TYPES = ("MULTI_CPU", "NO")


def fsdp_requested(training_args: Any) -> Optional[str]:
    """How FSDP was asked for, or ``None``: ``accelerate launch`` with ``distributed_type: FSDP``
    (it exports ``ACCELERATE_USE_FSDP=true``) or ``TrainingArguments.fsdp``."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        version = os.environ.get("FSDP_VERSION", "1")
        return f"accelerate launch with distributed_type: FSDP (fsdp_version {version})"
    if getattr(training_args, "fsdp", None):
        return f"TrainingArguments(fsdp={training_args.fsdp!r})"
    return None


def warn_if_fsdp_downgraded(training_args: Any) -> Optional[str]:
    """Log a warning, and return it, when FSDP was requested but accelerate will not run it.

    Reads the distributed type that ``training_args`` set up (``PartialState``, which the
    Trainer's Accelerator reuses). Returns ``None`` when FSDP was not requested or will run.
    """
    requested = fsdp_requested(training_args)
    if requested is None:
        return None
    _ = training_args.device  # sets up the PartialState (distributed_state) if not yet done
    state = getattr(training_args, "distributed_state", None)
    kind = state.distributed_type.name if state is not None else "NO"
    if kind not in _NO_FSDP_TYPES:
        return None
    runs = (
        "DistributedDataParallel (whole parameters on every rank, the same run as a DDP launch)"
        if kind == "MULTI_CPU"
        else "one process without sharding"
    )
    message = (
        f"FSDP was requested ({requested}) but accelerate set up DistributedType.{kind}: it "
        "enables FSDP only on GPUs (and other accelerators), never on CPU (use_cpu), so this "
        f"run trains with {runs}. AdaTAMW stays exact, but nothing is sharded and no memory is "
        "saved. Run FSDP on GPUs, or launch with recipes/accelerate/ddp.yaml (--multi_gpu on "
        "CPU) to say what runs; see docs/distributed.md"
    )
    logger.warning(message)
    return message
