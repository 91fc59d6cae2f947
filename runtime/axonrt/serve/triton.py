"""`axonrt export-triton`: an ONNX model as a Triton model repository entry.

    repo/<name>/config.pbtxt     onnxruntime backend, dynamic batcher, the signature
    repo/<name>/1/model.onnx

When every input and output has a leading dynamic dimension, Triton batches:
`max_batch_size` is set and the dims listed exclude the batch dimension.
Otherwise `max_batch_size: 0` and the full shapes are listed (no batcher).
Other dynamic dims are -1. The text is Triton's ModelConfig protobuf text format.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import axonrt

from .batching import Servable, batchable
from .errors import ConfigError
from .protocol import datatype_of
from .repository import valid_name


def _dims(shape: Any, skip_batch: bool) -> list[int]:
    dims = [d if isinstance(d, int) else -1 for d in shape]
    return dims[1:] if skip_batch else dims


def _tensors(kind: str, sigs: list[Any], skip_batch: bool) -> list[str]:
    lines = [f"{kind} ["]
    for i, sig in enumerate(sigs):
        if sig.shape is None:
            raise ConfigError(f"{kind} {sig.name!r} has no declared rank; Triton needs dims")
        dims = _dims(sig.shape, skip_batch) or [1]
        comma = "," if i < len(sigs) - 1 else ""
        lines += [
            "  {",
            f"    name: {json.dumps(sig.name)}",
            f"    data_type: TYPE_{datatype_of(sig.dtype)}",
            f"    dims: [ {', '.join(map(str, dims))} ]",
            f"  }}{comma}",
        ]
    lines.append("]")
    return lines


def triton_config(
    model: Servable, name: str, max_batch_size: int, max_queue_delay_ms: float
) -> str:
    """config.pbtxt text for `model` served by Triton's onnxruntime backend."""
    batching = batchable(model) and max_batch_size > 0
    lines = [
        f"name: {json.dumps(name)}",
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch_size if batching else 0}",
        *_tensors("input", model.inputs, batching),
        *_tensors("output", model.outputs, batching),
    ]
    if batching:
        delay_us = round(max_queue_delay_ms * 1000)
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {delay_us}", "}"]
    lines += ["instance_group [ { kind: KIND_CPU, count: 1 } ]"]
    return "\n".join(lines) + "\n"


def export_triton(
    model_file: str | Path,
    repository: str | Path,
    *,
    name: str | None = None,
    max_batch_size: int = 64,
    max_queue_delay_ms: float = 0.0,
) -> Path:
    """Write `repository/<name>/{config.pbtxt, 1/model.onnx}`; returns the model folder."""
    source = Path(model_file)
    if source.suffix != ".onnx":
        raise ConfigError(f"{source}: Triton's onnxruntime backend takes an .onnx file")
    if max_batch_size < 0 or max_queue_delay_ms < 0:
        raise ConfigError("max_batch_size and max_queue_delay_ms must be non-negative")
    model = axonrt.load(source)
    name = name or source.stem
    if not valid_name(name):
        raise ConfigError(f"model name {name!r}: use letters, digits and '_.-' only")
    folder = Path(repository) / name
    text = triton_config(model, name, max_batch_size, max_queue_delay_ms)
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, folder / "1" / "model.onnx")
    (folder / "config.pbtxt").write_text(text, encoding="utf-8")
    return folder


__all__ = ["export_triton", "triton_config"]
