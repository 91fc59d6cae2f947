"""`common_subexpression_elimination`: identical computations become one node.

Two nodes are the same computation when they apply the same op (and op_name)
with equal options to the same inputs. A node that may own parameters or state
(dense, batch_norm, a block, a custom layer, a train-mode dropout) is a layer of
its own even when it looks identical to another, so it only merges with a node
of the same layer name: the uses of one block, which share parameters by
design. Nodes with forward hooks are left alone (each hook must still fire).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import networkx as nx
import numpy as np

from ..ir import Node
from .graph import node, owns_parameters, redirect
from .manager import register_pass


class _Unhashable(Exception):
    """An option value this pass cannot compare; the node is left alone."""


def _canonical(value: Any) -> Hashable:
    """A hashable key equal for equal option values (arrays compare by dtype, shape, bytes)."""
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, np.ascontiguousarray(value).tobytes())
    if isinstance(value, Mapping):
        return ("map", tuple((k, _canonical(v)) for k, v in sorted(value.items(), key=repr)))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_canonical(v) for v in value))
    if isinstance(value, np.generic):
        return ("scalar", value.dtype.str, value.item())
    try:
        hash(value)
    except TypeError:
        raise _Unhashable from None
    return (type(value).__name__, value)


def node_key(n: Node) -> Hashable | None:
    """What makes two nodes the same computation, or None if `n` must stay distinct."""
    if n.op in ("input", "argument") or n.hooks:
        return None
    try:
        opts = _canonical(dict(n.options))
    except _Unhashable:
        return None
    name = n.name if owns_parameters(n) else None
    if owns_parameters(n) and name is None:
        return None
    # Each use of a block traces its function again; the block id says it is the same one.
    bodies = () if n.op == "block" else tuple(sorted((r, id(b)) for r, b in n.subgraphs.items()))
    return (n.op, n.kind, n.inputs, opts, name, bodies, n.frozen)


@register_pass("common_subexpression_elimination", level=1, cleanup=True)
def common_subexpression_elimination(g: nx.DiGraph) -> bool:
    """Merge nodes that compute the same thing (same op, options, inputs; same layer if any)."""
    seen: dict[Hashable, int] = {}
    changed = False
    for nid in list(nx.lexicographical_topological_sort(g)):
        key = node_key(node(g, nid))  # read now: earlier merges rewrote this node's inputs
        if key is None:
            continue
        first = seen.setdefault(key, nid)
        if first != nid:
            redirect(g, nid, first)
            g.remove_node(nid)
            changed = True
    return changed
