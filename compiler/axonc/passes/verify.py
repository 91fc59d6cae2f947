"""The `verify` pass: the graph is acyclic, every input exists, every op is registered."""

from __future__ import annotations

import networkx as nx

from ..errors import GraphError
from ..ir import tree_leaves
from ..registry import get_op
from .manager import register_pass


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


@register_pass("verify", level=0)
def verify_pass(g: nx.DiGraph) -> bool:
    """Check the graph's structure; changes nothing."""
    verify(g)
    return False
