"""The layout's promises (issue 23): imports only point down, and old module paths still resolve.

The import graph is read from the source (every ``import`` statement, those inside functions
included), not from what happens to be imported at run time, so a cycle hidden behind an import
inside a function is found too.
"""

from __future__ import annotations

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("adatamw", "common", "recipes", "evaluation")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in its source (resolved to modules)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in known:  # `import a.b.c`: the longest known prefix
            target = target.rpartition(".")[0]
        if target:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:  # `from pkg import module` imports the module
                submodule = f"{source}.{alias.name}"
                add(submodule if submodule in known else source)
    found.discard(name)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read(tmp_path):
    """The reader sees the imports it must judge (a reader that finds nothing passes anything)."""
    modules = _modules()
    known = set(modules)
    imports = _imports("adatamw.base", modules["adatamw.base"], known)
    assert {
        "adatamw.distributed",
        "adatamw.kernels",
        "adatamw.torque",
    } <= imports
    source = tmp_path / "a.py"
    source.write_text("import p.b.c\nfrom . import x\ndef f():\n    from .d import g\n    import q\n")
    assert _imports("p.a", source, {"p", "p.a", "p.b", "p.b.c", "p.d", "q"}) == {"p", "p.b.c", "p.d", "q"}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle(graph):
    assert _cycles(graph) == []


def test_layers_point_down(graph):
    """adatamw imports none of the apps; common imports neither app; evaluation not recipes."""
    forbidden = {
        "adatamw": ("common", "recipes", "evaluation"),
        "common": ("recipes", "evaluation", "adatamw"),
        "evaluation": ("recipes",),
    }
    bad = sorted(
        (name, target)
        for name, targets in graph.items()
        for target in targets
        for layer, below in forbidden.items()
        if name.split(".")[0] == layer and target.split(".")[0] in below
    )
    assert bad == []


def test_sharding_layers(graph):
    """base (torch only) <- fsdp, zero <- resolve <- the optimizer base; zero knows no optimizer class."""
    assert not {m for m in graph["adatamw.sharding.base"] if m.startswith("adatamw")}
    assert graph["adatamw.sharding.fsdp"] == {"adatamw.sharding.base"}
    assert graph["adatamw.sharding.zero"] == {"adatamw.sharding.base", "adatamw.wrappers"}
    assert graph["adatamw.sharding.resolve"] == {
        "adatamw.sharding.base",
        "adatamw.sharding.fsdp",
        "adatamw.sharding.zero",
    }


# -- deprecated and public paths -------------------------------------------------------------------
def _fresh_import(name: str):
    sys.modules.pop(name, None)
    return importlib.import_module(name)


@pytest.mark.parametrize(
    "module, names",
    [
        ("adatamw.adam", ("AdaTAMW", "AdaTAM", "CoupledAdamW")),
        ("adatamw.transfer", ("transfer_lr",)),
        (
            "adatamw.momentum",
            ("adam_step", "bias_correction", "decoupled_decay", "momentum_update", "second_moment_update"),
        ),
    ],
)
def test_deprecated_module_paths_warn_and_resolve(module, names):
    import adatamw
    from adatamw import update

    with pytest.warns(DeprecationWarning, match=module.replace(".", r"\.")):
        old = _fresh_import(module)
    for name in names:
        assert getattr(old, name) is (getattr(adatamw, name, None) or getattr(update, name))


def test_deprecated_sgd_step_keeps_its_keyword():
    """adatamw.momentum.sgd_step(momentum=) gives what adatamw.update.sgd_step(beta=) gives."""
    from adatamw import update

    with pytest.warns(DeprecationWarning):
        old = _fresh_import("adatamw.momentum")
    p1, p2 = torch.ones(3), torch.ones(3)
    b1, b2 = torch.full((3,), 0.5), torch.full((3,), 0.5)
    g, c = torch.tensor([1.0, -2.0, 3.0]), torch.tensor(0.7)
    old.sgd_step(p1, g, b1, c, lr=0.1, momentum=0.9)
    update.sgd_step(p2, g, b2, c, lr=0.1, beta=0.9)
    assert torch.equal(p1, p2) and torch.equal(b1, b2)
    assert torch.allclose(b2, 0.9 * 0.5 + 0.7 * g)


def test_old_adam_family_name_warns_and_resolves():
    import adatamw.adatamw as module
    from adatamw.adam_family import AdamFamily

    with pytest.warns(DeprecationWarning, match="_AdamFamily"):
        assert module._AdamFamily is AdamFamily
    with pytest.raises(AttributeError):
        module.NoSuchName  # noqa: B018


def test_public_paths_keep_working_without_a_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in ("adatamw.distributed", "adatamw.zero", "adatamw.trainer", "adatamw.callbacks"):
            _fresh_import(name)
    ours = [w for w in caught if issubclass(w.category, DeprecationWarning) and "adatamw" in str(w.message)]
    assert ours == []
    from adatamw.callbacks import TAMWarmupCallback, TorqueLoggingCallback, unwrap_optimizer  # noqa: F401
    from adatamw.distributed import shard_aware
    from adatamw.sharding import fsdp, zero
    from adatamw.trainer import TAMTrainer  # noqa: F401
    from adatamw.zero import zero_aware, zero_aware_callback

    assert shard_aware is fsdp.shard_aware and zero_aware is zero.zero_aware
    assert zero_aware_callback is zero.zero_aware_callback


# -- the optimizer seen through its interface --------------------------------------------------------
def test_sharding_recognises_the_optimizer_by_its_interface():
    from adatamw import TAM, AdaTAMW, CoupledAdamW
    from adatamw.sharding.base import ShardableOptimizer

    p = torch.nn.Parameter(torch.zeros(2))
    for cls in (AdaTAMW, TAM, CoupledAdamW):
        assert isinstance(cls([p]), ShardableOptimizer)
    assert not isinstance(torch.optim.AdamW([p]), ShardableOptimizer)

    class Wrapper:  # what accelerate's and DeepSpeed's wrappers look like from outside
        def __init__(self, optimizer):
            self.optimizer = optimizer
            self.param_groups = optimizer.param_groups

    assert not isinstance(Wrapper(AdaTAMW([p])), ShardableOptimizer)


def test_one_unwrapper():
    from adatamw import AdaTAMW
    from adatamw.wrappers import innermost_wrapper, optimizer_chain, unwrap_optimizer

    class Wrapper:
        def __init__(self, optimizer):
            self.optimizer = optimizer

    inner = AdaTAMW([torch.nn.Parameter(torch.zeros(2))])
    middle = Wrapper(inner)
    outer = Wrapper(middle)
    assert optimizer_chain(outer) == [outer, middle, inner]
    assert unwrap_optimizer(outer) is inner and unwrap_optimizer(inner) is inner
    assert innermost_wrapper(outer) is middle and innermost_wrapper(inner) is None
    looped = Wrapper(None)
    looped.optimizer = Wrapper(looped)
    assert len(optimizer_chain(looped)) == 2  # a loop ends the chain instead of hanging


def test_registry_capabilities_follow_the_classes():
    """The registry's capabilities are read from the classes: the table the recipe relied on."""
    from adatamw.registry import OPTIMIZERS, names_with

    table = {name: (info.adam, info.coupled, info.torque, info.fused) for name, info in OPTIMIZERS.items()}
    assert table == {
        "adamw": (True, False, False, True),
        "adatamw": (True, True, True, True),
        "adatam": (True, True, True, True),
        "tam": (False, False, True, False),
        "coupled_adamw": (True, True, False, True),
    }
    assert names_with("torque") == ("adatamw", "adatam", "tam")
    assert names_with("coupled") == ("adatamw", "adatam", "coupled_adamw")
    with pytest.raises(ValueError, match="capability"):
        names_with("sparse")


def test_coupled_groups_need_a_coupled_second_moment():
    """An Adam-family optimizer without Coupled Adam's row mean refuses coupled=True."""
    from adatamw.adam_family import AdamFamily

    class PlainAdam(AdamFamily):
        uses_torque = False

        def __init__(self, params, coupled=False):
            super().__init__(
                params, 1e-3, (0.9, 0.999), 1e-8, 0.0, 0.0, 0.0, "tensor", "adam", coupled, 1.0, None, False
            )

    p = torch.nn.Parameter(torch.zeros(2, 2))
    PlainAdam([p])
    with pytest.raises(ValueError, match="coupled"):
        PlainAdam([p], coupled=True)
