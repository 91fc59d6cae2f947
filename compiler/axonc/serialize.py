"""The axonc model file: `ax.save(model, state, path)` / `ax.load(path)`.

A model file is a safetensors file. Its header's `__metadata__` names the
format and version and holds the model document (the graph and the state
manifest, JSON); its tensors are the parameter and state values plus the arrays
held by options (constant layers). Loading never executes code: the graph is
data, every op must be registered, and every check a layer constructor makes
is made again, so a malformed, truncated or hostile file is a FormatError that
says what was wrong and what was expected. The layout is specified in
spec/format.md and spec/axon-file.schema.json.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from .dtypes import DTYPES, dtype_name, to_numpy_dtype
from .errors import AxoncError, FormatError, GraphError
from .ir import Axon, Node, assign_names, new_id, topo_order
from .model_state import ModelState
from .ops.composite import new_block_id
from .registry import OPS, load_ops
from .shape_inference import infer_types, pending_layers, resolve, template_types

load_ops()  # every op a file or the docs may name

FORMAT = "axon-model"
VERSION = "1"
SUPPORTED_VERSIONS = (VERSION,)

MAX_HEADER_BYTES = 100_000_000  # the safetensors reference reader's own limit
MAX_JSON_DEPTH = 256  # objects/arrays nested in the header or the model document
MAX_GRAPH_DEPTH = 32  # subgraphs nested in subgraphs
MAX_RANK = 64

# safetensors dtype codes <-> axonc dtype names
_ST_DTYPES = {
    "F16": "f16",
    "F32": "f32",
    "F64": "f64",
    "I8": "s8",
    "I16": "s16",
    "I32": "s32",
    "I64": "s64",
    "U8": "u8",
    "U16": "u16",
    "U32": "u32",
    "U64": "u64",
    "BOOL": "pred",
}
_TAGS = ("tuple", "list", "dict", "float", "tensor", "scalar")
_SPECIAL_FLOATS = {"inf": math.inf, "-inf": -math.inf}
_NODE_KEYS = {"id", "op", "inputs", "options", "name", "op_name", "frozen", "subgraphs"}
_LEAF_KEYS = {"path", "tensor", "kind", "frozen"}
_TIE_KEYS = {"target", "source", "transform", "kind"}
_KINDS = ("parameter", "state")

Path = tuple[str, ...]


# ---------------------------------------------------------------------------
# Public API


def save(model: Axon, state: Any, path: str | os.PathLike[str], *, template: Any = None) -> None:
    """Write `model` and its `state` (a ModelState or a nested dict of arrays) to `path`.

    The file is written to a temporary file next to `path` and renamed over it, so
    a crash never leaves a half-written model behind. With a `template` the model is
    saved resolved for it (needed when a traced layer waits for its input shapes).
    """
    data = to_bytes(model, state, template=template)
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=".axonc-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str | os.PathLike[str]) -> tuple[Axon, ModelState]:
    """Read a model file: returns `(model, state)` with fresh node ids.

    Raises FormatError for any file that is not a valid axonc model file of a
    supported version, and OSError if the file cannot be read.
    """
    with open(os.fspath(path), "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise FormatError(
                f"{os.fspath(path)!r} is truncated: {size} bytes, but a model file starts with "
                "an 8-byte header length"
            )
        data = f.read()
    return from_bytes(data)


def to_bytes(model: Axon, state: Any = None, *, template: Any = None) -> bytes:
    """The model file's bytes (what `save` writes); see `save` for `template`."""
    import safetensors.numpy

    if not isinstance(model, Axon):
        raise FormatError(f"ax.save expects an Axon graph as the model, got {type(model).__name__}")
    if template is not None:
        model = resolve(model, template_types(model, template))
    waiting = pending_layers(model)
    if waiting:
        raise GraphError(
            f"layer(s) {', '.join(map(repr, waiting))} are traced when their input shapes "
            "are known, and a model file holds traced graphs, not code: give ax.save a "
            "template (ax.save(model, state, path, template=ax.template((1, ...), 'f32')))"
        )
    tensors: dict[str, np.ndarray] = {}
    graph = _Encoder(tensors).graph(model, 0)
    manifest = _encode_state(state, tensors)
    document = json.dumps(
        {"graph": graph, "state": manifest}, allow_nan=False, separators=(",", ":")
    )
    metadata = {"axonc.format": FORMAT, "axonc.version": VERSION, "axonc.model": document}
    # safetensors writes __metadata__ in hash order; rewrite the header in a fixed
    # order so that one model always gives the same bytes (offsets are relative to
    # the data, so the tensor entries stay valid).
    raw = safetensors.numpy.save(tensors)
    (n,) = struct.unpack("<Q", raw[:8])
    entries = json.loads(raw[8 : 8 + n])
    entries.pop("__metadata__", None)
    header = json.dumps({"__metadata__": metadata, **entries}, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # keep the data 8-byte aligned, as safetensors does
    return struct.pack("<Q", len(header)) + header + raw[8 + n :]


def from_bytes(data: bytes | bytearray | memoryview) -> tuple[Axon, ModelState]:
    """Parse and validate a model file's bytes (what `load` reads)."""
    data = bytes(data)
    header, data_len = _read_header(data)
    metadata = header.pop("__metadata__", None)
    _check_metadata(metadata)
    _check_tensor_entries(header, data_len)
    document = _parse_json(metadata["axonc.model"], "the model document (axonc.model)")
    if not isinstance(document, dict):
        raise FormatError(f"the model document must be a JSON object, got {_jtype(document)}")
    _check_keys(document, {"graph", "state"}, {"graph", "state"}, "the model document")
    tensors = _load_tensors(data)
    used: set[str] = set()
    decoder = _Decoder(tensors, used)
    unknown = sorted(decoder.unknown_ops(document["graph"], "graph", 0))
    if unknown:
        raise FormatError(
            f"the file uses {len(unknown)} unknown op(s): {', '.join(map(repr, unknown))}; "
            "every op in a model file must be registered in axonc.registry.OPS"
        )
    model = decoder.graph(document["graph"], "graph", 0)
    state = _decode_state(document["state"], tensors, used)
    extra = sorted(set(tensors) - used)
    if extra:
        raise FormatError(
            f"tensor(s) {', '.join(map(repr, extra[:5]))} are not referenced by the graph or "
            "the state manifest; every tensor in a model file must be referenced exactly once"
        )
    return model, state


# ---------------------------------------------------------------------------
# Writing


class _Encoder:
    """Encodes graphs and option values as JSON, moving arrays into `tensors`."""

    def __init__(self, tensors: dict[str, np.ndarray]):
        self.tensors = tensors
        self.n_const = 0

    def graph(self, model: Axon, depth: int) -> dict[str, Any]:
        if depth > MAX_GRAPH_DEPTH:
            raise FormatError(f"subgraphs are nested more than {MAX_GRAPH_DEPTH} deep")
        order = topo_order(model.nodes, model.output)
        local = {nid: i for i, nid in enumerate(order)}
        nodes = []
        for nid in order:
            node = model.nodes[nid]
            where = f"layer {node.name or node.kind!r} ({node.op})"
            nodes.append(
                {
                    "id": local[nid],
                    "op": node.op,
                    "inputs": [local[i] for i in node.inputs],
                    "options": {
                        k: self.value(v, f"{where} option {k!r}", 0)
                        for k, v in node.options.items()
                    },
                    "name": node.name,
                    "op_name": node.op_name,
                    "frozen": node.frozen,
                    "subgraphs": {
                        role: self.graph(body, depth + 1) for role, body in node.subgraphs.items()
                    },
                }
            )
        return {"nodes": nodes, "output": _encode_output(model.output, local)}

    def value(self, v: Any, where: str, depth: int) -> Any:
        if depth > MAX_JSON_DEPTH // 4:
            raise FormatError(f"{where}: the value is nested too deeply to be saved")
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int):
            return v
        if isinstance(v, float):
            if math.isnan(v):
                raise FormatError(f"{where}: NaN is not a valid option value and cannot be saved")
            return v if math.isfinite(v) else {"float": "inf" if v > 0 else "-inf"}
        if isinstance(v, tuple):
            return {"tuple": [self.value(x, where, depth + 1) for x in v]}
        if isinstance(v, list):
            return {"list": [self.value(x, where, depth + 1) for x in v]}
        if isinstance(v, Mapping):
            bad = [k for k in v if not isinstance(k, str)]
            if bad:
                raise FormatError(f"{where}: dict keys must be strings to be saved, got {bad[0]!r}")
            return {"dict": {k: self.value(x, where, depth + 1) for k, x in v.items()}}
        if isinstance(v, np.ndarray):
            name = f"const/{self.n_const}"
            self.n_const += 1
            self.tensors[name] = _storable(v, where)
            return {"tensor": name}
        if isinstance(v, np.generic):
            dtype = _array_dtype(np.asarray(v), where)
            item = v.item()
            return {"scalar": {"dtype": dtype, "value": self.value(item, where, depth + 1)}}
        raise FormatError(
            f"{where}: a {type(v).__name__} cannot be stored in a model file; option values "
            "must be numbers, strings, booleans, None, tuples, lists, dicts or numpy arrays"
        )


def _encode_output(out: Any, local: Mapping[int, int]) -> Any:
    if isinstance(out, tuple):
        return {"tuple": [_encode_output(x, local) for x in out]}
    if isinstance(out, list):
        return {"list": [_encode_output(x, local) for x in out]}
    if isinstance(out, dict):
        return {"dict": {k: _encode_output(x, local) for k, x in out.items()}}
    return None if out is None else local[out]


def _array_dtype(arr: np.ndarray, where: str) -> str:
    try:
        return dtype_name(arr.dtype)
    except AxoncError:
        raise FormatError(
            f"{where}: dtype {arr.dtype} cannot be stored; expected one of {', '.join(DTYPES)}"
        ) from None


def _storable(value: Any, where: str) -> np.ndarray:
    """A C-contiguous little-endian copy safetensors can write byte for byte."""
    arr = np.asarray(value)
    dtype = to_numpy_dtype(_array_dtype(arr, where))
    out = arr.astype(dtype.newbyteorder("<"), copy=False)
    # np.ascontiguousarray would turn a 0-d array into shape (1,)
    return out if out.flags.c_contiguous else np.ascontiguousarray(out).reshape(out.shape)


def _as_model_state(state: Any) -> ModelState:
    if state is None:
        return ModelState.empty()
    if isinstance(state, ModelState):
        return state
    if isinstance(state, Mapping):
        return ModelState.new(dict(state))
    raise FormatError(
        f"ax.save expects the state as a ModelState or a nested dict, got {type(state).__name__}"
    )


def _kind(state: ModelState, path: Path) -> str | None:
    if path in state.parameters:
        return "parameter"
    return "state" if path in state.state else None


def _encode_state(state: Any, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    """The state manifest; stored leaves go into `tensors` as "<layer>/<param>[/<sub>]"."""
    state = _as_model_state(state)
    entries = []
    for path in state.paths():
        if path in state.ties:
            continue
        name = "/".join(path)
        if name in tensors:  # a key containing "/" can clash with a deeper path
            n = 1
            while f"{name}#{n}" in tensors:
                n += 1
            name = f"{name}#{n}"
        tensors[name] = _storable(state.get(path), f"state {'/'.join(path)!r}")
        entries.append(
            {
                "path": list(path),
                "tensor": name,
                "kind": _kind(state, path),
                "frozen": path in state.frozen,
            }
        )
    ties = [
        {
            "target": list(dest),
            "source": list(src),
            "transform": transform,
            "kind": _kind(state, dest),
        }
        for dest, (src, transform) in sorted(state.ties.items())
    ]
    return {"leaves": entries, "ties": ties}


# ---------------------------------------------------------------------------
# Reading: the safetensors container


def _read_header(data: bytes) -> tuple[dict[str, Any], int]:
    """The safetensors header as a dict, and the length of the tensor data after it."""
    if len(data) < 8:
        raise FormatError(
            f"the file is truncated: {len(data)} bytes, but a model file starts with an 8-byte "
            "little-endian header length"
        )
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES:
        raise FormatError(
            f"the header declares {n} bytes, more than the limit of {MAX_HEADER_BYTES}; "
            "this is not an axonc model file or it is corrupt"
        )
    if 8 + n > len(data):
        raise FormatError(
            f"the file is truncated: the header declares {n} bytes but only {len(data) - 8} "
            "bytes follow the header length"
        )
    raw = data[8 : 8 + n]
    if not raw.startswith(b"{"):
        raise FormatError(
            "not an axonc model file: expected a safetensors header (a JSON object) after the "
            "8-byte header length"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"the header is not valid UTF-8 (byte {exc.start})") from None
    header = _parse_json(text, "the header")
    if not isinstance(header, dict):
        raise FormatError(f"the header must be a JSON object, got {_jtype(header)}")
    return header, len(data) - 8 - n


def _check_metadata(metadata: Any) -> None:
    if not isinstance(metadata, dict):
        raise FormatError(
            "not an axonc model file: the safetensors header has no __metadata__ object "
            f"(expected axonc.format = {FORMAT!r})"
        )
    bad = [k for k, v in metadata.items() if not isinstance(v, str)]
    if bad:
        raise FormatError(f"__metadata__ values must be strings; {bad[0]!r} is not")
    fmt = metadata.get("axonc.format")
    if fmt != FORMAT:
        raise FormatError(
            f"not an axonc model file: __metadata__['axonc.format'] is {fmt!r}, expected {FORMAT!r}"
        )
    version = metadata.get("axonc.version")
    if version not in SUPPORTED_VERSIONS:
        raise FormatError(
            f"unsupported model file version {version!r}; this axonc reads version(s) "
            f"{', '.join(SUPPORTED_VERSIONS)}"
        )
    if "axonc.model" not in metadata:
        raise FormatError("the file has no model document (__metadata__['axonc.model'] is missing)")


def _check_tensor_entries(header: dict[str, Any], data_len: int) -> None:
    """Validate every tensor entry against the bytes present, before anything is allocated."""
    spans = []
    for name, entry in header.items():
        where = f"tensor {name!r}"
        if not isinstance(entry, dict):
            raise FormatError(f"{where}: expected an object with dtype, shape, data_offsets")
        _check_keys(
            entry, {"dtype", "shape", "data_offsets"}, {"dtype", "shape", "data_offsets"}, where
        )
        code = entry["dtype"]
        if code not in _ST_DTYPES:
            raise FormatError(
                f"{where}: dtype {code!r} is not supported; expected one of {', '.join(_ST_DTYPES)}"
            )
        shape = entry["shape"]
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_RANK
            or not all(_is_int(d) and d >= 0 for d in shape)
        ):
            raise FormatError(
                f"{where}: shape must be a list of at most {MAX_RANK} non-negative integers, "
                f"got {shape!r}"
            )
        offsets = entry["data_offsets"]
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(o) and o >= 0 for o in offsets)
            or offsets[0] > offsets[1]
        ):
            raise FormatError(f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end")
        itemsize = to_numpy_dtype(_ST_DTYPES[code]).itemsize
        size = math.prod(shape) * itemsize
        span = offsets[1] - offsets[0]
        if size != span:
            raise FormatError(
                f"{where}: shape {tuple(shape)} of {code} needs {size} bytes but data_offsets "
                f"span {span} bytes"
            )
        spans.append((offsets[0], offsets[1], name))
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin != pos:
            raise FormatError(
                f"tensor {name!r}: data starts at byte {begin}, expected {pos} (tensor data must "
                "be contiguous, without gaps or overlaps)"
            )
        pos = end
    if pos != data_len:
        raise FormatError(
            f"the tensors declare {pos} bytes of data but the file holds {data_len} bytes after "
            "the header (truncated or padded file)"
        )


def _load_tensors(data: bytes) -> dict[str, np.ndarray]:
    import safetensors.numpy

    try:
        return safetensors.numpy.load(data)
    except Exception as exc:
        raise FormatError(f"the tensor data cannot be read: {exc}") from None


# ---------------------------------------------------------------------------
# Reading: JSON


def _parse_json(text: str, what: str) -> Any:
    def no_constant(name: str) -> Any:
        raise FormatError(
            f'{what}: {name} is not valid JSON; non-finite floats are written {{"float": "inf"}}'
        )

    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=no_constant)
    except RecursionError:
        raise FormatError(f"{what} is nested too deeply (limit {MAX_JSON_DEPTH})") from None
    except ValueError as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"{what} is not valid JSON: {exc}") from None
    _check_depth(value, what)
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise FormatError(f"duplicate key {k!r} in a JSON object")
        out[k] = v
    return out


def _check_depth(value: Any, what: str) -> None:
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > MAX_JSON_DEPTH:
            raise FormatError(f"{what} is nested too deeply (limit {MAX_JSON_DEPTH})")
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)


def _jtype(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_keys(obj: dict[str, Any], required: set[str], allowed: set[str], where: str) -> None:
    missing = sorted(required - set(obj))
    if missing:
        raise FormatError(f"{where}: missing key(s) {', '.join(map(repr, missing))}")
    extra = sorted(set(obj) - allowed)
    if extra:
        raise FormatError(
            f"{where}: unexpected key(s) {', '.join(map(repr, extra))}; "
            f"expected {', '.join(map(repr, sorted(allowed)))}"
        )


def _expect(v: Any, kind: type | tuple[type, ...], what: str, where: str) -> Any:
    ok = isinstance(v, kind) and not (isinstance(v, bool) and bool not in _as_tuple(kind))
    if not ok:
        raise FormatError(f"{where}: expected {what}, got {_jtype(v)}")
    return v


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


# ---------------------------------------------------------------------------
# Reading: the graph


class _Decoder:
    """Rebuilds graphs from the model document, with fresh node ids."""

    def __init__(self, tensors: Mapping[str, np.ndarray], used: set[str]):
        self.tensors = tensors
        self.block_ids: dict[int, int] = {}
        self.used = used

    def _node_list(self, g: Any, where: str, depth: int) -> list[dict[str, Any]]:
        if depth > MAX_GRAPH_DEPTH:
            raise FormatError(f"{where}: subgraphs are nested more than {MAX_GRAPH_DEPTH} deep")
        _expect(g, dict, "a graph object {nodes, output}", where)
        _check_keys(g, {"nodes", "output"}, {"nodes", "output"}, where)
        nodes = _expect(g["nodes"], list, "an array of nodes", f"{where}.nodes")
        for i, n in enumerate(nodes):
            nwhere = f"{where}.nodes[{i}]"
            _expect(n, dict, "a node object", nwhere)
            _check_keys(n, _NODE_KEYS, _NODE_KEYS, nwhere)
            _expect(n["op"], str, "an op name (string)", f"{nwhere}.op")
            _expect(n["subgraphs"], dict, "an object of subgraphs by role", f"{nwhere}.subgraphs")
        return nodes

    def unknown_ops(self, g: Any, where: str, depth: int) -> set[str]:
        """Every op name in the graph and its subgraphs that is not registered."""
        out: set[str] = set()
        for i, n in enumerate(self._node_list(g, where, depth)):
            if n["op"] not in OPS:
                out.add(n["op"])
            for role, body in n["subgraphs"].items():
                out |= self.unknown_ops(body, f"{where}.nodes[{i}].subgraphs[{role!r}]", depth + 1)
        return out

    def graph(self, g: Any, where: str, depth: int) -> Axon:
        raw = self._node_list(g, where, depth)
        ids: dict[int, int] = {}
        for i, n in enumerate(raw):
            nid = n["id"]
            if not _is_int(nid) or nid < 0:
                raise FormatError(
                    f"{where}.nodes[{i}].id: expected a non-negative integer, got {nid!r}"
                )
            if nid in ids:
                raise FormatError(f"{where}: node id {nid} is used by two nodes")
            ids[nid] = new_id()
        nodes: dict[int, Node] = {}
        for i, n in enumerate(raw):
            node = self.node(n, ids, f"{where}.nodes[{i}]", depth)
            nodes[node.id] = node
        output = self.output(g["output"], ids, f"{where}.output")
        model = Axon(output, nodes)
        names = {v: k for k, v in ids.items()}
        try:
            topo_order(nodes, list(nodes))
            reachable = set(topo_order(nodes, output))
        except AxoncError as exc:
            raise FormatError(f"{where}: {_file_ids(str(exc), names)}") from None
        stray = [names[k] for k in nodes if k not in reachable]
        if stray:
            raise FormatError(
                f"{where}: node(s) {', '.join(map(str, sorted(stray)))} are not reachable from "
                "the output; a saved graph holds only the nodes its output reaches"
            )
        self._check_model(model, where, depth)
        return model

    def _check_model(self, model: Axon, where: str, depth: int) -> None:
        """Naming and shape inference, as when the graph was built; errors become FormatError."""
        try:
            names = assign_names(model)
            if depth == 0:
                infer_types(model, names=names)
        except AxoncError as exc:
            raise FormatError(f"{where}: {exc}") from None
        except Exception as exc:
            raise FormatError(
                f"{where}: the graph is inconsistent; shape inference failed with "
                f"{type(exc).__name__}: {exc}"
            ) from None

    def node(self, n: dict[str, Any], ids: Mapping[int, int], where: str, depth: int) -> Node:
        op = n["op"]
        spec = OPS[op]
        inputs = _expect(n["inputs"], list, "an array of node ids", f"{where}.inputs")
        new_inputs = []
        for j, i in enumerate(inputs):
            if not _is_int(i):
                raise FormatError(f"{where}.inputs[{j}]: expected a node id, got {_jtype(i)}")
            if i not in ids:
                raise FormatError(
                    f"{where} ({op}): input {j} refers to node {i}, which is not in the graph"
                )
            new_inputs.append(ids[i])
        if spec.arity is not None and len(inputs) != spec.arity:
            raise FormatError(f"{where} ({op}): expected {spec.arity} input(s), got {len(inputs)}")
        name = n["name"]
        if name is not None and (not isinstance(name, str) or not name):
            raise FormatError(f"{where}.name: expected a non-empty string or null, got {name!r}")
        op_name = n["op_name"]
        if op_name is not None and (not isinstance(op_name, str) or not op_name):
            raise FormatError(
                f"{where}.op_name: expected a non-empty string or null, got {op_name!r}"
            )
        options = _expect(n["options"], dict, "an object of options", f"{where}.options")
        decoded = {k: self.value(v, f"{where}.options[{k!r}]") for k, v in options.items()}
        label = f"{where} ({op}" + (f" {name!r}" if name else "") + ")"
        try:
            opts = spec.normalize_options(decoded, label)
        except AxoncError as exc:
            raise FormatError(str(exc)) from None
        except Exception as exc:
            raise FormatError(f"{label}: bad options: {type(exc).__name__}: {exc}") from None
        subgraphs = {
            role: self.graph(body, f"{where}.subgraphs[{role!r}]", depth + 1)
            for role, body in n["subgraphs"].items()
        }
        frozen = _expect(n["frozen"], bool, "true or false", f"{where}.frozen")
        if op == "block":
            opts["block_id"] = self.fresh_block_id(opts["block_id"])
        return Node(
            ids[n["id"]],
            op,
            tuple(new_inputs),
            opts,
            name=name,
            op_name=op_name,
            subgraphs=subgraphs,
            frozen=frozen,
        )

    def fresh_block_id(self, old: int) -> int:
        """Block ids are identities, like node ids: map the file's to fresh ones."""
        if old not in self.block_ids:
            self.block_ids[old] = new_block_id()
        return self.block_ids[old]

    def value(self, v: Any, where: str) -> Any:
        """An option value from its JSON encoding (spec/format.md, Values)."""
        if v is None or isinstance(v, (bool, str, int, float)):
            return v
        if isinstance(v, list):
            raise FormatError(
                f'{where}: bare JSON arrays are not values; write {{"list": [...]}} or '
                '{"tuple": [...]}'
            )
        tag, body = _tagged(v, _TAGS, where)
        inner = f"{where}.{tag}"
        if tag in ("tuple", "list"):
            items = [
                self.value(x, f"{inner}[{i}]")
                for i, x in enumerate(_expect(body, list, "an array", inner))
            ]
            return tuple(items) if tag == "tuple" else items
        if tag == "dict":
            _expect(body, dict, "an object", inner)
            return {k: self.value(x, f"{inner}[{k!r}]") for k, x in body.items()}
        if tag == "float":
            if body == "nan":
                raise FormatError(f"{inner}: NaN is not a valid option value")
            if body not in _SPECIAL_FLOATS:
                raise FormatError(f"{inner}: expected 'inf' or '-inf', got {body!r}")
            return _SPECIAL_FLOATS[body]
        if tag == "tensor":
            _expect(body, str, "a tensor name", inner)
            if body not in self.tensors:
                raise FormatError(f"{inner}: the file has no tensor named {body!r}")
            if body in self.used:
                raise FormatError(f"{inner}: tensor {body!r} is referenced twice")
            self.used.add(body)
            return self.tensors[body]
        _expect(body, dict, "an object {dtype, value}", inner)
        _check_keys(body, {"dtype", "value"}, {"dtype", "value"}, inner)
        if body["dtype"] not in DTYPES:
            raise FormatError(
                f"{inner}.dtype: expected one of {', '.join(DTYPES)}, got {body['dtype']!r}"
            )
        dtype = body["dtype"]
        item = self.value(body["value"], f"{inner}.value")
        kind = bool if dtype == "pred" else float if dtype[0] == "f" else int
        if type(item) is not kind:
            want = {bool: "true or false", float: "a float", int: "an integer"}[kind]
            raise FormatError(f"{inner}.value: a {dtype} scalar needs {want}, got {item!r}")
        try:
            return to_numpy_dtype(dtype).type(item)
        except (OverflowError, ValueError, TypeError) as exc:
            raise FormatError(f"{inner}: {item!r} is not a {dtype} value ({exc})") from None

    def output(self, v: Any, ids: Mapping[int, int], where: str) -> Any:
        """The graph output: a node id, null or a tagged container, ids made fresh."""
        if v is None:
            return None
        if _is_int(v):
            if v not in ids:
                raise FormatError(f"{where}: refers to node {v}, which is not in the graph")
            return ids[v]
        tag, body = _tagged(v, ("tuple", "list", "dict"), where, "a node id or ")
        inner = f"{where}.{tag}"
        if tag == "dict":
            _expect(body, dict, "an object", inner)
            return {k: self.output(x, ids, f"{inner}[{k!r}]") for k, x in body.items()}
        items = [
            self.output(x, ids, f"{inner}[{i}]")
            for i, x in enumerate(_expect(body, list, "an array", inner))
        ]
        return tuple(items) if tag == "tuple" else items


def _tagged(v: Any, tags: tuple[str, ...], where: str, prefix: str = "") -> tuple[str, Any]:
    if not isinstance(v, dict) or len(v) != 1 or next(iter(v)) not in tags:
        shown = ", ".join(f"{{{t!r}: ...}}" for t in tags)
        raise FormatError(f"{where}: expected {prefix}one of {shown}, got {_jtype(v)}")
    ((tag, body),) = v.items()
    return tag, body


def _file_ids(message: str, names: Mapping[int, int]) -> str:
    """Rewrite in-memory node ids in a GraphError message to the file's node ids."""
    return re.sub(
        r"node (\d+)", lambda m: f"node {names.get(int(m.group(1)), m.group(1))}", message
    )


# ---------------------------------------------------------------------------
# Reading: the state


def _decode_state(manifest: Any, tensors: Mapping[str, np.ndarray], used: set[str]) -> ModelState:
    where = "state"
    _expect(manifest, dict, "an object {leaves, ties}", where)
    _check_keys(manifest, {"leaves", "ties"}, {"leaves", "ties"}, where)
    leaves = _expect(manifest["leaves"], list, "an array of leaves", f"{where}.leaves")
    data: dict[str, Any] = {}
    kinds: dict[str, set[Path]] = {"parameter": set(), "state": set()}
    frozen: set[Path] = set()
    for i, leaf in enumerate(leaves):
        lw = f"{where}.leaves[{i}]"
        _expect(leaf, dict, "a leaf object", lw)
        _check_keys(leaf, _LEAF_KEYS, _LEAF_KEYS, lw)
        path = _check_path(leaf["path"], f"{lw}.path")
        name = _expect(leaf["tensor"], str, "a tensor name", f"{lw}.tensor")
        kind = _check_kind(leaf["kind"], f"{lw}.kind", nullable=False)
        if _expect(leaf["frozen"], bool, "true or false", f"{lw}.frozen"):
            frozen.add(path)
        if name not in tensors:
            raise FormatError(f"{lw}: the file has no tensor named {name!r} (missing tensor)")
        if name in used:
            raise FormatError(f"{lw}: tensor {name!r} is referenced twice")
        used.add(name)
        _insert(data, path, tensors[name], lw)
        kinds[kind].add(path)
    ties: dict[Path, tuple[Path, str]] = {}
    for i, tie in enumerate(_expect(manifest["ties"], list, "an array of ties", f"{where}.ties")):
        tw = f"{where}.ties[{i}]"
        _expect(tie, dict, "a tie object", tw)
        _check_keys(tie, _TIE_KEYS, _TIE_KEYS, tw)
        dest = _check_path(tie["target"], f"{tw}.target")
        if dest in ties:
            raise FormatError(f"{tw}: {'/'.join(dest)!r} is tied twice")
        transform = _expect(tie["transform"], str, "a transform name", f"{tw}.transform")
        ties[dest] = (_check_path(tie["source"], f"{tw}.source"), transform)
        kind = _check_kind(tie["kind"], f"{tw}.kind", nullable=True)
        if kind is not None:
            kinds[kind].add(dest)
    try:
        return ModelState(
            data, parameters=kinds["parameter"], state=kinds["state"], frozen=frozen, ties=ties
        )
    except AxoncError as exc:
        raise FormatError(f"{where}: {exc}") from None


def _check_kind(kind: Any, where: str, *, nullable: bool) -> str | None:
    if (kind is None and nullable) or kind in _KINDS:
        return kind
    allowed = "'parameter', 'state'" + (" or null" if nullable else "")
    raise FormatError(f"{where}: expected {allowed}, got {kind!r}")


def _check_path(p: Any, where: str) -> Path:
    if not isinstance(p, list) or not p or not all(isinstance(k, str) and k for k in p):
        raise FormatError(f"{where}: expected a non-empty array of non-empty strings, got {p!r}")
    return tuple(p)


def _insert(data: dict[str, Any], path: Path, value: Any, where: str) -> None:
    node = data
    for k in path[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise FormatError(f"{where}: path {'/'.join(path)!r} passes through a tensor leaf")
        node = child
    if path[-1] in node:
        raise FormatError(
            f"{where}: path {'/'.join(path)!r} is given twice or is a prefix of another"
        )
    node[path[-1]] = value
