"""Reverse-mode autodiff over the IR: gradients of a scalar with respect to parameters.

Each op's `vjp` rule (next to its other rules) maps the cotangent of its output
to cotangents of its inputs and of its own parameters. Rules are written with
Python operators and `axonc.numpy` on symbolic tensors, so the gradient is an
ordinary IR graph of primitives: the reference interpreter evaluates it and the
ONNX lowering compiles it, exactly like a forward graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from . import numpy as anp
from .dtypes import TensorType, dtype_name, is_float
from .errors import AxoncError, NoGradientError
from .hooks import hooks_for
from .ir import Axon, Node, assign_names, new_id, topo_order, tree_leaves, tree_map
from .ops.special import parameter, unpack
from .registry import Op, get_op
from .shape_inference import NONE, declared_type
from .tracing import Tensor, _traces


class VJPContext:
    """What an op's `vjp` rule may use: its layer's parameters and where to put their gradients."""

    def __init__(self, builder: _Backward, node: Node, path: tuple[str, ...]):
        self._builder = builder
        self.node = node
        self.path = path
        self.name = "/".join(path)
        self.mode = builder.mode
        self.in_types = [declared_type(builder.model, i) for i in node.inputs]
        self.out_type = declared_type(builder.model, node.id)

    def param(self, *key: str) -> Tensor:
        """This layer's parameter or state `key` as a symbolic tensor."""
        return self._builder.parameter((*self.path, *key))

    def add_param_grad(self, key: tuple[str, ...] | str, grad: Tensor) -> None:
        """Add to the gradient of this layer's parameter `key`."""
        key = (key,) if isinstance(key, str) else tuple(key)
        self._builder.add_param_grad((*self.path, *key), grad)

    def wants_param(self, *key: str) -> bool:
        """Whether the gradient of parameter `key` is asked for (frozen ones are not)."""
        return (*self.path, *key) in self._builder.wrt


class _Backward:
    def __init__(self, model: Axon, state: Mapping[str, Any], wrt: set[tuple[str, ...]], mode: str):
        self.model = model
        self.state = state
        self.wrt = wrt
        self.mode = mode
        self.trace = next(_traces)
        self.params: dict[tuple[str, ...], Tensor] = {}
        self.grads: dict[tuple[str, ...], Tensor] = {}

    def tensor(self, nid: int) -> Tensor:
        return Tensor(Axon(nid, self.model.nodes), self.trace)

    def parameter(self, path: tuple[str, ...]) -> Tensor:
        if path not in self.params:
            value = np.asarray(_lookup(self.state, path))
            graph = parameter(path, value.shape, dtype_name(value.dtype))
            self.params[path] = Tensor(graph, self.trace)
        return self.params[path]

    def add_param_grad(self, path: tuple[str, ...], grad: Tensor) -> None:
        if path not in self.wrt:
            return
        self.grads[path] = grad if path not in self.grads else self.grads[path] + grad


def _lookup(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            raise AxoncError(f"the state has no value for {'/'.join(path)!r}")
        tree = tree[key]
    return tree


def _differentiable(t: Any) -> bool:
    return isinstance(t, TensorType) and is_float(t.dtype)


def gradients(
    model: Axon,
    loss: Tensor,
    state: Mapping[str, Any],
    wrt: Iterable[tuple[str, ...]],
    *,
    mode: str = "train",
    inputs: Iterable[int] = (),
) -> tuple[dict[tuple[str, ...], Tensor], dict[int, Any]]:
    """Symbolic gradients of the scalar `loss` w.r.t. parameter paths `wrt` and input nodes.

    `loss` must be a tensor of a trace whose graph contains `model`'s nodes (build it
    with `tensor_of(model)`); parameters not on any path to the loss get a zero
    gradient, input nodes not on one get None. Returns (parameter grads by path,
    input cotangents by node id).
    """
    wrt = {tuple(p) for p in wrt}
    inputs = set(inputs)
    b = _Backward(Axon(loss.graph.output, loss.graph.nodes), state, wrt, mode)
    b.trace = loss._trace
    names = assign_names(Axon(model.output, model.nodes))
    order = topo_order(b.model.nodes, b.model.output)
    needed = _needs_gradient(b.model, order, names, wrt, inputs)
    structural = ("input", "argument", "parameter", "constant")
    missing = sorted(
        {
            b.model.nodes[nid].op
            for nid in needed
            if b.model.nodes[nid].op not in structural
            and type(get_op(b.model.nodes[nid].op)).vjp is Op.vjp
        }
    )
    if missing:
        raise NoGradientError(
            f"no gradient rule (vjp) for: {', '.join(missing)}; these ops lie between a "
            "parameter and the loss"
        )
    cots: dict[int, Any] = {loss.graph.output: anp.ones_like(loss)}
    for nid in reversed(order):
        if nid not in cots or nid not in needed:
            continue
        node = b.model.nodes[nid]
        if node.op in structural:
            if node.op == "parameter":
                b.add_param_grad(tuple(node.options["path"]), cots[nid])
            continue
        if node.hooks:
            cots[nid] = _backward_hooks(node, cots[nid], mode)
        path = (names[nid],) if nid in names else ()
        ctx = VJPContext(b, node, path)
        args = [_as_tensor(b, i) for i in node.inputs]
        in_cots = get_op(node.op).vjp(ctx, args, b.tensor(nid), cots[nid], dict(node.options))
        for i, c in zip(node.inputs, in_cots):
            if c is None or i not in needed:
                continue
            cots[i] = c if i not in cots else _add(cots[i], c)
    grads = {p: b.grads.get(p, anp.zeros_like(b.parameter(p))) for p in sorted(wrt)}
    return grads, {i: cots.get(i) for i in inputs}


def _backward_hooks(node: Node, cot: Any, mode: str) -> Any:
    """The cotangent of `node`'s output with its backward hooks attached (Axon wraps the
    output in a custom gradient that hooks the incoming gradient): each leaf's last node
    is repeated with the hooks on it, so evaluating the gradient calls them."""
    hooks = hooks_for(node, "backward", mode)
    if not hooks:
        return cot

    def hooked(t: Any) -> Any:
        if not isinstance(t, Tensor):
            return t
        last = t.graph.nodes[t.graph.output]
        copy = last.replace(
            id=new_id(), name=None, hooks=tuple((h, "both", "forward") for h in hooks)
        )
        return Tensor(Axon(copy.id, {**t.graph.nodes, copy.id: copy}), t._trace)

    return tree_map(hooked, cot)


def _as_tensor(b: _Backward, nid: int) -> Any:
    t = declared_type(b.model, nid)
    return NONE if t is NONE else b.tensor(nid)


def _add(a: Any, c: Any) -> Any:
    """Sum two cotangents; containers add leaf by leaf and None is a zero."""
    if a is None or c is None:
        return c if a is None else a
    if isinstance(a, (tuple, list)):
        return type(a)(_add(x, y) for x, y in zip(a, c))
    if isinstance(a, dict):
        return {k: _add(a[k], c[k]) for k in a}
    return a + c


def _needs_gradient(
    model: Axon,
    order: list[int],
    names: Mapping[int, str],
    wrt: set[tuple[str, ...]],
    inputs: set[int],
) -> set[int]:
    """Nodes downstream of a wanted parameter (by layer name or `parameter` path) or input."""
    layers = {p[0] for p in wrt}
    needed: set[int] = set()
    for nid in order:
        node = model.nodes[nid]
        owns = (
            nid in inputs
            or names.get(nid) in layers
            or (node.op == "parameter" and tuple(node.options["path"]) in wrt)
        )
        reached = owns or any(i in needed for i in node.inputs)
        if reached and any(_differentiable(t) for t in tree_leaves(declared_type(model, nid))):
            needed.add(nid)
    return needed


def tensor_of(model: Axon, trace: int | None = None) -> Any:
    """The model's output as symbolic tensors of a (new) trace, for building a loss on it.

    A `container` output node, or a layer whose output is a container, is opened up, so
    the result mirrors the output's structure (a tuple / list / dict of tensors).
    """
    trace = next(_traces) if trace is None else trace

    def leaf(nid: int) -> Any:
        node = model.nodes[nid]
        if node.op == "container":
            return tree_map(lambda i: leaf(node.inputs[i]), node.options["structure"])
        out_type = declared_type(model, nid)
        if isinstance(out_type, (tuple, list, dict)):  # a container-valued layer (bidirectional)
            parts = unpack(Axon(nid, model.nodes), out_type)
            return tree_map(lambda g: Tensor(g, trace), parts)
        return Tensor(Axon(nid, model.nodes), trace)

    return tree_map(leaf, model.output)
