"""The C++ CPU kernels of AdaTAMW's fused path (``csrc/cpu_kernels.cpp``), built on first use.

torch's own fused AdamW kernel cannot take Eq. 7's momentum or an exact decoupled decay, and
the three sums of Eq. 2 cost three BLAS passes; these kernels do the sums in one read of m and
g (accumulated in float64; in the global scope Eqs. 2-4 follow in the same call) and the whole
update in one pass over p, g, m, v, each as one parallel region over every tensor. They are
compiled with ``torch.utils.cpp_extension.load`` (about 20 s once per machine, then cached in
torch's extension folder; set ``ADATAMW_NO_CPU_KERNELS=1`` to skip). When a compiler or ninja
is missing, :func:`load` warns once and returns None, and the fused path uses torch's kernels.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

_SOURCE = Path(__file__).parent / "csrc" / "cpu_kernels.cpp"
_module: Any = None
_tried = False


def load() -> Optional[Any]:
    """The compiled module, or None when it cannot be built here (warns once)."""
    global _module, _tried
    if _tried:
        return _module
    _tried = True
    if os.environ.get("ADATAMW_NO_CPU_KERNELS"):
        return None
    try:
        from torch.utils.cpp_extension import load as load_extension

        _module = load_extension(
            name="adatamw_cpu_kernels", sources=[str(_SOURCE)],
            extra_cflags=["-O3", "-fopenmp", "-fno-math-errno", "-march=native"],
            extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as err:  # noqa: BLE001 - any build failure means: use torch's kernels
        warnings.warn(f"adatamw: the C++ CPU kernels could not be built ({err}); the fused path "
                      "uses torch's kernels instead (install a C++ compiler and ninja for the "
                      "faster path, or set ADATAMW_NO_CPU_KERNELS=1 to silence this)")
        _module = None
    return _module


def fits(*lists: Sequence[Tensor]) -> list[bool]:
    """Per index i: whether every ``lists[k][i]`` is a contiguous float32 CPU tensor, what the
    kernels take (checked in C++: a Python check of each tensor costs more than the sums of a
    small one). All False when the kernels are not built."""
    module = load()
    if module is None:
        return [False] * len(lists[0])
    return module.fit_mask([list(seq) for seq in lists])
