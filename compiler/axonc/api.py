"""The public API that `import axonc as ax` offers: what `ax.<name>` resolves to.

The package loads this module the first time one of its names is used, so that
importing a lower layer alone (`import axonc.ir`) does not load the whole house.
"""

import sys

from . import (  # noqa: F401  (public submodules: ax.numpy, ax.losses, ...)
    display,
    initializers,
    losses,
    metrics,
    numpy,
    ops,
    optimizers,
    schedules,
    train,
)
from .build import build, predict
from .dtypes import TensorType, template
from .errors import AxoncError
from .ir import Axon, Node
from .loop import Loop
from .model import (
    attach_hook,
    freeze,
    get_inputs,
    get_op_counts,
    get_options,
    get_output_shape,
    get_parameters,
    map_nodes,
    reduce_nodes,
    set_options,
    set_parameters,
    trace_forward,
    trace_init,
)
from .model_state import ModelState
from .registry import LAYERS as _LAYERS
from .registry import load_ops
from .serialize import load, save
from .shape_inference import NONE
from .to_onnx.export import export_onnx
from .to_tflite.export import export_tflite

load_ops()
globals().update(_LAYERS)

__all__ = [
    "NONE",
    "Axon",
    "AxoncError",
    "Loop",
    "ModelState",
    "Node",
    "TensorType",
    "attach_hook",
    "build",
    "display",
    "export_onnx",
    "export_tflite",
    "freeze",
    "get_inputs",
    "get_op_counts",
    "get_options",
    "get_output_shape",
    "get_parameters",
    "initializers",
    "load",
    "losses",
    "map_nodes",
    "metrics",
    "numpy",
    "optimizers",
    "predict",
    "reduce_nodes",
    "save",
    "schedules",
    "set_options",
    "set_parameters",
    "template",
    "trace_forward",
    "trace_init",
    "train",
    *_LAYERS,
]

# Publish the API on the package, replacing the submodules that share a name with a
# function (`axonc.build` the module, `ax.build` the function).
sys.modules[__package__].__dict__.update({name: globals()[name] for name in __all__})
