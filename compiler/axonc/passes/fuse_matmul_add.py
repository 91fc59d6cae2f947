"""`fuse_matmul_add`: MatMul + bias Add -> Gemm, and an exact scalar Mul into Gemm's alpha/beta.

- MatMul(A, B) read only by Add(., bias), with A and B of rank 2 and the bias a
  1-D initializer (not a graph input), becomes Gemm(A, B, bias): onnxruntime
  runs one GEMM with the bias as its C operand.
- Mul(Gemm(...), s) with s a one-element initializer that is a power of two,
  the Gemm read by nothing else, scales alpha and beta by s: scaling by a power
  of two is exact in floating point, so (A.B + C) * s = (s A.B) + (s C) bit for
  bit. Other scalars would round differently and are left alone.
Fusions onnxruntime performs itself (Conv + Add, the Gelu erf pattern) are not
repeated here.
"""

from __future__ import annotations

import math

import networkx as nx
import onnx

from .manager import register_pass
from .onnx_graph import (
    attr,
    constant,
    from_nx,
    make_node,
    onnx_node,
    pinned,
    remove_node,
    users,
)


def _ranks(g: nx.DiGraph) -> dict[str, int]:
    """The rank of every value whose shape ONNX shape inference can tell."""
    inferred = onnx.shape_inference.infer_shapes(from_nx(g))
    graph = inferred.graph
    out = {}
    for v in [*graph.input, *graph.value_info, *graph.output]:
        t = v.type.tensor_type
        if t.HasField("shape"):
            out[v.name] = len(t.shape.dim)
    for t in graph.initializer:
        out[t.name] = len(t.dims)
    return out


def _only_reader(g: nx.DiGraph, value: str) -> int | None:
    readers = users(g, value)
    if len(readers) != 1 or pinned(g, value):
        return None
    return next(iter(readers))


def _fuse_bias(g: nx.DiGraph, ranks: dict[str, int]) -> bool:
    changed = False
    for nid in list(nx.lexicographical_topological_sort(g)):
        if nid not in g:
            continue
        mm = onnx_node(g, nid)
        if mm.op_type != "MatMul" or mm.domain not in ("", "ai.onnx"):
            continue
        a, b = mm.input
        if ranks.get(a) != 2 or ranks.get(b) != 2:
            continue
        aid = _only_reader(g, mm.output[0])
        if aid is None:
            continue
        add = onnx_node(g, aid)
        if add.op_type != "Add" or add.domain not in ("", "ai.onnx"):
            continue
        bias = add.input[1] if add.input[0] == mm.output[0] else add.input[0]
        c = constant(g, bias)
        if c is None or c.ndim != 1 or c.dtype.kind != "f" or bias == mm.output[0]:
            continue
        out, name = add.output[0], add.name or mm.name
        remove_node(g, aid)
        remove_node(g, nid)
        make_node(g, "Gemm", [a, b, bias], [out], name or "Gemm")
        changed = True
    return changed


def _power_of_two(x: float) -> bool:
    if not math.isfinite(x) or x == 0:
        return False
    mantissa, _ = math.frexp(abs(x))
    return mantissa == 0.5


def _fold_scale(g: nx.DiGraph) -> bool:
    changed = False
    for nid in list(nx.lexicographical_topological_sort(g)):
        if nid not in g:
            continue
        gemm = onnx_node(g, nid)
        if gemm.op_type != "Gemm" or gemm.domain not in ("", "ai.onnx"):
            continue
        mid = _only_reader(g, gemm.output[0])
        if mid is None:
            continue
        mul = onnx_node(g, mid)
        if mul.op_type != "Mul" or len(mul.input) != 2:
            continue
        other = mul.input[1] if mul.input[0] == gemm.output[0] else mul.input[0]
        s = constant(g, other)
        if s is None or s.size != 1 or s.ndim > 2 or s.dtype.kind != "f" or other in gemm.output:
            continue
        scale = float(s.reshape(()))
        if not _power_of_two(scale):
            continue
        alpha = float(attr(gemm, "alpha", 1.0)) * scale
        beta = float(attr(gemm, "beta", 1.0)) * scale
        keep = {
            a.name: onnx.helper.get_attribute_value(a)
            for a in gemm.attribute
            if a.name in ("transA", "transB")
        }
        inputs, out, name = list(gemm.input), mul.output[0], gemm.name
        remove_node(g, mid)
        remove_node(g, nid)
        make_node(g, "Gemm", inputs, [out], name or "Gemm", alpha=alpha, beta=beta, **keep)
        changed = True
    return changed


@register_pass("fuse_matmul_add", level=2, stage="onnx")
def fuse_matmul_add(g: nx.DiGraph) -> bool:
    """Fuse MatMul + bias Add into Gemm, and fold power-of-two scalar scales into it."""
    has_matmul = any(onnx_node(g, n).op_type == "MatMul" for n in g.nodes)
    fused = _fuse_bias(g, _ranks(g)) if has_matmul else False
    return _fold_scale(g) or fused
