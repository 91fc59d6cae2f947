"""Which parameters and state a graph owns: each op's `params` rule, keyed by layer path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .ir import Axon, assign_names, topo_order
from .registry import ParamSpec, get_op
from .shape_inference import NONE


def collect_specs(
    model: Axon,
    types: Mapping[int, Any],
    mode: str,
    names: Mapping[int, str] | None = None,
) -> dict[tuple[str, ...], ParamSpec]:
    """Every parameter/state leaf of the model by full path (layer, *param path).

    Nodes that share a name (uses of one block) declare their parameters once; a
    node whose input is a missing optional input (NONE) owns nothing.
    """
    names = names if names is not None else assign_names(model)
    out: dict[tuple[str, ...], ParamSpec] = {}
    for nid in topo_order(model.nodes, model.output):
        node = model.nodes[nid]
        if node.op in ("input", "argument") or types.get(nid) is NONE:
            continue
        in_types = [types[i] for i in node.inputs]
        for spec in get_op(node.op).params(in_types, dict(node.options), mode, node):
            out.setdefault((names[nid], *spec.path), spec)
    return out
