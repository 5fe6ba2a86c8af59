"""``TAMTrainer``: a :class:`transformers.Trainer` that builds a Torque-Aware Momentum optimizer.

Torque-Aware Momentum (TAM, arXiv 2412.18790) damps each gradient's contribution to the momentum by
``d = (1 + s) / 2``, where ``s`` is the smoothed cosine between the momentum and the new gradient
(Eqs. 2-4). ``TAMTrainer`` builds AdaTAMW (Eq. 7 with decoupled weight decay), AdaTAM, TAM (SGD,
Algorithm 1) or CoupledAdamW with the Trainer's own decay / no-decay grouping and its
``TrainingArguments`` hyperparameters, and logs ``s_hat`` and ``damping`` next to the loss at every
logging step (the paper's Figure 8), so ``report_to="tensorboard"`` etc. receive the curve.

A plain ``transformers.Trainer(..., optimizer_cls_and_kwargs=(AdaTAMW, {...}))`` works too; add
:func:`adatamw.callbacks.add_torque_logging` to it for the telemetry.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

from . import registry
from .callbacks import TAMWarmupCallback, torque_log_values
from .groups import embedding_param_groups
from .registry import OPTIM_NAMES
from .sharding.fsdp import shard_aware
from .sharding.zero import zero_aware_callback

__all__ = ["OPTIM_NAMES", "TAMTrainer"]


class TAMTrainer(Trainer):
    """:class:`transformers.Trainer` whose default optimizer is a TAM variant.

    Args:
        optim_name: ``"adatamw"`` (default), ``"adatam"``, ``"tam"``, ``"coupled_adamw"`` or
            ``"adamw"``. ``"adamw"`` defers to ``transformers.Trainer.create_optimizer`` and so builds
            exactly what a plain Trainer builds from ``args.optim`` (fair baselines).
        optim_kwargs: hyperparameters overriding the defaults, e.g. ``{"gamma": 0.9,
            "cosine_scope": "tensor", "momentum": "ema"}`` for AdaTAMW or ``{"momentum": 0.9}`` for
            TAM. With ``coupled_embeddings`` the key ``coupled_scale`` goes to the coupled group.
        coupled_embeddings: put the input embedding (and a tied output embedding, once) into a param
            group with ``coupled=True`` (Coupled Adam's shared second moment, arXiv 2502.08441).
        All other arguments are those of :class:`transformers.Trainer`.

    From ``TrainingArguments``: ``learning_rate`` -> ``lr``; ``adam_beta1``, ``adam_beta2`` ->
    ``betas`` and ``adam_epsilon`` -> ``eps`` (Adam-type optimizers); ``weight_decay`` on every
    parameter except biases and norm layers (``Trainer.get_decay_parameter_names``).
    """

    def __init__(
        self,
        *args: Any,
        optim_name: str = "adatamw",
        optim_kwargs: dict[str, Any] | None = None,
        coupled_embeddings: bool = False,
        **kwargs: Any,
    ):
        if optim_name not in OPTIM_NAMES:
            raise ValueError(f"optim_name must be one of {OPTIM_NAMES}, got {optim_name!r}")
        if optim_kwargs is not None and not isinstance(optim_kwargs, dict):
            raise ValueError(f"optim_kwargs must be a dict or None, got {type(optim_kwargs).__name__}")
        if optim_name == "adamw" and optim_kwargs:
            raise ValueError(
                "optim_kwargs is not used with optim_name='adamw', which builds the plain Trainer's "
                "optimizer: set its hyperparameters in TrainingArguments (learning_rate, adam_beta1/2, "
                "adam_epsilon, weight_decay, optim, optim_args)"
            )
        if coupled_embeddings and not registry.get(optim_name).coupled:
            raise ValueError(
                "coupled_embeddings=True needs an optimizer with a coupled second moment; "
                f"optim_name={optim_name!r} has none: use 'adatamw', 'adatam' or 'coupled_adamw'"
            )
        if kwargs.get("optimizer_cls_and_kwargs") is not None:
            raise ValueError(
                "TAMTrainer builds its optimizer from optim_name; drop optimizer_cls_and_kwargs, or pass it "
                "to a plain transformers.Trainer instead"
            )
        self.optim_name = optim_name
        self.optim_kwargs = dict(optim_kwargs or {})
        self.coupled_embeddings = coupled_embeddings
        super().__init__(*args, **kwargs)
        self.add_callback(zero_aware_callback())  # exact torque under DeepSpeed ZeRO; else a no-op

    # ---- optimizer ---------------------------------------------------------

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """Build the optimizer named by ``optim_name`` (see the class docstring)."""
        if self.optimizer is None and self.optim_name != "adamw":
            opt_model = self.model if model is None else model
            optimizer_cls = registry.get(self.optim_name).cls
            kwargs = self._optimizer_kwargs()
            groups = self._param_groups(opt_model, kwargs)
            try:
                self.optimizer = optimizer_cls(groups, **kwargs)
            except TypeError as err:
                raise ValueError(
                    f"{optimizer_cls.__name__} rejected the keyword arguments {sorted(kwargs)} "
                    f"(from TrainingArguments and optim_kwargs={self.optim_kwargs}): {err}"
                ) from err
            _make_shard_aware_under_fsdp1(self.optimizer, opt_model)
        # The parent builds the default optimizer for "adamw" and otherwise only applies its wrapping.
        return super().create_optimizer(model)

    def _optimizer_kwargs(self) -> dict[str, Any]:
        args = self.args
        kwargs: dict[str, Any] = {"lr": args.learning_rate}
        if registry.get(self.optim_name).adam:
            kwargs.update(betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
        kwargs.update(self.optim_kwargs)
        return kwargs

    def _param_groups(self, model: torch.nn.Module, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        """HF's decay / no-decay split; with ``coupled_embeddings`` the embedding group first."""
        decay_names = self.get_decay_parameter_names(model)
        if self.coupled_embeddings:
            coupled_scale = kwargs.pop("coupled_scale", 1.0)
            groups = embedding_param_groups(
                model,
                weight_decay=self.args.weight_decay,
                coupled_scale=coupled_scale,
                decay_parameter_names=decay_names,
            )
        else:
            trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            groups = [
                {
                    "params": [p for n, p in trainable if n in decay_names],
                    "weight_decay": self.args.weight_decay,
                },
                {"params": [p for n, p in trainable if n not in decay_names], "weight_decay": 0.0},
            ]
        return [group for group in groups if group["params"]]

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        """A TAM warm-up that switched before ``checkpoint`` was written switches first, so the
        switched optimizer's state is loaded into the switched optimizer."""
        if checkpoint is not None:
            for callback in self.callback_handler.callbacks:
                if isinstance(callback, TAMWarmupCallback):
                    callback.prepare_resume(self.optimizer, self.lr_scheduler, checkpoint)
        super()._load_optimizer_and_scheduler(checkpoint)

    # ---- logging -------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the optimizer's ``s_hat`` / ``damping`` (and ``s_hat_min`` / ``s_hat_max`` in tensor
        scope) to every training log, the paper's Figure 8 telemetry."""
        if "loss" in logs:
            logs.update(torque_log_values(self.optimizer))
        super().log(logs, start_time)


def _make_shard_aware_under_fsdp1(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> None:
    """FSDP1 flat views hide their sharding: tell the optimizer (docs/distributed.md), as users would with
    ``adatamw.distributed.shard_aware``. FSDP2's DTensors are detected by the optimizer itself."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    if FSDP.fsdp_modules(model):
        shard_aware(optimizer, model=model)
