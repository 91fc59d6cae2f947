"""axonc: Axon-style neural networks in Python, compiled to ONNX and TFLite.

Build a graph with layer constructors (`ax.input(...).dense(8).relu()`), then
`ax.build(model, mode)` for (init_fn, predict_fn), and `ax.save` / `ax.load` for
the model file. Every name follows Elixir's Axon.

The public names live in `axonc.api`, loaded the first time one is used (PEP
562), so that `import axonc.ir` loads the IR alone: this package imports none of
its modules itself.
"""

from __future__ import annotations

import sys
from importlib import import_module
from importlib.util import find_spec
from types import ModuleType
from typing import Any

# Public functions named like a submodule: `ax.build` is the function in `axonc.build`.
_FUNCTIONS_OVER_MODULES = frozenset({"build"})


def __getattr__(name: str) -> Any:
    if name not in _FUNCTIONS_OVER_MODULES and find_spec(f"{__name__}.{name}") is not None:
        return import_module(f"{__name__}.{name}")  # a submodule: `from axonc import losses`
    api = import_module(f"{__name__}.api")  # it publishes its names here (see api.py)
    if name == "__all__" or name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *import_module(f"{__name__}.api").__all__})


class _Package(ModuleType):
    """Importing `axonc.build` sets the package's `build` to that module: answer the function."""

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name in _FUNCTIONS_OVER_MODULES and isinstance(value, ModuleType):
            return getattr(import_module(f"{__name__}.api"), name)
        return value


sys.modules[__name__].__class__ = _Package
