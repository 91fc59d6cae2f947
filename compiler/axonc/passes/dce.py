"""`dead_node_elimination`: drop nodes the output does not reach."""

from __future__ import annotations

import networkx as nx

from ..ir import tree_leaves
from .manager import register_pass


@register_pass("dead_node_elimination", level=1, cleanup=True)
def dead_node_elimination(g: nx.DiGraph) -> bool:
    """Remove every node from which no output is reachable."""
    live = set()
    for out in tree_leaves(g.graph["output"]):
        if out is not None and out not in live:
            live.add(out)
            live |= nx.ancestors(g, out)
    dead = [n for n in g.nodes if n not in live]
    g.remove_nodes_from(dead)
    return bool(dead)
