"""`dead_value_elimination_onnx`: drop ONNX nodes and initializers no graph output uses.

Graph inputs are the model's interface and stay, with the initializers that
give them defaults (train-mode state tensors).
"""

from __future__ import annotations

import networkx as nx

from .manager import register_pass
from .onnx_graph import producer, remove_node


@register_pass("dead_value_elimination_onnx", level=1, cleanup=True, stage="onnx")
def dead_value_elimination_onnx(g: nx.DiGraph) -> bool:
    """Remove nodes and initializers from which no graph output is reachable."""
    live: set[int] = set()
    stack = [p for p in (producer(g, o) for o in g.graph["outputs"]) if p is not None]
    while stack:
        nid = stack.pop()
        if nid in live:
            continue
        live.add(nid)
        stack.extend(u for u in g.predecessors(nid) if u not in live)
    dead = [nid for nid in g.nodes if nid not in live]
    for nid in dead:
        remove_node(g, nid)
    used = g.graph["users"].keys() | g.graph["outputs"] | g.graph["inputs"]
    unused = [name for name in g.graph["initializers"] if name not in used]
    for name in unused:
        del g.graph["initializers"][name]
    return bool(dead or unused)
