"""The TFLite parity sweep: every declared op case, exported once, on LiteRT vs the reference.

Each case is exported (inference mode) with a dynamic batch and run through
axonrt at batch sizes 1, 3 and 17 with that one file; the prediction must match
the reference interpreter at rtol 1e-5 / atol 1e-5. A case the TFLite backend
cannot express must be refused with an UnsupportedOpsError naming the layer,
never exported wrong.
"""

from __future__ import annotations

import pytest

import axonc as ax
import axonrt
from axonc.errors import UnsupportedOpsError
from axonc.ir import assign_names
from axonc.registry import OPS, Op
from axonc.to_tflite.export import to_tflite
from tests import golden, op_cases

PARITY = [
    pytest.param(op, case, id=f"{op.name}-{case.name}")
    for op in OPS.values()
    for case in op.cases
    if "inference" in case.modes
]


def export_case(case):
    """(model, state, tflite bytes or the UnsupportedOpsError) for a declared case."""
    model = op_cases.model(case)
    init_fn, _ = ax.build(model, mode="inference", compiler="reference")
    state = init_fn(op_cases.templates(case, 1))
    try:
        return model, state, to_tflite(model, state)
    except UnsupportedOpsError as exc:
        return model, state, exc


@pytest.mark.parametrize(("op", "case"), PARITY)
def test_case_matches_reference_on_litert(op, case):
    model, state, data = export_case(case)
    if isinstance(data, UnsupportedOpsError):
        layers = set(assign_names(model).values())
        assert data.problems
        for layer, _, reason in data.problems:
            assert layer.split("/")[0] in layers and reason
        return
    _, predict_fn = ax.build(model, mode="inference", compiler="reference")
    compiled = axonrt.load(data)
    for batch in (1, 3, 17):
        feeds = op_cases.feeds(case, batch, seed=batch)
        expected = predict_fn(state, feeds)
        golden.assert_tree_close(compiled(feeds), expected, rtol=1e-5, atol=1e-5)


def test_every_op_with_a_tflite_rule_exports_a_case():
    """A `tflite` rule that refuses every case of its op would be a stub."""
    with_rule = {n for n, op in OPS.items() if type(op).tflite is not Op.tflite and op.cases}
    missing = []
    for name in sorted(with_rule):
        op = OPS[name]
        if not any(
            not isinstance(export_case(c)[2], UnsupportedOpsError)
            for c in op.cases
            if "inference" in c.modes
        ):
            missing.append(name)
    assert missing == []


@pytest.mark.slow
@pytest.mark.parametrize(("op", "case"), PARITY)
def test_float16_case_matches_reference_within_its_rounding(op, case):
    """Weights stored as f16 (2**-11 relative rounding each): the outputs stay within 1e-2;
    a case the float export refuses is refused quantized too."""
    model, state, data = export_case(case)
    if isinstance(data, UnsupportedOpsError):
        with pytest.raises(UnsupportedOpsError):
            to_tflite(model, state, quantize="float16")
        return
    _, predict_fn = ax.build(model, mode="inference", compiler="reference")
    compiled = axonrt.load(to_tflite(model, state, quantize="float16"))
    for batch in (1, 3, 17):
        feeds = op_cases.feeds(case, batch, seed=batch)
        golden.assert_tree_close(compiled(feeds), predict_fn(state, feeds), rtol=1e-2, atol=1e-2)
