"""The IR as a networkx.DiGraph, the form optimisation passes work on.

Node keys are IR node ids with the `Node` under attribute "node"; an edge u -> v
means u is an input of v (a node's `inputs` tuple stays the authority on order
and repeats). Graph attributes hold the output container ("output"), the model
state ("state", a ModelState), the mode and the target.

`verify` is the IR stage's structural check (the `verify` pass and the pass
manager's `verify_each` run it) and `describe` its text form for dumps.

Layer names are pinned on the way in: every node gets its generated name
(`dense_0`, ...) as an explicit name, so removing or adding nodes never renames
the layers left, whose parameters are keyed by name.
"""

from __future__ import annotations

from collections.abc import Iterator

import networkx as nx

from ..errors import GraphError
from ..ir import Axon, Node, assign_names, tree_leaves, tree_map
from ..model_state import ModelState
from ..registry import Op, get_op


def to_nx(model: Axon, state: ModelState, *, mode: str, target: str) -> nx.DiGraph:
    """The IR graph (and its state) as a DiGraph."""
    g = nx.DiGraph(output=model.output, state=state, mode=mode, target=target)
    names = assign_names(model)
    for nid, node in model.nodes.items():
        if node.name is None and nid in names:
            node = node.replace(name=names[nid])
        g.add_node(nid, node=node)
    for nid, node in model.nodes.items():
        for i in node.inputs:
            g.add_edge(i, nid)
    return g


def from_nx(g: nx.DiGraph) -> tuple[Axon, ModelState]:
    """The DiGraph back as an IR graph and its state (only nodes the output reaches)."""
    nodes = {nid: data["node"] for nid, data in g.nodes(data=True)}
    reach = set()
    stack = [i for i in tree_leaves(g.graph["output"]) if i is not None]
    while stack:
        nid = stack.pop()
        if nid in reach:
            continue
        reach.add(nid)
        stack.extend(nodes[nid].inputs)
    return Axon(g.graph["output"], {i: nodes[i] for i in reach}), g.graph["state"]


def node(g: nx.DiGraph, nid: int) -> Node:
    return g.nodes[nid]["node"]


def nodes(g: nx.DiGraph) -> Iterator[tuple[int, Node]]:
    """(id, Node) pairs in topological order (inputs first, ties by id)."""
    for nid in nx.lexicographical_topological_sort(g):
        yield nid, g.nodes[nid]["node"]


def consumers(g: nx.DiGraph, nid: int) -> list[int]:
    return list(g.successors(nid))


def replace_node(g: nx.DiGraph, new: Node) -> None:
    """Swap a node for a new version with the same id, updating its input edges."""
    old = node(g, new.id)
    for i in set(old.inputs) - set(new.inputs):
        g.remove_edge(i, new.id)
    for i in new.inputs:
        g.add_edge(i, new.id)
    g.nodes[new.id]["node"] = new


def redirect(g: nx.DiGraph, old: int, new: int) -> None:
    """Make every consumer (and the output) use node `new` instead of `old`."""
    for c in consumers(g, old):
        n = node(g, c)
        replace_node(g, n.replace(inputs=tuple(new if i == old else i for i in n.inputs)))
    g.graph["output"] = tree_map(lambda i: new if i == old else i, g.graph["output"])


def add_node(g: nx.DiGraph, new: Node) -> None:
    g.add_node(new.id, node=new)
    for i in new.inputs:
        g.add_edge(i, new.id)


def describe(g: nx.DiGraph) -> str:
    """A readable dump of the graph: one line per node in order (for --dump-after)."""
    lines = []
    for nid, n in nodes(g):
        opts = ", ".join(f"{k}={v!r}" for k, v in n.options.items() if k != "value")
        label = f" {n.name!r}" if n.name else ""
        lines.append(f"%{nid} = {n.kind}{label}({', '.join(f'%{i}' for i in n.inputs)}) {{{opts}}}")
    lines.append(f"return {g.graph['output']!r}")
    return "\n".join(lines)


def verify(g: nx.DiGraph) -> None:
    """Raise GraphError if the graph is malformed."""
    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        raise GraphError(f"the graph has a cycle: {cycle}")
    for nid, data in g.nodes(data=True):
        node = data["node"]
        if node.id != nid:
            raise GraphError(f"node {nid} holds a Node with id {node.id}")
        get_op(node.op)
        for i in node.inputs:
            if i not in g:
                raise GraphError(f"node {nid} ({node.kind}) uses missing node {i}")
            if not g.has_edge(i, nid):
                raise GraphError(f"edge {i} -> {nid} ({node.kind}) is missing")
        for i in g.predecessors(nid):
            if i not in node.inputs:
                raise GraphError(f"edge {i} -> {nid} ({node.kind}) has no matching input")
    for i in tree_leaves(g.graph["output"]):
        if i is not None and i not in g:
            raise GraphError(f"the output uses missing node {i}")


def owns_parameters(n: Node) -> bool:
    """Whether a node may own parameters or state: its op has a params rule or it runs a body.

    Such a node is a distinct layer even when another node looks identical.
    """
    return bool(n.subgraphs) or type(get_op(n.op)).params is not Op.params


def output_ids(g: nx.DiGraph) -> set[int]:
    """The node ids the graph's output container holds."""
    return {i for i in tree_leaves(g.graph["output"]) if i is not None}
