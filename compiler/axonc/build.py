"""`ax.build`: turn a graph into (init_fn, predict_fn), as Axon.build does.

`init_fn(template, initial)` infers every shape from the template, keeps each
value given in `initial` and initialises the rest with the layers' seeded
initializers. `predict_fn(state, inputs)` validates the inputs and runs the graph
through onnxruntime (compiled once per input signature; the default) or the
reference interpreter (`compiler="reference"`); in train mode it returns
{"prediction", "state"}.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from . import defn
from .dtypes import TensorType, dtype_name, to_numpy_dtype, type_of
from .errors import InputError, StateError
from .initializers import derive_seed, initialize
from .interpreter import MODES, run
from .ir import Axon, assign_names, topo_order
from .model_state import ModelState
from .parameters import collect_specs
from .shape_inference import NONE, infer_types


def input_nodes(model: Axon) -> dict[str, Any]:
    """The model's input nodes by input name, in graph order."""
    out = {}
    for nid in topo_order(model.nodes, model.output):
        node = model.nodes[nid]
        if node.op == "input":
            out[node.options["name"]] = node
    return out


def template_types(model: Axon, template: Any) -> dict[str, Any]:
    """Input types by name from a template: a TensorType, an array, or a dict of them."""
    inputs = input_nodes(model)
    if not isinstance(template, Mapping):
        required = [n for n, node in inputs.items() if not node.options["optional"]]
        if len(inputs) != 1 and len(required) != 1:
            raise InputError(
                f"the model has inputs {', '.join(map(repr, inputs))}; "
                "give a dict of templates or arrays keyed by input name"
            )
        template = {(required or list(inputs))[0]: template}
    unknown = sorted(set(template) - set(inputs))
    if unknown:
        raise InputError(
            f"unknown input(s) {', '.join(map(repr, unknown))}; the model's inputs are "
            f"{', '.join(map(repr, inputs)) or 'none'}"
        )
    out: dict[str, Any] = {}
    for name, t in template.items():
        if t is None or t is NONE:
            out[name] = NONE
        elif isinstance(t, TensorType):
            out[name] = t
        else:
            out[name] = type_of(t)
    return out


def _as_state(initial: Any) -> ModelState:
    if initial is None:
        return ModelState.empty()
    if isinstance(initial, ModelState):
        return initial
    if isinstance(initial, Mapping):
        return ModelState.new(dict(initial))
    got = type(initial).__name__
    raise StateError(f"initial state must be a ModelState or a nested dict of arrays, got {got}")


def _lookup(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = data
    for key in path:
        if not isinstance(cur, Mapping) or key not in cur:
            return None
        cur = cur[key]
    return cur


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data.setdefault(key, {})
    data[path[-1]] = value


def init(
    model: Axon, template: Any, initial: Any = None, *, mode: str = "inference", seed: int = 0
) -> ModelState:
    """Initialise a model's parameters and state for `template` (see module doc)."""
    given = _as_state(initial)
    names = assign_names(model)
    types = infer_types(model, template_types(model, template), names)
    specs = collect_specs(model, types, mode, names)
    frozen_layers = {names[nid] for nid, node in model.nodes.items() if node.frozen}
    data: dict[str, Any] = {}
    params, state, frozen = [], [], []
    ties = {dest: tie for dest, tie in given.ties.items() if dest in specs}
    for path, spec in specs.items():
        (state if spec.kind == "state" else params).append(path)
        if path[0] in frozen_layers or path in given.frozen:
            frozen.append(path)
        if path in ties:
            continue
        value = _lookup(given.data, path)
        if value is None:
            value = initialize(spec.initializer, spec.shape, spec.dtype, derive_seed(seed, *path))
        else:
            value = np.asarray(value)
            if tuple(value.shape) != tuple(spec.shape):
                raise StateError(
                    f"{'/'.join(path)}: the given value has shape {tuple(value.shape)}, "
                    f"expected {tuple(spec.shape)}"
                )
            # As Axon (Nx.as_type): a given value takes the parameter's dtype.
            value = value.astype(to_numpy_dtype(spec.dtype), copy=False)
        _set(data, path, value)
    unexpected = [p for p in given.paths() if p not in specs]
    if unexpected:
        # Axon 0.8.1 logs a warning and drops such keys; a typo must not pass unseen.
        warnings.warn(
            "initial state has values the model does not use, ignored: "
            + ", ".join("/".join(p) for p in unexpected),
            stacklevel=3,
        )
    return ModelState(data, parameters=params, state=state, frozen=frozen, ties=ties)


def _state_data(state: Any) -> Mapping[str, Any]:
    data = state.data if isinstance(state, ModelState) else state
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise StateError(
            f"state must be a ModelState or a nested dict of arrays, got {type(state).__name__}"
        )
    return data


def _checked_feeds(model: Axon, state: Any, inputs: Any) -> dict[str, np.ndarray]:
    """Input arrays by name, validated by dtype and by shape inference over the model."""
    _state_data(state)
    feeds = _feeds(model, inputs)
    for name, node in input_nodes(model).items():
        if name not in feeds and not node.options["optional"]:
            raise InputError(f"input {name!r} is required but was not given")
    infer_types(model, {k: type_of(v) for k, v in feeds.items()}, assign_names(model))
    return feeds


def predict(model: Axon, state: Any, inputs: Any, *, mode: str = "inference") -> Any:
    """Run the model once on concrete inputs with the reference interpreter."""
    if mode not in MODES:
        raise InputError(f"mode must be 'inference' or 'train', got {mode!r}")
    feeds = _checked_feeds(model, state, inputs)
    out, new_state = run(model, feeds, _state_data(state), mode)
    if mode == "train":
        return {"prediction": out, "state": new_state}
    return out


def _feeds(model: Axon, inputs: Any) -> dict[str, np.ndarray]:
    """Input arrays by name, checked against each input's declared dtype and shape."""
    nodes = input_nodes(model)
    if not isinstance(inputs, Mapping):
        (name,) = template_types(model, inputs)
        inputs = {name: inputs}
    unknown = sorted(set(inputs) - set(nodes))
    if unknown:
        raise InputError(
            f"unknown input(s) {', '.join(map(repr, unknown))}; expected "
            f"{', '.join(map(repr, nodes))}"
        )
    feeds: dict[str, np.ndarray] = {}
    for name, value in inputs.items():
        if value is None or value is NONE:
            continue
        arr = np.asarray(value)
        want = dtype_name(nodes[name].options["dtype"])
        if (
            (arr.dtype.kind == "f" and want[0] == "f")
            or (arr.dtype.kind in "iub" and want[0] in "su")
            or (arr.dtype.kind == "b" and want == "pred")
        ):
            arr = arr.astype(to_numpy_dtype(want), copy=False)
        elif arr.dtype.kind in "iu" and want[0] == "f":
            arr = arr.astype(to_numpy_dtype(want))
        else:
            raise InputError(f"input {name!r}: expected dtype {want}, got {arr.dtype}")
        feeds[name] = arr
    return feeds


COMPILERS = ("onnxruntime", "reference")


def build(
    model: Axon, mode: str = "inference", *, seed: int = 0, compiler: str = "onnxruntime"
) -> tuple[Callable[..., ModelState], Callable[..., Any]]:
    """(init_fn, predict_fn) for `model` in `mode` ("inference" or "train").

    `compiler="onnxruntime"` (the default) runs predict_fn as an ONNX graph compiled
    once per input signature and cached; `compiler="reference"` runs the numpy
    interpreter. Models with forward hooks always run on the reference
    interpreter, since hooks are Python callbacks.
    """
    if mode not in MODES:
        raise InputError(f"mode must be 'inference' or 'train', got {mode!r}")
    if compiler not in COMPILERS:
        raise InputError(f"compiler must be one of {', '.join(COMPILERS)}, got {compiler!r}")
    if not isinstance(model, Axon):
        raise InputError(f"build expects an Axon graph, got {type(model).__name__}")
    if compiler == "onnxruntime" and any(node.hooks for node in model.nodes.values()):
        compiler = "reference"

    def init_fn(template: Any, initial: Any = None) -> ModelState:
        return init(model, template, initial, mode=mode, seed=seed)

    init_fn.model, init_fn.seed = model, seed  # type: ignore[attr-defined]
    if compiler == "reference":

        def predict_fn(state: Any, inputs: Any) -> Any:
            if defn.has_tensors(state, inputs):
                return defn.inline_call(model, mode, state, inputs)
            return predict(model, state, inputs, mode=mode)

        predict_fn.model, predict_fn.mode = model, mode  # type: ignore[attr-defined]
        return init_fn, predict_fn

    from .to_onnx.compiled import CompiledModel

    compiled = CompiledModel(model, mode)

    def predict_fn(state: Any, inputs: Any) -> Any:
        # inside axonc.numpy.value_and_grad the call is recorded into the traced graph
        if defn.has_tensors(state, inputs):
            return defn.inline_call(model, mode, state, inputs)
        feeds = _checked_feeds(model, state, inputs)
        return compiled(state, feeds)

    predict_fn.compiled = compiled  # type: ignore[attr-defined]
    predict_fn.model, predict_fn.mode = model, mode  # type: ignore[attr-defined]
    return init_fn, predict_fn
