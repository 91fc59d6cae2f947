"""Layers made of other layers: block, namespace, optional, or_else, cond, bidirectional.

A block or namespace holds its inner graph as a subgraph whose parameters nest
under the outer layer's name (`block_0/dense_0/kernel`); every use of one block
shares one set of parameters, as in Axon 0.8.

Gradients through a block or namespace run its body's gradient rules with each
inner layer's parameters at (block, layer, param); the inner values those rules
read are recomputed by a `scoped_body` node (`backprop_body`), which nx and
custom layers use for their traced bodies too.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from .. import numpy as anp
from ..dtypes import TensorType
from ..errors import GraphError, ShapeError
from ..ir import Axon, as_axon, topo_order
from ..parameters import collect_specs
from ..registry import Case, Op, Option, check_int, layer_api, register
from ..shape_inference import NONE, declared_type, infer_types, make_node, output_types
from ..tracing import Tensor, flatten_types, trace, trace_now, traced_types
from ._body import backprop_body, choose_present, leaf_graphs, scoped_body
from .custom import nx
from .primitives import truthy, where
from .special import container, unpack
from .special import input as input_layer

_block_ids = itertools.count()


def new_block_id() -> int:
    """A process-unique block id (loading a file renumbers its blocks with these)."""
    return next(_block_ids)


class Scope(Op):
    """Shared rules of ops that run an inner graph with parameters scoped by their name."""

    family = "composite"
    arity = None
    container_inputs = True
    layer_bodies = True

    def _body_types(self, types, node):
        body = node.subgraphs["body"]
        return body, infer_types(body, arg_types=list(types))

    def infer(self, types, opts, node):
        body, body_types = self._body_types(types, node)
        return output_types(body, body_types)

    def params(self, types, opts, mode, node):
        body, body_types = self._body_types(types, node)
        specs = collect_specs(body, body_types, mode)
        return [replace(spec, path=path) for path, spec in specs.items()]

    def forward(self, ctx, inputs, params, opts):
        return ctx.run(ctx.node.subgraphs["body"], list(inputs), params)

    def onnx(self, ctx, inputs, opts):
        """The body inline, its parameters looked up under this layer (block_0/dense_0/kernel)."""
        return ctx.lower(ctx.node.subgraphs["body"], list(inputs), scoped=True)

    tflite = onnx  # the same generic rule: values, subgraphs and parameters

    def vjp(self, ctx, inputs, output, cot, opts):
        """The body's layers' gradient rules, their parameters under this layer's path."""
        return backprop_body(ctx, ctx.node.subgraphs["body"], list(inputs), cot, ctx.path)


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
    container_inputs = True

    def infer(self, types, opts, node):
        return types[0]

    def forward(self, ctx, inputs, params, opts):
        return inputs[0]

    def onnx(self, ctx, inputs, opts):
        return inputs[0]

    tflite = onnx  # the same generic rule: values, subgraphs and parameters

    def vjp(self, ctx, inputs, output, cot, opts):
        return [cot]


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
    container_inputs = True

    def infer(self, types, opts, node):
        x, default = types
        if x is NONE:
            return default
        if default is not NONE and not _same_type(x, default, dtype=False):
            raise ShapeError(f"or_else: both inputs must have one shape, got {x!r} and {default!r}")
        return x

    def forward(self, ctx, inputs, params, opts):
        x, default = inputs
        return default if x is NONE else x

    def onnx(self, ctx, inputs, opts):
        """Resolved at export: a missing input is known when the graph is lowered."""
        x, default = inputs
        return default if x is NONE else x

    tflite = onnx  # the same generic rule: values, subgraphs and parameters

    def vjp(self, ctx, inputs, output, cot, opts):
        """The cotangent goes to whichever input was taken.

        An optional input may be present in the graph's types yet missing when the
        gradient graph runs: the default's cotangent is then chosen at run time.
        """
        x = inputs[0]
        if x is NONE:
            return [None, cot]

        def to_default(c: Any) -> Any:
            if c is None:
                return None
            if isinstance(c, (tuple, list)):
                return type(c)(to_default(v) for v in c)
            if isinstance(c, dict):
                return {k: to_default(v) for k, v in c.items()}
            return choose_present(ctx, [(None, [x]), (c, [])], c)

        return [cot, to_default(cot)]


def _compatible(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def _same_type(a: Any, b: Any, *, dtype: bool = True) -> bool:
    """Tensor types (or containers of them, leaf by leaf) of compatible shapes.

    A missing leaf (ax.NONE) has no shape, so it is compatible with any leaf.
    """
    if a is NONE or b is NONE:
        return True
    if isinstance(a, TensorType) and isinstance(b, TensorType):
        return (not dtype or a.dtype == b.dtype) and _compatible(a.shape, b.shape)
    if isinstance(a, (tuple, list)) and type(a) is type(b) and len(a) == len(b):
        return all(_same_type(x, y, dtype=dtype) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return all(_same_type(a[k], b[k], dtype=dtype) for k in a)
    return a is b


@layer_api
def or_else(x: Axon, default: Axon, *, name: str | None = None) -> Axon:
    """`x`, or `default` when `x` resolves to ax.NONE (a missing optional input)."""
    return make_node("or_else", [x, default], {}, name=name)


def _case_block(x: Axon) -> Axon:
    shared = block(lambda h: h.dense(4).relu())
    return container((shared(x), shared(x.tanh())))


@register
class Cond(Op):
    name = "cond"
    family = "composite"
    doc = "The true or the false input, chosen by a traced predicate of the first input."
    arity = 3
    container_inputs = True

    def infer(self, types, opts, node):
        parent, on_true, on_false = types
        pred = output_types(
            node.subgraphs["pred"],
            infer_types(node.subgraphs["pred"], arg_types=flatten_types([parent])),
        )
        if not isinstance(pred, TensorType) or pred.shape != ():
            raise ShapeError(f"the condition function must return a scalar, got {pred!r}")
        if not _same_type(on_true, on_false):
            raise ShapeError(f"both branches must have one shape, got {on_true!r} and {on_false!r}")
        return on_true

    def forward(self, ctx, inputs, params, opts):
        parent, on_true, on_false = inputs
        pred = ctx.run(ctx.node.subgraphs["pred"], flatten_types([parent]))
        return on_true if bool(np.asarray(pred)) else on_false

    def onnx(self, ctx, inputs, opts):
        """Where(pred, true, false), leaf by leaf, with the predicate lowered inline.

        Both branches are inputs of the node, so the graph computes them anyway:
        a Where on the scalar predicate selects exactly what If would, without
        subgraphs.
        """
        parent, on_true, on_false = inputs
        body = ctx.node.subgraphs["pred"]
        pred_type = output_types(
            body, infer_types(body, arg_types=flatten_types([ctx.in_types[0]]))
        )
        pred = ctx.lower(body, flatten_types([parent]), scoped=True)
        ctx.b.scope = ctx.name
        c = truthy(ctx.b, pred, pred_type.dtype)

        def select(t: Any, f: Any, out: Any) -> Any:
            if isinstance(out, (tuple, list)):
                return type(out)(select(a, b, o) for a, b, o in zip(t, f, out))
            if isinstance(out, dict):
                return {k: select(t[k], f[k], out[k]) for k in out}
            if t is NONE and f is NONE:
                return NONE
            if t is NONE or f is NONE:
                raise GraphError(
                    "cond: a branch output is missing (ax.NONE) in only one branch; the "
                    "ONNX graph cannot choose between a tensor and nothing at run time"
                )
            return where(ctx.b, c, t, f, out.dtype)

        return select(on_true, on_false, ctx.out_type)

    def tflite(self, ctx, inputs, opts):
        """SELECT_V2 on the predicate, leaf by leaf, as the ONNX rule's Where."""
        parent, on_true, on_false = inputs
        b = ctx.b
        pred = ctx.lower(ctx.node.subgraphs["pred"], flatten_types([parent]), scoped=True)
        b.scope = ctx.name
        if b.type_of(pred).dtype in ("f16", "f64"):
            raise ctx.unsupported("an f16/f64 predicate")
        c = (
            pred
            if b.type_of(pred).dtype == "pred"
            else b.compare("NOT_EQUAL", pred, b.scalar(0, pred))
        )

        def select(t: Any, f: Any, out: Any) -> Any:
            if isinstance(out, (tuple, list)):
                return type(out)(select(a, c2, o) for a, c2, o in zip(t, f, out))
            if isinstance(out, dict):
                return {k: select(t[k], f[k], out[k]) for k in out}
            if t is NONE and f is NONE:
                return NONE
            if t is NONE or f is NONE:
                raise ctx.unsupported("a branch output missing (ax.NONE) in only one branch")
            return b.op("SELECT_V2", [c, b.cast(t, out.dtype), b.cast(f, out.dtype)], out)

        return select(on_true, on_false, ctx.out_type)

    def vjp(self, ctx, inputs, output, cot, opts):
        """The cotangent to the chosen branch (a Where on the predicate); none to the parent."""
        parent = inputs[0]
        args = leaf_graphs(parent, ctx.in_types[0])
        pred = Tensor(scoped_body(args, ctx.node.subgraphs["pred"], ()), parent._trace)
        if pred.dtype != np.bool_:
            pred = pred != 0

        def split(c: Any, chosen: bool) -> Any:
            if c is None:
                return None
            if isinstance(c, (tuple, list)):
                return type(c)(split(x, chosen) for x in c)
            if isinstance(c, dict):
                return {k: split(v, chosen) for k, v in c.items()}
            return anp.where(pred, c, 0.0) if chosen else anp.where(pred, 0.0, c)

        return [None, split(cot, True), split(cot, False)]


@layer_api
def cond(
    parent: Axon,
    cond_fn: Callable[..., Any],
    true_graph: Axon,
    false_graph: Axon,
    *,
    name: str | None = None,
) -> Axon:
    """`true_graph` where `cond_fn(parent output)` is true, else `false_graph` (Axon.cond).

    `cond_fn` is traced once (Python operators and axonc.numpy) and must return a scalar.
    """
    if not callable(cond_fn):
        raise GraphError(f"cond: expected a condition function, got {type(cond_fn).__name__}")
    parent = as_axon(parent, "cond parent")

    def retrace(node: Any, types: list[Any]) -> Any:
        pred = node.subgraphs.get("pred")
        if pred is not None and traced_types(pred) == flatten_types(types[:1]):
            return node
        return node.replace(subgraphs={"pred": trace(cond_fn, list(types[:1]))})

    pred = trace_now(lambda: trace(cond_fn, [declared_type(parent, parent.output)]), [parent])
    inputs = [parent, true_graph, false_graph]
    subgraphs = {} if pred is None else {"pred": pred}
    return make_node("cond", inputs, {}, name=name, subgraphs=subgraphs, retrace=retrace)


@layer_api
def bidirectional(
    x: Axon,
    forward_fun: Callable[[Axon], Any],
    merge_fun: Callable[[Any, Any], Any],
    *,
    axis: int = 1,
    name: str | None = None,
) -> Any:
    """Run `forward_fun` over `x` and over `x` reversed along `axis`, then merge (Axon 0.8).

    Both directions share one parameter set (a block). The backward results are reversed
    back along `axis` (every leaf, as Axon does) and merged leaf by leaf with `merge_fun`,
    a function of two tensors such as `lambda f, b: anp.concatenate([f, b], axis=-1)`.
    As in Axon, the result is ONE graph whose output is the merged result, so `ax.build`
    takes it; when that is a container (an LSTM's `(seq, (c, h))`), the graph also
    unpacks and indexes like it: `seq, (c, h) = ax.bidirectional(...)`, `out[0]`.
    """

    def reverse(t: Any) -> Any:
        index = [slice(None)] * t.ndim
        index[axis] = slice(None, None, -1)
        return t[tuple(index)]

    shared = block(forward_fun, name=name)
    forward_out = shared(x)
    backward_out = nx(shared(nx(x, reverse)), lambda out: _tree_map(reverse, out))
    merged = nx(
        container((forward_out, backward_out)),
        lambda pair: _tree_zip(merge_fun, pair[0], pair[1]),
    )
    out_type = declared_type(merged, merged.output)
    return merged if isinstance(out_type, TensorType) else ContainerGraph(merged, out_type)


class ContainerGraph(Axon):
    """A graph whose one output node yields a container (Axon's container-valued layers).

    It is an ordinary graph (build, train, save, display it), and it also unpacks,
    indexes and measures like the container of single-output graphs, so code that
    unpacked a tuple of graphs keeps working.
    """

    __slots__ = ("_parts", "_structure")

    def __init__(self, graph: Axon, structure: Any):
        super().__init__(graph.output, graph.nodes)
        self._structure = structure
        self._parts: Any = None

    def _unpacked(self) -> Any:
        if self._parts is None:
            self._parts = unpack(Axon(self.output, self.nodes), self._structure)
        return self._parts

    def __iter__(self) -> Any:
        return iter(self._unpacked())

    def __getitem__(self, key: Any) -> Any:
        return self._unpacked()[key]

    def __len__(self) -> int:
        return len(self._structure)


def _tree_map(fn: Callable[[Any], Any], tree: Any) -> Any:
    if isinstance(tree, (tuple, list)):
        return type(tree)(_tree_map(fn, t) for t in tree)
    if isinstance(tree, dict):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    return fn(tree)


def _tree_zip(fn: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    if isinstance(a, (tuple, list)):
        return type(a)(_tree_zip(fn, x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return {k: _tree_zip(fn, a[k], b[k]) for k in a}
    return fn(a, b)


# ---------------------------------------------------------------------------
# Gradients through a subgraph (block, namespace, nx and custom bodies)


def _lookup_params(root: Any, path: tuple[str, ...]) -> Any:
    """The parameter map at `path` of the whole state; {} where nothing is stored."""
    for key in path:
        if not isinstance(root, Mapping) or key not in root:
            return {}
        root = root[key]
    return root


@register
class ScopedBody(Op):
    """A layer graph evaluated on its inputs with the parameters at a fixed state path.

    Gradient graphs use it to recompute the inner values of a block, namespace or
    traced body: as part of the gradient graph it runs where no enclosing layer
    scopes its parameters, so it names their place (`path`) itself.
    """

    name = "scoped_body"
    family = "composite"
    doc = "Runs the subgraph `body` on the inputs with the parameters stored at `path`."
    arity = None
    container_inputs = True
    layer_bodies = True
    options = {
        "path": Option((), lambda v: tuple(str(k) for k in v), "where the body's parameters are")
    }

    def infer(self, types, opts, node):
        body = node.subgraphs["body"]
        return output_types(body, infer_types(body, arg_types=list(types)))

    def forward(self, ctx, inputs, params, opts):
        params = _lookup_params(ctx.root, opts["path"])
        return ctx.run(ctx.node.subgraphs["body"], list(inputs), params)

    def onnx(self, ctx, inputs, opts):
        ctx.path = opts["path"]  # the body's parameters live at `path`, not under this node
        return ctx.lower(ctx.node.subgraphs["body"], list(inputs), scoped=True)

    tflite = onnx  # the same generic rule: values, subgraphs and parameters

    def vjp(self, ctx, inputs, output, cot, opts):
        return backprop_body(ctx, ctx.node.subgraphs["body"], list(inputs), cot, opts["path"])


def _case_or_else(x: Axon) -> Axon:
    """An optional input the sweep never feeds, so or_else must take the default."""
    return or_else(input_layer("maybe", shape=(None, 3), optional=True), x.relu())


def _case_scoped(x: Axon) -> Axon:
    """A block's body re-run by `scoped_body` next to the block, reading its parameters."""
    encoder = block(lambda h: h.dense(3).tanh(), name="encoder")
    out = encoder(x)
    body = out.nodes[out.output].subgraphs["body"]
    return container((out, scoped_body([x], body, ("encoder",)).relu()))


ScopedBody.cases = [Case("block_body_again", _case_scoped, [TensorType((None, 2))])]
Block.cases = [Case("shared_twice", _case_block, [TensorType((None, 3))])]
Namespace.cases = [
    Case(
        "dense_under_name",
        lambda x: namespace(x.dense(2), "encoder").relu(),
        [TensorType((None, 3))],
    )
]
Optional.cases = [Case("passthrough", lambda x: optional(x).tanh(), [TensorType((None, 3))])]
Cond.cases = [
    Case(
        "positive_sum",
        lambda x: cond(x, lambda t: t.sum() > 0, x.relu(), x.tanh()),
        [TensorType((None, 3))],
    )
]
OrElse.cases = [Case("missing_input_takes_default", _case_or_else, [TensorType((None, 3))])]
