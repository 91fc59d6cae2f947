"""`fold_constants_onnx`: nodes computed only from initializers become initializers.

Lowering rules re-lay out parameters with ONNX nodes (a Transpose of a conv
kernel, a Slice flipping a transposed-conv kernel, an Unsqueeze of a bias); this
pass computes them once at compile time with onnx's reference evaluator. Only
exact ops fold: data movement (the result holds the input's values), and the
IEEE-exact element-wise arithmetic (+ - * / sqrt, min/max, abs, neg, casts),
whose correctly rounded result onnxruntime also gives; transcendental functions
and reductions, whose rounding differs between implementations, stay. An
initializer that is also a graph input (train-mode state, parameters fed at
run time) is not a constant and never folds. A result much larger than its
inputs (an Expand or Tile) is not folded either.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from .manager import register_pass
from .onnx_graph import add_initializer, attr, constant, onnx_node, opset, pinned, remove_node

EXACT_OPS = frozenset(
    {
        # data movement
        "Concat", "ConstantOfShape", "DepthToSpace", "Expand", "Flatten", "Gather",
        "GatherElements", "GatherND", "Identity", "Pad", "Reshape", "Shape", "Size", "Slice",
        "SpaceToDepth", "Split", "Squeeze", "Tile", "Transpose", "Unsqueeze", "Constant",
        "Range", "Where", "ReverseSequence", "Trilu", "EyeLike",
        # correctly rounded element-wise arithmetic and comparisons
        "Add", "Sub", "Mul", "Div", "Sqrt", "Neg", "Abs", "Max", "Min", "Cast", "CastLike",
        "Floor", "Ceil", "Round", "Sign", "Relu", "Equal", "Less", "Greater", "LessOrEqual",
        "GreaterOrEqual", "Not", "And", "Or", "Xor", "Clip", "Reciprocal",
    }
)  # fmt: skip

# A folded initializer may have at most this many elements more than its inputs together.
MAX_GROWTH = 1 << 16


def _evaluate(n: onnx.NodeProto, values: dict[str, np.ndarray], version: int) -> list | None:
    """The node's outputs on constant inputs (None if the evaluator cannot run it)."""
    if n.op_type == "Transpose":  # the common case (kernel re-layouts), without the evaluator
        perm = attr(n, "perm")
        return [np.transpose(values[n.input[0]], None if perm is None else list(perm))]
    try:
        return ReferenceEvaluator(n, opsets={"": version}).run(None, values)
    except Exception:
        return None


@register_pass("fold_constants_onnx", level=1, cleanup=True, stage="onnx")
def fold_constants_onnx(g: nx.DiGraph) -> bool:
    """Replace exact nodes whose inputs are all (non-input) initializers by initializers."""
    changed = False
    version = opset(g)
    for nid in list(nx.lexicographical_topological_sort(g)):
        n = onnx_node(g, nid)
        if n.domain not in ("", "ai.onnx") or n.op_type not in EXACT_OPS:
            continue
        if g.nodes[nid]["implicit"] or any(pinned(g, o) for o in n.output if o):
            continue
        values = {i: constant(g, i) for i in n.input if i}
        if any(v is None for v in values.values()):
            continue
        try:
            results = ReferenceEvaluator(n, opsets={"": version}).run(None, values)
        except Exception:
            continue
        budget = MAX_GROWTH + sum(v.size for v in values.values())
        if sum(np.asarray(r).size for r in results) > budget:
            continue
        remove_node(g, nid)
        for name, value in zip(n.output, results):
            if name:
                add_initializer(g, name, np.asarray(value))
        changed = True
    return changed
