"""axonc: Axon-style neural networks in Python, compiled to ONNX and TFLite.

Build a graph with layer constructors (`ax.input(...).dense(8).relu()`), then
`ax.build(model, mode)` for (init_fn, predict_fn), and `ax.save` / `ax.load` for
the model file. Every name follows Elixir's Axon.
"""

from . import (
    display,
    initializers,
    losses,
    metrics,
    numpy,
    ops,  # noqa: F401  (registers every op and layer constructor)
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
from .serialize import load, save
from .shape_inference import NONE
from .to_onnx.export import export_onnx
from .to_tflite.export import export_tflite

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
