"""axonc's modules import each other without a circle, and no import hides in a function.

The graph is read from the source with `ast`, not by importing: an edge A -> B means
module A imports B, at its top (module and class bodies, `if`/`try` blocks included)
or inside a function: an import moved into a function is still a dependency, so it
cannot hide a circle. An import of `pkg.mod` is also an edge to the package `pkg`,
whose `__init__` Python runs first, unless the importer lives inside `pkg` (a
package's `__init__` may gather its own submodules).
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

import axonc

ROOT = Path(axonc.__file__).resolve().parent.parent  # compiler/
PACKAGE = "axonc"

# Function-level imports of axonc modules that are there on purpose, keyed by
# (importing module, enclosing function, imported module), each with its reason.
# Any other function-level import of an axonc module fails the test below: a
# module that needs another imports it at the top, and a circle is broken by
# moving code to where it belongs, not by hiding an import.
_CLI = "a command loads its backend (onnx, onnxruntime, LiteRT) as it runs: `axonc --help` is fast"
ALLOWED_LOCAL_IMPORTS: dict[tuple[str, str, str], str] = {
    ("axonc.cli", "compile", "axonc.passes"): _CLI,
    ("axonc.cli", "compile", "axonc.passes.graph"): _CLI,
    ("axonc.cli", "compile", "axonc.to_onnx.export"): _CLI,
    ("axonc.cli", "_compile_tflite", "axonc.to_tflite.export"): _CLI,
    ("axonc.cli", "_inspect_tflite", "axonc.to_tflite.inspect"): _CLI,
    ("axonc.cli", "_inspect_axon", "axonc.display"): _CLI,
    ("axonc.cli", "_load_axon", "axonc.serialize"): _CLI,
    ("axonc.cli", "export_training_artifacts", "axonc.optimizers"): _CLI,
    ("axonc.cli", "export_training_artifacts", "axonc.train"): _CLI,
    ("axonc.cli", "plot", "axonc.loop.plot"): _CLI + "; matplotlib is the `plot` extra",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known) -> set[str]:
    """The axonc modules one import statement loads (relative imports resolved)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return {_deepest(name, known) for name in names if name.split(".")[0] == PACKAGE}
    if node.level:
        base = module.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    if source.split(".")[0] != PACKAGE:
        return set()
    found = {f"{source}.{alias.name}" for alias in node.names} & known
    imported_names = {alias.name for alias in node.names}
    if not found or imported_names - {name.rsplit(".", 1)[1] for name in found}:
        found.add(_deepest(source, known))
    return found


def _deepest(name: str, known) -> str:
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


class _Imports(ast.NodeVisitor):
    """Collects a module's top-level imports and, separately, those inside functions."""

    def __init__(self, module: str, is_package: bool, known) -> None:
        self.module, self.is_package, self.known = module, is_package, known
        self.scope: list[str] = []
        self.functions: list[str] = []
        self.top: set[str] = set()
        self.local: set[tuple[str, str, str]] = set()

    def _enter(self, node, is_function: bool) -> None:
        self.scope.append(node.name)
        if is_function:
            self.functions.append(node.name)
        self.generic_visit(node)
        self.scope.pop()
        if is_function:
            self.functions.pop()

    def visit_FunctionDef(self, node) -> None:
        self._enter(node, True)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node) -> None:
        self._enter(node, False)

    def _import(self, node) -> None:
        targets = _targets(node, self.module, self.is_package, self.known) - {self.module}
        if not self.functions:
            self.top |= targets
            return
        qualname = ".".join(self.scope)
        self.local |= {(self.module, qualname, target) for target in targets}

    visit_Import = visit_ImportFrom = _import


def _scan() -> tuple[nx.DiGraph, set[tuple[str, str, str]]]:
    modules = _modules()
    known = set(modules)
    graph = nx.DiGraph()
    graph.add_nodes_from(known)
    local: set[tuple[str, str, str]] = set()
    for name, path in modules.items():
        visitor = _Imports(name, path.name == "__init__.py", known)
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        for target in visitor.top | {target for _, _, target in visitor.local}:
            graph.add_edges_from((name, t) for t in (target, *_packages_entered(name, target)))
        local |= visitor.local
    return graph, local


def _packages_entered(importer: str, target: str) -> list[str]:
    """The packages whose `__init__` importing `target` runs that `importer` is not inside."""
    parts = target.split(".")
    inside = importer.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts)) if parts[:i] != inside[:i]]


def test_the_scan_sees_the_modules_and_their_imports():
    """Guards the reader itself: a scan that found nothing would pass every check below."""
    graph, _ = _scan()
    assert {"axonc.ir", "axonc.registry", "axonc.ops.primitives", "axonc.passes"} <= set(graph)
    assert graph.has_edge("axonc.ir", "axonc.errors")
    assert graph.has_edge("axonc.passes", "axonc.passes.manager")  # `from .manager import ...`
    assert graph.has_edge("axonc.api", "axonc.numpy")  # `from . import (..., numpy, ...)`
    assert graph.has_edge("axonc.cli", "axonc.to_tflite.export")  # inside a function
    assert graph.has_edge("axonc.cli", "axonc.to_tflite")  # the package it runs first
    assert not graph.has_edge("axonc.passes.verify", "axonc.passes")  # its own package


def test_the_reader_finds_a_circle_and_a_hidden_import():
    """The reader and the cycle check on a made-up source with one of each."""
    known = {"axonc", "axonc.a", "axonc.sub", "axonc.sub.b", "axonc.sub.c"}
    sources = {
        "axonc.a": "from .sub import b\n",
        "axonc.sub.b": "from .. import a\nclass K:\n    def f(self):\n        from ..a import g\n",
        "axonc.sub.c": "import axonc.sub.b\nfrom axonc import sub\n",
    }
    graph = nx.DiGraph()
    local: set[tuple[str, str, str]] = set()
    for name, source in sources.items():
        visitor = _Imports(name, False, known)
        visitor.visit(ast.parse(source))
        graph.add_edges_from((name, target) for target in visitor.top)
        local |= visitor.local
    assert sorted(nx.find_cycle(graph)) == [("axonc.a", "axonc.sub.b"), ("axonc.sub.b", "axonc.a")]
    assert local == {("axonc.sub.b", "K.f", "axonc.a")}
    assert set(graph.successors("axonc.sub.c")) == {"axonc.sub.b", "axonc.sub"}


def test_axonc_modules_import_each_other_without_a_circle():
    graph, _ = _scan()
    cycles = sorted(_from_smallest(cycle) for cycle in nx.simple_cycles(graph))
    assert not cycles, "import circles among axonc's modules:\n" + "\n".join(
        " -> ".join([*cycle, cycle[0]]) for cycle in cycles
    )


def _from_smallest(cycle: list[str]) -> list[str]:
    """A cycle rotated to start at its alphabetically first module, so the report is stable."""
    start = cycle.index(min(cycle))
    return cycle[start:] + cycle[:start]


def test_every_function_level_import_of_an_axonc_module_has_a_reason():
    _, local = _scan()
    unexplained = sorted(local - set(ALLOWED_LOCAL_IMPORTS))
    assert not unexplained, (
        "function-level imports of axonc modules (import at the top, or add the import "
        "to ALLOWED_LOCAL_IMPORTS with its reason):\n"
        + "\n".join(f"{m} in {f}(): {t}" for m, f, t in unexplained)
    )


def test_the_allow_list_names_only_imports_that_exist():
    _, local = _scan()
    stale = sorted(set(ALLOWED_LOCAL_IMPORTS) - local)
    assert not stale, f"ALLOWED_LOCAL_IMPORTS entries that no longer occur: {stale}"
    assert all(reason.strip() for reason in ALLOWED_LOCAL_IMPORTS.values())
