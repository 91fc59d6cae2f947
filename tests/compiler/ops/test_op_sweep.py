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
from axonc.dtypes import TensorType
from axonc.ir import tree_leaves, tree_map
from axonc.registry import OPS
from axonc.shape_inference import infer_types, output_types
from tests import op_cases

# Ops that only exist inside other constructs and are exercised through them.
STRUCTURAL = {"input", "argument", "elem", "container", "parameter"}

SWEEP = [
    pytest.param(op, case, mode, id=f"{op.name}-{case.name}-{mode}")
    for op in OPS.values()
    for case in op.cases
    for mode in case.modes
]


def test_every_op_declares_cases():
    missing = sorted(name for name, op in OPS.items() if not op.cases and name not in STRUCTURAL)
    assert missing == [], f"ops without test cases: {missing}"


def _types_of(value):
    return tree_map(lambda v: TensorType(np.shape(v), str(np.asarray(v).dtype)), value)


@pytest.mark.parametrize(("op", "case", "mode"), SWEEP)
def test_case_shapes_match_inference_at_batch_1_and_3(op, case, mode):
    model = op_cases.model(case)
    init_fn, predict_fn = ax.build(model, mode=mode, compiler="reference")
    state = init_fn(op_cases.templates(case, 1))
    for batch in (1, 3):
        out = predict_fn(state, op_cases.feeds(case, batch, seed=batch))
        prediction = out["prediction"] if mode == "train" else out
        expected = output_types(model, infer_types(model, op_cases.templates(case, batch)))
        assert _types_of(prediction) == expected
        for leaf in tree_leaves(prediction):
            if np.asarray(leaf).dtype.kind == "f":
                assert np.isfinite(leaf).all()
