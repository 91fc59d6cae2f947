"""The errors axonrt raises on purpose, so callers can catch exactly what they mean to.

AxonrtError
├── ModelError     the file is missing, truncated, not ONNX, or carries malformed axonc metadata
├── InputError     a call's inputs do not match the model's signature (names, dtypes, shapes)
├── OptionError    a bad argument to `load` (threads, optimization level)
│   └── ProviderError  an execution provider that is not available here
└── RunError       onnxruntime failed while running a valid call
"""

from __future__ import annotations


class AxonrtError(Exception):
    """Base class of every error axonrt raises on purpose."""


class ModelError(AxonrtError, ValueError):
    """A model file that cannot be loaded; the message names the file."""


class InputError(AxonrtError, ValueError):
    """Inputs that do not match the model: says which input, what was expected and what came."""


class OptionError(AxonrtError, ValueError):
    """A bad session option given to `axonrt.load`."""


class ProviderError(OptionError):
    """A requested execution provider that this onnxruntime build does not offer."""


class RunError(AxonrtError, RuntimeError):
    """onnxruntime failed while running inputs that passed validation."""


__all__ = ["AxonrtError", "InputError", "ModelError", "OptionError", "ProviderError", "RunError"]
