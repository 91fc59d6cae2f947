"""Checking an op's gradient rule against float64 central finite differences.

The model runs on the reference interpreter in float64 (float inputs and every
float parameter cast up), the loss is a fixed random weighting of every float
output leaf, and a few sampled elements of every parameter and float input are
perturbed by +-eps: the autodiff gradient must match (f(+) - f(-)) / 2 eps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import axonc.numpy as anp
from axonc.autodiff import gradients, tensor_of
from axonc.build import input_nodes
from axonc.interpreter import run
from axonc.ir import Axon, merge_nodes, tree_leaves, tree_map
from axonc.model_state import ModelState

EPS = 1e-6


def _f64(tree: Any) -> Any:
    return tree_map(
        lambda v: np.asarray(v, np.float64) if np.asarray(v).dtype.kind == "f" else np.asarray(v),
        tree,
    )


def _weights(out: Any, rng: np.random.Generator) -> Any:
    return tree_map(
        lambda v: rng.normal(size=np.shape(v)) if np.asarray(v).dtype.kind == "f" else None, out
    )


def _loss_value(model: Axon, feeds: dict, data: dict, weights: Any, mode: str) -> float:
    out, _ = run(model, feeds, data, mode)
    pairs = zip(tree_leaves(out), tree_leaves(weights))
    return float(sum(np.sum(np.asarray(o, np.float64) * w) for o, w in pairs if w is not None))


def _paths(tree: dict, prefix: tuple = ()) -> list[tuple[str, ...]]:
    out = []
    for k, v in tree.items():
        if isinstance(v, dict):
            out += _paths(v, (*prefix, k))
        else:
            out.append((*prefix, k))
    return out


def _get(tree: dict, path: tuple) -> np.ndarray:
    for k in path:
        tree = tree[k]
    return tree


def check_gradients(
    model: Axon,
    state: ModelState,
    feeds: dict[str, np.ndarray],
    mode: str,
    *,
    seed: int = 0,
    samples: int = 6,
    rtol: float = 1e-4,
    atol: float = 1e-6,
) -> int:
    """Assert autodiff == finite differences; returns how many elements were compared."""
    rng = np.random.default_rng(seed)
    data = _f64(state.data)
    feeds = _f64(feeds)
    out, _ = run(model, feeds, data, mode)
    weights = _weights(out, rng)
    eps = EPS
    if any(np.asarray(o).dtype == np.float32 for o in tree_leaves(out)):
        # a float32 output (integer inputs keep it f32 whatever the parameters): a tiny
        # step drowns in rounding, and such layers are linear in what is perturbed
        eps, rtol = 1e-2, max(rtol, 1e-3)
    trainable = [p for p in _paths(data) if p in state.parameters and data_float(data, p)]
    float_inputs = {
        node.id: name
        for name, node in input_nodes(model).items()
        if name in feeds and feeds[name].dtype.kind == "f"
    }
    outs = tensor_of(model)
    terms = [
        anp.sum(o * w) for o, w in zip(tree_leaves(outs), tree_leaves(weights)) if w is not None
    ]
    loss = terms[0]
    for t in terms[1:]:
        loss = loss + t
    grads, input_cots = gradients(model, loss, data, trainable, mode=mode, inputs=float_inputs)
    targets = {("param", p): g.graph for p, g in grads.items()}
    targets.update({("input", i): c.graph for i, c in input_cots.items() if c is not None})
    keys = list(targets)
    graph = Axon(tuple(g.output for g in targets.values()), merge_nodes(*targets.values()))
    values, _ = run(graph, feeds, data, mode)
    # an input without a cotangent must really not influence the loss: compare with zeros
    for i, c in input_cots.items():
        if c is None:
            keys.append(("input", i))
            values = (*values, np.zeros_like(feeds[float_inputs[i]]))
    checked = 0
    for key, grad in zip(keys, values):
        kind, what = key
        base = _get(data, what) if kind == "param" else feeds[float_inputs[what]]
        grad = np.asarray(grad, np.float64)
        assert grad.shape == base.shape, (key, grad.shape, base.shape)
        flat = rng.choice(base.size, size=min(samples, base.size), replace=False)
        for i in flat:
            idx = np.unravel_index(i, base.shape)
            orig = base[idx]
            base[idx] = orig + eps
            up = _loss_value(model, feeds, data, weights, mode)
            base[idx] = orig - eps
            down = _loss_value(model, feeds, data, weights, mode)
            base[idx] = orig
            fd = (up - down) / (2 * eps)
            np.testing.assert_allclose(grad[idx], fd, rtol=rtol, atol=atol, err_msg=f"{key} {idx}")
            checked += 1
    return checked


def data_float(data: dict, path: tuple) -> bool:
    return np.asarray(_get(data, path)).dtype.kind == "f"
