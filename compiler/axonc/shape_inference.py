"""Shape and dtype inference over a graph, from declared input shapes or a template.

Every op's `infer` rule is run in graph order. Types are TensorTypes, containers
of them, `NONE` (a missing optional input, Axon's %Axon.None{}) or None while a
shape is still unknown (an `ax.input` declared without a shape).

A declared input shape is a hint, as in Axon 0.8.1 (which does not check data
against it): while layers are added it gives early shape errors, and when a
template or data arrives, `specialize` resolves the graph for the types given,
warning once (ShapeHintWarning) where they contradict the declaration. An
input declared without a dtype is taken as f32 while layers are added, but a
dtype rule it breaks then (integer ids into `embedding`) makes the type unknown
instead of an error: the data's dtype decides at `specialize`.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from .dtypes import TensorType, type_of
from .errors import (
    AxoncError,
    DTypeError,
    GraphError,
    InputError,
    OptionError,
    ShapeError,
    ShapeHintWarning,
)
from .ir import Axon, Node, as_axon, assign_names, new_id, topo_order, tree_leaves, tree_map
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
# Nodes whose declared type rests on an input declared without a dtype (f32 assumed).
_guessed: weakref.WeakSet[Node] = weakref.WeakSet()


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
    if any(t is None for t in in_types) or pending(node):
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


def pending(node: Node) -> bool:
    """A traced layer whose function could not be traced yet (its input types are unknown)."""
    return node.retrace is not None and not node.subgraphs


def _declare_one(node: Node, in_types: list[Any], parents: list[Node], nodes: Any) -> None:
    """Memoise one node's declared type; a rule broken only by an assumed dtype defers."""
    guessed = any(p in _guessed for p in parents) or (
        node.op in ("input", "argument") and node.options["dtype"] is None
    )
    if guessed:
        _guessed.add(node)
    try:
        _declared[node] = infer_node(node, in_types, nodes)
    except DTypeError:
        if not guessed:
            raise
        _declared[node] = None


def pending_layers(model: Axon) -> list[str]:
    """Names (or kinds) of the traced layers still waiting for their input types, nested too."""
    out = []
    for node in model.nodes.values():
        if pending(node):
            out.append(node.name or node.kind)
        for body in node.subgraphs.values():
            out.extend(pending_layers(body))
    return out


def is_guessed(graph: Axon) -> bool:
    """Whether a graph's declared output type rests on an assumed (f32) input dtype."""
    declared_type(graph, graph.output)
    return graph.nodes[graph.output] in _guessed


def declare(node: Node, inputs: list[Axon]) -> Any:
    """Infer and memoise a new node's type from its input handles' (already known) types."""
    in_types = []
    for h in inputs:
        parent = h.node
        in_types.append(_declared[parent] if parent in _declared else declared_type(h, h.output))
    labels = {h.output: h.node for h in inputs}
    _declare_one(node, in_types, [h.node for h in inputs], labels)
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
            parents = [nodes[j] for j in node.inputs]
            _declare_one(node, [_declared[p] for p in parents], parents, nodes)
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
    """An input node's type: the template given for it (see `resolve_input`), else declared."""
    declared = node.options["shape"]
    if given is None:
        if node.options["optional"]:
            return NONE
        if declared is None:
            return None
        return TensorType(declared, node.options["dtype"] or "f32")
    if given is NONE:
        return NONE
    return resolve_input(node, given, batch=False)


_warned: set[int] = set()


def _fits(declared: tuple, shape: tuple) -> bool:
    return len(declared) == len(shape) and all(
        d is None or g is None or d == g for d, g in zip(declared, shape)
    )


def resolve_input(node: Node, given: Any, *, batch: bool = True) -> TensorType:
    """The type an input takes for a template or data of type `given`.

    The given shape wins over the declared one (a hint, as in Axon 0.8.1): a
    contradiction warns once per input. With `batch` the first dim (the batch)
    is dynamic unless declared static, so one resolution serves every batch
    size. A declared dtype wins (data is cast to it); without one the given
    dtype is taken.
    """
    name = node.options["name"]
    if not isinstance(given, TensorType):
        raise ShapeError(
            f"input {name!r}: expected a template or array, got {type(given).__name__}"
        )
    declared = node.options["shape"]
    shape = given.shape
    fits = declared is not None and _fits(declared, shape)
    if declared is not None and not fits and node.id not in _warned:
        _warned.add(node.id)
        warnings.warn(
            f"input {name!r} is declared with shape {_fmt(declared)} but got {_fmt(shape)}; "
            "following the data, as Axon does (a declared shape is a hint)",
            ShapeHintWarning,
            stacklevel=4,
        )
    if batch and shape and not (fits and declared[0] is not None):
        shape = (None, *shape[1:])
    return TensorType(shape, node.options["dtype"] or given.dtype)


def output_types(model: Axon, types: Mapping[int, Any]) -> Any:
    """The model's output type, in its container structure."""
    return tree_map(lambda nid: types[nid], model.output)


def specialize(
    model: Axon,
    input_types: Mapping[str, Any] | None = None,
    names: Mapping[int, str] | None = None,
    arg_types: list[Any] | None = None,
) -> Axon:
    """The graph resolved for these input types (by input name, or `arg_types` by position).

    Each input and argument node takes its given type as its declared one; traced
    layers are traced again for their resolved input types (`Node.retrace`) and
    layers made of layers (`Op.layer_bodies`) have their bodies resolved, so
    parameter shape functions, custom layers, autodiff and every backend see
    concrete types. Every node is a new object with the same id, so layer names
    are unchanged. Give `input_types` already resolved (`resolve_input`).
    """
    input_types = dict(input_types or {})
    types: dict[int, Any] = {}
    nodes: dict[int, Node] = {}
    for nid in topo_order(model.nodes, model.output):
        node = model.nodes[nid]
        if node.op == "input":
            t = input_type(node, input_types.get(node.options["name"]))
            node = _typed_leaf(node, t)
        elif node.op == "argument" and arg_types is not None:
            t = arg_types[node.options["index"]]
            node = _typed_leaf(node, t)
        else:
            in_types = [types[i] for i in node.inputs]
            node = _specialize_node(node, in_types)
            t = infer_node(node, in_types, nodes, names)
        types[nid] = t
        nodes[nid] = node.replace()
    return Axon(model.output, nodes)


def _typed_leaf(node: Node, t: Any) -> Node:
    """An input or argument node declaring the resolved type `t` (unchanged for NONE/None).

    An optional input that is given is present in this resolution: no longer optional.
    """
    if not isinstance(t, TensorType):
        return node
    opts = {**node.options, "shape": t.shape, "dtype": t.dtype}
    if node.op == "input":
        opts["optional"] = False
    return node.replace(options=opts)


def _specialize_node(node: Node, in_types: list[Any]) -> Node:
    """One node resolved for its input types: traced again, or its layer bodies resolved."""
    if any(t is None for t in in_types):
        return node
    if not get_op(node.op).accepts_none and any(t is NONE for t in in_types):
        return node
    if node.retrace is not None:
        return node.retrace(node, in_types)
    if node.subgraphs and get_op(node.op).layer_bodies:
        args = list(in_types)
        bodies = {role: specialize(body, arg_types=args) for role, body in node.subgraphs.items()}
        return node.replace(subgraphs=bodies)
    return node


def _fmt(shape: Any) -> str:
    return (
        "("
        + ", ".join("None" if d is None else str(d) for d in shape)
        + (",)" if len(shape) == 1 else ")")
    )


def leaves_known(t: Any) -> bool:
    """Whether every leaf of a type tree is a TensorType (no unknown shape, no NONE)."""
    return all(isinstance(x, TensorType) for x in tree_leaves(t))


def make_node(
    op: str,
    inputs: list[Axon],
    options: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    op_name: str | None = None,
    subgraphs: Mapping[str, Axon] | None = None,
    retrace: Callable[[Node, list[Any]], Node] | None = None,
) -> Axon:
    """Apply a registered op to input graphs: normalise options, check types, return a handle.

    Each input must be a single-node graph. The new node's type is inferred at once
    from the inputs' declared shapes, so a mismatch is reported where the layer is
    added, naming both layers.
    """
    spec = get_op(op)
    label = f"{op_name or op} layer" + (f" {name!r}" if name else "")
    if name is not None and (not isinstance(name, str) or not name):
        raise GraphError(f"{label}: name must be a non-empty string, got {name!r}")
    handles = [as_axon(x, f"{label}: input {i}") for i, x in enumerate(inputs)]
    if spec.arity is not None and len(handles) != spec.arity:
        raise GraphError(f"{label}: expected {spec.arity} input(s), got {len(handles)}")
    ids = []
    for i, h in enumerate(handles):
        if not isinstance(h.output, int):
            raise GraphError(
                f"{label}: input {i} is a container graph; take one element of it first"
            )
        ids.append(h.output)
    opts = spec.normalize_options(dict(options or {}), label)
    node = Node(
        new_id(), op, tuple(ids), opts, name, op_name, dict(subgraphs or {}), retrace=retrace
    )
    declare(node, handles)
    return Axon(node.id, own={node.id: node}, parents=tuple(handles))


# Resolved graphs per model handle, by input signature (handles are immutable).
_resolved: weakref.WeakKeyDictionary[Axon, dict[tuple, Axon]] = weakref.WeakKeyDictionary()


def input_nodes(model: Axon) -> dict[str, Any]:
    """The model's input nodes by input name, in graph order."""
    out = {}
    for nid in topo_order(model.nodes, model.output):
        node = model.nodes[nid]
        if node.op == "input":
            out[node.options["name"]] = node
    return out


def template_types(model: Axon, template: Any) -> dict[str, Any]:
    """Input types by name from a template: a TensorType, an array, or a dict of them."""
    inputs = input_nodes(model)
    if not isinstance(template, Mapping):
        required = [n for n, node in inputs.items() if not node.options["optional"]]
        if len(inputs) != 1 and len(required) != 1:
            raise InputError(
                f"the model has inputs {', '.join(map(repr, inputs))}; "
                "give a dict of templates or arrays keyed by input name"
            )
        template = {(required or list(inputs))[0]: template}
    unknown = sorted(set(template) - set(inputs))
    if unknown:
        raise InputError(
            f"unknown input(s) {', '.join(map(repr, unknown))}; the model's inputs are "
            f"{', '.join(map(repr, inputs)) or 'none'}"
        )
    out: dict[str, Any] = {}
    for name, t in template.items():
        if t is None or t is NONE:
            out[name] = NONE
        elif isinstance(t, TensorType):
            out[name] = t
        else:
            out[name] = _array_type(inputs[name], t)
    return out


def _array_type(node: Any, value: Any) -> TensorType:
    """An array's type as an input's template: f64 counts as f32 where no dtype is declared.

    numpy's default float is f64 where Nx's is f32, and the data of an input without
    a dtype is cast so (see `_feeds`), so the template must agree.
    """
    t = type_of(value)
    return t.with_dtype("f32") if t.dtype == "f64" and node.options["dtype"] is None else t


def signature(model: Axon, given: Mapping[str, Any]) -> tuple:
    """The input signature `given` (types by input name) resolves to: the cache key."""
    nodes = input_nodes(model)
    return tuple(
        (name, NONE if t is NONE else resolve_input(nodes[name], t))
        for name, t in sorted(given.items())
    )


def resolve(model: Axon, given: Mapping[str, Any]) -> Axon:
    """`model` resolved for these input types (template or data types by input name).

    The resolved graph (see `shape_inference.specialize`) is cached per signature, so
    each new signature traces custom layers and compiles once.
    """
    key = signature(model, given)
    cache = _resolved.setdefault(model, {})
    if key not in cache:
        cache[key] = specialize(model, dict(key), assign_names(model))
    return cache[key]


def declared_types(model: Axon) -> dict[str, TensorType]:
    """The inputs' declared types, for an export without a template.

    A required input declared without a shape cannot be exported so: the error
    says to give a template. A declared shape without a dtype is taken as f32. An
    optional input is part of the graph only when a template gives it.
    """
    out = {}
    for name, node in input_nodes(model).items():
        shape = node.options["shape"]
        if node.options["optional"]:
            continue
        if shape is None:
            raise OptionError(
                f"input {name!r} has no declared shape, so the exported graph's input shape "
                "is unknown: give a template, e.g. template={"
                f"{name!r}: ax.template((1, ...), 'f32')}} (`axonc compile --template "
                f"{name}=1,...:f32`), or give ax.input a shape"
            )
        out[name] = TensorType(shape, node.options["dtype"] or "f32")
    return out
