"""`ax.display`: model summaries as Axon.Display draws them.

`as_table`: one row per layer (its name and op, input and output shapes, options
that differ from their defaults, its parameters with their shapes), then the totals.
`as_graph`: the Mermaid flowchart of Axon.Display.as_graph, as text that notebooks
render as a diagram.
"""

from __future__ import annotations

import math
from typing import Any

from .dtypes import TensorType, to_numpy_dtype
from .errors import OptionError
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


# ---- as_graph ------------------------------------------------------------------------------

# Axon routes these layers' inputs through a container node (`layer(op, [container({x, y})])`);
# the flowchart shows that node as Axon draws it.
_CONTAINER_INPUTS = ("add", "subtract", "multiply", "concatenate")
_DIRECTIONS = {"top_down": "TD", "left_right": "LR"}


class Mermaid(str):
    """Mermaid flowchart text; a notebook shows it as a diagram (a ```mermaid block)."""

    def _repr_markdown_(self) -> str:
        return f"```mermaid\n{self}\n```"


def _elixir_shape(t: Any) -> str:
    """A shape as Elixir's inspect prints it: {2, 8}, {{2, 32}, {2, 32}}, nil for unknown."""
    if isinstance(t, TensorType):
        return "{" + ", ".join("nil" if d is None else str(d) for d in t.shape) + "}"
    if isinstance(t, tuple):
        return "{" + ", ".join(_elixir_shape(x) for x in t) + "}"
    if isinstance(t, list):
        return "[" + ", ".join(_elixir_shape(x) for x in t) + "]"
    if isinstance(t, dict):
        return "%{" + ", ".join(f'"{k}" => {_elixir_shape(v)}' for k, v in t.items()) + "}"
    return "%Axon.None{}" if t is not None else "nil"


def as_graph(model: Axon, template: Any, *, direction: str = "top_down") -> Mermaid:
    """The model's flowchart for the given input template (Axon.Display.as_graph).

    The text is Axon's: `graph TD;`, one node per layer labelled `name (:op) shape`
    (inputs drawn as parallelograms), in creation order, then the edges, last layer
    first. Node ids are numbered from 0 in creation order (Axon prints its internal
    ids). Axon feeds add / subtract / multiply / concatenate through a container node,
    which is drawn too; other container nodes Axon builds internally (an RNN's hidden
    state) have no counterpart in axonc's graph and are not. `direction`: "top_down"
    (TD) or "left_right" (LR).
    """
    if direction not in _DIRECTIONS:
        raise OptionError(
            f"as_graph: expected a valid direction ('top_down' or 'left_right'), got {direction!r}"
        )
    names = assign_names(model)
    types = infer_types(model, template_types(model, template), names)
    order = topo_order(model.nodes, model.output)
    # the nodes Axon has: the graph's, plus a container before each combinator
    containers = {nid: f"c{nid}" for nid in order if model.nodes[nid].op in _CONTAINER_INPUTS}
    created = sorted(order)
    keys: list[Any] = []
    for nid in created:
        if nid in containers:
            keys.append(containers[nid])
        keys.append(nid)
    ids = {key: i for i, key in enumerate(keys)}
    labels: dict[Any, tuple[str, str, str]] = {}
    parents: dict[Any, list[Any]] = {}
    counts = {"container": 0}
    used = set(names.values())
    for nid in order:  # Axon's post-order: names and edges are discovered in this order
        node = model.nodes[nid]
        inputs: list[Any] = list(node.inputs)
        if nid in containers:
            key = containers[nid]
            name = f"container_{counts['container']}"
            while name in used:
                counts["container"] += 1
                name = f"container_{counts['container']}"
            counts["container"] += 1
            used.add(name)
            labels[key] = (name, "container", _elixir_shape(tuple(types[i] for i in inputs)))
            parents[key], inputs = inputs, [key]
        if node.kind == "container":
            counts["container"] += 1
        labels[nid] = (names[nid], node.kind, _elixir_shape(types[nid]))
        parents[nid] = inputs
    lines = [f"graph {_DIRECTIONS[direction]};"]
    node_lines = []
    for key in keys:
        name, op, shape = labels[key]
        text = f"{name} (:{op}) {shape}"
        is_input = op == "input"
        node_lines.append(f'{ids[key]}[/"{text}"/]' if is_input else f'{ids[key]}["{text}"]')
    edges = []
    for key in _post_order(order, containers):
        edges.extend(f"{ids[p]} --> {ids[key]}" for p in parents[key])
    lines.append(";\n".join(node_lines) + ";")
    lines.append(";\n".join(reversed(edges)) + ";")
    return Mermaid("\n".join(lines))


def _post_order(order: list[int], containers: dict[int, str]) -> list[Any]:
    """The graph's post-order with each combinator's container just before it."""
    out: list[Any] = []
    for nid in order:
        if nid in containers:
            out.append(containers[nid])
        out.append(nid)
    return out
