"""LiteRT behind the session interface `Model` uses, so a .tflite file loads like an .onnx one.

Extra `axonrt[tflite]` (ai-edge-litert). The model's "serving_default"
signature gives the inputs and outputs by name; a dynamic batch (-1 in the
shape signature) is the named dim "batch", which every input must agree on.
Variable tensors (an LSTM's state) are reset before every call, so a call never
depends on the previous one. LiteRT's interpreter is not thread-safe: calls are
serialised by a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ModelError

TFLITE_IDENTIFIER = b"TFL3"
_DTYPES = {
    np.float32: "float",
    np.float16: "float16",
    np.float64: "double",
    np.int8: "int8",
    np.int16: "int16",
    np.int32: "int32",
    np.int64: "int64",
    np.uint8: "uint8",
    np.uint16: "uint16",
    np.uint32: "uint32",
    np.uint64: "uint64",
    np.bool_: "bool",
}


def is_tflite(data: bytes) -> bool:
    """Whether `data` starts like a TFLite flatbuffer (file identifier at bytes 4..8)."""
    return data[4:8] == TFLITE_IDENTIFIER


@dataclass(frozen=True)
class _Arg:
    name: str
    type: str
    shape: list[Any]


@dataclass(frozen=True)
class _Meta:
    custom_metadata_map: dict[str, str]


def _interpreter_module() -> Any:
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        raise ModelError(
            "running a .tflite model needs LiteRT: pip install 'axonrt[tflite]'"
        ) from None
    return interpreter


def read_metadata(data: bytes) -> dict[str, str]:
    """The model's metadata entries (name -> UTF-8 text) from its flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    out = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        buf = model.Buffers(entry.Buffer())
        raw = buf.DataAsNumpy() if buf.DataLength() else b""
        try:
            out[entry.Name().decode()] = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            continue  # binary metadata (e.g. the converter's min_runtime_version) is not text
    return out


class LiteRTSession:
    """A LiteRT interpreter with the part of onnxruntime's InferenceSession API Model uses."""

    def __init__(self, data: bytes, source: str, threads: int | None = None):
        interpreter = _interpreter_module()
        try:
            self._interp = interpreter.Interpreter(model_content=data, num_threads=threads)
            signatures = self._interp.get_signature_list()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{source}: cannot load as a TFLite model: {exc}") from None
        if not signatures:
            raise ModelError(f"{source}: the TFLite model has no signature")
        self.signature_key = (
            "serving_default" if "serving_default" in signatures else next(iter(signatures))
        )
        self._runner = self._interp.get_signature_runner(self.signature_key)
        self._inputs = [_arg(n, d) for n, d in self._runner.get_input_details().items()]
        order = signatures[self.signature_key]["outputs"]
        details = self._runner.get_output_details()
        self._outputs = [_arg(n, details[n]) for n in order]
        self._meta = _Meta(read_metadata(data))
        self._lock = threading.Lock()

    def get_modelmeta(self) -> _Meta:
        return self._meta

    def get_inputs(self) -> list[_Arg]:
        return list(self._inputs)

    def get_outputs(self) -> list[_Arg]:
        return list(self._outputs)

    def get_overridable_initializers(self) -> list[_Arg]:
        return []

    def get_providers(self) -> list[str]:
        return ["LiteRT"]

    def run(self, names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Reset variable tensors, run the signature on `feeds`, return `names` in order."""
        with self._lock:
            self._interp.reset_all_variables()
            out = self._runner(**feeds)
            return [np.array(out[n]) for n in names]


def _arg(name: str, detail: Mapping[str, Any]) -> _Arg:
    dtype = _DTYPES.get(np.dtype(detail["dtype"]).type, np.dtype(detail["dtype"]).name)
    sig = detail.get("shape_signature")
    dims = list(sig if sig is not None and len(sig) else detail["shape"])
    shape = [
        "batch" if d == -1 and i == 0 else None if d == -1 else int(d) for i, d in enumerate(dims)
    ]
    return _Arg(name, f"tensor({dtype})", shape)
