"""Optimisation passes over the IR as a networkx graph (one module per pass)."""

from __future__ import annotations

from collections.abc import Callable

import networkx as nx

from ..ir import Axon
from ..model_state import ModelState
from . import dce, specialize_mode, verify  # noqa: F401  (register the passes)
from .graph import from_nx, to_nx
from .manager import PASSES, PassReport, run_passes


def optimize(
    model: Axon,
    state: ModelState,
    *,
    mode: str,
    level: int = 2,
    target: str = "onnx",
    verify_each: bool = False,
    dump_after: set[str] | None = None,
    dump: Callable[[str, nx.DiGraph], None] | None = None,
    report: PassReport | None = None,
) -> tuple[Axon, ModelState]:
    """Run the pipeline for (target, mode, level) on a graph and its state."""
    g = to_nx(model, state, mode=mode, target=target)
    result = run_passes(g, level, verify_each=verify_each, dump_after=dump_after, dump=dump)
    if report is not None:
        for name in result.runs:
            report.runs[name] = report.runs.get(name, 0) + result.runs[name]
            report.changes[name] = report.changes.get(name, 0) + result.changes[name]
            report.seconds[name] = report.seconds.get(name, 0.0) + result.seconds[name]
    return from_nx(g)


__all__ = ["PASSES", "PassReport", "optimize"]
