"""Algebraic simplification of the lowered ONNX graph (what autodiff and updates leave).

Two passes. `simplify_algebra_onnx` applies rewrites that give bit-identical
results, in every mode:

- x * 1, 1 * x, x / 1, x + 0, 0 + x, x - 0 -> x (a constant of ones or zeros that
  does not widen x's shape);
- Neg(Neg(x)) -> x;
- Where(c, 1, 0) -> Cast(c) for constants filled with one and zero that do not widen
  c's shape (a 0/1 mask, as a relu's derivative; onnxruntime's Where with a scalar
  broadcast took 1.7x the Cast's time on a cnn-sized mask, bench/conv_grad.py);
- Shape(x) of a fully static shape -> a constant (so ConstantOfShape and the rest of
  a scalar sub-graph fold);
- Reshape(Reshape(x, s1), s2) -> Reshape(x, s2) for a constant s2 without 0s, and a
  Reshape to the shape x already has -> x.

`reassociate_updates_onnx` (train mode only) applies two rewrites that are equal in
exact arithmetic and differ by one rounding: (a + b) - a -> b (the update a
learning-rate scale isolates from new = param + update), and a chain of scalar
factors s1 * (s2 * t) -> (s1 * s2) * t, so a full-size tensor is multiplied once.
Both leave an optimizer step within float32 rounding of the unsimplified step.
Transposes feeding MatMul are left to onnxruntime, which folds them into Gemm's
transA/transB itself.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import onnx

from .manager import register_pass
from .onnx_graph import (
    add_initializer,
    add_node,
    attr,
    constant,
    fresh,
    from_nx,
    onnx_node,
    pinned,
    producer,
    remove_node,
    replace_uses,
    users,
)

Dims = tuple[int | str | None, ...]


def value_shapes(g: nx.DiGraph) -> dict[str, Dims]:
    """Every value's shape by ONNX shape inference: ints, symbolic names, None if unknown."""
    try:
        model = onnx.shape_inference.infer_shapes(from_nx(g))
    except Exception:
        return {}
    graph = model.graph
    out: dict[str, Dims] = {}
    for vi in (*graph.input, *graph.value_info, *graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = tuple(
                d.dim_value if d.HasField("dim_value") else d.dim_param or None for d in t.shape.dim
            )
    for name, init in g.graph["initializers"].items():
        out.setdefault(name, tuple(init.dims))
    return out


def _has_ops(g: nx.DiGraph, ops: set[str]) -> bool:
    """Whether any default-domain node is one of `ops` (shape inference is skipped if not)."""
    return any(
        onnx_node(g, nid).op_type in ops and onnx_node(g, nid).domain in ("", "ai.onnx")
        for nid in g.nodes
    )


def _known(shape: Dims | None) -> bool:
    return shape is not None and all(d is not None for d in shape)


def _same_shape(a: Dims | None, b: Dims | None) -> bool:
    return _known(a) and a == b


def _forward(g: nx.DiGraph, nid: int, value: str) -> bool:
    """Make every reader of node `nid`'s output read `value` instead (False if pinned)."""
    return replace_uses(g, onnx_node(g, nid).output[0], value)


def _fill(c: np.ndarray | None) -> float | None:
    """The single value a constant holds everywhere, else None."""
    if c is None or c.size == 0 or c.dtype.kind not in "fc":
        return None
    first = c.flat[0]
    return float(first) if np.all(c == first) else None


def _identity_operand(g: nx.DiGraph, n: onnx.NodeProto, shapes: dict[str, Dims]) -> str | None:
    """For x*1, x/1, x+0, x-0 (either side where commutative): x, if the result is x."""
    units = {"Mul": (1.0, (0, 1)), "Div": (1.0, (1,)), "Add": (0.0, (0, 1)), "Sub": (0.0, (1,))}
    if n.op_type not in units or len(n.input) != 2:
        return None
    unit, sides = units[n.op_type]
    for side in sides:
        c = constant(g, n.input[side])
        other = n.input[1 - side]
        if _fill(c) == unit and _same_shape(shapes.get(other), shapes.get(n.output[0])):
            return other
    return None


def _static_shape_of(n: onnx.NodeProto, shapes: dict[str, Dims]) -> np.ndarray | None:
    shape = shapes.get(n.input[0])
    if not _known(shape) or not all(isinstance(d, int) for d in shape):
        return None
    start, end = attr(n, "start", 0), attr(n, "end", None)
    return np.array(shape[slice(start, end)], np.int64)


def _noop_reshape(g: nx.DiGraph, n: onnx.NodeProto, shapes: dict[str, Dims]) -> bool:
    """Whether Reshape(x, s) gives x's own shape: equal ranks, s matching x per dimension
    (0 copies, and a single -1 stands for x's only dimension not known statically)."""
    target = constant(g, n.input[1])
    shape = shapes.get(n.input[0])
    if target is None or shape is None or len(shape) != target.size:
        return False
    unknown = [i for i, d in enumerate(shape) if not isinstance(d, int)]
    for i, (s, d) in enumerate(zip(target.tolist(), shape, strict=True)):
        if s == 0 or s == d or (s == -1 and unknown in ([], [i])):
            continue
        return False
    return True


def _where_mask_to_cast(
    g: nx.DiGraph, nid: int, n: onnx.NodeProto, shapes: dict[str, Dims]
) -> bool:
    """Where(c, 1, 0) -> Cast(c, to the constants' dtype), if the output has c's shape."""
    ones, zeros = constant(g, n.input[1]), constant(g, n.input[2])
    if _fill(ones) != 1.0 or _fill(zeros) != 0.0 or ones.dtype != zeros.dtype:
        return False
    if not _same_shape(shapes.get(n.input[0]), shapes.get(n.output[0])):
        return False
    to = onnx.helper.np_dtype_to_tensor_dtype(ones.dtype)
    new = onnx.helper.make_node("Cast", [n.input[0]], list(n.output), name=n.name, to=to)
    remove_node(g, nid)
    add_node(g, new)
    return True


def _standard_nodes(g: nx.DiGraph):
    """(id, node) of the default-domain nodes still in the graph, in topological order."""
    for nid in list(nx.lexicographical_topological_sort(g)):
        if nid in g and onnx_node(g, nid).domain in ("", "ai.onnx"):
            yield nid, onnx_node(g, nid)


@register_pass("simplify_algebra_onnx", level=2, cleanup=True, stage="onnx")
def simplify_algebra_onnx(g: nx.DiGraph) -> bool:
    """Exact algebraic identities: x*1, x+0, Neg(Neg x), static Shape, Reshape pairs."""
    if not _has_ops(g, {"Mul", "Div", "Add", "Sub", "Neg", "Shape", "Reshape", "Where"}):
        return False
    shapes = value_shapes(g)
    changed = False
    for nid, n in _standard_nodes(g):
        op = n.op_type
        if op in ("Mul", "Div", "Add", "Sub"):
            x = _identity_operand(g, n, shapes)
            changed |= x is not None and _forward(g, nid, x)
        elif op == "Where":
            changed |= _where_mask_to_cast(g, nid, n, shapes)
        elif op == "Neg":
            p = producer(g, n.input[0])
            if p is not None and onnx_node(g, p).op_type == "Neg":
                changed |= _forward(g, nid, onnx_node(g, p).input[0])
        elif op == "Shape" and not pinned(g, n.output[0]):
            value = _static_shape_of(n, shapes)
            if value is not None:
                remove_node(g, nid)
                add_initializer(g, n.output[0], value)
                changed = True
        elif op == "Reshape" and attr(n, "allowzero", 0) == 0:
            if _noop_reshape(g, n, shapes):
                changed |= _forward(g, nid, n.input[0])
                continue
            p = producer(g, n.input[0])
            target = constant(g, n.input[1])
            if (
                p is not None
                and onnx_node(g, p).op_type == "Reshape"
                and target is not None
                and not np.any(target == 0)
            ):
                inner = onnx_node(g, p).input[0]
                new = onnx.helper.make_node(
                    "Reshape", [inner, n.input[1]], list(n.output), name=n.name
                )
                remove_node(g, nid)
                add_node(g, new)
                changed = True
    return changed


def _is_scalar(name: str, shapes: dict[str, Dims]) -> bool:
    return shapes.get(name) == ()


def _cancel_add_sub(g: nx.DiGraph, n: onnx.NodeProto, shapes: dict[str, Dims]) -> str | None:
    """For Sub(Add(a, b), a) or Sub(Add(b, a), a): b, if it has the Sub's shape."""
    p = producer(g, n.input[0])
    if p is None or onnx_node(g, p).op_type != "Add":
        return None
    a, b = onnx_node(g, p).input
    keep = b if a == n.input[1] else a if b == n.input[1] else None
    if keep is None or not _same_shape(shapes.get(keep), shapes.get(n.output[0])):
        return None
    return keep


@register_pass("reassociate_updates_onnx", level=2, modes=("train",), cleanup=True, stage="onnx")
def reassociate_updates_onnx(g: nx.DiGraph) -> bool:
    """(a + b) - a -> b; s1 * (s2 * t) -> (s1 * s2) * t for scalars s1, s2 (train mode)."""
    if not _has_ops(g, {"Sub", "Mul"}):
        return False
    shapes = value_shapes(g)
    changed = False
    for nid, n in _standard_nodes(g):
        if n.op_type == "Sub":
            keep = _cancel_add_sub(g, n, shapes)
            changed |= keep is not None and _forward(g, nid, keep)
        elif n.op_type == "Mul":
            changed |= _hoist_scalar(g, nid, shapes)
    return changed


def _hoist_scalar(g: nx.DiGraph, nid: int, shapes: dict[str, Dims]) -> bool:
    """Mul(s1, Mul(s2, t)) (any operand order) -> Mul(Mul(s1, s2), t); the inner Mul must
    have no other reader, so no full-size product is computed twice."""
    n = onnx_node(g, nid)
    for side in (0, 1):
        s1, inner = n.input[side], n.input[1 - side]
        p = producer(g, inner)
        if not _is_scalar(s1, shapes) or p is None or len(users(g, inner)) != 1:
            continue
        m = onnx_node(g, p)
        if m.op_type != "Mul" or pinned(g, inner):
            continue
        for s2, t in ((m.input[0], m.input[1]), (m.input[1], m.input[0])):
            if not _is_scalar(s2, shapes) or _is_scalar(t, shapes):
                continue
            if not _same_shape(shapes.get(t), shapes.get(n.output[0])):
                continue
            scale = fresh(g, f"{n.name}/scale")
            add_node(g, onnx.helper.make_node("Mul", [s1, s2], [scale], name=fresh(g, scale)))
            new = onnx.helper.make_node("Mul", [scale, t], list(n.output), name=n.name)
            remove_node(g, nid)
            add_node(g, new)
            return True
    return False
