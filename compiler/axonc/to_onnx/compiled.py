"""Running a model through onnxruntime from Python: what `ax.build` uses by default.

The graph is exported once per input signature (dtypes and every dim but the
batch) with parameters as graph inputs, so one session serves any parameter
values; the session is cached. Dropout noise is drawn host-side from each
layer's key exactly as the reference interpreter draws it, and the advanced
key is returned with the rest of the train-mode state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnxruntime as ort

from ..dtypes import TensorType, dtype_name
from ..errors import StateError
from ..initializers import initialize
from ..ir import Axon, tree_map
from ..model_state import ModelState
from ..ops.dropout import draw
from ..shape_inference import NONE
from .export import decode_structure, to_onnx


class CompiledModel:
    """One model in one mode, compiled to onnxruntime per input signature."""

    def __init__(self, model: Axon, mode: str, *, threads: int | None = None):
        self.model = model
        self.mode = mode
        self.threads = threads
        self._cache: dict[tuple, _Entry] = {}

    def __call__(self, state: Any, feeds: Mapping[str, np.ndarray]) -> Any:
        data = state.data if isinstance(state, ModelState) else dict(state or {})
        signature = tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in feeds.items()))
        entry = self._cache.get(signature)
        if entry is None:
            entry = self._compile(state, feeds)
            self._cache[signature] = entry
        return entry.run(data, feeds)

    def _compile(self, state: Any, feeds: Mapping[str, np.ndarray]) -> _Entry:
        template = {
            k: TensorType((None, *v.shape[1:]), dtype_name(v.dtype)) for k, v in feeds.items()
        }
        model = to_onnx(self.model, state, mode=self.mode, template=template, params_as_inputs=True)
        options = ort.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        meta = {p.key: p.value for p in model.metadata_props}
        return _Entry(session, meta, self.mode)

    @property
    def compiled_signatures(self) -> int:
        """How many input signatures have been compiled (one session each)."""
        return len(self._cache)


class _Entry:
    def __init__(self, session: ort.InferenceSession, meta: dict[str, str], mode: str):
        self.session = session
        self.mode = mode
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self.structure = decode_structure(json.loads(meta["axonc.outputs"]))
        self.state_outputs = json.loads(meta["axonc.state_outputs"])
        self.noise = json.loads(meta["axonc.noise_inputs"])
        self.random = json.loads(meta["axonc.random_inputs"])

    def run(self, data: Mapping[str, Any], feeds: Mapping[str, np.ndarray]) -> Any:
        batch = next(iter(feeds.values())).shape[0] if feeds else 1
        all_feeds: dict[str, np.ndarray] = {}
        new_keys: dict[tuple[str, ...], np.ndarray] = {}
        for name in self.input_names:
            if name in feeds:
                all_feeds[name] = feeds[name]
            elif name in self.random:
                all_feeds[name] = random_input(self.random[name], batch)
            elif name in self.noise:
                layer = tuple(name.split("/")[:-1])
                shape = tuple(batch if d is None else d for d in self.noise[name])
                uniform, new_keys[layer] = draw(_lookup(data, (*layer, "key")), shape)
                all_feeds[name] = uniform.astype(np.float32)
            else:
                all_feeds[name] = np.asarray(_lookup(data, tuple(name.split("/"))))
        values = dict(zip(self.output_names, self.session.run(self.output_names, all_feeds)))
        prediction = tree_map(lambda n: NONE if n is None else values[n], self.structure)
        if self.mode != "train":
            return prediction
        state: dict[str, Any] = {}
        for name, path in self.state_outputs.items():
            _insert(state, tuple(path), values[name])
        for layer, key in new_keys.items():
            _insert(state, (*layer, "key"), key)
        return {"prediction": prediction, "state": state}


def random_input(spec: Mapping[str, Any], batch: int) -> np.ndarray:
    """A host-drawn input (an RNN's random initial state) as the reference draws it."""
    shape = tuple(batch if d is None else d for d in spec["shape"])
    return initialize(spec["initializer"], shape, "f32", spec["seed"])


def _lookup(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = data
    for key in path:
        if not isinstance(cur, Mapping) or key not in cur:
            raise StateError(
                f"the state has no value for {'/'.join(path)!r}; initialise it with init_fn"
            )
        cur = cur[key]
    return cur


def _insert(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value
