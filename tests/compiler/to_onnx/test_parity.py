"""The main parity test: every declared op case, exported once, on onnxruntime vs the reference.

Each case is exported with a dynamic batch and run at batch sizes 1, 3 and 17
through that one file; the prediction (and, in train mode, every updated state
tensor) must match the reference interpreter at rtol 1e-5 / atol 1e-6.
"""

from __future__ import annotations

import pytest

import axonc as ax
from axonc.ir import Axon, assign_names
from axonc.registry import OPS, get_op
from axonc.to_onnx.export import to_onnx
from tests import golden, onnx_run, op_cases

PARITY = [
    pytest.param(op, case, mode, id=f"{op.name}-{case.name}-{mode}")
    for op in OPS.values()
    for case in op.cases
    for mode in case.modes
]


def _dropout_layers(model: Axon) -> set[str]:
    """The names of the dropout-family layers of `model` and of its subgraphs."""
    names = assign_names(model)
    found = {names[nid] for nid, n in model.nodes.items() if get_op(n.op).family == "dropout"}
    for node in model.nodes.values():
        for body in node.subgraphs.values():
            found |= _dropout_layers(body)
    return found


def without_host_keys(state: dict, dropout_layers: set[str]) -> dict:
    """`state` without the `key` of dropout layers (and without layers left empty).

    The ONNX train graph takes the dropout uniforms as a noise input and does not
    output a new key: the host runtime advances the key itself with
    axonc.ops.dropout.draw (as tests/onnx_run.py draws the noise), so the graph's
    state outputs cannot hold it.
    """
    out = {}
    for name, value in state.items():
        if isinstance(value, dict):
            if name in dropout_layers:
                value = {k: v for k, v in value.items() if k != "key"}
            value = without_host_keys(value, dropout_layers)
            if not value:
                continue
        out[name] = value
    return out


@pytest.mark.parametrize(("op", "case", "mode"), PARITY)
def test_case_matches_reference_on_onnxruntime(op, case, mode):
    model = op_cases.model(case)
    init_fn, predict_fn = ax.build(model, mode=mode, compiler="reference")
    state = init_fn(op_cases.templates(case, 1))
    onnx_model = to_onnx(model, state, mode=mode)
    sess = onnx_run.session(onnx_model)
    for batch in (1, 3, 17):
        feeds = op_cases.feeds(case, batch, seed=batch)
        expected = predict_fn(state, feeds)
        prediction, new_state = onnx_run.run(onnx_model, sess, feeds, state.data, batch)
        if mode == "train":
            golden.assert_tree_close(prediction, expected["prediction"], rtol=1e-5, atol=1e-6)
            expected_state = without_host_keys(expected["state"], _dropout_layers(model))
            golden.assert_tree_close(new_state, expected_state, rtol=1e-5, atol=1e-6)
        else:
            golden.assert_tree_close(prediction, expected, rtol=1e-5, atol=1e-6)
            assert new_state == {}


def test_parity_sweep_covers_every_op_with_cases():
    covered = {p.values[0].name for p in PARITY}
    assert covered == {name for name, op in OPS.items() if op.cases}
