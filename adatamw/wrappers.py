"""The one unwrapper of an optimizer held by wrappers.

accelerate's ``AcceleratedOptimizer``, DeepSpeed's engine and its ZeRO optimizers each keep the
optimizer they drive in ``.optimizer``; a plain ``torch.optim.Optimizer`` has no such attribute.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["innermost_wrapper", "optimizer_chain", "unwrap_optimizer"]


def optimizer_chain(obj: Any) -> list[Any]:
    """``obj`` and every object below it through ``.optimizer``, outermost first (it stops at
    an object without one, or where the chain would loop)."""
    chain = [obj]
    seen = {id(obj)}
    while True:
        inner = getattr(chain[-1], "optimizer", None)
        if inner is None or id(inner) in seen:
            return chain
        chain.append(inner)
        seen.add(id(inner))


def unwrap_optimizer(obj: Any) -> Any:
    """The innermost optimizer behind the wrappers (``obj`` itself when it wraps nothing)."""
    return optimizer_chain(obj)[-1]


def innermost_wrapper(obj: Any) -> Optional[Any]:
    """The wrapper whose ``.optimizer`` is the innermost optimizer (None: ``obj`` is bare)."""
    chain = optimizer_chain(obj)
    return chain[-2] if len(chain) > 1 else None
