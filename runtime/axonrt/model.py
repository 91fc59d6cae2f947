"""`axonrt.load`: an ONNX model as a callable with checked inputs and structured outputs.

A model compiled by axonc records in its metadata_props how its flat ONNX
outputs nest ("axonc.outputs"), which outputs are updated train-mode state
("axonc.state_outputs") and which inputs are dropout noise
("axonc.noise_inputs"); `Model.__call__` uses them to hand back the original
containers. Any other ONNX model works too: its outputs come back by name.

Input dtypes. An input given with exactly the model's dtype is used as is.
Otherwise a value is converted only when nothing a caller would care about is
lost, and refused with an InputError otherwise:
- float to float (float64 -> float32, the numpy default, and so Python floats and
  lists of them): allowed, unless a finite value overflows to inf;
- int, uint or bool to float: allowed when every value is exactly representable
  (|v| <= 2**24 for float32), e.g. pixel values or class indices;
- int, uint or bool to int or uint: allowed when every value fits the target;
- float to int, anything but bool to bool, strings and objects: refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from .errors import InputError, ModelError, OptionError, RunError
from .providers import choose_providers
from .tflite import LiteRTSession, is_tflite

Dim = int | str | None

OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

# onnxruntime's tensor element names -> numpy dtype names.
_ORT_DTYPES = {
    "float": "float32",
    "double": "float64",
    "float16": "float16",
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "int64": "int64",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
    "bool": "bool",
}

# onnxruntime logs warnings (e.g. state initializers that are also inputs) to stderr;
# axonrt reports problems as exceptions instead.
_LOG_ERRORS_ONLY = 3


@dataclass(frozen=True)
class Signature:
    """One input or output: its name, numpy dtype name, and shape.

    A dim is an int (static), a str (a named dynamic dim such as "batch": every
    input using the name must agree) or None (dynamic, unnamed). `shape` is None
    when the model does not declare a rank.
    """

    name: str
    dtype: str
    shape: tuple[Dim, ...] | None

    def __str__(self) -> str:
        return f"{self.name}: {self.dtype}{_fmt_shape(self.shape)}"


def _fmt_shape(shape: tuple[Dim, ...] | None) -> str:
    if shape is None:
        return "[?]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _signature(arg: Any) -> Signature:
    kind = arg.type
    if kind.startswith("tensor(") and kind.endswith(")"):
        element = kind[len("tensor(") : -1]
        dtype = _ORT_DTYPES.get(element, element)
    else:
        dtype = kind
    shape = None
    if arg.shape is not None:
        shape = tuple(d if isinstance(d, (int, str)) else None for d in arg.shape)
    return Signature(arg.name, dtype, shape)


def _session_options(threads: Any, optimization: Any, spinning: Any) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = _LOG_ERRORS_ONLY
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise OptionError(f"threads must be a positive integer or None, got {threads!r}")
        options.intra_op_num_threads = threads
    if optimization not in OPTIMIZATION_LEVELS:
        raise OptionError(
            f"optimization must be one of {', '.join(map(repr, OPTIMIZATION_LEVELS))}, "
            f"got {optimization!r}"
        )
    options.graph_optimization_level = OPTIMIZATION_LEVELS[optimization]
    if not isinstance(spinning, bool):
        raise OptionError(f"spinning must be True or False, got {spinning!r}")
    flag = "1" if spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", flag)
    options.add_session_config_entry("session.inter_op.allow_spinning", flag)
    return options


def load(
    path_or_bytes: str | os.PathLike[str] | bytes | bytearray | memoryview,
    providers: str | Sequence[str] | None = None,
    *,
    threads: int | None = None,
    optimization: str = "all",
    spinning: bool = True,
) -> Model:
    """Load an .onnx or .tflite file (or its bytes) into a Model.

    A .tflite model (recognised by its file identifier) runs on LiteRT (extra
    `axonrt[tflite]`); `providers`, `optimization` and `spinning` are onnxruntime's
    and do not apply to it.

    `providers`: None picks TensorRT, CUDA, CPU among those available (see
    `choose_providers`); or name them ("cpu", "cuda", full provider names).
    `threads`: intra-op threads (None = onnxruntime's default, one per core).
    `optimization`: graph optimisation level, "disable", "basic", "extended" or "all".
    `spinning`: let idle worker threads spin (lower latency, more CPU); turn off when
    several models or processes share the cores.
    Raises ModelError for a missing, truncated or non-ONNX file, naming it.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        source, model_arg = "<bytes>", bytes(path_or_bytes)
        if not model_arg:
            raise ModelError("<bytes>: empty, not an ONNX model")
    elif isinstance(path_or_bytes, (str, os.PathLike)):
        source = model_arg = os.fspath(path_or_bytes)
        if not os.path.isfile(source):
            what = "is a directory" if os.path.isdir(source) else "no such file"
            raise ModelError(f"{source}: {what}")
        if os.path.getsize(source) == 0:
            raise ModelError(f"{source}: empty file, not an ONNX model")
    else:
        raise ModelError(
            f"load takes a path or the model's bytes, got {type(path_or_bytes).__name__}"
        )
    options = _session_options(threads, optimization, spinning)
    data = _tflite_bytes(model_arg)
    if data is not None:
        return Model(LiteRTSession(data, source, threads), source)
    chosen = choose_providers(ort.get_available_providers(), providers)
    try:
        session = ort.InferenceSession(model_arg, options, providers=chosen)
    except Exception as exc:  # onnxruntime's pybind errors share no useful base class
        raise ModelError(f"{source}: cannot load as an ONNX model: {_ort_message(exc)}") from None
    return Model(session, source)


def _tflite_bytes(model_arg: str | bytes) -> bytes | None:
    """The model's bytes when it is a TFLite flatbuffer (by its file identifier), else None."""
    if isinstance(model_arg, bytes):
        return model_arg if is_tflite(model_arg) else None
    with open(model_arg, "rb") as f:
        head = f.read(8)
        if not is_tflite(head):
            return None
        return head + f.read()


def _ort_message(exc: Exception) -> str:
    """onnxruntime's message without its '[ONNXRuntimeError] : 7 : CODE :' prefix, on one line."""
    text = str(exc).strip()
    if text.startswith("[ONNXRuntimeError]"):
        text = text.split(":", 3)[-1].strip()
    return " ".join(text.split())


class Model:
    """A loaded model: signatures, validation, and calls returning the original structure."""

    def __init__(self, session: ort.InferenceSession, source: str = "<session>"):
        self.session = session
        self.source = source
        self.metadata: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)
        self.mode: str | None = self.metadata.get("axonc.mode")
        noise = self._meta_json("axonc.noise_inputs", {})
        state_outputs = self._meta_json("axonc.state_outputs", {})
        graph_inputs = [_signature(a) for a in session.get_inputs()]
        self.outputs: list[Signature] = [_signature(a) for a in session.get_outputs()]
        self.inputs: list[Signature] = [s for s in graph_inputs if s.name not in noise]
        self.noise_inputs: list[Signature] = [s for s in graph_inputs if s.name in noise]
        self.state_inputs: list[Signature] = [
            _signature(a) for a in session.get_overridable_initializers()
        ]
        output_names = {s.name for s in self.outputs}
        self._state_paths = self._check_state_outputs(state_outputs, output_names)
        self._structure = None
        if "axonc.outputs" in self.metadata:
            self._structure = _decode(self._meta_json("axonc.outputs", None), source)
            unknown = [n for n in _leaves(self._structure) if n not in output_names]
            if unknown:
                raise ModelError(
                    f"{source}: metadata 'axonc.outputs' names outputs the graph lacks: "
                    f"{', '.join(map(repr, unknown))}"
                )
        self._by_name = {s.name: s for s in [*graph_inputs, *self.state_inputs]}

    def _meta_json(self, key: str, default: Any) -> Any:
        if key not in self.metadata:
            return default
        try:
            return json.loads(self.metadata[key])
        except ValueError as exc:
            raise ModelError(f"{self.source}: metadata {key!r} is not valid JSON: {exc}") from None

    def _check_state_outputs(self, spec: Any, output_names: set[str]) -> dict[str, list[str]]:
        if not isinstance(spec, dict) or not all(
            name in output_names
            and isinstance(path, list)
            and path
            and all(isinstance(k, str) for k in path)
            for name, path in spec.items()
        ):
            raise ModelError(
                f"{self.source}: metadata 'axonc.state_outputs' must map graph outputs to "
                "non-empty lists of keys"
            )
        return spec

    @property
    def providers(self) -> list[str]:
        """The execution providers the session runs on, in priority order."""
        return list(self.session.get_providers())

    def __repr__(self) -> str:
        ins = ", ".join(map(str, self.inputs))
        outs = ", ".join(map(str, self.outputs))
        return f"<axonrt.Model {self.source} inputs=[{ins}] outputs=[{outs}] mode={self.mode!r}>"

    # ---- calling ----------------------------------------------------------------------

    def __call__(self, *args: Any, rng: Any = None, **by_name: Any) -> Any:
        """Run on `Model(x, y)`, `Model(x=..., y=...)` or `Model({"x": ...})`.

        Returns the output in the structure the model was built with (one array, or
        nested tuples/lists/dicts); a train-mode model returns {"prediction": ...,
        "state": {layer: {key: array}}}. Dropout noise inputs not given are drawn from
        `rng` (a numpy Generator or an int seed).
        """
        values = self.run(self._feeds(args, by_name), rng=rng)
        if self._structure is None:
            if len(self.outputs) == 1:
                return values[self.outputs[0].name]
            return values
        prediction = _build(self._structure, values)
        if self.mode != "train":
            return prediction
        state: dict[str, Any] = {}
        for name, path in self._state_paths.items():
            cur = state
            for key in path[:-1]:
                cur = cur.setdefault(key, {})
            cur[path[-1]] = values[name]
        return {"prediction": prediction, "state": state}

    def _feeds(self, args: tuple[Any, ...], by_name: dict[str, Any]) -> dict[str, Any]:
        if len(args) == 1 and isinstance(args[0], Mapping) and not by_name:
            return dict(args[0])
        if len(args) > len(self.inputs):
            names = ", ".join(s.name for s in self.inputs) or "none"
            raise InputError(
                f"the model takes {len(self.inputs)} input(s) ({names}), "
                f"got {len(args)} positional arrays"
            )
        feeds = {s.name: a for s, a in zip(self.inputs, args)}
        for name, value in by_name.items():
            if name in feeds:
                raise InputError(f"input {name!r} given twice (by position and by name)")
            feeds[name] = value
        return feeds

    def run(self, feeds: Mapping[str, Any], *, rng: Any = None) -> dict[str, np.ndarray]:
        """Validate `feeds` and run: every graph output by name, with no restructuring."""
        prepared = self.validate(feeds, rng=rng)
        names = [s.name for s in self.outputs]
        try:
            results = self.session.run(names, prepared)
        except Exception as exc:  # onnxruntime's pybind errors share no useful base class
            engine = "LiteRT" if self.providers == ["LiteRT"] else "onnxruntime"
            raise RunError(f"{self.source}: {engine} failed: {_ort_message(exc)}") from None
        return dict(zip(names, results))

    def validate(self, feeds: Mapping[str, Any], *, rng: Any = None) -> dict[str, np.ndarray]:
        """The feeds converted to the model's dtypes, with noise drawn; raises InputError."""
        if not isinstance(feeds, Mapping):
            raise InputError(f"inputs by name must be a mapping, got {type(feeds).__name__}")
        for name in feeds:
            if name not in self._by_name:
                expected = ", ".join(repr(s.name) for s in [*self.inputs, *self.noise_inputs])
                raise InputError(
                    f"unknown input {name!r}; the model's inputs are {expected or 'none'}"
                )
        missing = [s.name for s in self.inputs if s.name not in feeds]
        if missing:
            raise InputError(
                f"missing input(s) {', '.join(map(repr, missing))}; expected "
                + ", ".join(map(str, self.inputs))
            )
        bound: dict[str, tuple[int, str]] = {}
        out = {}
        for name, value in feeds.items():
            out[name] = _check(self._by_name[name], value, bound)
        absent = [s for s in self.noise_inputs if s.name not in feeds]
        if absent:
            generator = _generator(rng, absent)
            for sig in absent:
                out[sig.name] = generator.random(_noise_shape(sig, bound), dtype=np.float32)
        return out


# ---- output structure ------------------------------------------------------------------


def _decode(structure: Any, source: str) -> Any:
    """axonc's tagged JSON ({"tuple": [...]}, {"list": [...]}, {"dict": {...}}, names)."""
    if structure is None or isinstance(structure, str):
        return structure
    if isinstance(structure, dict) and len(structure) == 1:
        ((tag, value),) = structure.items()
        if tag in ("tuple", "list") and isinstance(value, list):
            items = [_decode(v, source) for v in value]
            return tuple(items) if tag == "tuple" else items
        if tag == "dict" and isinstance(value, dict):
            return {k: _decode(v, source) for k, v in value.items()}
    raise ModelError(
        f"{source}: metadata 'axonc.outputs' holds {json.dumps(structure)[:80]}, expected an "
        'output name, null or a {"tuple"|"list"|"dict": ...} container'
    )


def _leaves(structure: Any) -> list[str]:
    if isinstance(structure, (tuple, list)):
        return [n for s in structure for n in _leaves(s)]
    if isinstance(structure, dict):
        return [n for s in structure.values() for n in _leaves(s)]
    return [] if structure is None else [structure]


def _build(structure: Any, values: Mapping[str, np.ndarray]) -> Any:
    if isinstance(structure, tuple):
        return tuple(_build(s, values) for s in structure)
    if isinstance(structure, list):
        return [_build(s, values) for s in structure]
    if isinstance(structure, dict):
        return {k: _build(s, values) for k, s in structure.items()}
    return None if structure is None else values[structure]


# ---- input checks ----------------------------------------------------------------------


def _check(sig: Signature, value: Any, bound: dict[str, tuple[int, str]]) -> np.ndarray:
    """`value` as an array of the input's dtype and shape, or an InputError saying why not."""
    try:
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"input {sig.name!r}: expected an array of {sig.dtype}, got a "
            f"{type(value).__name__} numpy cannot convert ({exc})"
        ) from None
    if sig.dtype not in _ORT_DTYPES.values():
        raise InputError(f"input {sig.name!r} has type {sig.dtype}, which axonrt cannot feed")
    target = np.dtype(sig.dtype)
    if arr.dtype != target:
        arr = _cast(sig, arr, target)
    if sig.shape is not None:
        _check_shape(sig, arr.shape, bound)
    return np.ascontiguousarray(arr)


def _cast(sig: Signature, arr: np.ndarray, target: np.dtype) -> np.ndarray:
    src = arr.dtype
    problem = None
    if src.kind not in "biuf":
        problem = "not a numeric array"
    elif target.kind == "f":
        if src.kind == "f":
            with np.errstate(over="ignore"):
                out = arr.astype(target)
            if np.any(np.isfinite(arr) & ~np.isfinite(out)):
                problem = f"values overflow {target.name}"
        elif arr.size:
            limit = 2 ** (np.finfo(target).nmant + 1)
            if int(arr.min()) < -limit or int(arr.max()) > limit:
                problem = f"integers beyond ±2**{np.finfo(target).nmant + 1} lose precision"
    elif target.kind in "iu":
        if src.kind == "f":
            problem = "float values would be truncated; round and cast explicitly"
        elif arr.size:
            info = np.iinfo(target)
            if int(arr.min()) < info.min or int(arr.max()) > info.max:
                problem = f"values outside {target.name}'s range [{info.min}, {info.max}]"
    elif target.kind == "b":
        problem = "only booleans are accepted for a bool input"
    if problem is not None:
        raise InputError(
            f"input {sig.name!r}: expected dtype {target.name}, got {src.name} ({problem})"
        )
    return arr.astype(target)


def _check_shape(sig: Signature, shape: tuple[int, ...], bound: dict[str, tuple[int, str]]) -> None:
    expected = sig.shape
    assert expected is not None
    got = str(tuple(shape))
    if len(shape) != len(expected):
        raise InputError(
            f"input {sig.name!r}: expected rank {len(expected)} (shape {_fmt_shape(expected)}), "
            f"got rank {len(shape)} (shape {got})"
        )
    for axis, (want, size) in enumerate(zip(expected, shape)):
        if isinstance(want, int) and want != size:
            raise InputError(
                f"input {sig.name!r}: expected shape {_fmt_shape(expected)}, got {got} "
                f"(dimension {axis} must be {want})"
            )
        if isinstance(want, str):
            if want in bound and bound[want][0] != size:
                first_size, first = bound[want]
                raise InputError(
                    f"input {sig.name!r}: dimension {axis} ({want!r}) is {size}, but input "
                    f"{first!r} has {want!r} = {first_size}; they must agree"
                )
            bound.setdefault(want, (size, sig.name))


def _generator(rng: Any, absent: list[Signature]) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    names = ", ".join(repr(s.name) for s in absent)
    if rng is None:
        raise InputError(
            f"this train-mode model takes dropout noise input(s) {names} (uniform [0, 1) "
            "float32); pass them by name, or pass rng=np.random.default_rng(seed) to draw them"
        )
    raise InputError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def _noise_shape(sig: Signature, bound: dict[str, tuple[int, str]]) -> tuple[int, ...]:
    dims = []
    for axis, d in enumerate(sig.shape or ()):
        if isinstance(d, int):
            dims.append(d)
        elif isinstance(d, str) and d in bound:
            dims.append(bound[d][0])
        else:
            raise InputError(
                f"cannot tell the size of dimension {axis} of noise input {sig.name!r} "
                f"(shape {_fmt_shape(sig.shape)}) from the other inputs; pass it by name"
            )
    return tuple(dims)


__all__ = ["OPTIMIZATION_LEVELS", "Model", "Signature", "load"]
