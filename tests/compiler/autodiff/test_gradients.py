"""The gradient sweep: every declared case of every op with a gradient rule, both modes.

Each case's parameters are drawn at random (so no ReLU sits on its kink at a zero
bias), the model runs in float64 on the reference interpreter, and the autodiff
gradients of a random weighting of its outputs, with respect to every float
parameter and input, must match central finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
from axonc.dtypes import TensorType, is_float
from axonc.ir import tree_leaves
from axonc.model_state import ModelState
from axonc.registry import OPS, Op
from axonc.shape_inference import declared_type
from tests import gradcheck, op_cases


def _has_vjp(op: Op) -> bool:
    return type(op).vjp is not Op.vjp


def _float_output(case) -> bool:
    """Whether the case's output has a float leaf (boolean/integer results have no gradient)."""
    model = op_cases.model(case)
    leaves = tree_leaves(declared_type(model, model.output))
    return any(isinstance(t, TensorType) and is_float(t.dtype) for t in leaves)


SWEEP = [
    pytest.param(op, case, mode, id=f"{op.name}-{case.name}-{mode}")
    for op in OPS.values()
    if _has_vjp(op)
    for case in op.cases
    if _float_output(case)
    for mode in case.modes
]


def _randomized(state: ModelState, seed: int) -> ModelState:
    rng = np.random.default_rng(seed)

    def draw(v):
        v = np.asarray(v)
        if v.dtype.kind != "f":
            return v
        if v.ndim and v.size:
            return (0.5 * rng.normal(size=v.shape) + (1.0 if np.all(v == 1) else 0.0)).astype(
                v.dtype
            )
        return v

    data = {}
    for path in state.paths():
        value = state.get(path)
        cur = data
        for key in path[:-1]:
            cur = cur.setdefault(key, {})
        cur[path[-1]] = draw(value) if "var" not in path[-1] else np.abs(draw(value)) + 0.5
    return ModelState(data, parameters=state.parameters, state=state.state)


@pytest.mark.parametrize(("op", "case", "mode"), SWEEP)
def test_gradient_matches_finite_differences(op, case, mode):
    model = op_cases.model(case)
    init_fn, _ = ax.build(model, mode=mode, compiler="reference")
    state = _randomized(init_fn(op_cases.templates(case, 2)), seed=3)
    feeds = op_cases.feeds(case, 2, seed=4)
    gradcheck.check_gradients(model, state, feeds, mode, samples=4)


def test_sweep_lists_the_ops_without_a_gradient_rule():
    """Until every op has a rule, the ones without are named here (and nowhere silently)."""
    without = sorted(
        name
        for name, op in OPS.items()
        if op.arity != 0 and not _has_vjp(op) and any(_float_output(c) for c in op.cases)
    )
    assert without == sorted(WITHOUT_GRADIENT), without


# Ops that do not have a gradient rule yet: differentiating through them raises
# NoGradientError naming them. Shrinks as rules land.
WITHOUT_GRADIENT: set[str] = set()
