"""The graph IR: immutable nodes and the `Axon` graph handle.

A `Node` is one op application. An `Axon` is a handle on a graph: an output (a
node id, or a nested tuple/list/dict of node ids) plus every node it reaches.
Handles are immutable, so each layer call returns a new handle that shares the
old nodes, as in Elixir's Axon. Layer constructors from the registry are
attached as methods, so `ax.dense(x, 8)` and `x.dense(8)` are the same call.

This module is the bottom of the house: it imports only the error classes and
the registry. Adding a checked layer node (`shape_inference.make_node`) and
resolving types (`shape_inference.specialize`) live above it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from .errors import GraphError
from .registry import LAYERS, load_ops

_ids = itertools.count()


def new_id() -> int:
    """A process-unique node id; ids grow in creation order."""
    return next(_ids)


@dataclass(frozen=True, eq=False)
class Node:
    """One op application.

    `inputs` are node ids; `options` are the op's normalised options; `name` is an
    explicit layer name or None (generated at build: `dense_0`, ...); `op_name`
    names the layer kind for naming and op counts (defaults to `op`); `subgraphs`
    holds traced bodies (custom layers, blocks, cond branches) by role.
    """

    id: int
    op: str
    inputs: tuple[int, ...]
    options: Mapping[str, Any]
    name: str | None = None
    op_name: str | None = None
    subgraphs: Mapping[str, Axon] = field(default_factory=dict)
    # Hooks (runtime only, never saved): (fn, mode, on) triples in attachment order; mode
    # "inference"/"train"/"both", on "initialize"/"pre_forward"/"forward"/"backward"/"all".
    hooks: tuple[tuple[Callable[[Any], Any], str, str], ...] = ()
    # Set by ax.freeze: init_fn marks this layer's parameters frozen.
    frozen: bool = False
    # Traced layers (nx, custom, cond; runtime only, never saved): retrace(node, input_types)
    # returns the node traced for those input types; until traced once, it has no subgraphs.
    retrace: Callable[[Node, list[Any]], Node] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        object.__setattr__(self, "subgraphs", MappingProxyType(dict(self.subgraphs)))

    @property
    def kind(self) -> str:
        """The name used for generated layer names and op counts."""
        return self.op_name or self.op

    def replace(self, **changes: Any) -> Node:
        return replace(self, **changes)

    def __repr__(self) -> str:
        label = f" name={self.name!r}" if self.name else ""
        return f"Node({self.id}, {self.kind}{label}, inputs={list(self.inputs)})"


def tree_leaves(tree: Any) -> list[Any]:
    """Leaves of a nested tuple/list/dict container, in order (dict keys sorted as given)."""
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in tree_leaves(item)]
    if isinstance(tree, dict):
        return [leaf for item in tree.values() for leaf in tree_leaves(item)]
    return [tree]


def tree_map(fn: Callable[[Any], Any], tree: Any) -> Any:
    """Apply `fn` to every leaf, keeping the container structure."""
    if isinstance(tree, tuple):
        return tuple(tree_map(fn, t) for t in tree)
    if isinstance(tree, list):
        return [tree_map(fn, t) for t in tree]
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    return fn(tree)


class Axon:
    """A handle on a model graph: its output (node id or container) and its nodes.

    A handle made by a layer call holds only its new node and the handles it
    extends; the full node map is assembled the first time `nodes` is read and
    then cached, so building a graph of n layers costs O(n), not O(n^2).
    """

    __slots__ = ("__weakref__", "_nodes", "_output", "_own", "_parents")

    def __init__(
        self,
        output: Any,
        nodes: Mapping[int, Node] | None = None,
        *,
        own: Mapping[int, Node] | None = None,
        parents: tuple[Axon, ...] = (),
    ):
        self._output = output
        self._nodes = None if nodes is None else MappingProxyType(dict(nodes))
        self._own = dict(own or {})
        self._parents = parents

    @property
    def output(self) -> Any:
        """The output node id, or a container of them."""
        return self._output

    @property
    def nodes(self) -> Mapping[int, Node]:
        """Every node the output reaches, by id."""
        if self._nodes is None:
            merged: dict[int, Node] = {}
            stack, seen = [self], set()
            while stack:
                handle = stack.pop()
                if id(handle) in seen:
                    continue
                seen.add(id(handle))
                if handle._nodes is not None:
                    merged.update(handle._nodes)
                else:
                    merged.update(handle._own)
                    stack.extend(handle._parents)
            self._nodes = MappingProxyType(merged)
            self._parents = ()
        return self._nodes

    @property
    def node(self) -> Node:
        """The output node (only for a handle whose output is a single node)."""
        if not isinstance(self._output, int):
            raise GraphError("this graph's output is a container, not a single node")
        if self._output in self._own:
            return self._own[self._output]
        return self.nodes[self._output]

    def __iter__(self) -> Iterator[Any]:
        raise TypeError(
            "an Axon graph is not iterable; layers returning several graphs (split, lstm) "
            "return a tuple of graphs instead"
        )

    def __repr__(self) -> str:
        return describe(self)

    def __getattr__(self, attr: str) -> Any:
        if attr not in LAYERS and not attr.startswith("_"):
            load_ops()
        fn = LAYERS.get(attr)
        if fn is None or not getattr(fn, "_axon_method", True):
            raise AttributeError(f"'Axon' graph has no layer or attribute {attr!r}")

        def method(*args: Any, **kwargs: Any) -> Any:
            return fn(self, *args, **kwargs)

        method.__name__ = attr
        method.__doc__ = fn.__doc__
        return method

    def __dir__(self) -> list[str]:
        load_ops()
        return sorted(set(super().__dir__()) | {k for k, f in LAYERS.items() if f._axon_method})


def merge_nodes(*handles: Axon) -> dict[int, Node]:
    """The union of several handles' nodes (node ids are unique across a process)."""
    out: dict[int, Node] = {}
    for h in handles:
        out.update(h.nodes)
    return out


def topo_order(nodes: Mapping[int, Node], output: Any) -> list[int]:
    """Node ids reachable from `output`, each after its inputs (Axon's naming order).

    The order is a depth-first post-order from the output leaves, inputs visited in
    order, which is the order Axon's compiler assigns generated names in. A cycle
    (possible only in a hand-made or hostile graph) is a GraphError.
    """
    order: list[int] = []
    state: dict[int, int] = {}  # 1 = on the stack, 2 = done
    for root in tree_leaves(output):
        if root is None:
            continue
        stack: list[tuple[int, int]] = [(root, 0)]
        while stack:
            nid, i = stack.pop()
            if i == 0:
                if state.get(nid) == 2:
                    continue
                if state.get(nid) == 1:
                    raise GraphError(f"the graph has a cycle through node {nid}")
                if nid not in nodes:
                    raise GraphError(f"node {nid} is used as an input but is not in the graph")
                state[nid] = 1
            node = nodes[nid]
            if i < len(node.inputs):
                stack.append((nid, i + 1))
                child = node.inputs[i]
                if state.get(child) == 1:
                    raise GraphError(f"the graph has a cycle through node {child}")
                if state.get(child) != 2:
                    stack.append((child, 0))
            else:
                state[nid] = 2
                order.append(nid)
    return order


def assign_names(model: Axon) -> dict[int, str]:
    """Layer names by node id: explicit names, else `<op_name>_<n>` counted per op.

    As in Axon, parameters are keyed by layer name, so layers that share a name
    (explicit, or clashing with a generated one) share their parameters, and inputs
    that share a name are one input. Uses of one block share its name.
    """
    names: dict[int, str] = {}
    counts: dict[str, int] = {}
    shared: dict[Any, str] = {}
    for nid in topo_order(model.nodes, model.output):
        node = model.nodes[nid]
        share = node.options.get("block_id") if node.op == "block" else None
        if share is not None and share in shared:
            names[nid] = shared[share]
            continue
        if node.name is not None:
            name = node.name
        else:
            n = counts.get(node.kind, 0)
            counts[node.kind] = n + 1
            name = f"{node.kind}_{n}"
        names[nid] = name
        if share is not None:
            shared[share] = name
    return names


def as_axon(x: Any, what: str = "input") -> Axon:
    """Check that a layer input is an Axon graph, with an error that says what came."""
    if not isinstance(x, Axon):
        raise GraphError(
            f"{what} must be an Axon graph (from ax.input, ax.constant or a layer), "
            f"got {type(x).__name__}"
        )
    return x


def _fmt_shape(shape: Any) -> str:
    if shape is None:
        return "?"
    dims = ", ".join("nil" if d is None else str(d) for d in shape)
    return "{" + dims + "}"


def describe(model: Axon) -> str:
    """Axon's inspect: inputs with shapes, outputs by layer name, node count."""
    names = _safe_names(model)
    inputs = []
    for nid in topo_order(model.nodes, model.output):
        node = model.nodes[nid]
        if node.op == "input":
            inputs.append(f'"{node.options["name"]}" => {_fmt_shape(node.options["shape"])}')
    outputs = tree_map(lambda nid: names.get(nid, model.nodes[nid].kind), model.output)
    out = outputs if isinstance(outputs, str) else repr(outputs)
    return (
        "#Axon<\n"
        f"  inputs: %{{{', '.join(inputs)}}}\n"
        f'  outputs: "{out}"\n'
        f"  nodes: {len(model.nodes)}\n"
        ">"
    )


def _safe_names(model: Axon) -> dict[int, str]:
    try:
        return assign_names(model)
    except GraphError:  # a cycle in a hand-made graph: print what can be printed
        return {}
