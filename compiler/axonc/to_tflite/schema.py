"""The TFLite schema's generated Python (shipped by `ai-edge-litert`), imported on demand."""

from __future__ import annotations

import functools
from types import ModuleType

from ..errors import AxoncError


class MissingTfliteError(AxoncError, ImportError):
    """TFLite export or execution was asked for without the `tflite` extra installed."""


@functools.cache
def schema() -> ModuleType:
    """The `schema_py_generated` module (flatbuffers object API: ModelT, TensorT, ...)."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        raise MissingTfliteError(
            "TFLite export needs LiteRT's schema: pip install 'axonc[tflite]' "
            "(it installs ai-edge-litert)"
        ) from None
    return schema_py_generated
