"""Shape and dtype inference over a graph, from declared input shapes or a template.

Every op's `infer` rule is run in graph order. Types are TensorTypes, containers
of them, `NONE` (a missing optional input, Axon's %Axon.None{}) or None while a
shape is still unknown (an `ax.input` declared without a shape).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from .dtypes import TensorType
from .errors import AxoncError, GraphError, ShapeError
from .ir import Axon, Node, topo_order, tree_leaves
from .registry import get_op


class _NoneType:
    """Axon's %Axon.None{}: the value of a missing optional input and what it reaches."""

    _instance = None

    def __new__(cls) -> _NoneType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ax.NONE"

    def __bool__(self) -> bool:
        return False


NONE = _NoneType()

_declared: weakref.WeakKeyDictionary[Node, Any] = weakref.WeakKeyDictionary()


def _label(node: Node, names: Mapping[int, str] | None) -> str:
    name = (names or {}).get(node.id) or node.name
    return f"layer {name!r} ({node.kind})" if name else f"{node.kind} layer"


def infer_node(
    node: Node,
    in_types: list[Any],
    nodes: Mapping[int, Node],
    names: Mapping[int, str] | None = None,
) -> Any:
    """The output type of one node, given its inputs' types; errors name the layers."""
    spec = get_op(node.op)
    if any(t is None for t in in_types):
        return None
    if not spec.accepts_none and any(t is NONE for t in in_types):
        return NONE
    try:
        if not spec.container_inputs:
            _check_tensor_inputs(in_types)
        return spec.infer(in_types, dict(node.options), node)
    except AxoncError as exc:
        sources = ", ".join(
            f"{_label(nodes[i], names)} -> {t!r}" for i, t in zip(node.inputs, in_types)
        )
        detail = f" (inputs: {sources})" if sources else ""
        raise type(exc)(f"{_label(node, names)}: {exc}{detail}") from None


def _check_tensor_inputs(in_types: list[Any]) -> None:
    """Most ops take tensors: a container reaching one is a graph-building mistake."""
    for t in in_types:
        if t is not NONE and not isinstance(t, TensorType):
            raise ShapeError(
                f"expects a tensor input, got a container {t!r}; take one element with "
                "ax.nx(x, lambda t: t[0]) or use the layer that returned it"
            )


def declare(node: Node, inputs: list[Axon]) -> Any:
    """Infer and memoise a new node's type from its input handles' (already known) types."""
    in_types = []
    for h in inputs:
        parent = h.node
        in_types.append(_declared[parent] if parent in _declared else declared_type(h, h.output))
    labels = {h.output: h.node for h in inputs}
    _declared[node] = infer_node(node, in_types, labels)
    return _declared[node]


def declared_type(model: Axon, nid: int) -> Any:
    """The type of node `nid` from the declared `ax.input` shapes (memoised per node).

    The walk (topo_order's depth-first post-order) stops at memoised nodes, so adding
    a layer costs the new nodes only, not a walk of the whole graph.
    """
    nodes = model.nodes
    on_stack: set[int] = set()
    stack: list[tuple[int, int]] = [(nid, 0)]
    while stack:
        i, k = stack.pop()
        node = nodes.get(i)
        if node is None:
            raise GraphError(f"node {i} is used as an input but is not in the graph")
        if k == 0:
            if node in _declared:
                continue
            if i in on_stack:
                raise GraphError(f"the graph has a cycle through node {i}")
            on_stack.add(i)
        if k < len(node.inputs):
            stack.append((i, k + 1))
            stack.append((node.inputs[k], 0))
        else:
            on_stack.discard(i)
            in_types = [_declared[nodes[j]] for j in node.inputs]
            _declared[node] = infer_node(node, in_types, nodes)
    return _declared[nodes[nid]]


def infer_types(
    model: Axon,
    input_types: Mapping[str, Any] | None = None,
    names: Mapping[int, str] | None = None,
    arg_types: list[Any] | None = None,
) -> dict[int, Any]:
    """Types of every node, with `input_types` (by input name) overriding declared shapes.

    `arg_types` binds a traced body's argument nodes by position.
    """
    input_types = dict(input_types or {})
    types: dict[int, Any] = {}
    for nid in topo_order(model.nodes, model.output):
        node = model.nodes[nid]
        if node.op == "input":
            types[nid] = input_type(node, input_types.get(node.options["name"]))
            continue
        if node.op == "argument" and arg_types is not None:
            types[nid] = arg_types[node.options["index"]]
            continue
        types[nid] = infer_node(node, [types[i] for i in node.inputs], model.nodes, names)
    return types


def input_type(node: Node, given: Any) -> Any:
    """An input node's type: the template given for it, checked against its declared shape."""
    declared = node.options["shape"]
    name = node.options["name"]
    if given is None:
        if node.options["optional"]:
            return NONE
        if declared is None:
            return None
        return TensorType(declared, node.options["dtype"])
    if given is NONE:
        return NONE
    if not isinstance(given, TensorType):
        raise ShapeError(
            f"input {name!r}: expected a template or array, got {type(given).__name__}"
        )
    if declared is not None:
        ok = len(declared) == len(given.shape) and all(
            d is None or g is None or d == g for d, g in zip(declared, given.shape)
        )
        if not ok:
            raise ShapeError(
                f"input {name!r}: expected shape {_fmt(declared)}, got {_fmt(given.shape)}"
            )
    return given


def output_types(model: Axon, types: Mapping[int, Any]) -> Any:
    """The model's output type, in its container structure."""
    from .ir import tree_map

    return tree_map(lambda nid: types[nid], model.output)


def _fmt(shape: Any) -> str:
    return (
        "("
        + ", ".join("None" if d is None else str(d) for d in shape)
        + (",)" if len(shape) == 1 else ")")
    )


def leaves_known(t: Any) -> bool:
    """Whether every leaf of a type tree is a TensorType (no unknown shape, no NONE)."""
    return all(isinstance(x, TensorType) for x in tree_leaves(t))
