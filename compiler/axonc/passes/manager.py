"""The pass manager: named passes, pipelines by target/mode/level, timings, verification.

A pass is a function from a networkx graph to whether it changed anything; it
edits the graph in place. There are two stages: "ir" passes run on the IR
graph (passes/graph.py) before lowering, "onnx" passes on a view of the lowered
ONNX graph (passes/onnx_graph.py). Pipelines: -O0 runs nothing but
verification, -O1 the cleanup passes (run to a fixpoint), -O2 everything:
the cleanup fixpoint, then the other passes once each, then the fixpoint again
if they changed anything.
Each pass run is timed; `verify_each` checks the graph after every pass (the
IR verifier, or onnx.checker for the onnx stage) and `dump(pass_name, text)`
receives the graph as text after the passes named in `dump_after`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import networkx as nx

from ..errors import AxoncError
from . import graph, onnx_graph

PassFn = Callable[[nx.DiGraph], bool]


@dataclass(frozen=True)
class Pass:
    """A named graph transformation and where it applies."""

    name: str
    fn: PassFn
    level: int  # the lowest -O level that runs it
    modes: tuple[str, ...] = ("inference", "train")
    targets: tuple[str, ...] = ("onnx", "tflite", "reference")
    cleanup: bool = False  # part of the fixpoint loop
    doc: str = ""
    stage: str = "ir"  # "ir": before lowering; "onnx": on the lowered ONNX graph


PASSES: dict[str, Pass] = {}
STAGES = ("ir", "onnx")
# Per stage, how its graph is printed for a dump and checked between passes.
_STAGE_TOOLS = {
    "ir": (graph.describe, graph.verify),
    "onnx": (onnx_graph.describe, onnx_graph.verify),
}


def register_pass(
    name: str,
    *,
    level: int,
    modes: tuple[str, ...] = ("inference", "train"),
    targets: tuple[str, ...] = ("onnx", "tflite", "reference"),
    cleanup: bool = False,
    stage: str = "ir",
) -> Callable[[PassFn], PassFn]:
    """Decorator: register a pass function under `name` for a stage ("ir" or "onnx")."""
    if stage not in STAGES:
        raise TypeError(f"pass {name!r}: stage must be one of {', '.join(STAGES)}, got {stage!r}")

    def wrap(fn: PassFn) -> PassFn:
        if name in PASSES:
            raise TypeError(f"pass {name!r} is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        PASSES[name] = Pass(name, fn, level, modes, targets, cleanup, doc, stage)
        return fn

    return wrap


class PassError(AxoncError):
    """A pass left the graph invalid (a bug in the pass), named with the pass."""


@dataclass
class PassReport:
    """What a pipeline run did: per pass, how often it ran, changed, and its total time."""

    runs: dict[str, int] = field(default_factory=dict)
    changes: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def merge(self, other: PassReport) -> None:
        """Add another run's counts and times to this report."""
        for name in other.runs:
            self.runs[name] = self.runs.get(name, 0) + other.runs[name]
            self.changes[name] = self.changes.get(name, 0) + other.changes[name]
            self.seconds[name] = self.seconds.get(name, 0.0) + other.seconds[name]

    def record(self, name: str, changed: bool, seconds: float) -> None:
        self.runs[name] = self.runs.get(name, 0) + 1
        self.changes[name] = self.changes.get(name, 0) + int(changed)
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def table(self) -> str:
        w = max([len("pass"), *map(len, self.runs)])
        rows = [f"{'pass':<{w}} {'runs':>5} {'changed':>8} {'ms':>9}"]
        for name in self.runs:
            rows.append(
                f"{name:<{w}} {self.runs[name]:>5} {self.changes[name]:>8} "
                f"{self.seconds[name] * 1e3:>9.3f}"
            )
        return "\n".join(rows)


def pipeline(
    target: str, mode: str, level: int, stage: str = "ir"
) -> tuple[list[Pass], list[Pass]]:
    """(cleanup passes run to a fixpoint, the other passes run once before them) for a config."""
    chosen = [
        p
        for p in PASSES.values()
        if p.stage == stage and p.level <= level and mode in p.modes and target in p.targets
    ]
    return [p for p in chosen if p.cleanup], [p for p in chosen if not p.cleanup]


MAX_FIXPOINT_ROUNDS = 20


def run_passes(
    g: nx.DiGraph,
    level: int,
    *,
    verify_each: bool = False,
    dump_after: set[str] | None = None,
    dump: Callable[[str, str], None] | None = None,
    stage: str = "ir",
) -> PassReport:
    """Run the `stage` pipeline for the graph's target and mode at `level`; returns the report."""
    describe, verify = _STAGE_TOOLS[stage]
    cleanup, once = pipeline(g.graph["target"], g.graph["mode"], level, stage)
    report = PassReport()

    def run(p: Pass) -> bool:
        start = time.perf_counter()
        changed = bool(p.fn(g))
        report.record(p.name, changed, time.perf_counter() - start)
        if verify_each:
            try:
                verify(g)
            except AxoncError as exc:
                raise PassError(f"after pass {p.name!r}: {exc}") from None
        if dump_after and p.name in dump_after and dump is not None:
            dump(p.name, describe(g))
        return changed

    def fixpoint() -> None:
        for _ in range(MAX_FIXPOINT_ROUNDS):
            if not any([run(p) for p in cleanup]):
                break

    if stage == "ir" or verify_each:
        verify(g)
    fixpoint()
    if any([run(p) for p in once]):
        fixpoint()
    return report
