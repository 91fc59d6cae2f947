"""`ax.display.as_table`: a model summary like Axon.Display's table.

One row per layer: its name and op, input and output shapes, options that
differ from their defaults, and its parameters with their shapes; then the
totals.
"""

from __future__ import annotations

import math
from typing import Any

from .dtypes import TensorType, to_numpy_dtype
from .ir import Axon, assign_names, topo_order
from .registry import REQUIRED, get_op
from .shape_inference import infer_types, template_types


def _shape(t: Any) -> str:
    if isinstance(t, TensorType):
        return "{" + ", ".join("nil" if d is None else str(d) for d in t.shape) + "}"
    if isinstance(t, (tuple, list)):
        return "{" + ", ".join(_shape(x) for x in t) + "}"
    if isinstance(t, dict):
        return "%{" + ", ".join(f"{k}: {_shape(v)}" for k, v in t.items()) + "}"
    return "none" if t is not None else "?"


def _options(node: Any) -> str:
    spec = get_op(node.op)
    shown = []
    for key, value in node.options.items():
        opt = spec.options[key]
        default = opt.default
        if default is not REQUIRED and opt.check is not None:
            default = opt.check(default)
        if default is REQUIRED or not _same(value, default):
            if hasattr(value, "shape") and not isinstance(value, TensorType):
                value = f"tensor{list(value.shape)}"
            elif isinstance(value, dict) and "name" in value:
                value = value["name"]
            shown.append(f"{key}: {value}")
    return ", ".join(shown)


def _label(names: dict[int, str], node: Any) -> str:
    """Axon's row label: `dense_0 ( dense["input"] )`, or `input ( input )`."""
    if not node.inputs:
        return f"{names[node.id]} ( {node.kind} )"
    parents = ", ".join(f'"{names[i]}"' for i in node.inputs)
    return f"{names[node.id]} ( {node.kind}[{parents}] )"


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except ValueError:  # arrays compare elementwise
        return False


def as_table(model: Axon, template: Any, *, mode: str = "inference") -> str:
    """The model as a text table for the given input template."""
    names = assign_names(model)
    types = infer_types(model, template_types(model, template), names)
    rows = [("Layer", "Input shapes", "Output shape", "Options", "Parameters")]
    total = total_bytes = 0
    seen: set[str] = set()
    for nid in topo_order(model.nodes, model.output):
        node = model.nodes[nid]
        in_types = [types[i] for i in node.inputs]
        params = []
        if node.op not in ("input", "argument") and names[nid] not in seen:
            for p in get_op(node.op).params(in_types, dict(node.options), mode, node):
                count = math.prod(p.shape)
                total += count
                total_bytes += count * to_numpy_dtype(p.dtype).itemsize
                dims = "".join(f"[{d}]" for d in p.shape)
                params.append(f"{'.'.join(p.path)}: {p.dtype}{dims}")
        seen.add(names[nid])
        rows.append(
            (
                _label(names, node),
                ", ".join(_shape(t) for t in in_types),
                _shape(types[nid]),
                _options(node) if node.op != "input" else "",
                "; ".join(params),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    line = "+-" + "-+-".join("-" * w for w in widths) + "-+"
    out = [line]
    for i, row in enumerate(rows):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if i == 0:
            out.append(line.replace("-", "="))
    out.append(line)
    out.append(f"Total parameters: {total} ({total_bytes} bytes)")
    return "\n".join(out)
