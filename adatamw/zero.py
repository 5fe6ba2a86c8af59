"""Exact torque under DeepSpeed ZeRO stages 1, 2 and 3: the public face of
:mod:`adatamw.sharding.zero` (docs/distributed.md).

``zero_aware(engine)`` after ``deepspeed.initialize``, or ``callbacks=[zero_aware_callback()]``
with a ``transformers.Trainer`` (``TAMTrainer`` adds it itself).
"""

from .sharding.zero import ZeroSharding, detect, zero_aware, zero_aware_callback

__all__ = ["ZeroSharding", "detect", "zero_aware", "zero_aware_callback"]
