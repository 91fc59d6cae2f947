"""The `verify` pass: the IR graph's structural check (passes/graph.py) as a pass of its own."""

from __future__ import annotations

import networkx as nx

from .graph import verify
from .manager import register_pass


@register_pass("verify", level=0)
def verify_pass(g: nx.DiGraph) -> bool:
    """Check the graph's structure; changes nothing."""
    verify(g)
    return False
