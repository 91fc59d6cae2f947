"""`specialize_mode`: in inference mode, dropout-family layers are identities; remove them."""

from __future__ import annotations

import networkx as nx

from .graph import nodes, redirect
from .manager import register_pass

IDENTITY_IN_INFERENCE = ("dropout", "alpha_dropout", "spatial_dropout", "feature_alpha_dropout")


@register_pass("specialize_mode", level=1, modes=("inference",), cleanup=True)
def specialize_mode(g: nx.DiGraph) -> bool:
    """Bypass inference-mode identities (the dropout family) so later passes see through them."""
    changed = False
    for nid, node in list(nodes(g)):
        if node.op in IDENTITY_IN_INFERENCE:
            redirect(g, nid, node.inputs[0])
            changed = True
    return changed
