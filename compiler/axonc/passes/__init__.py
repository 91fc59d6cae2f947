"""Optimisation passes: over the IR as a networkx graph before lowering ("ir" stage), and
over a networkx view of the lowered ONNX graph ("onnx" stage). One module per pass."""

from __future__ import annotations

from collections.abc import Callable

import onnx

from ..ir import Axon
from ..model_state import ModelState

# isort: off
# Registration order is pipeline order (within the cleanup loop and the one-shot passes).
from . import verify, specialize_mode, dce  # noqa: F401
from . import common_subexpression_elimination, constant_folding, fold_batch_norm  # noqa: F401
from . import fold_constants_onnx, dead_value_elimination_onnx  # noqa: F401
from . import cancel_transposes, fuse_matmul_add  # noqa: F401
from . import inline_output_identities, simplify_algebra_onnx  # noqa: F401
from . import onnx_graph

# isort: on
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
    dump: Callable[[str, str], None] | None = None,
    report: PassReport | None = None,
) -> tuple[Axon, ModelState]:
    """Run the IR pipeline for (target, mode, level) on a graph and its state.

    Passes that rewrite parameters (fold_batch_norm) return a new state; the
    returned graph names every layer explicitly (see passes/graph.py).
    """
    g = to_nx(model, state, mode=mode, target=target)
    result = run_passes(g, level, verify_each=verify_each, dump_after=dump_after, dump=dump)
    if report is not None:
        report.merge(result)
    return from_nx(g)


def optimize_onnx(
    onnx_model: onnx.ModelProto,
    level: int = 2,
    *,
    mode: str | None = None,
    target: str = "onnx",
    verify_each: bool = False,
    dump_after: set[str] | None = None,
    dump: Callable[[str, str], None] | None = None,
    report: PassReport | None = None,
) -> onnx.ModelProto:
    """Run the onnx-stage pipeline on a lowered model; returns a new, optimised model.

    The mode defaults to the model's `axonc.mode` metadata. Graph inputs and
    outputs, opsets and metadata are kept; the input model is not modified.
    """
    g = onnx_graph.to_nx(onnx_model, mode=mode, target=target)
    result = run_passes(
        g, level, verify_each=verify_each, dump_after=dump_after, dump=dump, stage="onnx"
    )
    if report is not None:
        report.merge(result)
    return onnx_graph.from_nx(g)


__all__ = ["PASSES", "PassReport", "optimize", "optimize_onnx"]
