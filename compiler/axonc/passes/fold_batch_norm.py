"""`fold_batch_norm` (inference): a batch norm folds into the dense or conv layer next to it.

Inference batch norm is the per-channel affine map y = s * (z - mean) + beta with
s = gamma / sqrt(var + epsilon). When z = x . K + b comes from a dense, conv,
conv_transpose or depthwise_conv layer whose only consumer is the batch norm, and
the batch norm's channel axis is that layer's output channel axis, then
y = x . (K * s) + ((b - mean) * s + beta): the kernel is scaled along its
output-channel axis and the bias shifted (a bias is created when the layer had
none: `use_bias` becomes True and the bias leaf joins the state). The batch-norm
node and its state leaves go away. Only directly adjacent pairs fold (never
across an activation); layers with hooks or tied parameters are left alone.

A batch norm on the last axis whose only consumer is a dense layer (the common
dense -> relu -> batch_norm -> dropout -> dense: dropout is gone in inference)
folds forward: dense(s * x + t) = x . (s[:, None] * K) + (t . K + b) with
t = beta - s * mean. Convolutions do not fold forward (their zero padding would
see t). The folded parameters are computed in float64 and stored in the kernel's dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import networkx as nx
import numpy as np

from ..errors import AxoncError, StateError
from ..ir import Node
from ..model_state import ModelState
from ..shape_inference import infer_types
from .graph import from_nx, node, output_ids, redirect, replace_node
from .manager import register_pass

FOLDABLE = ("dense", "conv", "conv_transpose", "depthwise_conv")
BN_KEYS = ("gamma", "beta", "mean", "var")


def _out_axis(p: Node, kernel: np.ndarray) -> int:
    """The kernel axis indexed by output channel: {in, out} / HWIO last, OIHW first."""
    if p.op != "dense" and p.options["channels"] == "first":
        return 0
    return kernel.ndim - 1


def _axis_matches(
    p: Node, bn: Node, kernel: np.ndarray, dense_rank: Callable[[], int | None]
) -> bool:
    """Whether the batch norm normalises the layer's output channel axis."""
    ci = bn.options["channel_index"]
    if p.op == "dense":
        return ci == -1 or ci == (dense_rank() or 0) - 1
    rank = kernel.ndim  # a conv's output has the rank of its kernel
    want = 1 if p.options["channels"] == "first" else rank - 1
    return -rank <= ci < rank and ci % rank == want


def _leaf(state: ModelState, path: tuple[str, ...]) -> np.ndarray | None:
    try:
        value = state.get(path)
    except StateError:
        return None
    return None if isinstance(value, dict) else np.asarray(value)


class _Folder:
    """Collects the folds of one pass, then rewrites the state once (linear in its size)."""

    def __init__(self, g: nx.DiGraph):
        self.g = g
        self.state: ModelState = g.graph["state"]
        self.tied = {p[0] for dest, (src, _) in self.state.ties.items() for p in (dest, src)}
        self.updated: dict[str, dict[str, np.ndarray]] = {}  # layer -> new kernel / bias
        self.removed: set[str] = set()
        self.ranks: dict[int, Any] | None = None

    def rank(self, nid: int) -> int | None:
        if self.ranks is None:
            try:
                self.ranks = infer_types(from_nx(self.g)[0])
            except AxoncError:
                self.ranks = {}
        t = self.ranks.get(nid)
        return getattr(t, "rank", None)

    def param(self, layer: str, key: str) -> np.ndarray | None:
        pending = self.updated.get(layer, {})
        return pending[key] if key in pending else _leaf(self.state, (layer, key))

    def try_fold(self, p: Node, bn: Node) -> bool:
        if p.name in self.tied or bn.name in self.tied:
            return False
        kernel = self.param(p.name, "kernel")
        if kernel is None or kernel.dtype.kind != "f":
            return False
        if not _axis_matches(p, bn, kernel, lambda: self.rank(p.id)):
            return False
        axis = _out_axis(p, kernel)
        c = kernel.shape[axis]
        vectors = [_leaf(self.state, (bn.name, k)) for k in BN_KEYS]
        bias = self.param(p.name, "bias") if p.options["use_bias"] else np.zeros(c, kernel.dtype)
        if bias is None or any(v is None or v.shape != (c,) for v in [*vectors, bias]):
            return False
        gamma, beta, mean, var = (v.astype(np.float64) for v in vectors)
        scale = gamma / np.sqrt(var + bn.options["epsilon"])
        shape = [1] * kernel.ndim
        shape[axis] = c
        new_kernel = kernel.astype(np.float64) * scale.reshape(shape)
        new_bias = (bias.astype(np.float64) - mean) * scale + beta
        self.updated[p.name] = {
            "kernel": new_kernel.astype(kernel.dtype),
            "bias": new_bias.astype(bias.dtype),
        }
        self.removed.add(bn.name)
        return True

    def try_fold_forward(self, bn: Node, d: Node) -> bool:
        """Fold `bn` into the dense layer `d` that reads it (see the module doc)."""
        if d.name in self.tied or bn.name in self.tied:
            return False
        kernel = self.param(d.name, "kernel")
        if kernel is None or kernel.dtype.kind != "f" or kernel.ndim != 2:
            return False
        rank = self.rank(bn.id)
        ci = bn.options["channel_index"]
        if rank is None or not (ci == -1 or ci == rank - 1):
            return False
        c = kernel.shape[0]
        vectors = [_leaf(self.state, (bn.name, k)) for k in BN_KEYS]
        out = kernel.shape[1]
        bias = self.param(d.name, "bias") if d.options["use_bias"] else np.zeros(out, kernel.dtype)
        if (
            bias is None
            or bias.shape != (out,)
            or any(v is None or v.shape != (c,) for v in vectors)
        ):
            return False
        gamma, beta, mean, var = (v.astype(np.float64) for v in vectors)
        scale = gamma / np.sqrt(var + bn.options["epsilon"])
        shift = beta - scale * mean
        k64 = kernel.astype(np.float64)
        self.updated[d.name] = {
            "kernel": (scale[:, None] * k64).astype(kernel.dtype),
            "bias": (shift @ k64 + bias.astype(np.float64)).astype(bias.dtype),
        }
        self.removed.add(bn.name)
        return True

    def new_state(self) -> ModelState:
        s = self.state
        data = s.data
        for layer in self.removed:
            data.pop(layer, None)
        new_paths = set()
        for layer, leaves in self.updated.items():
            data[layer] = {**data[layer], **leaves}
            new_paths |= {(layer, k) for k in leaves}

        def keep(paths: frozenset) -> set:
            return {p for p in paths if p[0] not in self.removed}

        frozen = keep(s.frozen) | {
            (layer, "bias") for layer in self.updated if (layer, "kernel") in s.frozen
        }
        return ModelState(
            data,
            parameters=keep(s.parameters) | new_paths,
            state=keep(s.state),
            frozen=frozen,
            ties=dict(s.ties),
        )


@register_pass("fold_batch_norm", level=2, modes=("inference",))
def fold_batch_norm(g: nx.DiGraph) -> bool:
    """Fold inference batch norms into the dense / conv layer before them, or the dense after."""
    folder = _Folder(g)
    outputs = output_ids(g)
    for nid in list(nx.lexicographical_topological_sort(g)):
        bn = node(g, nid)
        if bn.op != "batch_norm" or bn.hooks:
            continue
        pid = bn.inputs[0]
        p = node(g, pid)
        alone = p.op in FOLDABLE and not p.hooks and g.out_degree(pid) == 1 and pid not in outputs
        if alone and folder.try_fold(p, bn):
            _with_bias(g, p)
            redirect(g, nid, pid)
            g.remove_node(nid)
            outputs = output_ids(g) if nid in outputs else outputs
            continue
        readers = list(g.successors(nid))
        if len(readers) != 1 or nid in outputs:
            continue
        d = node(g, readers[0])
        if d.op != "dense" or d.hooks:
            continue
        if folder.try_fold_forward(bn, d):
            _with_bias(g, d)
            redirect(g, nid, pid)
            g.remove_node(nid)
    if not folder.updated:
        return False
    g.graph["state"] = folder.new_state()
    return True


def _with_bias(g: nx.DiGraph, layer: Node) -> None:
    """A folded layer always has a bias (created when it had none)."""
    if not layer.options["use_bias"]:
        replace_node(g, layer.replace(options={**layer.options, "use_bias": True}))
