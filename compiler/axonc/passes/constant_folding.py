"""`constant_folding`: a node computed only from constants becomes a constant.

The value is the op's own reference forward rule run on the constant inputs, in
the graph's mode, so folding never changes a result. Left alone: nodes that may
own parameters or state (their values live in the model state, not the graph),
nodes with forward hooks, the dropout family in train mode (random), results
that are not a single tensor, and results much larger than their inputs (a
broadcast or tile of a small constant would bloat the exported model).
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from ..errors import AxoncError
from ..interpreter import run
from ..ir import Axon, Node
from ..registry import get_op
from ..shape_inference import NONE
from .graph import node, owns_parameters, replace_node
from .manager import register_pass
from .specialize_mode import IDENTITY_IN_INFERENCE

# A folded constant may have at most this many elements more than its inputs together.
MAX_GROWTH = 1 << 16


def fold_value(n: Node, inputs: list[Node], mode: str) -> np.ndarray | None:
    """The value of `n` over constant input nodes, or None when it must not be folded."""
    if n.hooks or owns_parameters(n) or (mode == "train" and n.op in IDENTITY_IN_INFERENCE):
        return None
    nodes = {c.id: c for c in inputs}
    nodes[n.id] = n
    try:
        out, _ = run(Axon(n.id, nodes), {}, {}, mode)
    except AxoncError:
        return None  # the runtime reports it, with the real inputs' context
    if out is NONE or isinstance(out, (tuple, list, dict)):
        return None
    value = np.asarray(out)
    if value.dtype == object:
        return None
    if value.size > MAX_GROWTH + sum(np.asarray(c.options["value"]).size for c in inputs):
        return None
    try:
        return get_op("constant").normalize_options({"value": value}, "folded constant")["value"]
    except AxoncError:
        return None


@register_pass("constant_folding", level=1, cleanup=True)
def constant_folding(g: nx.DiGraph) -> bool:
    """Replace nodes whose inputs are all constants (and that own nothing) by constants."""
    mode = g.graph["mode"]
    changed = False
    for nid in list(nx.lexicographical_topological_sort(g)):
        n = node(g, nid)
        if not n.inputs or n.op == "constant":
            continue
        inputs = [node(g, i) for i in n.inputs]
        if any(c.op != "constant" for c in inputs):
            continue
        value = fold_value(n, inputs, mode)
        if value is None:
            continue
        folded = Node(nid, "constant", (), {"value": value}, name=n.name)
        replace_node(g, folded)
        changed = True
    return changed
