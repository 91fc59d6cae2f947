"""Which parameters and state a graph owns: each op's `params` rule, keyed by layer path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ShapeError
from .ir import Axon, Node, assign_names, topo_order
from .registry import ParamSpec, get_op
from .shape_inference import NONE


def collect_specs(
    model: Axon,
    types: Mapping[int, Any],
    mode: str,
    names: Mapping[int, str] | None = None,
) -> dict[tuple[str, ...], ParamSpec]:
    """Every parameter/state leaf of the model by full path (layer, *param path).

    Nodes that share a name (uses of one block, or layers named alike, as in Axon)
    share their parameters, which must then agree in shape and dtype; a node whose
    input is a missing optional input (NONE) owns nothing.
    """
    names = names if names is not None else assign_names(model)
    out: dict[tuple[str, ...], ParamSpec] = {}
    owner: dict[tuple[str, ...], Node] = {}
    for nid in topo_order(model.nodes, model.output):
        node = model.nodes[nid]
        if node.op in ("input", "argument") or types.get(nid) is NONE:
            continue
        in_types = [types[i] for i in node.inputs]
        for spec in get_op(node.op).params(in_types, dict(node.options), mode, node):
            path = (names[nid], *spec.path)
            first = out.setdefault(path, spec)
            owner.setdefault(path, node)
            if (first.shape, first.dtype) != (spec.shape, spec.dtype):
                raise ShapeError(
                    f"two layers named {names[nid]!r} ({owner[path].kind} and {node.kind}) share "
                    f"their parameters, as in Axon, but need {'/'.join(path)} as "
                    f"{first.dtype}{list(first.shape)} and {spec.dtype}{list(spec.shape)}; "
                    "give one of them another name"
                )
    return out
