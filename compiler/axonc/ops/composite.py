"""Layers made of other layers: block, namespace, optional, or_else, cond, bidirectional.

A block or namespace holds its inner graph as a subgraph whose parameters nest
under the outer layer's name (`block_0/dense_0/kernel`); every use of one block
shares one set of parameters, as in Axon 0.8.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..dtypes import TensorType
from ..errors import GraphError, ShapeError
from ..ir import Axon, as_axon, make_node, topo_order
from ..registry import Case, Op, Option, check_int, layer_api, register
from ..shape_inference import NONE, declared_type, infer_types, output_types
from .special import container

_block_ids = itertools.count()


def new_block_id() -> int:
    """A process-unique block id (loading a file renumbers its blocks with these)."""
    return next(_block_ids)


class Scope(Op):
    """Shared rules of ops that run an inner graph with parameters scoped by their name."""

    family = "composite"
    arity = None

    def _body_types(self, types, node):
        body = node.subgraphs["body"]
        return body, infer_types(body, arg_types=list(types))

    def infer(self, types, opts, node):
        body, body_types = self._body_types(types, node)
        return output_types(body, body_types)

    def params(self, types, opts, mode, node):
        from ..parameters import collect_specs

        body, body_types = self._body_types(types, node)
        specs = collect_specs(body, body_types, mode)
        return [replace(spec, path=path) for path, spec in specs.items()]

    def forward(self, ctx, inputs, params, opts):
        return ctx.run(ctx.node.subgraphs["body"], list(inputs), params)


def _arguments(graphs: list[Axon]) -> list[Axon]:
    """Argument placeholders typed like the given graphs' declared outputs."""
    args = []
    for i, g in enumerate(graphs):
        t = declared_type(g, g.output)
        shape = getattr(t, "shape", None)
        dtype = getattr(t, "dtype", "f32")
        args.append(make_node("argument", [], {"index": i, "shape": shape, "dtype": dtype}))
    return args


def _as_output(result: Any, what: str) -> Axon:
    """A body's result as one graph: a graph, or a container of graphs."""
    if isinstance(result, Axon):
        return result
    if isinstance(result, (tuple, list, dict)):
        return container(result)
    raise GraphError(
        f"{what} must return an Axon graph or a container of them, got {type(result).__name__}"
    )


@register
class Block(Scope):
    name = "block"
    doc = "A reusable function of layers; every call shares one set of parameters."
    options = {"block_id": Option(check=check_int(0), doc="identifies the block all calls share")}


@layer_api(method=False)
def block(fn: Callable[..., Any], *, name: str | None = None) -> Callable[..., Axon]:
    """Wrap a function of graphs so every call shares one parameter set (Axon.block)."""
    if not callable(fn):
        raise GraphError(f"block expects a function of graphs, got {type(fn).__name__}")
    block_id = new_block_id()

    def call(*graphs: Axon) -> Axon:
        graphs = [as_axon(g, f"block input {i}") for i, g in enumerate(graphs)]
        body = _as_output(fn(*_arguments(graphs)), "a block function")
        return make_node(
            "block", graphs, {"block_id": block_id}, name=name, subgraphs={"body": body}
        )

    return call


@register
class Namespace(Scope):
    name = "namespace"
    doc = "Groups a whole graph's parameters under one name."
    options = {}


def _inputs_to_arguments(model: Axon) -> tuple[list[Axon], Axon]:
    """Split a graph at its inputs: (the input graphs, the graph over argument nodes)."""
    order = topo_order(model.nodes, model.output)
    inputs = [model.nodes[i] for i in order if model.nodes[i].op == "input"]
    nodes = dict(model.nodes)
    for index, node in enumerate(inputs):
        opts = node.options
        nodes[node.id] = node.replace(
            op="argument",
            options={"index": index, "shape": opts["shape"], "dtype": opts["dtype"]},
            name=None,
        )
    graphs = [Axon(node.id, {node.id: node}) for node in inputs]
    return graphs, Axon(model.output, nodes)


@layer_api
def namespace(model: Axon, name: str) -> Axon:
    """Put every parameter of `model` under `name`: `{name: {"dense_0": ...}}`."""
    if not isinstance(name, str) or not name:
        raise GraphError(f"namespace: name must be a non-empty string, got {name!r}")
    graphs, body = _inputs_to_arguments(as_axon(model, "namespace input"))
    return make_node("namespace", graphs, {}, name=name, subgraphs={"body": body})


@register
class Optional(Op):
    name = "optional"
    family = "composite"
    doc = "Lets the next layer receive a missing input (ax.NONE) instead of being skipped."
    accepts_none = True

    def infer(self, types, opts, node):
        return types[0]

    def forward(self, ctx, inputs, params, opts):
        return inputs[0]


@layer_api
def optional(x: Axon, *, name: str | None = None) -> Axon:
    """Mark `x` optional: consumers that accept ax.NONE see it instead of being skipped."""
    return make_node("optional", [x], {}, name=name)


@register
class OrElse(Op):
    name = "or_else"
    family = "composite"
    doc = "The first input, or the second where the first is missing (ax.NONE)."
    arity = 2
    accepts_none = True

    def infer(self, types, opts, node):
        x, default = types
        if x is NONE:
            return default
        if default is not NONE and getattr(x, "shape", None) != getattr(default, "shape", None):
            if len(x.shape) != len(default.shape) or any(
                a is not None and b is not None and a != b for a, b in zip(x.shape, default.shape)
            ):
                raise ShapeError(
                    f"or_else: both inputs must have one shape, got {x!r} and {default!r}"
                )
        return x

    def forward(self, ctx, inputs, params, opts):
        x, default = inputs
        return default if x is NONE else x


def _compatible(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


@layer_api
def or_else(x: Axon, default: Axon, *, name: str | None = None) -> Axon:
    """`x`, or `default` when `x` resolves to ax.NONE (a missing optional input)."""
    return make_node("or_else", [x, default], {}, name=name)


def _case_block(x: Axon) -> Axon:
    shared = block(lambda h: h.dense(4).relu())
    return container((shared(x), shared(x.tanh())))


def _case_or_else(x: Axon) -> Axon:
    """An optional input the sweep never feeds, so or_else must take the default."""
    from .special import input as input_layer

    return or_else(input_layer("maybe", shape=(None, 3), optional=True), x.relu())


Block.cases = [Case("shared_twice", _case_block, [TensorType((None, 3))])]
Namespace.cases = [
    Case(
        "dense_under_name",
        lambda x: namespace(x.dense(2), "encoder").relu(),
        [TensorType((None, 3))],
    )
]
Optional.cases = [Case("passthrough", lambda x: optional(x).tanh(), [TensorType((None, 3))])]
OrElse.cases = [Case("missing_input_takes_default", _case_or_else, [TensorType((None, 3))])]
