"""The loop state (Axon.Loop.State) and its checkpoint format.

`serialize_state` writes a state as ONE safetensors file: every array is a tensor,
and everything else (numbers, strings, the nesting of dicts / lists / tuples,
ModelStates with their parameter/state/frozen/tie metadata) is JSON in the file's
`__metadata__` under "axonc.loop_state". Loading never executes code (no pickle).
spec/loop.md describes the layout.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import FormatError, StateError
from ..model_state import ModelState

EVENTS = (
    "started",
    "epoch_started",
    "iteration_started",
    "iteration_completed",
    "epoch_completed",
    "epoch_halted",
    "halted",
    "completed",
)
STATUSES = ("continue", "halt_epoch", "halt_loop")

FORMAT = "axonc.loop_state"
VERSION = 1


@dataclass
class State:
    """Where a loop is and what it has accumulated (Axon.Loop.State).

    - `epoch`: the current epoch, from 0; `max_epoch`: the epoch the run stops before.
    - `iteration`: the current iteration within the epoch, from 0 (it advances after the
      `iteration_completed` handlers, as in Axon); `max_iteration`: -1 for no limit.
    - `metrics`: metric name -> accumulated value for the current epoch. In the final
      state a run returns, it is the history instead: epoch -> that epoch's metrics
      (Axon's form; `Loop.evaluator` results are `{0: {...}}`).
    - `times`: epoch -> wall seconds the epoch's iterations took.
    - `step_state`: whatever the step function accumulates.
    - `handler_metadata`: handlers' own memory (best values, patience counters).
    - `event_counts`: how often each event fired; iteration events count
      `{"total": n, "epoch": n_in_this_epoch}`. Filters read these.
    - `status`: "running", then "completed" or "halted".
    - `event`: the event whose handlers are running (None between events); a
      checkpoint records it so `Loop.from_state` knows where to resume.
    - `history`: epoch -> metrics of each finished epoch (validation metrics included).
    """

    epoch: int = 0
    max_epoch: int = 1
    iteration: int = 0
    max_iteration: int = -1
    metrics: dict[Any, Any] = field(default_factory=dict)
    times: dict[int, float] = field(default_factory=dict)
    step_state: Any = None
    handler_metadata: dict[str, Any] = field(default_factory=dict)
    event_counts: dict[str, Any] = field(default_factory=dict)
    status: str = "running"
    event: str | None = None
    history: dict[int, dict[str, Any]] = field(default_factory=dict)

    def replace(self, **changes: Any) -> State:
        """A copy with `changes` (handlers return new states rather than mutating)."""
        return dataclasses.replace(self, **changes)


# ---- encoding --------------------------------------------------------------------------------

_FIELDS = [f.name for f in dataclasses.fields(State)]


class _Encoder:
    def __init__(self) -> None:
        self.tensors: dict[str, np.ndarray] = {}

    def tensor(self, value: np.ndarray | np.generic, where: str) -> dict[str, Any]:
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise StateError(
                f"cannot serialize {where}: arrays of dtype {arr.dtype} are not stored"
            )
        name = f"t{len(self.tensors)}"
        self.tensors[name] = np.ascontiguousarray(arr)
        # the shape is kept here too: np.ascontiguousarray turns a 0-d array into shape (1,)
        ref = {"$tensor": name, "shape": list(arr.shape)}
        return {**ref, "scalar": True} if isinstance(value, np.generic) else ref

    def value(self, v: Any, where: str) -> Any:
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int):
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else {"$float": repr(v)}
        if isinstance(v, (np.ndarray, np.generic)):
            return self.tensor(v, where)
        if isinstance(v, ModelState):
            return {
                "$model_state": {
                    "tensors": {
                        k: self.tensor(a, f"{where}/{k}")
                        for k, a in v.flatten(include_tied=False).items()
                    },
                    "parameters": sorted("/".join(p) for p in v.parameters),
                    "state": sorted("/".join(p) for p in v.state),
                    "frozen": sorted("/".join(p) for p in v.frozen),
                    "ties": {"/".join(d): ["/".join(s), t] for d, (s, t) in sorted(v.ties.items())},
                }
            }
        if isinstance(v, Mapping):
            if all(isinstance(k, str) and not k.startswith("$") for k in v):
                return {k: self.value(x, f"{where}/{k}") for k, x in v.items()}
            return {
                "$dict": [
                    [self.value(k, f"{where} key"), self.value(x, f"{where}/{k}")]
                    for k, x in v.items()
                ]
            }
        if isinstance(v, tuple):
            return {"$tuple": [self.value(x, f"{where}/{i}") for i, x in enumerate(v)]}
        if isinstance(v, list):
            return [self.value(x, f"{where}/{i}") for i, x in enumerate(v)]
        raise StateError(
            f"cannot serialize {where} of type {type(v).__name__}: a loop state holds numbers, "
            "strings, None, numpy arrays, ModelStates and dicts / lists / tuples of them "
            "(give serialize_step_state= to convert another step state)"
        )


def serialize_state(
    state: State, *, serialize_step_state: Callable[[Any], Any] | None = None
) -> bytes:
    """The state as bytes (a safetensors file; see the module doc).

    `serialize_step_state` converts a step state holding other objects into the
    supported values first; pass the inverse to `deserialize_state`.
    """
    from safetensors.numpy import save

    if not isinstance(state, State):
        raise StateError(f"serialize_state expects a loop State, got {type(state).__name__}")
    enc = _Encoder()
    doc: dict[str, Any] = {"format": FORMAT, "version": VERSION}
    for name in _FIELDS:
        value = getattr(state, name)
        if name == "step_state" and serialize_step_state is not None:
            value = serialize_step_state(value)
        doc[name] = enc.value(value, name)
    return save(enc.tensors, metadata={FORMAT: json.dumps(doc, allow_nan=False)})


# ---- decoding --------------------------------------------------------------------------------


def _header(data: bytes) -> dict[str, Any]:
    if len(data) < 8:
        raise FormatError("not an axonc loop checkpoint: the data is shorter than a header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise FormatError("not an axonc loop checkpoint: the header runs past the end (truncated?)")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"not an axonc loop checkpoint: unreadable header ({exc})") from None
    if not isinstance(header, dict):
        raise FormatError("not an axonc loop checkpoint: the header is not a JSON object")
    return header


def _no_constant(name: str) -> Any:
    raise FormatError(f"malformed loop checkpoint: JSON constant {name} is not allowed")


class _Decoder:
    def __init__(self, tensors: Mapping[str, np.ndarray]):
        self.tensors = tensors

    def tensor(self, ref: Mapping[str, Any]) -> Any:
        name = ref.get("$tensor")
        if name not in self.tensors:
            raise FormatError(f"malformed loop checkpoint: missing tensor {name!r}")
        arr = self.tensors[name]
        shape = tuple(ref.get("shape", arr.shape))
        if arr.size != int(np.prod(shape)):
            raise FormatError(f"malformed loop checkpoint: tensor {name!r} does not hold {shape}")
        arr = arr.reshape(shape)
        return arr[()] if ref.get("scalar") else arr

    def value(self, v: Any) -> Any:
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if not isinstance(v, dict):
            return v
        if "$tensor" in v:
            return self.tensor(v)
        if "$float" in v:
            return float(v["$float"])
        if "$tuple" in v:
            return tuple(self.value(x) for x in v["$tuple"])
        if "$dict" in v:
            return {self.value(k): self.value(x) for k, x in v["$dict"]}
        if "$model_state" in v:
            ms = v["$model_state"]
            flat = {k: self.tensor(ref) for k, ref in ms["tensors"].items()}
            return ModelState.unflatten(
                flat,
                parameters=ms["parameters"],
                state=ms["state"],
                frozen=ms["frozen"],
                ties={d: tuple(st) for d, st in ms["ties"].items()},
            )
        return {k: self.value(x) for k, x in v.items()}


def deserialize_state(
    data: bytes, *, deserialize_step_state: Callable[[Any], Any] | None = None
) -> State:
    """The State that `serialize_state` wrote; anything else is a FormatError."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    data = bytes(data)
    meta = _header(data).get("__metadata__") or {}
    if FORMAT not in meta:
        raise FormatError("not an axonc loop checkpoint: no 'axonc.loop_state' metadata")
    try:
        doc = json.loads(meta[FORMAT], parse_constant=_no_constant)
    except ValueError as exc:
        raise FormatError(f"malformed loop checkpoint: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise FormatError("malformed loop checkpoint: the metadata is not a loop state")
    if doc.get("version") != VERSION:
        raise FormatError(
            f"loop checkpoint version {doc.get('version')!r} is not supported (this axonc "
            f"reads version {VERSION})"
        )
    missing = [name for name in _FIELDS if name not in doc]
    if missing:
        raise FormatError(f"malformed loop checkpoint: missing field {missing[0]!r}")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as exc:
        raise FormatError(f"malformed loop checkpoint: {exc}") from None
    dec = _Decoder(tensors)
    try:
        fields = {name: dec.value(doc[name]) for name in _FIELDS}
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"malformed loop checkpoint: {exc}") from None
    if deserialize_step_state is not None:
        fields["step_state"] = deserialize_step_state(fields["step_state"])
    return State(**fields)
