"""`cancel_transposes`: move Transposes down through element-wise ops and cancel pairs.

Axon is channels-last, ONNX Conv and pooling are channels-first, so every conv
or pool layer lowers to Transpose(NHWC->NCHW), Conv, Transpose(NCHW->NHWC). In
conv -> relu -> max_pool -> conv the inner pairs meet once the transposes move
past the element-wise ops between them. Rewrites, run to a fixpoint:

- a Transpose whose only reader is an element-wise unary op U (Relu, Tanh, Clip
  with scalar bounds, ...; or a binary op whose other operand is a one-element
  constant) swaps with it: U(Transpose(x, p)) = Transpose(U(x), p), exactly;
- Transpose(Transpose(x, p1), p2) becomes one Transpose(x, p1[p2]);
- a Transpose with the identity permutation is removed.
Every rewrite computes the same values, so numerics do not change at all.
"""

from __future__ import annotations

from collections import deque

import networkx as nx
import onnx

from .manager import register_pass
from .onnx_graph import (
    add_node,
    attr,
    constant,
    fresh,
    make_node,
    onnx_node,
    pinned,
    producer,
    remove_node,
    rename_output,
    replace_uses,
    set_inputs,
    users,
)

UNARY = frozenset(
    {
        "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Cast", "Ceil", "Celu", "Cos",
        "Cosh", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish", "Identity",
        "IsInf", "IsNaN", "LeakyRelu", "Log", "Mish", "Neg", "Not", "Reciprocal", "Relu", "Round",
        "Selu", "Sigmoid", "Sign", "Sin", "Sinh", "Softplus", "Softsign", "Sqrt", "Tan", "Tanh",
        "ThresholdedRelu", "Clip",
    }
)  # fmt: skip
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "PRelu"})


def _perm(n: onnx.NodeProto) -> list[int] | None:
    p = attr(n, "perm")
    return None if p is None else list(p)


def _scalar_like(g: nx.DiGraph, value: str, rank: int) -> bool:
    """A constant with one element and rank <= `rank`: it broadcasts the same in any layout."""
    c = constant(g, value)
    return c is not None and c.size == 1 and c.ndim <= rank


def _elementwise(g: nx.DiGraph, n: onnx.NodeProto, x: str, rank: int) -> bool:
    """Whether `n` is element-wise in `x` (its only non-scalar input), so commutes with a perm."""
    if n.domain not in ("", "ai.onnx") or n.output[0] == "" or len(n.output) != 1:
        return False
    others = [i for i in n.input if i != x]
    if n.op_type in UNARY:
        if n.op_type == "Clip":  # bounds are inputs; they must be scalars
            return n.input[0] == x and all(i == "" or _scalar_like(g, i, rank) for i in others)
        return list(n.input) == [x]
    if n.op_type in BINARY and len(n.input) == 2 and x in n.input and len(others) == 1:
        return _scalar_like(g, others[0], rank) and (n.op_type != "PRelu" or n.input[0] == x)
    return False


class _Rewriter:
    def __init__(self, g: nx.DiGraph):
        self.g = g
        self.work = deque(nid for nid in g.nodes if onnx_node(g, nid).op_type == "Transpose")
        self.changed = False

    def run(self) -> bool:
        while self.work:
            nid = self.work.popleft()
            if nid in self.g and self.step(nid):
                self.changed = True
        return self.changed

    def step(self, nid: int) -> bool:
        g = self.g
        t = onnx_node(g, nid)
        perm = _perm(t)
        if t.op_type != "Transpose" or perm is None:
            return False
        x, y = t.input[0], t.output[0]
        if perm == sorted(perm):
            return self._remove_identity(nid, x, y)
        up = producer(g, x)
        if up is not None and onnx_node(g, up).op_type == "Transpose":
            inner = _perm(onnx_node(g, up))
            if inner is not None and len(inner) == len(perm):
                set_inputs(g, nid, [onnx_node(g, up).input[0]])
                del t.attribute[:]
                t.attribute.append(onnx.helper.make_attribute("perm", [inner[i] for i in perm]))
                self._drop_if_dead(up)
                self.work.append(nid)
                return True
        readers = users(g, y)
        if len(readers) != 1 or pinned(g, y):
            return False
        (uid,) = readers
        u = onnx_node(g, uid)
        if not _elementwise(g, u, y, len(perm)):
            return False
        # U(Transpose(x)) -> Transpose(U(x)), the new Transpose producing U's old output.
        moved = onnx.NodeProto()
        moved.CopyFrom(u)
        inner_out = fresh(g, f"{u.output[0]}/channels_first")
        del moved.input[:]
        moved.input.extend(x if i == y else i for i in u.input)
        del moved.output[:]
        moved.output.append(inner_out)
        moved.name = fresh(g, u.name or u.op_type)
        out = u.output[0]
        remove_node(g, uid)
        remove_node(g, nid)
        add_node(g, moved)
        self.work.append(
            make_node(g, "Transpose", [inner_out], [out], t.name or "Transpose", perm=perm)
        )
        self._requeue_readers(out)
        return True

    def _requeue_readers(self, value: str) -> None:
        """Transposes reading `value` may now merge with the one producing it."""
        g = self.g
        self.work.extend(u for u in users(g, value) if onnx_node(g, u).op_type == "Transpose")

    def _remove_identity(self, nid: int, x: str, y: str) -> bool:
        """Drop an identity Transpose: its readers read x, or x's producer produces y."""
        g = self.g
        if replace_uses(g, y, x):
            remove_node(g, nid)
            self._drop_if_dead(producer(g, x))
            self._requeue_readers(x)
            return True
        up = producer(g, x)
        if up is None or users(g, x) != {nid} or pinned(g, x):
            return False  # y is a graph output and x cannot take its name
        remove_node(g, nid)
        rename_output(g, up, x, y)
        return True

    def _drop_if_dead(self, nid: int | None) -> None:
        """Remove a node none of whose outputs is read any more (a bypassed Transpose)."""
        if nid is None:
            return
        n = onnx_node(self.g, nid)
        if all(not users(self.g, o) and o not in self.g.graph["outputs"] for o in n.output):
            remove_node(self.g, nid)


@register_pass("cancel_transposes", level=2, stage="onnx")
def cancel_transposes(g: nx.DiGraph) -> bool:
    """Push Transposes through element-wise ops, merge consecutive ones, drop identities."""
    return _Rewriter(g).run()
