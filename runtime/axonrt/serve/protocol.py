"""The KServe V2 inference request and response bodies: JSON tensors and binary tensor data.

Pure functions from bytes to arrays and back, so every malformed request class is
testable without a server. A request body is either all JSON, or (the binary
tensor data extension) a JSON header of `Inference-Header-Content-Length` bytes
followed by each binary input's raw little-endian bytes, in input order, each
sized by its `parameters.binary_data_size`. Anything that does not fit raises
ProtocolError, which the server turns into a 400 naming what was wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ProtocolError

# V2 datatype name <-> numpy dtype (little-endian; BOOL is one byte per element).
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("bool"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_BY_NUMPY = {dt.name: name for name, dt in DATATYPES.items()}


def datatype_of(numpy_dtype: str) -> str:
    """The V2 datatype name of a numpy dtype name ("float32" -> "FP32")."""
    if numpy_dtype in _BY_NUMPY:
        return _BY_NUMPY[numpy_dtype]
    try:
        return _BY_NUMPY[np.dtype(numpy_dtype).name]
    except (KeyError, TypeError) as exc:
        raise ProtocolError(f"dtype {numpy_dtype!r} has no KServe V2 datatype") from exc


@dataclass
class InferRequest:
    """A decoded infer request: arrays by input name, and what the client asked back."""

    inputs: dict[str, np.ndarray]
    request_id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[tuple[str, bool | None]] | None = None  # (name, binary?) or None: all
    binary_default: bool = False


@dataclass(frozen=True)
class Limits:
    """Size limits applied while decoding, before anything is queued."""

    max_tensor_bytes: int = 64 << 20
    max_inputs: int = 64


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {_json_kind(value)}")
    return value


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return kinds.get(type(value), type(value).__name__)


def _shape(tensor: Mapping[str, Any], what: str, limits: Limits) -> tuple[int, ...]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ProtocolError(f"{what}: 'shape' must be an array of non-negative integers")
    if math.prod(shape) > limits.max_tensor_bytes:
        raise ProtocolError(f"{what}: shape {shape} exceeds the tensor size limit")
    return tuple(shape)


def _datatype(tensor: Mapping[str, Any], what: str) -> np.dtype:
    name = tensor.get("datatype")
    if name not in DATATYPES:
        known = ", ".join(DATATYPES)
        raise ProtocolError(f"{what}: 'datatype' must be one of {known}, got {name!r}")
    return DATATYPES[name]


def _json_array(data: Any, dtype: np.dtype, shape: tuple[int, ...], what: str) -> np.ndarray:
    """`data` (row-major, flat or nested) as an array of `dtype` and `shape`."""
    if not isinstance(data, list):
        raise ProtocolError(f"{what}: 'data' must be an array, got {_json_kind(data)}")
    flat = _flatten(data, what)
    expected = math.prod(shape)
    if len(flat) != expected:
        raise ProtocolError(
            f"{what}: shape {list(shape)} needs {expected} values, 'data' has {len(flat)}"
        )
    if dtype.kind == "b":
        if not all(isinstance(v, bool) for v in flat):
            raise ProtocolError(f"{what}: BOOL data must be true/false")
    elif any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in flat):
        raise ProtocolError(f"{what}: data must be numbers for datatype {_BY_NUMPY[dtype.name]}")
    elif dtype.kind in "iu" and not all(isinstance(v, int) for v in flat):
        raise ProtocolError(f"{what}: integer datatype {_BY_NUMPY[dtype.name]} got non-integers")
    if dtype.kind in "iu" and flat:
        info = np.iinfo(dtype)
        if min(flat) < info.min or max(flat) > info.max:
            raise ProtocolError(
                f"{what}: values outside {_BY_NUMPY[dtype.name]}'s range [{info.min}, {info.max}]"
            )
    try:
        arr = np.array(flat, dtype=dtype)
    except (OverflowError, ValueError) as exc:
        raise ProtocolError(f"{what}: values do not fit {_BY_NUMPY[dtype.name]} ({exc})") from None
    return arr.reshape(shape)


def _flatten(data: list[Any], what: str, depth: int = 0) -> list[Any]:
    if depth > 32:
        raise ProtocolError(f"{what}: 'data' nests too deeply")
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    for v in data:
        if isinstance(v, list):
            out.extend(_flatten(v, what, depth + 1))
        else:
            out.append(v)
    return out


def _binary_size(tensor: Mapping[str, Any], what: str) -> int | None:
    params = tensor.get("parameters", {})
    params = _as_dict(params, f"{what}: 'parameters'")
    size = params.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ProtocolError(f"{what}: 'binary_data_size' must be a non-negative integer")
    return size


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tail, per the Inference-Header-Content-Length header."""
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        raise ProtocolError(
            f"Inference-Header-Content-Length must be an integer, got {header_length!r}"
        ) from None
    if n < 0 or n > len(body):
        raise ProtocolError(
            f"Inference-Header-Content-Length is {n}, but the body has {len(body)} bytes"
        )
    return body[:n], body[n:]


def parse_infer(body: bytes, header_length: str | None, limits: Limits) -> InferRequest:
    """Decode an infer request body into arrays; raises ProtocolError naming what is wrong."""
    header, binary = split_body(body, header_length)
    try:
        doc = json.loads(header)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"the request is not valid JSON: {exc}") from None
    doc = _as_dict(doc, "the request")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    parameters = _as_dict(doc.get("parameters", {}), "'parameters'")
    tensors = doc.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise ProtocolError("'inputs' must be a non-empty array of tensors")
    if len(tensors) > limits.max_inputs:
        raise ProtocolError(f"too many inputs ({len(tensors)} > {limits.max_inputs})")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for i, tensor in enumerate(tensors):
        tensor = _as_dict(tensor, f"inputs[{i}]")
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise ProtocolError(f"inputs[{i}]: 'name' must be a non-empty string")
        what = f"input {name!r}"
        if name in inputs:
            raise ProtocolError(f"{what} given twice")
        dtype = _datatype(tensor, what)
        shape = _shape(tensor, what, limits)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > limits.max_tensor_bytes:
            raise ProtocolError(
                f"{what}: {nbytes} bytes exceeds the tensor size limit of "
                f"{limits.max_tensor_bytes} bytes"
            )
        size = _binary_size(tensor, what)
        if size is None:
            if "data" not in tensor:
                raise ProtocolError(f"{what}: neither 'data' nor 'binary_data_size' given")
            inputs[name] = _json_array(tensor["data"], dtype, shape, what)
            continue
        if "data" in tensor:
            raise ProtocolError(f"{what}: both 'data' and 'binary_data_size' given")
        if size != nbytes:
            raise ProtocolError(
                f"{what}: binary_data_size is {size}, but shape {list(shape)} of "
                f"{tensor['datatype']} needs {nbytes} bytes"
            )
        if offset + size > len(binary):
            raise ProtocolError(
                f"{what}: binary data truncated (needs {size} bytes at offset {offset}, "
                f"the body has {len(binary) - offset} left)"
            )
        chunk = binary[offset : offset + size]
        offset += size
        inputs[name] = np.frombuffer(chunk, dtype=dtype).reshape(shape)
    if offset != len(binary):
        raise ProtocolError(
            f"{len(binary) - offset} bytes of binary data after the last binary input"
        )
    return InferRequest(
        inputs=inputs,
        request_id=request_id,
        parameters=parameters,
        outputs=_requested_outputs(doc.get("outputs")),
        binary_default=parameters.get("binary_data_output") is True,
    )


def _requested_outputs(outputs: Any) -> list[tuple[str, bool | None]] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise ProtocolError("'outputs' must be an array")
    requested = []
    for i, tensor in enumerate(outputs):
        tensor = _as_dict(tensor, f"outputs[{i}]")
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise ProtocolError(f"outputs[{i}]: 'name' must be a non-empty string")
        params = _as_dict(tensor.get("parameters", {}), f"output {name!r}: 'parameters'")
        binary = params.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise ProtocolError(f"output {name!r}: 'binary_data' must be true or false")
        requested.append((name, binary))
    return requested


def encode_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Sequence[tuple[str, np.ndarray, bool]],
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when any output is binary."""
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    tensors = []
    blobs = []
    for name, arr, binary in outputs:
        datatype = datatype_of(arr.dtype.name)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            raw = np.ascontiguousarray(arr, dtype=DATATYPES[datatype]).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            tensor["data"] = arr.reshape(-1).tolist()
        tensors.append(tensor)
    doc["outputs"] = tensors
    header = json.dumps(doc, separators=(",", ":"), allow_nan=True).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


__all__ = [
    "DATATYPES",
    "InferRequest",
    "Limits",
    "datatype_of",
    "encode_response",
    "parse_infer",
    "split_body",
]
