"""The fused CPU implementation: C++ kernels (``csrc/cpu_kernels.cpp``) as ``torch.library`` ops.

Two custom ops, ``adatamw::torque_sums`` (Eq. 2's three sums in one read of m and g, accumulated
in float64, under the rule of :func:`adatamw.torque.partial_sums`: a non-finite element of m
counts as 0) and ``adatamw::adatamw_update`` (Eq. 7 / Eq. 8 with AdamW's exact decoupled decay in
one pass over p, g, m, v), each one parallel region over every tensor of the step. Registered
with fake implementations, so ``torch.compile(fullgraph=True)`` traces them. The update takes
float32 CPU tensors only (:func:`fits`; :func:`adatamw.kernels.pick` routes everything else to
foreach or the loop); the sums take any floating CPU tensors (:func:`sums_fit`), and the foreach
implementation uses them for its CPU buckets.

The extension is compiled on first use of this path only (about 20-40 s, logged, then cached by
torch's extension loader). The binary's name carries the CPU model, its instruction set flags,
the torch version and the source hash, so nodes of different CPU generations sharing a home
folder never load each other's ``-march=native`` build. ``ADATAMW_NO_CPU_KERNELS=1`` disables
it; a missing compiler warns once and the step uses the foreach implementation instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

logger = logging.getLogger("adatamw")

_SOURCE = Path(__file__).parent / "csrc" / "cpu_kernels.cpp"
_loaded: Optional[bool] = None  # None: not tried yet


def _cpu_signature() -> str:
    """What a ``-march=native`` binary depends on: CPU model and flags (Linux), machine, torch."""
    info = platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        keep = [ln for ln in lines if ln.split(":")[0].strip() in ("model name", "flags", "Features")]
        info += "".join(sorted(set(keep)))
    except OSError:
        info += platform.processor()
    info += torch.__version__ + _SOURCE.read_text()
    return hashlib.sha1(info.encode()).hexdigest()[:12]


def extension_name() -> str:
    return f"adatamw_cpu_kernels_{platform.machine()}_{_cpu_signature()}"


def available() -> bool:
    """Whether the ops are registered, building the extension on the first call (logged)."""
    global _loaded
    if _loaded is None:
        _loaded = _load()
    return _loaded


def _load() -> bool:
    if os.environ.get("ADATAMW_NO_CPU_KERNELS"):
        return False
    name = extension_name()
    start = time.perf_counter()
    try:
        from torch.utils.cpp_extension import _get_build_directory
        from torch.utils.cpp_extension import load as load_extension

        built = Path(_get_build_directory(name, verbose=False), f"{name}.so").exists()
        if not built:
            logger.warning(
                "adatamw: compiling the C++ CPU kernels %s (first use on this kind of "
                "CPU, 20-40 s; ADATAMW_NO_CPU_KERNELS=1 skips them)",
                name,
            )
        load_extension(
            name=name,
            sources=[str(_SOURCE)],
            is_python_module=False,
            extra_cflags=["-O3", "-fopenmp", "-fno-math-errno", "-march=native"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as err:  # noqa: BLE001 - any build failure means: use foreach
        warnings.warn(
            f"adatamw: the C++ CPU kernels could not be built ({err}); float32 CPU "
            "tensors use the foreach implementation instead (install a C++ compiler and "
            "ninja for the faster path, or set ADATAMW_NO_CPU_KERNELS=1 to silence this)",
            stacklevel=2,
        )
        return False
    if not built:
        logger.warning("adatamw: C++ CPU kernels built in %.1f s", time.perf_counter() - start)
    _register_fakes()
    return True


def _register_fakes() -> None:
    """Shapes for tracing (torch.compile, meta tensors); the ops' schemas declare the mutation.
    Called once, by :func:`_load` (``available`` caches its outcome)."""

    @torch.library.register_fake("adatamw::torque_sums")
    def _sums_fake(momenta, grads):
        return (
            momenta[0].new_empty((len(momenta), 3), dtype=torch.float64)
            if momenta
            else torch.empty((0, 3), dtype=torch.float64)
        )

    @torch.library.register_fake("adatamw::adatamw_update")
    def _update_fake(
        params, grads, exp_avgs, exp_avg_sqs, steps, coefs, lr, weight_decay, beta1, beta2, eps, kind
    ):
        return None


def fits(t: Tensor) -> bool:
    """A tensor the kernels take in place: float32, CPU, contiguous, dense."""
    return (
        t.dtype == torch.float32
        and t.device.type == "cpu"
        and t.is_contiguous()
        and t.layout == torch.strided
    )


def sums_fit(t: Tensor) -> bool:
    """A tensor :func:`torque_sums` takes: floating, CPU, dense (any dtype, any strides)."""
    return t.is_floating_point() and t.device.type == "cpu" and t.layout == torch.strided


def torque_sums(momenta: Sequence[Tensor], grads: Sequence[Tensor]) -> Tensor:
    """Eq. 2's ``(<m~, g>, ||m~||^2, ||g||^2)`` per pair (m~: m with its non-finite elements as 0,
    :func:`adatamw.torque.partial_sums`), ``[N, 3]`` float64, one read of m and g."""
    return torch.ops.adatamw.torque_sums(list(momenta), list(grads))


_KIND_CODES = {"tam": 0, "ema": 1, "adam": 2}


def adam_update(
    params,
    grads,
    exp_avgs,
    exp_avg_sqs,
    steps,
    coefs,
    *,
    lr,
    beta1: float,
    beta2: float,
    eps: float,
    decoupled_wd: float,
    kind: str,
    v_transforms=None,
) -> None:
    """Eq. 7 (``kind="tam"``), Eq. 8 (``"ema"``) or Adam's bias-corrected EMA (``"adam"``, no
    ``coefs``) with decoupled decay, as :func:`adatamw.update.adam_step`, one pass per tensor."""
    if v_transforms and any(t is not None for t in v_transforms):
        raise ValueError(
            "the fused implementation has no per-tensor v transform (Coupled "
            "Adam's row mean): coupled tensors take the loop (adatamw.kernels.pick)"
        )
    lr_tensor = lr if isinstance(lr, Tensor) else torch.tensor(float(lr), dtype=torch.float64)
    torch.ops.adatamw.adatamw_update(
        list(params),
        list(grads),
        list(exp_avgs),
        list(exp_avg_sqs),
        list(steps),
        list(coefs or []),
        lr_tensor,
        float(decoupled_wd),
        float(beta1),
        float(beta2),
        float(eps),
        _KIND_CODES[kind],
    )
