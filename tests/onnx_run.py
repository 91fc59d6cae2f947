"""Running an exported ONNX model on onnxruntime in tests, with axonc's metadata conventions."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from axonc.ir import tree_map
from axonc.ops.dropout import draw
from axonc.to_onnx.compiled import random_input
from axonc.to_onnx.export import decode_structure


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _meta(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _lookup(tree: Any, path: list[str]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def noise_feeds(model: onnx.ModelProto, state: dict, batch: int) -> dict[str, np.ndarray]:
    """Dropout noise inputs drawn from each layer's key, as the reference interpreter draws them."""
    feeds = {}
    for name, shape in json.loads(_meta(model).get("axonc.noise_inputs", "{}")).items():
        layer = name.split("/")[:-1]
        key = _lookup(state, [*layer, "key"])
        uniform, _ = draw(key, tuple(batch if d is None else d for d in shape))
        feeds[name] = uniform.astype(np.float32)
    return feeds


def run(model: onnx.ModelProto, sess: ort.InferenceSession, feeds: dict, state: dict, batch: int):
    """(prediction tree, {layer: {key: array}} state outputs) for one call."""
    meta = _meta(model)
    graph_inputs = {i.name for i in sess.get_inputs()}
    all_feeds = {k: v for k, v in feeds.items() if k in graph_inputs}
    all_feeds.update(noise_feeds(model, state, batch))
    for name, spec in json.loads(meta.get("axonc.random_inputs", "{}")).items():
        all_feeds[name] = random_input(spec, batch)
    names = [o.name for o in sess.get_outputs()]
    values = dict(zip(names, sess.run(names, all_feeds)))
    structure = json.loads(meta["axonc.outputs"])
    prediction = tree_map(lambda n: values[n], decode_structure(structure))
    new_state: dict = {}
    for name, path in json.loads(meta["axonc.state_outputs"]).items():
        cur = new_state
        for key in path[:-1]:
            cur = cur.setdefault(key, {})
        cur[path[-1]] = values[name]
    return prediction, new_state
