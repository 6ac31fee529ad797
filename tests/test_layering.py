"""The import graph is a tree you can draw: no cycles, and Ray only in its layer.

The graph is read from the source with `ast`, so imports inside functions count as much as
those at the top of a module (a lazy import hides a cycle from Python, not from a reader).
"""

from __future__ import annotations

import ast
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

import metagan
from metagan.config import HEAD_ALGORITHMS, MetaConfig, MethodName, method_names
from metagan.meta import REGISTRY
from metagan.methods import METHODS

PACKAGE_DIR = Path(metagan.__file__).resolve().parent


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package under `root`: dotted name -> file."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imported(module: str, path: Path, modules: Iterable[str]) -> set[str]:
    """Absolute names of everything `module` imports anywhere in its file.

    `from .x import y` names module x.y when that is a module, else x; relative imports are
    resolved against the module's package (a package's __init__ is its own package).
    """
    known = set(modules)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                child = f"{target}.{alias.name}"
                out.add(child if child in known else target)
    return out


def parents(module: str) -> list[str]:
    """The packages a module is inside: a.b.c -> [a, a.b]."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(root: Path = PACKAGE_DIR, package: str = "metagan") -> dict[str, set[str]]:
    """Module -> the package's own modules it imports (itself excluded).

    Importing a.b.c runs a.b's __init__ first, so that is an edge too, unless the importer is
    inside a.b already (a sibling import, which Python resolves while a.b initialises).
    """
    modules = module_names(root, package)
    graph = {}
    for name, path in modules.items():
        inside = {name, *parents(name)}
        deps = {d for target in imported(name, path, modules) for d in [target, *parents(target)]}
        graph[name] = {d for d in deps if d in modules and d not in inside}
    return graph


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle of the directed graph as [a, b, ..., a], or None when it is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def layer(module: str) -> str:
    """The layer a module belongs to: its subpackage (metagan.gan, ...) or itself."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_cycle_finder_finds_a_constructed_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None
    cycle = find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert cycle == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"x"}}) == ["x", "x"]


def test_import_reader_sees_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("import json\n")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text(
        "from ..low import thing\n\n\ndef f():\n    from .. import high\n    import ray.tune\n")
    (pkg / "high.py").write_text("from .sub import leaf\nfrom pkg.sub.leaf import f\n")
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.sub"] == {"pkg.sub.leaf"}
    assert graph["pkg.sub.leaf"] == {"pkg.low", "pkg.high"}  # the function-level import too
    assert graph["pkg.high"] == {"pkg.sub", "pkg.sub.leaf"}  # importing leaf runs sub first
    assert find_cycle(graph) == ["pkg.high", "pkg.sub", "pkg.sub.leaf", "pkg.high"]
    leaf = imported("pkg.sub.leaf", pkg / "sub" / "leaf.py", module_names(pkg, "pkg"))
    assert "ray.tune" in leaf


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


def test_layers_form_a_tree() -> None:
    # Coarser: with every subpackage as one node, nothing low reaches up (e.g. gan/ -> loop).
    layers: dict[str, set[str]] = {}
    for module, deps in import_graph().items():
        layers.setdefault(layer(module), set()).update(layer(d) for d in deps)
    for name, deps in layers.items():
        deps.discard(name)
    layers.pop("metagan", None)  # the package's __init__ imports nothing
    cycle = find_cycle(layers)
    assert cycle is None, f"layer cycle: {' -> '.join(cycle or [])}"


def test_ray_is_imported_only_in_the_ray_layer() -> None:
    modules = module_names(PACKAGE_DIR, "metagan")
    # The tuning layer and the cluster client; everything else runs without Ray.
    ray_layer = {name for name in modules if layer(name) == "metagan.tune"} | {"metagan.jobs"}
    offenders = {
        name: sorted(d for d in imported(name, path, modules) if d == "ray" or d.startswith("ray."))
        for name, path in modules.items() if name not in ray_layer
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"Ray imported outside {sorted(ray_layer)}: {offenders}"


@pytest.mark.parametrize("ways", [2, 5, 20])
def test_config_copies_of_registry_facts_agree(ways: int) -> None:
    # config.py sits below meta/, so it names the algorithms and the head-based ones itself.
    algorithms = typing.get_args(typing.get_type_hints(MetaConfig)["algorithm"])
    assert set(algorithms) == set(REGISTRY)
    with_head = {name for name, cls in REGISTRY.items() if cls.head_size(ways) is not None}
    assert with_head == set(HEAD_ALGORITHMS)


def test_config_names_the_shipped_methods() -> None:
    # config.py sits below the method registry: it names the shipped methods itself, and the
    # registry's decorator tells it of any other (a test's, a user's) so configs accept it.
    shipped = {name for name, cls in METHODS.items() if cls.__module__.startswith("metagan.")}
    assert set(typing.get_args(MethodName)) == shipped
    assert set(method_names()) == set(METHODS)
