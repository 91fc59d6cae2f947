"""`ax.build`: turn a graph into (init_fn, predict_fn), as Axon.build does.

`init_fn(template, initial)` infers every shape from the template, keeps each
value given in `initial` and initialises the rest with the layers' seeded
initializers. `predict_fn(state, inputs)` validates the inputs and runs the graph
through onnxruntime (compiled once per input signature; the default) or the
reference interpreter (`compiler="reference"`); in train mode it returns
{"prediction", "state"}.

Both first resolve the graph for the template's or the data's types
(`resolve`, cached per input signature on the graph): as in Axon, shapes and
dtypes come from what arrives, and a declared input shape is a hint.
"""

from __future__ import annotations

import logging
import time
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .dtypes import dtype_name, to_numpy_dtype, type_of
from .errors import InputError, StateError
from .hooks import hooks_for, runs_hooks
from .initializers import derive_seed, initialize
from .interpreter import MODES, run
from .ir import Axon, assign_names, topo_order
from .model_state import ModelState
from .parameters import collect_specs
from .shape_inference import NONE, infer_types, input_nodes, resolve, template_types
from .to_onnx.compiled import CompiledModel

_LOG = logging.getLogger("axonc")


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
    resolved = resolve(model, template_types(model, template))
    specs = _specs(resolved, model, mode)
    frozen_layers = {names[nid] for nid, node in resolved.nodes.items() if node.frozen}
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
    _initialize_hooks(model, names, data)
    unexpected = [p for p in given.paths() if p not in specs]
    if unexpected:
        # Axon 0.8.1 logs a warning and drops such keys; a typo must not pass unseen.
        warnings.warn(
            "initial state has values the model does not use, ignored: "
            + ", ".join("/".join(p) for p in unexpected),
            stacklevel=3,
        )
    return ModelState(data, parameters=params, state=state, frozen=frozen, ties=ties)


def _initialize_hooks(model: Axon, names: Mapping[int, str], data: Mapping[str, Any]) -> None:
    """Axon's initialize hooks: each is called with its layer's new parameters (a dict,
    empty for a layer without any), in graph order, whatever the mode."""
    if not any(node.hooks for node in model.nodes.values()):
        return
    for nid in topo_order(model.nodes, model.output):
        node = model.nodes[nid]
        if node.hooks and node.op != "input":
            for hook in hooks_for(node, "initialize", None):
                hook(data.get(names[nid], {}))


def _state_data(state: Any) -> Mapping[str, Any]:
    data = state.data if isinstance(state, ModelState) else state
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise StateError(
            f"state must be a ModelState or a nested dict of arrays, got {type(state).__name__}"
        )
    return data


def _checked_feeds(
    model: Axon, state: Any, inputs: Any, mode: str = "inference"
) -> tuple[Axon, dict[str, np.ndarray]]:
    """The model resolved for the inputs, and the input arrays by name, validated.

    Since the data decides the shapes, data the state was not initialised for shows
    as parameters that do not fit: a StateError names them and the inputs.
    """
    data = _state_data(state)
    feeds = _feeds(model, inputs)
    for name, node in input_nodes(model).items():
        if name not in feeds and not node.options["optional"]:
            raise InputError(f"input {name!r} is required but was not given")
    resolved = resolve(model, {k: type_of(v) for k, v in feeds.items()})
    check_fit(model, resolved, data, feeds, mode)
    return resolved, feeds


def check_fit(
    model: Axon, resolved: Axon, data: Mapping[str, Any], feeds: Mapping[str, Any], mode: str
) -> None:
    """A StateError when the state's parameters do not fit the model resolved for `feeds`."""
    for path, spec in _specs(resolved, model, mode).items():
        value = _lookup(data, path)
        if value is not None and tuple(np.shape(value)) != tuple(spec.shape):
            shapes = ", ".join(f"{k!r}: {np.shape(v)}" for k, v in feeds.items())
            raise StateError(
                f"{'/'.join(path)}: inputs shaped {{{shapes}}} need shape {tuple(spec.shape)} "
                f"but the state holds {tuple(np.shape(value))}; was it initialised for inputs "
                "of another shape?"
            )


_spec_cache: weakref.WeakKeyDictionary[Axon, dict[str, dict]] = weakref.WeakKeyDictionary()


def _specs(resolved: Axon, model: Axon, mode: str) -> dict[tuple[str, ...], Any]:
    """The parameter specs of a resolved graph (cached; names from the original graph)."""
    by_mode = _spec_cache.setdefault(resolved, {})
    if mode not in by_mode:
        names = assign_names(model)
        by_mode[mode] = collect_specs(resolved, infer_types(resolved, names=names), mode, names)
    return by_mode[mode]


def predict(model: Axon, state: Any, inputs: Any, *, mode: str = "inference") -> Any:
    """Run the model once on concrete inputs with the reference interpreter."""
    if mode not in MODES:
        raise InputError(f"mode must be 'inference' or 'train', got {mode!r}")
    model, feeds = _checked_feeds(model, state, inputs, mode)
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
        declared = nodes[name].options["dtype"]
        if declared is None:  # the input takes the data's dtype (f64 as f32, as Nx's default)
            if arr.dtype.kind not in "biuf":
                raise InputError(f"input {name!r}: expected a numeric array, got dtype {arr.dtype}")
            feeds[name] = arr.astype(np.float32) if arr.dtype == np.float64 else arr
            continue
        want = dtype_name(declared)
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
    model: Axon,
    mode: str = "inference",
    *,
    seed: int = 0,
    compiler: str = "onnxruntime",
    debug: bool = False,
) -> tuple[Callable[..., ModelState], Callable[..., Any]]:
    """(init_fn, predict_fn) for `model` in `mode` ("inference" or "train").

    `compiler="onnxruntime"` (the default) runs predict_fn as an ONNX graph compiled
    once per input signature and cached; `compiler="reference"` runs the numpy
    interpreter. Models with hooks that fire while predicting (pre_forward, forward,
    all) always run on the reference interpreter, since hooks are Python callbacks.
    `debug=True` logs (logger "axonc", level DEBUG) how long graph traversal, each
    init and each predict took, and each compilation for a new input signature, as
    Axon's `debug: true` does.
    """
    if mode not in MODES:
        raise InputError(f"mode must be 'inference' or 'train', got {mode!r}")
    if compiler not in COMPILERS:
        raise InputError(f"compiler must be one of {', '.join(COMPILERS)}, got {compiler!r}")
    if not isinstance(model, Axon):
        raise InputError(f"build expects an Axon graph, got {type(model).__name__}")
    started = time.perf_counter()
    if compiler == "onnxruntime" and runs_hooks(model, mode):
        compiler = "reference"
    if debug:
        names = assign_names(model)
        _debug(f"finished graph traversal ({len(names)} layers)", started)

    def init_fn(template: Any, initial: Any = None) -> ModelState:
        started = time.perf_counter()
        state = init(model, template, initial, mode=mode, seed=seed)
        if debug:
            _debug(f"finished init ({len(state.paths())} tensors)", started)
        return state

    if compiler == "reference":

        def predict_fn(state: Any, inputs: Any) -> Any:
            started = time.perf_counter()
            out = predict(model, state, inputs, mode=mode)
            if debug:
                _debug(f"finished predict ({mode} mode, reference interpreter)", started)
            return out

        return init_fn, predict_fn

    compiled = CompiledModel(model, mode)

    def predict_fn(state: Any, inputs: Any) -> Any:
        started = time.perf_counter()
        _, feeds = _checked_feeds(model, state, inputs, mode)
        known = compiled.compiled_signatures
        out = compiled(state, feeds)
        if debug:
            if compiled.compiled_signatures > known:
                shapes = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in feeds.items())
                _debug(f"compiled a new onnxruntime session for inputs {shapes}", started)
            _debug(f"finished predict ({mode} mode, onnxruntime)", started)
        return out

    predict_fn.compiled = compiled  # type: ignore[attr-defined]
    return init_fn, predict_fn


def _debug(what: str, started: float) -> None:
    """A `debug=True` log line: what finished and how long it took (as Axon's Logger.debug)."""
    _LOG.debug("axonc %s in %.1fms", what, (time.perf_counter() - started) * 1000)
