"""`ax.export_onnx`: an IR graph and its state as a checked ONNX model.

The model has a symbolic batch dimension, parameters as initializers (state
tensors in train mode are also inputs, so a runtime can feed them back), node
names that start with their layer's name, and metadata_props recording the
output container, the train-mode state outputs, the noise inputs and the
source IR. Every exported model passes onnx.checker's full check.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from typing import Any

import onnx
from onnx import helper

from ..dtypes import TensorType
from ..errors import OptionError, UnsupportedOpsError
from ..interpreter import MODES
from ..ir import Axon, tree_leaves, tree_map
from ..model_state import ModelState
from ..passes import optimize, optimize_onnx
from ..serialize import to_bytes
from ..shape_inference import NONE, declared_types, input_nodes, resolve, template_types
from .builder import OnnxBuilder
from .lower import Lowering, unsupported_ops

DEFAULT_OPSET = 17
MIN_OPSET = 17
# ONNX refuses to serialise a protobuf over 2 GiB; above this, tensors go to a side file.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26


@functools.cache
def max_opset() -> int:
    """The newest opset both the installed onnx and onnxruntime support."""
    newest = onnx.defs.onnx_opset_version()
    try:
        import onnxruntime as ort
    except ImportError:
        return newest
    for opset in range(newest, MIN_OPSET - 1, -1):
        model = _probe_model(opset)
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            return opset
        except Exception:
            continue
    return MIN_OPSET


def _probe_model(opset: int) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    return _make_model(graph, opset)


def _make_model(graph: onnx.GraphProto, opset: int) -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", opset)]
    return helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name="axonc",
        ir_version=helper.find_min_ir_version_for(opsets),
    )


def _check_opset(opset: Any) -> int:
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise OptionError(f"opset must be an integer, got {opset!r}")
    top = max_opset()
    if not MIN_OPSET <= opset <= top:
        raise OptionError(
            f"opset {opset} is not supported: choose {MIN_OPSET} to {top} (the newest both "
            "the installed onnx and onnxruntime support)"
        )
    return opset


def _input_dims(name: str, shape: tuple) -> list[Any]:
    return [
        "batch" if i == 0 else f"{name}_dim{i}" if d is None else d for i, d in enumerate(shape)
    ]


def to_onnx(
    model: Axon,
    state: Any,
    *,
    mode: str = "inference",
    opset: int = DEFAULT_OPSET,
    opt_level: int = 2,
    template: Any = None,
    verify_each: bool = False,
    dump_after: set[str] | None = None,
    dump: Any = None,
    report: Any = None,
    params_as_inputs: bool = False,
) -> onnx.ModelProto:
    """Lower `model` with `state` to a checked ONNX model (see module doc).

    With `params_as_inputs` every parameter and state tensor is a graph input
    (named by its path) instead of an initializer, so one compiled graph serves
    any parameter values (what ax.build uses); passes that rewrite parameters
    are then skipped.

    `verify_each`, `dump_after` (pass names), `dump(pass_name, text)` and `report`
    (a passes.PassReport collecting timings) are forwarded to the pass manager.
    """
    if mode not in MODES:
        raise OptionError(f"mode must be 'inference' or 'train', got {mode!r}")
    opset = _check_opset(opset)
    model = resolve(
        model, template_types(model, template) if template is not None else declared_types(model)
    )
    missing = unsupported_ops(model)
    if missing:
        raise UnsupportedOpsError("ONNX", missing)
    state = state if isinstance(state, ModelState) else ModelState.new(state or {})
    model, state = optimize(
        model,
        state,
        mode=mode,
        level=min(opt_level, 1) if params_as_inputs else opt_level,
        target="onnx",
        verify_each=verify_each,
        dump_after=dump_after,
        dump=dump,
        report=report,
    )
    input_types = template_types(model, template) if template is not None else {}
    b = OnnxBuilder(opset)
    lowering = Lowering(b, mode, state.data, set(state.state), params_as_inputs)
    lowering.graph_inputs, lowering.input_types, lowering.value_types = {}, {}, {}
    for name, node in input_nodes(model).items():
        if node.options["optional"] and input_types.get(name, NONE) is NONE:
            continue  # an optional input is part of the graph only when the template gives it
        t = TensorType(node.options["shape"], node.options["dtype"])
        lowering.graph_inputs[name] = b.add_input(name, t, _input_dims(name, t.shape))
        lowering.input_types[name] = t
        lowering.value_types[name] = t
    out = lowering.lower_graph(model, None, ())
    structure = _add_outputs(b, lowering, out)
    state_outputs = {}
    for path, value in lowering.new_state.items():
        name = "state/" + "/".join(path)
        b.add_output(
            value, name, lowering.value_types[value], _output_dims(lowering.value_types[value])
        )
        state_outputs[name] = list(path)
    onnx_model = _make_model(b.graph("axonc"), opset)
    meta = {
        "axonc.mode": mode,
        "axonc.outputs": json.dumps(encode_structure(structure)),
        "axonc.state_outputs": json.dumps(state_outputs),
        "axonc.noise_inputs": json.dumps(
            {"/".join(p): list(shape) for p, shape in lowering.noise.items()}
        ),
        "axonc.random_inputs": json.dumps(lowering.random_inputs),
        "axonc.source": base64.b64encode(to_bytes(model)).decode("ascii"),
    }
    helper.set_model_props(onnx_model, meta)
    onnx_model = optimize_onnx(
        onnx_model,
        opt_level,
        mode=mode,
        verify_each=verify_each,
        dump_after=dump_after,
        dump=dump,
        report=report,
    )
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def encode_structure(tree: Any) -> Any:
    """The output container as JSON: {"tuple": [...]}, {"list": [...]}, {"dict": {...}}, names."""
    if isinstance(tree, tuple):
        return {"tuple": [encode_structure(t) for t in tree]}
    if isinstance(tree, list):
        return {"list": [encode_structure(t) for t in tree]}
    if isinstance(tree, dict):
        return {"dict": {k: encode_structure(v) for k, v in tree.items()}}
    return tree


def decode_structure(structure: Any) -> Any:
    """The inverse of encode_structure: tagged JSON back to tuples, lists, dicts of names."""
    if isinstance(structure, dict) and len(structure) == 1:
        ((tag, value),) = structure.items()
        if tag == "tuple":
            return tuple(decode_structure(v) for v in value)
        if tag == "list":
            return [decode_structure(v) for v in value]
        if tag == "dict":
            return {k: decode_structure(v) for k, v in value.items()}
    return structure


def _output_dims(t: TensorType) -> list[Any]:
    return ["batch" if i == 0 and d is None else d for i, d in enumerate(t.shape)]


def _add_outputs(b: OnnxBuilder, lowering: Lowering, out: Any) -> Any:
    """Expose the output leaves (`output` or `output_0`, ...); returns the structure by name."""
    leaves = [v for v in tree_leaves(out) if v is not NONE]
    single = not isinstance(out, (tuple, list, dict))
    names = iter(["output"] if single else [f"output_{i}" for i in range(len(leaves))])
    seen: dict[str, str] = {}

    def expose(value: Any) -> Any:
        if value is NONE:
            return None
        name = next(names)
        t = lowering.value_types[value]
        seen[name] = b.add_output(value, name, t, _output_dims(t))
        return name

    return tree_map(expose, out)


def save_onnx(onnx_model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Write an ONNX model; tensors go to `<file>.data` beyond protobuf's 2 GB limit."""
    path = os.fspath(path)
    large = onnx_model.ByteSize() > EXTERNAL_DATA_THRESHOLD
    onnx.save_model(
        onnx_model,
        path,
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=os.path.basename(path) + ".data" if large else None,
        size_threshold=0,
    )


def export_onnx(
    model: Axon, state: Any, path: str | os.PathLike[str], **options: Any
) -> onnx.ModelProto:
    """Export `model` with `state` to an .onnx file; `options` are those of `to_onnx`."""
    onnx_model = to_onnx(model, state, **options)
    save_onnx(onnx_model, path)
    return onnx_model
