"""`inline_output_identities`: outputs computed in place instead of copied by an Identity.

Lowering exposes each graph output through an Identity node when the value has
another name; onnxruntime keeps such a copy whenever the value also feeds
another node (a train step's new parameters feed its loss, ...). Renaming the
producer's output to the graph output's name removes the copy.
"""

from __future__ import annotations

import networkx as nx

from .manager import register_pass
from .onnx_graph import onnx_node, pinned, producer, remove_node, rename_output, replace_uses


@register_pass("inline_output_identities", level=1, cleanup=True, stage="onnx")
def inline_output_identities(g: nx.DiGraph) -> bool:
    """Rename a node's output to the graph output an Identity copies it to, dropping the copy."""
    changed = False
    for out in list(g.graph["outputs"]):
        nid = producer(g, out)
        if nid is None or onnx_node(g, nid).op_type != "Identity":
            continue
        (value,) = onnx_node(g, nid).input
        source = producer(g, value)
        if source is None or pinned(g, value):
            continue
        remove_node(g, nid)
        replace_uses(g, value, out)
        rename_output(g, source, value, out)
        changed = True
    return changed
