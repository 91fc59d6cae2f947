"""Traced bodies run inside another op: their leaves as graphs, and the gradient through them.

nx and custom layers, blocks, namespaces and cond hold traced subgraphs; their
gradient rules share what is here. `backprop_body` runs a body's gradient rules in
reverse, the inner values they read recomputed by one `scoped_body` node; a custom
layer with optional inputs picks, when the gradient graph runs, the cotangent of
the body traced for the inputs given (`choose_present`). The `scoped_body` and
`or_else` nodes are made through the registry (the composite family defines them).
"""

from __future__ import annotations

from typing import Any

from .. import numpy as anp
from ..autodiff import VJPContext
from ..dtypes import TensorType, is_float
from ..errors import NoGradientError
from ..ir import Axon, assign_names, topo_order, tree_leaves, tree_map
from ..parameters import collect_specs
from ..registry import Op, get_op
from ..shape_inference import NONE, declared_type, make_node
from ..tracing import Tensor
from .special import elem


def scoped_body(inputs: list[Axon], body: Axon, path: tuple[str, ...]) -> Axon:
    """A node evaluating `body` on `inputs` with the parameters stored at `path`."""
    return make_node("scoped_body", inputs, {"path": path}, subgraphs={"body": body})


def leaf_graphs(x: Any, t: Any) -> list[Axon]:
    """One graph per leaf of the (maybe container-valued) tensor `x` of type `t`, in
    `flatten_types` order: how a traced body numbers its arguments."""

    def walk(t: Any, path: tuple) -> list[Axon]:
        if isinstance(t, (tuple, list)):
            return [g for i, v in enumerate(t) for g in walk(v, (*path, i))]
        if isinstance(t, dict):
            return [g for k, v in t.items() for g in walk(v, (*path, k))]
        return [elem(x.graph, *path) if path else x.graph]

    return walk(t, ())


def graph_tensors(ctx: Any, graphs: list[Axon]) -> list[Tensor]:
    """Graphs as tensors of the gradient graph a VJP rule (context `ctx`) is building."""
    return [Tensor(g, ctx._builder.trace) for g in graphs]


def leaf_structure(t: Any, leaves: list[Any]) -> Any:
    """`leaves` (in `flatten_types` order) put back into the container structure of type `t`;
    a container whose leaves are all None is None (a zero cotangent)."""
    it = iter(leaves)
    out = tree_map(lambda _: next(it), t)
    return None if all(v is None for v in tree_leaves(out)) else out


def gate_on(ctx: Any, value: Any, needs: list[Any]) -> Any:
    """`value`, made missing (ax.NONE) when the gradient graph runs without one of `needs`.

    A `scoped_body` node returning its first input does it: like every layer that does
    not accept a missing input, it is skipped when one of its inputs is missing.
    """
    if not needs:
        return value
    arg = make_node("argument", [], {"index": 0, "shape": value.shape, "dtype": value.type.dtype})
    (gated,) = graph_tensors(ctx, [scoped_body([value.graph, *(n.graph for n in needs)], arg, ())])
    return gated


def choose_present(ctx: Any, options: list[tuple[Any, list[Any]]], like: Any) -> Any:
    """One cotangent among candidates, picked when the gradient graph runs.

    `options` pairs each candidate (None = zero) with the optional inputs it needs,
    most needs first: a custom layer's body traced for those inputs present. The first
    candidate whose needs are all given wins (`gate_on` + `or_else`), i.e. the one for
    exactly the inputs given. None when every candidate is None.
    """
    if all(c is None for c, _ in options):
        return None
    out = None
    for c, needs in reversed(options):
        c = gate_on(ctx, anp.zeros_like(like) if c is None else c, needs)
        out = (
            c
            if out is None
            else graph_tensors(ctx, [make_node("or_else", [c.graph, out.graph])])[0]
        )
    return out


class _BodyBuilder:
    """autodiff's builder as seen from inside a subgraph: types from the body,
    parameters, their gradients and the wanted set from the enclosing builder."""

    def __init__(self, outer: Any, body: Axon):
        self._outer = outer
        self.model = body
        self.mode = outer.mode
        self.wrt = outer.wrt
        self.trace = outer.trace

    def parameter(self, path: tuple[str, ...]) -> Any:
        return self._outer.parameter(path)

    def add_param_grad(self, path: tuple[str, ...], grad: Any) -> None:
        self._outer.add_param_grad(path, grad)


def _differentiable(t: Any) -> bool:
    return any(isinstance(leaf, TensorType) and is_float(leaf.dtype) for leaf in tree_leaves(t))


def _add_cot(a: Any, c: Any) -> Any:
    """Sum two cotangents; containers add leaf by leaf and None is a zero."""
    if a is None or c is None:
        return c if a is None else a
    if isinstance(a, (tuple, list)):
        return type(a)(_add_cot(x, y) for x, y in zip(a, c, strict=True))
    if isinstance(a, dict):
        return {k: _add_cot(a[k], c[k]) for k in a}
    return a + c


def _seed(cots: dict[int, Any], out: Any, cot: Any) -> None:
    """Put the body output's cotangent `cot` on the nodes of `out` (a tree of node ids)."""
    if cot is None:
        return
    if isinstance(out, (tuple, list)):
        for o, c in zip(out, cot, strict=True):
            _seed(cots, o, c)
    elif isinstance(out, dict):
        for k, o in out.items():
            _seed(cots, o, cot[k])
    else:
        cots[out] = _add_cot(cots.get(out), cot)


def backprop_body(
    ctx: Any, body: Axon, args: list[Any], cot: Any, prefix: tuple[str, ...]
) -> list[Any]:
    """Cotangents of a subgraph's arguments (`args`, tensors bound by position) for `cot`.

    Runs the gradient rules of the body's nodes in reverse, as `autodiff.gradients`
    does for a whole model, with each layer's parameters at (*prefix, its name in
    the body): a block's dense_0 kernel is block_0/dense_0/kernel. The inner values
    the rules read are recomputed by one `scoped_body` node over the same arguments.
    """
    builder = _BodyBuilder(ctx._builder, body)
    names = assign_names(body)
    order = topo_order(body.nodes, body.output)
    types = {nid: declared_type(body, nid) for nid in order}
    wanted = {
        p[0] for p in collect_specs(body, types, ctx.mode, names) if (*prefix, *p) in builder.wrt
    }
    needed: set[int] = set()
    for nid in order:
        node = body.nodes[nid]
        owns = node.op == "argument" or names.get(nid) in wanted
        if (owns or any(i in needed for i in node.inputs)) and _differentiable(types[nid]):
            needed.add(nid)
    structural = ("input", "argument", "parameter", "constant")
    missing = sorted(
        {
            body.nodes[nid].op
            for nid in needed
            if body.nodes[nid].op not in structural
            and type(get_op(body.nodes[nid].op)).vjp is Op.vjp
        }
    )
    if missing:
        raise NoGradientError(
            f"no gradient rule (vjp) for: {', '.join(missing)}; these ops lie between a "
            f"parameter and the output of {ctx.name!r}"
        )
    used = sorted(
        {
            v
            for nid in needed
            if body.nodes[nid].op not in structural
            for v in (nid, *body.nodes[nid].inputs)
            if body.nodes[v].op != "argument" and types[v] is not NONE
        },
        key=order.index,
    )
    args_by_index = {}
    for nid in order:
        if body.nodes[nid].op == "argument":
            args_by_index[nid] = body.nodes[nid].options["index"]
    values: dict[int, Any] = {nid: args[i] for nid, i in args_by_index.items()}
    if used:
        probe = scoped_body(
            [a.graph for a in args], Axon((body.output, tuple(used)), body.nodes), tuple(prefix)
        )
        for k, nid in enumerate(used):
            values[nid] = Tensor(elem(probe, 1, k), builder.trace)
    cots: dict[int, Any] = {}
    _seed(cots, body.output, cot)
    for nid in reversed(order):
        if nid not in cots or nid not in needed:
            continue
        node = body.nodes[nid]
        if node.op == "parameter":
            builder.add_param_grad(tuple(node.options["path"]), cots[nid])
        if node.op in structural:
            continue
        inner = VJPContext(builder, node, (*prefix, names[nid]))
        in_values = [NONE if types[i] is NONE else values[i] for i in node.inputs]
        in_cots = get_op(node.op).vjp(inner, in_values, values[nid], cots[nid], dict(node.options))
        for i, c in zip(node.inputs, in_cots, strict=True):
            if c is not None and i in needed:
                cots[i] = _add_cot(cots.get(i), c)
    out: list[Any] = [None] * len(args)
    for nid, i in args_by_index.items():
        out[i] = cots.get(nid)
    return out
