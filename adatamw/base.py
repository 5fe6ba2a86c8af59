"""Shared machinery of the TAM optimizers: param groups, the torque scope, state, telemetry.

A subclass names its state (``_init_state``, ``momentum_key``) and how to update one group
(``_update``, given the group's plan from :func:`adatamw.kernels.pick`); this class gathers the
tensors with a gradient, picks the implementation, and computes the damping of Eqs. 2-4 in
between, over the whole optimizer (``cosine_scope="global"``) or per tensor (``"tensor"``),
without host syncs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import distributed, kernels, torque

#: State key of the smoothed cosine s (Eq. 3). ``"tensor"`` scope: every parameter has its own.
#: ``"global"`` scope: one 0-d tensor owned by the optimizer, which every parameter's state holds
#: (the same tensor object, updated in place; see :class:`TorqueOptimizer`).
TORQUE_STATE_KEY = "torque_s"
#: State key of the number of steps whose cosine was undefined: a sum of Eq. 2 was not finite (an
#: inf or NaN in g), so s was kept (:mod:`adatamw.torque`). One 0-d int64 tensor for the whole
#: optimizer (both scopes), held by every parameter's state like the global s.
UNDEFINED_KEY = "torque_undefined_steps"
#: The optimizer-wide torque keys of each scope.
GLOBAL_KEYS = {"global": (TORQUE_STATE_KEY, UNDEFINED_KEY), "tensor": (UNDEFINED_KEY,)}


@dataclass
class GroupBatch:
    """The tensors of one param group that take part in this step."""

    params: list[Tensor] = field(default_factory=list)  # process-local data (DTensor shards)
    sources: list[Tensor] = field(default_factory=list)  # the parameters themselves (DTensors)
    grads: list[Tensor] = field(default_factory=list)  # effective gradients g_t
    momenta: list[Tensor] = field(default_factory=list)  # m_{t-1}, updated in place
    states: list[dict] = field(default_factory=list)
    coefs: list[Tensor] = field(default_factory=list)  # torque_eps + d_t per parameter
    #: Per parameter, the sharded row mean of a coupled 2-D tensor (None: local mean is exact).
    row_means: Optional[list] = None
    plan: list = field(default_factory=list)  # kernels.Plan: (implementation, indices) pairs

    def subset(self, idx: list[int], *lists: list) -> list[list]:
        """The entries ``idx`` of each parallel per-parameter list (all of them when idx is
        the whole range, without a copy)."""
        if len(idx) == len(self.params):
            return list(lists)
        return [[seq[i] for i in idx] if seq else seq for seq in lists]


def check_range(name: str, value: float, low: float, high: float, high_open: bool = True) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``low <= value < high`` (or ``<= high``)."""
    ok = low <= value < high if high_open else low <= value <= high
    if not ok:
        bracket = ")" if high_open else "]"
        raise ValueError(f"Invalid {name}: {value!r}; it must be in [{low}, {high}{bracket}")


_PLAIN_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def local_tensor(t: Tensor) -> Tensor:
    """The process-local data of ``t`` (a DTensor's shard; a plain tensor itself)."""
    if type(t) in _PLAIN_TENSOR_TYPES:  # the common case, without an attribute lookup
        return t
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def refuse_sparse(p: Tensor, optimizer_name: str) -> None:
    if p.grad is not None and p.grad.is_sparse:
        raise RuntimeError(
            f"{optimizer_name} does not support sparse gradients (parameter of shape "
            f"{tuple(p.shape)}); use dense gradients, e.g. nn.Embedding(sparse=False)"
        )


class TorqueOptimizer(Optimizer):
    """Base class: subclasses define ``_init_state`` and ``_update``; torque is applied between.

    Where the optimizer-wide torque state lives (the global s, the undefined-step count):
    ``self.torque_state``, a dict of 0-d tensors owned by the optimizer, whatever the order or
    the contents of the param groups (empty groups, parameters without a gradient at a step,
    groups added later, DeepSpeed ZeRO-3 emptying them between steps). The state of every
    parameter holds the same tensor objects under the same keys, and the step updates them in
    place: so ``state_dict()`` carries them in the per-parameter state, the only part that
    distributed checkpoints (DCP's ``get_optimizer_state_dict``, FSDP1's ``optim_state_dict``,
    DeepSpeed ZeRO) keep, and any one parameter's entry restores them. Checkpoints written
    before, which hold them in the first parameter's state only, load the same way.
    """

    #: False for optimizers without torque damping (CoupledAdamW).
    uses_torque: bool = True

    def __init__(self, params: Any, defaults: dict) -> None:
        #: Shapes of each group's tensors as given (DeepSpeed's flat partitions are refused).
        self._built_shapes: list[list[tuple]] = []
        #: Explicit :class:`adatamw.distributed.Sharding` (FSDP1: ``distributed.shard_aware``);
        #: None: detected from the parameters at the first step (DTensors: FSDP2).
        self.sharding = None
        self._layout_key: Optional[tuple] = None
        self._layout = None
        self._plans = kernels.PlanCache()
        self._warned_undefined = False
        #: The optimizer-wide torque tensors (class docstring), created at the first step.
        self.torque_state: dict[str, Tensor] = {}
        #: The hyperparameters this optimizer defines (torch may add generic keys to defaults).
        self._hyper_keys = frozenset(defaults)
        super().__init__(params, defaults)

    # -- param groups --------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        self._check_group(group)
        for p in group["params"]:
            if torch.is_complex(p):
                raise ValueError(
                    f"{type(self).__name__} got a complex parameter of shape {tuple(p.shape)}: "
                    "the torque cosine (Eq. 2) is defined for real vectors. Optimize "
                    "torch.view_as_real(p) as a real parameter, or keep complex parameters in a "
                    "separate torch.optim optimizer"
                )
        kernels.check_group(
            group["params"],
            foreach=group.get("foreach"),
            fused=group.get("fused"),
            has_fused=self.has_fused,
            optimizer_name=type(self).__name__,
        )
        self._built_shapes.append([tuple(p.shape) for p in self.param_groups[-1]["params"]])
        if self.uses_torque and self.param_groups[0]["cosine_scope"] == "global":
            self._check_global_scope_consistent()

    #: The update has a fused C++ kernel (the Adam family; TAM's SGD update has none).
    has_fused: bool = False

    def _check_group(self, group: dict) -> None:
        """Validate the hyperparameters of one group (subclasses extend)."""
        if isinstance(group["lr"], Tensor) and group["lr"].numel() != 1:
            raise ValueError("Tensor lr must be 1-element")  # torch.optim's words
        check_range("lr", group["lr"], 0.0, float("inf"))
        check_range("weight_decay", group["weight_decay"], 0.0, float("inf"))
        if self.uses_torque:
            check_range("gamma", group["gamma"], 0.0, 1.0)
            check_range("torque_eps", group["torque_eps"], 0.0, float("inf"))
            torque.validate_scope(group["cosine_scope"])

    def _check_global_scope_consistent(self) -> None:
        """One global cosine needs one scope, gamma and torque_eps for every group."""
        first = self.param_groups[0]
        for key in ("cosine_scope", "gamma", "torque_eps"):
            values = {g[key] for g in self.param_groups}
            if len(values) > 1:
                raise ValueError(
                    f"Param groups disagree on {key} ({sorted(map(str, values))}) but "
                    f"cosine_scope={first['cosine_scope']!r} shares one cosine across "
                    f"all groups; give every group the same {key} or use cosine_scope='tensor'"
                )

    # -- the step --------------------------------------------------------------------------
    #: State key of the momentum m (``exp_avg`` for Adam, ``momentum_buffer`` for SGD).
    momentum_key: str = "exp_avg"
    #: True: weight decay is an L2 term wd * p added to g before the cosine (Adam, SGD);
    #: False: AdamW's decoupled p <- p - lr wd p.
    l2_weight_decay: bool = False

    def _init_state(self, state: dict, local: Tensor) -> None:  # pragma: no cover - abstract
        """Create the per-parameter state (``momentum_key`` included) for ``local``."""
        raise NotImplementedError

    def _gather(self, group: dict) -> GroupBatch:
        """The parameters of ``group`` that have a gradient, with state created on first use."""
        batch = GroupBatch()
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            if grad.is_sparse:
                refuse_sparse(p, type(self).__name__)
            state = self.state[p]
            local = local_tensor(p)
            if self.momentum_key not in state:
                # zeros_like(p): under FSDP2 the state is a DTensor with the parameter's mesh
                # and placements, so distributed checkpoints see the whole tensor
                self._init_state(state, p)
                self._new_torque_state(state, local)
            batch.params.append(local)
            batch.sources.append(p)
            batch.grads.append(local_tensor(grad))
            batch.momenta.append(local_tensor(state[self.momentum_key]))
            batch.states.append(state)
        batch.grads = self._effective_grads(group, batch.params, batch.grads)
        batch.plan = self._plans.plan(group, batch.params, sgd=not self.has_fused)
        return batch

    def _update(self, group: dict, batch: GroupBatch) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Perform a single optimization step.

        Args:
            closure: a closure that re-evaluates the model and returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        sharding = self._sharding()
        batches = [self._gather(group) for group in self.param_groups]
        if sharding is not None:  # collectives: every rank takes part, even with no local data
            self._assign_row_means(sharding, batches)
        if self.uses_torque and (sharding is not None or any(b.params for b in batches)):
            self._assign_torque_coefs(batches, sharding)
        for group, batch in zip(self.param_groups, batches):
            if batch.params:
                self._update(group, batch)
        return loss

    def _effective_grads(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
        """g_t as the update sees it: negated under ``maximize``; plus ``wd * p`` under
        ``l2_weight_decay``."""
        if group.get("maximize", False):
            grads = [torch.neg(g) for g in grads]
        wd = group["weight_decay"]
        if self.l2_weight_decay and wd != 0:
            grads = [g.add(p, alpha=wd) for g, p in zip(grads, params)]
        return grads

    # -- sharding (docs/distributed.md, adatamw/sharding/) ---------------------------------
    def _sharding(self):
        """The layout's :class:`~adatamw.distributed.Sharding`, or None when nothing is sharded.

        Resolved again only when a parameter changes (accelerate swaps in FSDP2's DTensors
        after construction) or an explicit sharding is set; otherwise one comparison of the
        parameters' ids (a few microseconds).
        """
        key = (self.sharding, *(tuple(map(id, g["params"])) for g in self.param_groups))
        if key != self._layout_key:
            self._layout = distributed.resolve(self)
            self._layout_key = key
        return self._layout

    def _assign_row_means(self, sharding, batches: list[GroupBatch]) -> None:
        for group, b in zip(self.param_groups, batches):
            if group.get("coupled"):
                b.row_means = [sharding.row_mean(p) if p.dim() == 2 else None for p in b.sources]

    # -- torque (Eqs. 2-4) -----------------------------------------------------------------
    def _assign_torque_coefs(self, batches: list[GroupBatch], sharding=None) -> None:
        """c_t = torque_eps + d_t for every tensor of the step, from each implementation's sums."""
        scope = self.param_groups[0]["cosine_scope"]
        chunks, sources = [], []
        for b in batches:  # per group and implementation: the sums of Eq. 2, in plan order
            for impl, idx in b.plan:
                momenta, grads, srcs = b.subset(idx, b.momenta, b.grads, b.sources)
                chunks.append(impl.torque_sums(momenta, grads))
                sources.extend(srcs)
        sums = _concat(chunks)
        if sharding is not None:
            sums = sharding.reduce_partials(sums, sources, scope)
        if scope == "global":
            group = self.param_groups[0]
            cos, defined = torque.cosine(_total(sums))
            s_held = self.torque_state.get(TORQUE_STATE_KEY)
            if s_held is None:
                s_held = self._adopt(
                    TORQUE_STATE_KEY, torch.zeros((), dtype=_s_dtype(batches), device=sums.device)
                )
            s_held.copy_(torque.smooth(s_held, cos, group["gamma"], defined))
            coef = torque.damping(s_held) + group["torque_eps"]
            for b in batches:
                b.coefs = [coef] * len(b.params)
            self._count_undefined(defined)
            return
        cos, defined = torque.cosine(sums)
        row = 0
        for group, b in zip(self.param_groups, batches):
            order = [i for _, idx in b.plan for i in idx]
            n = len(order)
            if not n:
                continue
            states = [b.states[i] for i in order]
            s_prev = torch.stack([st[TORQUE_STATE_KEY] for st in states])
            s = torque.smooth(s_prev, cos[row : row + n], group["gamma"], defined[row : row + n])
            torch._foreach_copy_([st[TORQUE_STATE_KEY] for st in states], list(s.unbind()))
            coefs = torque.damping(s) + group["torque_eps"]
            b.coefs = [None] * n
            start = 0
            for impl, idx in b.plan:  # foreach: one cast per bucket, not one per tensor
                part = coefs[start : start + len(idx)]
                if impl is kernels.FOREACH:
                    part = part.to(b.momenta[idx[0]].dtype)
                for i, c in zip(idx, part.unbind()):
                    b.coefs[i] = c
                start += len(idx)
            row += n
        self._count_undefined(defined.all())

    def _count_undefined(self, defined: Tensor) -> None:
        """Count (on the device, in place) a step whose cosine was undefined; warn at the first
        one (read on CPU only: no host sync on an accelerator)."""
        count = self.torque_state.get(UNDEFINED_KEY)
        if count is None:
            count = self._adopt(UNDEFINED_KEY, torch.zeros((), dtype=torch.int64, device=defined.device))
        count.add_(torch.logical_not(defined).to(torch.int64))
        if not torch.compiler.is_compiling() and count.device.type == "cpu":
            self._warn_undefined(count)

    def _warn_undefined(self, count: Tensor) -> None:
        if self._warned_undefined or int(count) == 0:
            return
        self._warned_undefined = True
        warnings.warn(
            f"{type(self).__name__}: the torque cosine (Eq. 2) was undefined at a step: a "
            "gradient (or the momentum) holds an inf or NaN. s was kept from the previous step "
            "and only the non-finite elements are damaged, as in AdamW. torque_stats()"
            "['undefined_steps'] counts such steps; check the loss scale / gradient clipping",
            RuntimeWarning,
            stacklevel=3,
        )

    def _adopt(self, key: str, value: Tensor) -> Tensor:
        """Make ``value`` the optimizer-wide ``key`` and put it in every parameter's state."""
        self.torque_state[key] = value
        for state in self.state.values():
            if self.momentum_key in state:
                state[key] = value
        return value

    def _new_torque_state(self, state: dict, param: Tensor) -> None:
        """Per-tensor s_0 = 0 (tensor scope), and the optimizer-wide tensors created so far.

        s is float32, or float64 for float64 parameters, whatever the parameter's dtype."""
        if not self.uses_torque:
            return
        if self.param_groups[0]["cosine_scope"] == "tensor":
            dtype = torch.float64 if param.dtype == torch.float64 else torch.float32
            state[TORQUE_STATE_KEY] = torch.zeros((), dtype=dtype, device=param.device)
        state.update(self.torque_state)

    #: Per-parameter state keys of this optimizer (besides the torque keys).
    state_keys: tuple[str, ...] = ()

    def load_state_dict(self, state_dict: dict) -> None:
        """As ``torch.optim.Optimizer``, with three differences.

        The state is checked first: another optimizer's state (``torch.optim.AdamW``'s, or TAM's
        into AdaTAMW) raises ``ValueError`` naming the missing and foreign keys, instead of a
        ``KeyError`` at the next ``step()``. The torque tensors keep their saved dtype: torch
        casts every state tensor but ``step`` to its parameter's dtype, which would round s for
        bf16 parameters (a resumed run would no longer be bit-exact) and turn the int64
        undefined-step count into a float (in bf16 it stops at 256). The optimizer-wide tensors
        are taken from the first parameter whose saved state holds them (every parameter's, or
        the first one's in checkpoints written before) and shared again by every parameter.
        """
        self._check_loadable(state_dict)
        super().load_state_dict(state_dict)
        scope = self.param_groups[0].get("cosine_scope") if self.uses_torque else None
        shared = GLOBAL_KEYS.get(scope, ())
        self.torque_state = {}
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for saved_id, p in zip(saved_ids, params):
            saved = state_dict["state"].get(saved_id, {})
            for key in (TORQUE_STATE_KEY, UNDEFINED_KEY):
                if key not in saved:
                    continue
                value = saved[key].to(device=p.device, copy=True)  # its own copy, saved dtype
                if key not in shared:
                    self.state[p][key] = value
                elif key not in self.torque_state:
                    self.torque_state[key] = value
        for state in self.state.values():
            if self.momentum_key in state:
                state.update(self.torque_state)

    def _check_loadable(self, state_dict: dict) -> None:
        name = type(self).__name__
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError(
                f"{name}.load_state_dict: expected an optimizer state dict with 'state' and 'param_groups'"
            )
        for i, group in enumerate(state_dict["param_groups"]):
            missing = sorted(self._hyper_keys - set(group))
            if missing:
                raise ValueError(
                    f"{name}.load_state_dict: param_groups[{i}] lacks {missing}: this state dict "
                    f"was saved by another optimizer (its group keys: "
                    f"{sorted(k for k in group if k != 'params')}). Load it into the optimizer that "
                    f"saved it, or start {name} from fresh state"
                )
        torque_keys = {TORQUE_STATE_KEY, UNDEFINED_KEY} if self.uses_torque else set()
        own = set(self.state_keys)
        for key, state in state_dict["state"].items():
            keys = set(state)
            foreign = sorted(keys - own - torque_keys)
            missing = sorted(own - keys) if keys - torque_keys else []
            if foreign or missing:
                raise ValueError(
                    f"{name}.load_state_dict: the state of parameter {key} has "
                    f"{'foreign keys ' + str(foreign) if foreign else ''}"
                    f"{' and ' if foreign and missing else ''}"
                    f"{'no ' + str(missing) if missing else ''}; {name} keeps {sorted(own)}"
                    f"{' and ' + str(sorted(torque_keys)) if torque_keys else ''}. This state dict "
                    "was saved by another optimizer: load it into that one, or start fresh"
                )

    # -- telemetry (the paper's Figure 8) --------------------------------------------------
    @torch.no_grad()
    def torque_stats(self) -> dict[str, float]:
        """The smoothed cosine ``s_hat`` (Eq. 3) and the damping ``d = (1 + s) / 2`` (Eq. 4).

        In ``"tensor"`` scope ``s_hat``/``damping`` are means over tensors and
        ``s_hat_min``/``s_hat_max`` are added; ``undefined_steps`` counts the steps whose
        cosine was undefined (non-finite gradients: s kept, see :mod:`adatamw.torque`). Reading
        them syncs with the device, so call this at logging steps, not inside the training step.
        Empty without torque.
        """
        if not self.uses_torque:
            return {}
        count = self.torque_state.get(UNDEFINED_KEY)
        undefined = {"undefined_steps": int(count) if count is not None else 0}
        if count is not None:
            self._warn_undefined(count)
        if self.param_groups[0]["cosine_scope"] == "global":
            s = self.torque_state.get(TORQUE_STATE_KEY)
            s_val = float(s) if s is not None else 0.0
            return {"s_hat": s_val, "damping": (1.0 + s_val) / 2.0, **undefined}
        values = [st[TORQUE_STATE_KEY] for st in self.state.values() if TORQUE_STATE_KEY in st]
        if not values:
            return {"s_hat": 0.0, "damping": 0.5, "s_hat_min": 0.0, "s_hat_max": 0.0, **undefined}
        s = torch.stack([v.to(values[0].device) for v in values]).double()
        mean = float(s.mean())
        return {
            "s_hat": mean,
            "damping": (1.0 + mean) / 2.0,
            "s_hat_min": float(s.min()),
            "s_hat_max": float(s.max()),
            **undefined,
        }


def _concat(chunks: list[Tensor]) -> Tensor:
    """The ``[N, 3]`` sums of every chunk, in one dtype (float64 if any is) and device."""
    if len(chunks) == 1:
        return chunks[0]
    if not chunks:
        return torch.zeros(0, 3)
    dtype = torch.float64 if any(c.dtype == torch.float64 for c in chunks) else torch.float32
    return torch.cat([c.to(device=chunks[0].device, dtype=dtype) for c in chunks])


def _total(sums: Tensor) -> Tensor:
    """The global scope's three sums: the rows added in float64 (where the device has it), so
    the total hardly depends on the order of the rows, that is of the param groups."""
    wide = torch.float32 if sums.device.type == "mps" else torch.float64
    return sums.sum(0, dtype=wide if sums.dtype != wide else None)


def _s_dtype(batches: list[GroupBatch]) -> torch.dtype:
    """s is float32 whatever the parameters' dtype, float64 when a parameter is float64."""
    f64 = any(p.dtype == torch.float64 for b in batches for p in b.params)
    return torch.float64 if f64 else torch.float32
