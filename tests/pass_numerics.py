"""Checking that optimisation passes never change numerics beyond float rounding.

IR passes: the reference interpreter runs the graph before and after the passes
on the same random inputs (every batch size given) and the outputs, and in
train mode the updated state, must agree. ONNX passes: onnxruntime runs the
model before and after.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from axonc.build import input_nodes
from axonc.dtypes import is_float, to_numpy_dtype
from axonc.interpreter import run
from axonc.ir import Axon
from axonc.model_state import ModelState
from axonc.passes import PASSES, onnx_graph
from axonc.passes.graph import from_nx, to_nx
from axonc.passes.verify import verify
from tests import golden, onnx_run

RTOL, ATOL = 1e-5, 1e-6


def random_inputs(model: Axon, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Random values for the model's inputs (declared shapes, None dims = `batch`)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, node in input_nodes(model).items():
        shape = tuple(batch if d is None else d for d in node.options["shape"])
        dtype = node.options["dtype"] or "f32"  # an input without a dtype takes the data's
        if is_float(dtype):
            out[name] = rng.normal(size=shape).astype(to_numpy_dtype(dtype))
        else:
            out[name] = rng.integers(0, 3, size=shape).astype(to_numpy_dtype(dtype))
    return out


def apply_ir_passes(
    model: Axon, state: ModelState, names: list[str], mode: str
) -> tuple[Axon, ModelState, bool]:
    """Run the named IR passes once each (verifying after each); (model, state, changed)."""
    g = to_nx(model, state, mode=mode, target="onnx")
    changed = False
    for name in names:
        changed |= bool(PASSES[name].fn(g))
        verify(g)
    new_model, new_state = from_nx(g)
    return new_model, new_state, changed


def assert_ir_numerics_kept(
    before: tuple[Axon, ModelState],
    after: tuple[Axon, ModelState],
    mode: str,
    batches: tuple[int, ...] = (1, 3),
) -> None:
    """The two (model, state) pairs compute the same outputs (and train-mode state)."""
    for batch in batches:
        feeds = random_inputs(before[0], batch, seed=batch)
        out0, state0 = run(before[0], feeds, before[1].data, mode)
        out1, state1 = run(after[0], feeds, after[1].data, mode)
        golden.assert_tree_close(out1, out0, RTOL, ATOL)
        golden.assert_tree_close(state1, state0, RTOL, ATOL)


def check_ir_passes(
    model: Axon, state: ModelState, names: list[str], mode: str = "inference"
) -> tuple[Axon, ModelState, bool]:
    """Apply the passes and assert the numerics are kept; returns what apply_ir_passes does."""
    new_model, new_state, changed = apply_ir_passes(model, state, names, mode)
    assert_ir_numerics_kept((model, state), (new_model, new_state), mode)
    return new_model, new_state, changed


def apply_onnx_passes(model: onnx.ModelProto, names: list[str]) -> tuple[onnx.ModelProto, bool]:
    """Run the named onnx-stage passes once each; (the new checked model, changed)."""
    g = onnx_graph.to_nx(model)
    changed = False
    for name in names:
        changed |= bool(PASSES[name].fn(g))
    out = onnx_graph.from_nx(g)
    onnx.checker.check_model(out, full_check=True)
    return out, changed


def _onnx_outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = onnx_run.session(model)
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feeds.items() if k in names})


def check_onnx_passes(
    model: onnx.ModelProto, names: list[str], feeds: dict[str, np.ndarray]
) -> tuple[onnx.ModelProto, bool]:
    """Apply the passes and assert onnxruntime gives the same outputs before and after."""
    new, changed = apply_onnx_passes(model, names)
    before, after = _onnx_outputs(model, feeds), _onnx_outputs(new, feeds)
    golden.assert_tree_close(after, before, RTOL, ATOL)
    return new, changed


def op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def onnx_model(
    nodes: list[onnx.NodeProto],
    inputs: list[tuple[str, list[Any]]],
    outputs: list[tuple[str, list[Any]]],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 17,
) -> onnx.ModelProto:
    """A hand-built float32 ONNX model (inputs/outputs as (name, shape) pairs)."""
    f32 = onnx.TensorProto.FLOAT
    graph = onnx.helper.make_graph(
        nodes,
        "test",
        [onnx.helper.make_tensor_value_info(n, f32, s) for n, s in inputs],
        [onnx.helper.make_tensor_value_info(n, f32, s) for n, s in outputs],
        initializer=[
            onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()
        ],
    )
    opsets = [onnx.helper.make_opsetid("", opset)]
    return onnx.helper.make_model(
        graph, opset_imports=opsets, ir_version=onnx.helper.find_min_ir_version_for(opsets)
    )


def random_state(model: Axon, mode: str = "inference", seed: int = 0) -> ModelState:
    """Initialised state with every float leaf redrawn (variances positive), so folds matter."""
    import axonc as ax

    init_fn, _ = ax.build(model, mode=mode, compiler="reference")
    template = {
        name: random_inputs(Axon(node.id, {node.id: node}), 1, 0)[name]
        for name, node in input_nodes(model).items()
    }
    state = init_fn(template)
    rng = np.random.default_rng(seed)
    flat = {}
    for key, value in state.flatten(include_tied=False).items():
        if value.dtype.kind == "f":
            draw = (
                rng.uniform(0.5, 2.0, value.shape)
                if key.endswith("/var")
                else rng.normal(size=value.shape)
            )
            value = draw.astype(value.dtype)
        flat[key] = value
    return ModelState.unflatten(
        flat, parameters=state.parameters, state=state.state, frozen=state.frozen, ties=state.ties
    )
