"""Small ONNX models written by hand in axonc's metadata conventions, for runtime and CLI tests.

They pin the conventions (train mode, noise inputs, state outputs, plain models
without metadata, non-float dtypes) independently of the exporter.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def save_model(tmp_path: Path, graph: onnx.GraphProto, meta: dict[str, str], name: str) -> Path:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8, producer_name="test"
    )
    if meta:
        helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / name
    onnx.save_model(model, path)
    return path


def train_model(tmp_path: Path) -> Path:
    """A hand-written train-mode graph in axonc's conventions.

    prediction = (x + drop/mean) * drop/noise; the state output "state/drop/mean" is
    the batch mean of x. "drop/mean" is a state input with an initializer (zeros).
    """
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "drop/mean"], ["t"]),
            helper.make_node("Mul", ["t", "drop/noise"], ["output"]),
            helper.make_node("ReduceMean", ["x"], ["state/drop/mean"], axes=[0], keepdims=0),
        ],
        "train",
        [
            helper.make_tensor_value_info("x", f, ["batch", 3]),
            helper.make_tensor_value_info("drop/mean", f, [3]),
            helper.make_tensor_value_info("drop/noise", f, ["batch", 3]),
        ],
        [
            helper.make_tensor_value_info("output", f, ["batch", 3]),
            helper.make_tensor_value_info("state/drop/mean", f, [3]),
        ],
        initializer=[numpy_helper.from_array(np.zeros(3, np.float32), "drop/mean")],
    )
    meta = {
        "axonc.mode": "train",
        "axonc.outputs": json.dumps("output"),
        "axonc.state_outputs": json.dumps({"state/drop/mean": ["drop", "mean"]}),
        "axonc.noise_inputs": json.dumps({"drop/noise": [None, 3]}),
    }
    return save_model(tmp_path, graph, meta, "train.onnx")


def plain_model(tmp_path: Path, outputs: int = 1) -> Path:
    """A model from elsewhere: no axonc metadata; outputs x + 1 (and x * 2)."""
    f = TensorProto.FLOAT
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [helper.make_node("Add", ["x", "one"], ["plus"])]
    outs = [helper.make_tensor_value_info("plus", f, [None, 2])]
    if outputs == 2:
        nodes.append(helper.make_node("Mul", ["x", "two"], ["times"]))
        outs.append(helper.make_tensor_value_info("times", f, [None, 2]))
    graph = helper.make_graph(
        nodes, "plain", [helper.make_tensor_value_info("x", f, [None, 2])], outs, [one, two]
    )
    return save_model(tmp_path, graph, {}, f"plain{outputs}.onnx")


def typed_model(tmp_path: Path) -> Path:
    """Inputs of several dtypes: ids int32 [n], flag bool [n], half float16 [n]; echoes them."""
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["ids"], ["ids_out"]),
            helper.make_node("Identity", ["flag"], ["flag_out"]),
            helper.make_node("Identity", ["half"], ["half_out"]),
        ],
        "typed",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT32, ["n"]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, ["n"]),
            helper.make_tensor_value_info("half", TensorProto.FLOAT16, ["n"]),
        ],
        [
            helper.make_tensor_value_info("ids_out", TensorProto.INT32, ["n"]),
            helper.make_tensor_value_info("flag_out", TensorProto.BOOL, ["n"]),
            helper.make_tensor_value_info("half_out", TensorProto.FLOAT16, ["n"]),
        ],
    )
    return save_model(tmp_path, graph, {}, "typed.onnx")
