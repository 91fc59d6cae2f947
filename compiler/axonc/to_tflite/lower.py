"""The lowering loop: each node of an IR graph, in order, through its op's `tflite` rule.

A rule has the signature `tflite(self, ctx, inputs, opts)`: `inputs` are
tensor indices (or containers of them) and it returns the output tensor(s) in
the structure of the op's output type. `ctx` (a TfliteContext) gives it the
builder, the input/output types and its parameters. A rule that cannot export
an option raises `ctx.unsupported(reason)`; the loop collects every such
reason, and every op without a rule, and reports them all at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..dtypes import TensorType, dtype_name
from ..errors import StateError
from ..ir import Axon, Node, assign_names, topo_order, tree_map
from ..registry import Op, get_op
from ..shape_inference import NONE, infer_types
from .builder import TfliteBuilder


class Unsupported(Exception):
    """Raised by a `tflite` rule for an option or input it cannot express."""


class TfliteContext:
    """What an op's `tflite` rule may use."""

    def __init__(self, lowering: Lowering, node: Node, path: tuple[str, ...], in_types, out_type):
        self._lowering = lowering
        self.b: TfliteBuilder = lowering.b
        self.mode = "inference"
        self.node = node
        self.name = "/".join(path)
        self.path = path
        self.in_types = in_types
        self.out_type = out_type

    def param(self, *key: str) -> int:
        """The constant tensor holding this layer's parameter or state `key` (a path)."""
        return self._lowering.param((*self.path, *key))

    def param_at(self, path: tuple[str, ...]) -> int:
        """The constant tensor of any parameter or state leaf, by its full path."""
        return self._lowering.param(tuple(path))

    def value(self, *key: str) -> np.ndarray:
        """This layer's parameter `key` as an array (rules that re-lay-out weights)."""
        return self._lowering.value((*self.path, *key))

    def unsupported(self, reason: str) -> Unsupported:
        """The exception a rule raises when TFLite export cannot express `reason`."""
        return Unsupported(reason)

    def lower(self, body: Axon, args: list[Any], scoped: bool = False) -> Any:
        """Lower a subgraph inline; `scoped` nests its parameters under this layer."""
        return self._lowering.lower_graph(body, args, self.path if scoped else ())


class Lowering:
    """Lowers one IR graph (and its subgraphs) into a TfliteBuilder."""

    def __init__(self, b: TfliteBuilder, params: Mapping[str, Any]):
        self.b = b
        self.params = params
        self.param_tensors: dict[tuple[str, ...], int] = {}
        self.problems: list[tuple[str, str, str]] = []
        self.graph_inputs: dict[str, int] = {}
        self.input_types: dict[str, Any] = {}

    def value(self, path: tuple[str, ...]) -> np.ndarray:
        value = _lookup(self.params, path)
        if value is None:
            raise StateError(
                f"layer {'/'.join(path[:-1])!r} has no value for {path[-1]!r}; "
                "initialise the model state with init_fn or pass the parameter in"
            )
        return np.asarray(value)

    def param(self, path: tuple[str, ...]) -> int:
        if path not in self.param_tensors:
            self.param_tensors[path] = self.b.const(self.value(path), hint="/".join(path))
        return self.param_tensors[path]

    def lower_graph(self, model: Axon, args: list[Any] | None, prefix: tuple[str, ...]) -> Any:
        """Lower `model` with argument values `args`; returns its output value tree."""
        names = assign_names(model)
        arg_types = [self.types_of(a) for a in args] if args is not None else None
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
            if types[nid] is NONE:
                values[nid] = NONE
                continue
            spec = get_op(node.op)
            path = (*prefix, names[nid])
            ctx = TfliteContext(self, node, path, [types[i] for i in node.inputs], types[nid])
            self.b.scope = ctx.name
            values[nid] = self._lower_node(spec, ctx, [values[i] for i in node.inputs], node)
        self.b.scope = ""
        return tree_map(lambda i: values[i], model.output)

    def _lower_node(self, spec: Op, ctx: TfliteContext, inputs: list[Any], node: Node) -> Any:
        """One node through its rule; a missing rule or an Unsupported reason is recorded."""
        if type(spec).tflite is Op.tflite:
            reason = "the op has no TFLite lowering"
        else:
            try:
                return spec.tflite(ctx, inputs, dict(node.options))
            except Unsupported as exc:
                reason = str(exc)
        self.problems.append((ctx.name, node.op, reason))
        return tree_map(self._placeholder, ctx.out_type)

    def _placeholder(self, t: Any) -> Any:
        """A stand-in tensor of a failed layer's type, so the loop goes on to report all."""
        return self.b.tensor(t, "unsupported") if isinstance(t, TensorType) else NONE

    def types_of(self, value: Any) -> Any:
        if value is NONE:
            return NONE
        return tree_map(lambda v: NONE if v is NONE else self.b.type_of(v), value)


def _lookup(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree


def array_type(arr: np.ndarray) -> TensorType:
    """The TensorType of a numpy array."""
    return TensorType(arr.shape, dtype_name(arr.dtype))
