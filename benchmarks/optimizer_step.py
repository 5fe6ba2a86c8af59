"""Optimizer-step time of AdaTAMW (each path) against torch.optim.AdamW, interleaved in one run.

Parameters are shaped like all-MiniLM-L6-v2 (22.7 M) and BERT-base (110 M) masked-LM models
(built on the meta device from their configs, then filled with random values), gradients are
random, and every optimizer steps the same parameters in turn, repetition after repetition,
so machine load affects all of them alike. Prints the median step time of each, its ratio to
torch's fused and foreach AdamW, and the optimizer-state bytes against AdamW's.

The cosine of Eq. 2 needs m_{t-1} and g_t before any parameter moves, so an exact step reads
both once more than AdamW does. The last line measures that floor in the same run: fused
AdamW's step plus one read of m and g with torch's kernels.

The "calls" column counts, for one step after the warm-up, the non-view aten calls (CPU, a
``TorchDispatchMode``) or the device kernels launched (``--device cuda``, ``torch.profiler``):
on an accelerator each call is at least one launch, so a count that grows with the number of
tensors is what bounds an eager step there.

Rows marked "(before)" run the foreach or loop step with the per-tensor sums of Eq. 2 as they
were before the constant-kernel sums and the non-finite rule (three ``torch.dot`` per tensor,
no masking), swapped in for that row only: the cost of the rule and of the new sums, measured
side by side. "multi-tensor sums" is the accelerator's form of foreach's sums run on CPU (where
the C++ sums op is the default).

On an accelerator (``--device cuda``) the C++ kernels do not apply: the table has AdaTAMW's
default (foreach) and its ``torch.compile``-d foreach step (tensor lr, inductor fuses the
foreach ops), next to AdamW's fused, foreach and compiled foreach steps.

    python -m benchmarks.optimizer_step [--models minilm bert-base] [--reps 15] [--device cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from typing import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from adatamw import TAM, AdaTAMW, kernels
from adatamw.kernels import foreach

READ = "read m and g once (torch.dot)"

CONFIGS = {
    # all-MiniLM-L6-v2: 6 layers, hidden 384, intermediate 1536, vocab 30522.
    "minilm": dict(
        hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536, vocab_size=30522
    ),
    # bert-base-uncased: BertConfig's defaults.
    "bert-base": dict(),
}


def model_shapes(name: str) -> list[torch.Size]:
    from transformers import BertConfig, BertForMaskedLM

    with torch.device("meta"):
        model = BertForMaskedLM(BertConfig(**CONFIGS[name]))
    return [p.shape for p in model.parameters()]


def make_params(shapes, seed=0, device="cpu") -> list[nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = [nn.Parameter((torch.randn(s, generator=gen) * 0.02).to(device)) for s in shapes]
    for p in params:
        p.grad = (torch.randn(p.shape, generator=gen) * 1e-3).to(device)
    return params


def per_tensor_dots(momenta, grads) -> torch.Tensor:
    """Eq. 2's sums as every path but fused took them before: three ``torch.dot`` per tensor,
    in float32 (bf16 upcast) or float64, no masking of m's non-finite elements."""
    rows = []
    for m, g in zip(momenta, grads):
        mf, gf = m.reshape(-1), g.reshape(-1)
        if mf.dtype not in (torch.float32, torch.float64):
            mf, gf = mf.float(), gf.float()
        rows.append(torch.stack((torch.dot(mf, gf), torch.dot(mf, mf), torch.dot(gf, gf))))
    return torch.stack(rows)


#: Rows whose implementation takes other sums of Eq. 2 for its own steps only.
SWAPPED_SUMS = {
    "AdaTAMW foreach (before)": (kernels.FOREACH, per_tensor_dots),
    "AdaTAMW foreach multi-tensor sums": (kernels.FOREACH, foreach.multi_tensor_sums),
    "AdaTAMW loop (before)": (kernels.LOOP, per_tensor_dots),
}


@contextlib.contextmanager
def sums_swapped(impl: kernels.Implementation, sums: Callable):
    saved = impl.torque_sums
    object.__setattr__(impl, "torque_sums", sums)  # a frozen dataclass: for this row only
    try:
        yield
    finally:
        object.__setattr__(impl, "torque_sums", saved)


def candidates(params, device: str) -> dict[str, torch.optim.Optimizer]:
    opts = {
        "AdamW fused": torch.optim.AdamW(params, lr=1e-5, fused=True),
        "AdamW foreach": torch.optim.AdamW(params, lr=1e-5, foreach=True),
        "AdaTAMW default": AdaTAMW(params, lr=1e-5),
        "AdaTAMW foreach": AdaTAMW(params, lr=1e-5, foreach=True),
        "AdaTAMW foreach (before)": AdaTAMW(params, lr=1e-5, foreach=True),
        "AdaTAMW foreach tensor-scope": AdaTAMW(params, lr=1e-5, foreach=True, cosine_scope="tensor"),
        "AdaTAMW loop": AdaTAMW(params, lr=1e-5, foreach=False),
        "AdaTAMW loop (before)": AdaTAMW(params, lr=1e-5, foreach=False),
        "TAM foreach": TAM(params, lr=1e-5, foreach=True),
    }
    if device == "cpu":
        opts["AdaTAMW foreach multi-tensor sums"] = AdaTAMW(params, lr=1e-5, foreach=True)
    else:  # compiled foreach steps, with tensor lrs (no recompiles), as torch.optim
        opts["AdamW foreach compiled"] = torch.optim.AdamW(
            params, lr=torch.tensor(1e-5, device=device), foreach=True
        )
        opts["AdaTAMW foreach compiled"] = AdaTAMW(params, lr=torch.tensor(1e-5, device=device), foreach=True)
        opts["AdaTAMW foreach tensor-scope compiled"] = AdaTAMW(
            params, lr=torch.tensor(1e-5, device=device), foreach=True, cosine_scope="tensor"
        )
    return opts


def stepper(key: str, opt: torch.optim.Optimizer) -> Callable[[], object]:
    step = torch.compile(opt.step) if key.endswith("compiled") else opt.step
    if key not in SWAPPED_SUMS:
        return step

    def swapped_step():
        with sums_swapped(*SWAPPED_SUMS[key]):
            return step()

    return swapped_step


class _AtenCalls(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += not func.is_view
        return func(*args, **(kwargs or {}))


def calls_per_step(fn: Callable[[], object], device: str) -> int:
    """One step's non-view aten calls (CPU) or device kernels launched (CUDA, torch.profiler)."""
    if device == "cpu":
        with _AtenCalls() as counter:
            fn()
        return counter.count
    activity = torch.profiler.ProfilerActivity.CUDA
    with torch.profiler.profile(activities=[activity]) as prof:
        fn()
        _sync()
    return sum(1 for evt in prof.events() if evt.device_type == torch.autograd.DeviceType.CUDA)


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of the state's tensors, each counted once (every parameter's state holds the same
    optimizer-wide torque tensors)."""
    unique = {id(v): v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)}
    return sum(v.numel() * v.element_size() for v in unique.values())


def read_once(opt: torch.optim.Optimizer, params) -> Callable[[], None]:
    """One read of every m and g with torch's own kernels (a dot product per tensor): the least
    memory traffic the cosine of Eq. 2 adds to an AdamW step."""
    pairs = [(opt.state[p]["exp_avg"].view(-1), p.grad.view(-1)) for p in params]
    return lambda: [torch.dot(m, g) for m, g in pairs]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def interleaved_medians(
    timed: dict[str, Callable[[], object]], reps: int, after_each_rep: Callable[[], None] = lambda: None
) -> dict[str, float]:
    """Median seconds of each callable, run in turn repetition after repetition (so machine
    load hits all of them alike), ``after_each_rep`` untimed between repetitions."""
    times = {key: [] for key in timed}
    for _ in range(reps):
        for key, fn in timed.items():
            _sync()
            t0 = time.perf_counter()
            fn()
            _sync()
            times[key].append(time.perf_counter() - t0)
        after_each_rep()
    return {key: statistics.median(v) for key, v in times.items()}


def per_step_overhead(n_tensors: int, reps: int, device: str) -> dict[str, float]:
    """Median step time over ``n_tensors`` one-element parameters: what a step costs besides
    moving memory (Python, dispatch, kernel launches)."""
    params = make_params([torch.Size([1])] * n_tensors, device=device)
    opts = {
        "AdamW fused": torch.optim.AdamW(params, lr=1e-5, fused=True),
        "AdaTAMW default": AdaTAMW(params, lr=1e-5),
    }
    return interleaved_medians({key: opt.step for key, opt in opts.items()}, reps)


def bench(name: str, reps: int, device: str) -> None:
    shapes = model_shapes(name)
    params = make_params(shapes, device=device)
    n = sum(p.numel() for p in params)
    opts = candidates(params, device)
    timed = {key: stepper(key, opt) for key, opt in opts.items()}
    for fn in timed.values():  # warm-up: allocate state, compile
        fn()
        fn()
    calls = {key: calls_per_step(fn, device) for key, fn in timed.items()}
    timed[READ] = read_once(opts["AdaTAMW default"], params)
    with torch.no_grad():
        snapshot = [p.detach().clone() for p in params]

    @torch.no_grad()
    def restore() -> None:  # keep the parameters bounded: every candidate sees the same
        for p, s in zip(params, snapshot):
            p.copy_(s)

    med = interleaved_medians(timed, reps, restore)
    adamw_bytes = state_bytes(opts["AdamW fused"])
    print(f"\n{name}: {len(params)} tensors, {n / 1e6:.1f} M parameters, median of {reps}")
    what = "aten calls" if device == "cpu" else "kernels"
    print(
        f"{'optimizer':38s} {'ms/step':>9s} {'vs fused':>9s} {'vs foreach':>11s} "
        f"{'state/AdamW':>12s} {what:>11s}"
    )
    for key in timed:
        state = f"{state_bytes(opts[key]) / adamw_bytes:12.5f}" if key in opts else " " * 12
        count = f"{calls[key]:11d}" if key in calls else ""
        print(
            f"{key:38s} {med[key] * 1e3:9.2f} {med[key] / med['AdamW fused']:9.2f} "
            f"{med[key] / med['AdamW foreach']:11.2f} {state} {count}"
        )
    overhead = per_step_overhead(len(params), reps * 20, device)
    print(
        f"per-step overhead ({len(params)} one-element tensors): "
        + ", ".join(f"{key} {t * 1e3:.3f} ms" for key, t in overhead.items())
    )
    floor = med["AdamW fused"] + med[READ]
    print(
        f"floor of an exact step = fused AdamW + one read of m and g: {floor * 1e3:.2f} ms = "
        f"{floor / med['AdamW fused']:.2f}x fused AdamW; AdaTAMW default / floor = "
        f"{med['AdaTAMW default'] / floor:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args()
    if args.device != "cpu" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here")
    where = (
        torch.cuda.get_device_name() if args.device != "cpu" else (platform.processor() or platform.machine())
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {where}, device {args.device}")
    for name in args.models:
        bench(name, args.reps, args.device)


if __name__ == "__main__":
    main()
