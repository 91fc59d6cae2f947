"""axonrt: load and run models compiled by axonc, without axonc installed.

Servers and devices install this package alone (numpy + onnxruntime); it never
imports axonc. `axonrt.load("model.onnx")` returns a Model: its `inputs` and
`outputs` signatures, `Model(x)` with checked inputs and the original output
structure, `Model.run(feeds)` for raw outputs by name.
"""

from . import errors
from .errors import AxonrtError, InputError, ModelError, OptionError, ProviderError, RunError
from .model import OPTIMIZATION_LEVELS, Model, Signature, load
from .providers import choose_providers

__version__ = "0.1.0"

__all__ = [
    "OPTIMIZATION_LEVELS",
    "AxonrtError",
    "InputError",
    "Model",
    "ModelError",
    "OptionError",
    "ProviderError",
    "RunError",
    "Signature",
    "choose_providers",
    "errors",
    "load",
]
