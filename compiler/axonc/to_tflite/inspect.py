"""A text description of a .tflite model: signature, tensors, quantization, operators."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from .schema import schema


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _names(enum: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def _shape(t: Any) -> str:
    dims = t.shapeSignature if t.shapeSignature is not None else t.shape
    dims = [] if dims is None else list(dims)
    return "[" + ", ".join("?" if d == -1 else str(d) for d in dims) + "]"


def _quant(t: Any) -> str:
    q = t.quantization
    if q is None or q.scale is None or not len(q.scale):
        return ""
    scale, zero = np.asarray(q.scale), np.asarray(q.zeroPoint)
    if scale.size == 1:
        return f"scale {scale[0]:.6g} zero point {int(zero[0])}"
    return f"per-channel (axis {q.quantizedDimension}, {scale.size} scales)"


def describe(data: bytes) -> str:
    """Signature, tensors (dtype, shape, quantization), op counts and axonc metadata."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError("not a TFLite model (no TFL3 file identifier)")
    s = schema()
    try:
        model = s.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as exc:  # a corrupt flatbuffer raises anything from struct to IndexError
        raise ValueError(f"not a valid TFLite model ({exc})") from None
    types = _names(s.TensorType)
    ops = _names(s.BuiltinOperator)
    sub = model.subgraphs[0]
    lines = [f"TFLite model (schema version {model.version}), {len(model.subgraphs)} subgraph(s)"]
    meta = {}
    for m in model.metadata or []:
        buf = model.buffers[m.buffer].data
        raw = b"" if buf is None else np.asarray(buf, np.uint8).tobytes()
        try:
            meta[_text(m.name)] = raw.decode()
        except UnicodeDecodeError:
            meta[_text(m.name)] = f"<{len(raw)} bytes>"
    for sig in model.signatureDefs or []:
        lines.append(f"signature {_text(sig.signatureKey)!r}:")
        for title, maps in (("inputs", sig.inputs or []), ("outputs", sig.outputs or [])):
            lines.append(f"  {title}:")
            for tm in maps:
                t = sub.tensors[tm.tensorIndex]
                quant = _quant(t)
                lines.append(
                    f"    {_text(tm.name)}  {types.get(t.type, t.type).lower()} {_shape(t)}"
                    + (f"  ({quant})" if quant else "")
                )
    if "axonc.outputs" in meta:
        lines.append(f"output structure: {meta['axonc.outputs']}")
    for key in ("axonc.quantization", "axonc.source_sha256"):
        if key in meta:
            lines.append(f"{key.split('.', 1)[1].replace('_', ' ')}: {meta[key]}")
    counts: Counter = Counter()
    by_type: Counter = Counter()
    quantized = 0
    for t in sub.tensors:
        by_type[types.get(t.type, str(t.type)).lower()] += 1
        quantized += bool(_quant(t))
    lines.append(
        f"tensors: {len(sub.tensors)} ("
        + ", ".join(f"{n} {k}" for k, n in sorted(by_type.items()))
        + f"; {quantized} quantized)"
    )
    weights = sum(
        0 if model.buffers[t.buffer].data is None else len(model.buffers[t.buffer].data)
        for t in sub.tensors
    )
    lines.append(f"constant data: {weights} bytes")
    for op in sub.operators or []:
        oc = model.operatorCodes[op.opcodeIndex]
        counts[ops.get(max(oc.builtinCode, oc.deprecatedBuiltinCode), "?")] += 1
    lines.append(f"ops: {sum(counts.values())} operators")
    width = max((len(k) for k in counts), default=0)
    for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {name:<{width}}  {n}")
    return "\n".join(lines)
