"""The lowering loop: each node of an IR graph, in order, through its op's `onnx` rule.

A rule has the signature `onnx(self, ctx, inputs, opts)`: `inputs` are ONNX
value names (or containers of them), and it returns the output value name(s)
in the structure of the op's output type. `ctx` (a LowerContext) gives it the
builder, the mode, the input/output types, its parameters and state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from onnx import numpy_helper

from ..dtypes import TensorType, dtype_name
from ..errors import GraphError, StateError
from ..ir import Axon, Node, assign_names, topo_order, tree_map
from ..registry import Op, get_op
from ..shape_inference import NONE, infer_types
from .builder import OnnxBuilder


class LowerContext:
    """What an op's `onnx` rule may use."""

    def __init__(self, lowering: Lowering, node: Node, path: tuple[str, ...], in_types, out_type):
        self._lowering = lowering
        self.b: OnnxBuilder = lowering.b
        self.mode = lowering.mode
        self.opset = lowering.b.opset
        self.node = node
        self.name = "/".join(path)
        self.path = path
        self.in_types = in_types
        self.out_type = out_type

    def param(self, *key: str) -> str:
        """The ONNX value holding this layer's parameter or state `key` (a path)."""
        return self._lowering.param((*self.path, *key))

    def param_at(self, path: tuple[str, ...]) -> str:
        """The ONNX value of any parameter or state leaf, by its full path."""
        return self._lowering.param(tuple(path))

    def set_state(self, key: str, value: str, t: TensorType) -> None:
        """Report the updated value (of type `t`) of this layer's state `key` (train mode)."""
        self._lowering.new_state[(*self.path, key)] = value
        self._lowering.value_types[value] = t

    def noise(
        self,
        shape: tuple[int | None, ...],
        key: str = "noise",
        layer: tuple[str, ...] | None = None,
    ) -> str:
        """The graph input `<layer>/<key>` of uniform [0, 1) f32 samples of `shape` (None = batch).

        Train-mode randomness (dropout masks) is an input, so a run is reproducible
        from whatever seeded generator feeds it (see spec/onnx.md). `layer` defaults to
        this node's path; asking again for the same input returns it (the forward rule
        and a gradient graph share one noise input per layer).
        """
        return self._lowering.noise_input((*(layer or self.path), key), shape)

    def random_input(
        self, key: str, shape: tuple[int | None, ...], initializer: Any, seed: int
    ) -> str:
        """A graph input `<layer>/<key>` (f32, None = batch) the runtime draws host-side.

        The runtime fills it with `axonc.initializers.initialize(initializer, shape, "f32",
        seed)`, exactly what the reference interpreter draws (metadata axonc.random_inputs).
        Asking again for the same draw (a block applied twice, as bidirectional does)
        returns the same input, as the reference draws the same values.
        """
        name = "/".join((*self.path, key))
        spec = {"shape": list(shape), "initializer": initializer, "seed": seed}
        if self._lowering.random_inputs.get(name) == spec:
            return name
        dims = ["batch" if d is None else d for d in shape]
        self.b.add_input(name, TensorType(shape, "f32"), dims)
        self._lowering.random_inputs[name] = spec
        return name

    def lower(self, body: Axon, args: list[Any], scoped: bool = False) -> Any:
        """Lower a subgraph inline; `scoped` nests its parameters under this layer."""
        return self._lowering.lower_graph(body, args, self.path if scoped else ())


class Lowering:
    """Lowers one IR graph (and its subgraphs) into an OnnxBuilder."""

    def __init__(
        self,
        b: OnnxBuilder,
        mode: str,
        params: Mapping[str, Any],
        state_paths: set,
        params_as_inputs: bool = False,
    ):
        self.b = b
        self.params_as_inputs = params_as_inputs
        self.mode = mode
        self.params = params
        self.state_paths = state_paths
        self.param_names: dict[tuple[str, ...], str] = {}
        self.new_state: dict[tuple[str, ...], str] = {}
        self.noise: dict[tuple[str, ...], tuple[int | None, ...]] = {}
        self.random_inputs: dict[str, dict[str, Any]] = {}
        self.layer_kinds: dict[tuple[str, ...], str] = {}

    def param(self, path: tuple[str, ...]) -> str:
        if path not in self.param_names:
            value = _lookup(self.params, path)
            if value is None:
                layer, key = "/".join(path[:-1]), path[-1]
                kind = self.layer_kinds.get(path[:-1], "layer")
                raise StateError(
                    f"layer {layer!r} ({kind}) has no value for {key!r}; "
                    "initialise the model state with init_fn or pass the parameter in"
                )
            name = "/".join(path)
            arr = np.asarray(value)
            if self.params_as_inputs:
                self.b.add_input(name, TensorType(arr.shape, _dtype(arr)))
            elif self.mode == "train" and path in self.state_paths:
                self.b.add_input(name, TensorType(arr.shape, _dtype(arr)))
                self.b.initializers.append(_tensor(arr, name))
            else:
                self.b.initializer(name, arr)
            self.param_names[path] = name
            self.value_types[name] = TensorType(arr.shape, _dtype(arr))
        return self.param_names[path]

    def noise_input(self, path: tuple[str, ...], shape: tuple[int | None, ...]) -> str:
        name = "/".join(path)
        if path in self.noise:
            if tuple(self.noise[path]) != tuple(shape):
                raise GraphError(
                    f"noise input {name!r} requested with shapes {self.noise[path]} and {shape}"
                )
            return name
        dims = ["batch" if d is None else d for d in shape]
        self.b.add_input(name, TensorType(shape, "f32"), dims)
        self.noise[path] = shape
        return name

    def lower_graph(self, model: Axon, args: list[Any] | None, prefix: tuple[str, ...]) -> Any:
        """Lower `model` with argument values `args`; returns its output value tree."""
        names = assign_names(model)
        arg_types = [self.types_of_arg(a) for a in args] if args is not None else None
        types = infer_types(model, self.input_types, names, arg_types=arg_types)
        values: dict[int, Any] = {}
        for nid in topo_order(model.nodes, model.output):
            node = model.nodes[nid]
            if node.op == "input":
                values[nid] = self.graph_inputs.get(node.options["name"], NONE)
                continue
            if node.op == "argument":
                values[nid] = args[node.options["index"]] if args is not None else NONE
                continue
            spec = get_op(node.op)
            in_values = [values[i] for i in node.inputs]
            if types[nid] is NONE:
                values[nid] = NONE
                continue
            ctx = LowerContext(
                self, node, (*prefix, names[nid]), [types[i] for i in node.inputs], types[nid]
            )
            self.b.scope = ctx.name
            self.layer_kinds[ctx.path] = node.kind
            values[nid] = spec.onnx(ctx, in_values, dict(node.options))
            self.value_types.update(_pair_types(values[nid], types[nid]))
        self.b.scope = ""
        return tree_map(lambda i: values[i], model.output)

    # set by lower(): graph input values by input name, types by input name
    graph_inputs: dict[str, str]
    input_types: dict[str, Any]
    value_types: dict[str, Any]

    def types_of_arg(self, value: Any) -> Any:
        return tree_map(lambda v: self.value_types.get(v), value) if value is not NONE else NONE


def unsupported_ops(model: Axon) -> list[tuple[str, str, str]]:
    """(layer, op, reason) for every layer (subgraphs included) whose op has no `onnx` rule."""
    missing: list[tuple[str, str, str]] = []

    def walk(g: Axon, prefix: str) -> None:
        names = assign_names(g)
        for nid in topo_order(g.nodes, g.output):
            node = g.nodes[nid]
            layer = prefix + names[nid]
            if node.op not in ("input", "argument") and type(get_op(node.op)).onnx is Op.onnx:
                missing.append((layer, node.op, "the op has no ONNX lowering"))
            for role, body in node.subgraphs.items():
                walk(body, f"{layer}/{role}/")

    walk(model, "")
    return missing


def _pair_types(value: Any, t: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(value, str):
        out[value] = t
    elif isinstance(value, (tuple, list)) and isinstance(t, (tuple, list)):
        for v, tt in zip(value, t):
            out.update(_pair_types(v, tt))
    elif isinstance(value, dict) and isinstance(t, dict):
        for k in value:
            out.update(_pair_types(value[k], t[k]))
    return out


def _lookup(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _dtype(arr: np.ndarray) -> str:
    return dtype_name(arr.dtype)


def _tensor(arr: np.ndarray, name: str):
    return numpy_helper.from_array(np.array(arr, order="C"), name)
