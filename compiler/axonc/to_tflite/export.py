"""`ax.export_tflite`: an IR graph and its state as a .tflite flatbuffer LiteRT runs.

The model is lowered in inference mode after the "tflite" pass pipeline
(dropout removed, batch norm folded into the preceding dense/conv), channels
last as Axon is, with a dynamic batch (`shapeSignature` -1), one SignatureDef
("serving_default") whose input and output names are the IR's, and metadata
recording the output container and the source graph's SHA-256 digest
(spec/tflite.md). Quantization (float16, dynamic-range int8, full-integer int8)
is applied to the float model by `quantize.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from typing import Any

from ..dtypes import TensorType
from ..errors import OptionError, UnsupportedOpsError
from ..ir import Axon, tree_leaves, tree_map
from ..model_state import ModelState
from ..passes import optimize
from ..serialize import to_bytes
from ..shape_inference import NONE, declared_types, input_nodes, resolve, template_types
from ..to_onnx.export import encode_structure
from .builder import TfliteBuilder
from .lower import Lowering
from .quantize import quantize_model

QUANTIZE_MODES = (None, "float16", "dynamic-int8", "int8")
SIGNATURE_KEY = "serving_default"


def to_tflite(
    model: Axon,
    state: Any,
    *,
    quantize: str | None = None,
    calibration: Iterable[Any] | None = None,
    int8_interface: bool = False,
    opt_level: int = 2,
    template: Any = None,
    verify_each: bool = False,
    report: Any = None,
) -> bytes:
    """Lower `model` with `state` to the bytes of a .tflite model (see module doc).

    `quantize`: None (float32), "float16", "dynamic-int8" or "int8" (needs
    `calibration`, an iterable of input batches: arrays, or dicts by input name).
    `int8_interface` makes an int8 model's inputs and outputs int8 too.
    """
    if quantize not in QUANTIZE_MODES:
        raise OptionError(
            f"quantize must be one of None, 'float16', 'dynamic-int8', 'int8'; got {quantize!r}"
        )
    if quantize == "int8" and calibration is None:
        raise OptionError("quantize='int8' needs calibration data: an iterable of input batches")
    if int8_interface and quantize != "int8":
        raise OptionError("int8_interface applies only to quantize='int8'")
    source_digest = hashlib.sha256(to_bytes(model)).hexdigest()
    model = resolve(
        model, template_types(model, template) if template is not None else declared_types(model)
    )
    state = state if isinstance(state, ModelState) else ModelState.new(state or {})
    model, state = optimize(
        model,
        state,
        mode="inference",
        level=opt_level,
        target="tflite",
        verify_each=verify_each,
        report=report,
    )
    b = TfliteBuilder()
    lowering = Lowering(b, state.data)
    input_types = template_types(model, template) if template is not None else {}
    for name, node in input_nodes(model).items():
        t = input_types.get(name)
        if node.options["optional"] and (t is None or t is NONE):
            continue
        if t is None and node.options["shape"] is not None:
            t = TensorType(node.options["shape"], node.options["dtype"])
        if t is None:
            raise OptionError(f"input {name!r} has no shape; give ax.input a shape or a template")
        lowering.graph_inputs[name] = b.add_input(name, t)
        lowering.input_types[name] = t
    out = lowering.lower_graph(model, None, ())
    if lowering.problems:
        raise UnsupportedOpsError("TFLite", lowering.problems)
    structure = _add_outputs(b, out)
    fuse_activations(b)
    b.metadata["axonc.outputs"] = json.dumps(encode_structure(structure)).encode()
    b.metadata["axonc.source_sha256"] = source_digest.encode()
    b.metadata["axonc.quantization"] = (quantize or "none").encode()
    data = b.finish(SIGNATURE_KEY)
    if quantize is not None:
        data = quantize_model(
            data, quantize, calibration, list(lowering.graph_inputs), int8_interface
        )
    return data


def _add_outputs(b: TfliteBuilder, out: Any) -> Any:
    """Expose the output leaves (`output` or `output_0`, ...); returns the structure by name."""
    leaves = [v for v in tree_leaves(out) if v is not NONE]
    single = not isinstance(out, (tuple, list, dict))
    names = iter(["output"] if single else [f"output_{i}" for i in range(len(leaves))])

    def expose(value: Any) -> Any:
        if value is NONE:
            return None
        name = next(names)
        b.add_output(value, name)
        return name

    return tree_map(expose, out)


# Operators whose options carry a fused activation, and the activations TFLite fuses.
_FUSING = {
    "FULLY_CONNECTED": "FullyConnectedOptions",
    "CONV_2D": "Conv2DOptions",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "TRANSPOSE_CONV": "TransposeConvOptions",
    "CONV_3D": "Conv3DOptions",
    "ADD": "AddOptions",
    "SUB": "SubOptions",
    "MUL": "MulOptions",
}
# (TANH is in the schema's enum, but FULLY_CONNECTED and others reject it at prepare time.)
_FUSED = {"RELU": "RELU", "RELU6": "RELU6", "RELU_N1_TO_1": "RELU_N1_TO_1"}


def fuse_activations(b: TfliteBuilder) -> None:
    """Fold RELU / RELU6 / RELU_N1_TO_1 into the operator producing their only input.

    As TFLite's own converter does: the producer must have no fused activation yet
    and its output must feed nothing else (and not be a model output).
    """
    s = b.s
    codes = {index: code for (code, _), index in b.opcodes.items()}
    names = {getattr(s.BuiltinOperator, n): n for n in {*_FUSING, *_FUSED}}
    consumers: dict[int, int] = {}
    for op in b.operators:
        for i in op.inputs:
            consumers[i] = consumers.get(i, 0) + 1
    outputs = {i for _, i in b.outputs}
    producer = {op.outputs[0]: op for op in b.operators if len(op.outputs) == 1}
    fused: set[int] = set()
    for k, op in enumerate(b.operators):
        act = names.get(codes[op.opcodeIndex])
        if act not in _FUSED or len(op.inputs) != 1:
            continue
        src = producer.get(op.inputs[0])
        if src is None or consumers.get(op.inputs[0]) != 1 or op.inputs[0] in outputs:
            continue
        kind = names.get(codes[src.opcodeIndex])
        if kind not in _FUSING or src.builtinOptions is None:
            continue
        if src.builtinOptions.fusedActivationFunction != s.ActivationFunctionType.NONE:
            continue
        if b.types[src.outputs[0]].dtype != "f32":
            continue
        src.builtinOptions.fusedActivationFunction = getattr(s.ActivationFunctionType, _FUSED[act])
        src.outputs = list(op.outputs)
        fused.add(k)
    b.operators = [op for k, op in enumerate(b.operators) if k not in fused]


def export_tflite(
    model: Axon,
    state: Any,
    path: str | os.PathLike[str],
    *,
    quantize: str | None = None,
    calibration: Iterable[Any] | None = None,
    template: Any = None,
    **options: Any,
) -> bytes:
    """Export `model` with `state` to a .tflite file; options are those of `to_tflite`."""
    data = to_tflite(
        model, state, quantize=quantize, calibration=calibration, template=template, **options
    )
    with open(os.fspath(path), "wb") as f:
        f.write(data)
    return data
