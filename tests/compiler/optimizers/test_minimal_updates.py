"""The built-in updates are minimal expressions: per parameter, the exported step graph
gains only the element-wise ops of the rule (bias corrections and the learning rate are
scalars computed once), and no NaN/Inf guard unless the rule needs one."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import axonc as ax
from axonc import optimizers as O

X = np.ones((3, 4), np.float32)
Y = np.ones((3, 2), np.float32)
GUARDS = {"IsNaN", "IsInf", "Where", "Equal"}


def op_counts(optimizer, hidden: int, tmp_path) -> Counter:
    """ONNX op counts of the exported step of a chain of dense layers (2 params each)."""
    model = ax.input("x", shape=(None, 4))
    for _ in range(hidden):
        model = model.dense(4)
    step = ax.train.compile_step(model.dense(2), "mean_squared_error", optimizer)
    ts = step.init(ax.template((None, 4), "f32"))
    onnx_model = step.export(tmp_path / f"step{hidden}.onnx", ts, X, Y)
    return Counter(node.op_type for node in onnx_model.graph.node)


# ops per parameter (update and apply); Adam: the two moments (3 + 4), add eps_root,
# sqrt, add eps, divide, times the scalar coefficient, add to the parameter
PER_PARAMETER = [
    ("sgd", O.sgd(0.1), 2),
    ("sgd_momentum", O.sgd(0.1, momentum=0.9), 4),
    ("adam", O.adam(1e-3), 13),
    ("adam_no_eps_root", O.adam(1e-3, eps_root=0.0), 12),
    ("adamw", O.adamw(1e-3, decay=0.01), 15),
    ("rmsprop", O.rmsprop(), 9),
    ("adagrad", O.adagrad(), 7),
    ("adabelief", O.adabelief(), 13),
    ("radam", O.radam(), 13),
]


@pytest.mark.parametrize(("name", "optimizer", "ops"), PER_PARAMETER, ids=lambda v: v)
def test_each_parameter_costs_only_its_rule(name, optimizer, ops, tmp_path):
    small, large = op_counts(optimizer, 0, tmp_path), op_counts(optimizer, 1, tmp_path)
    base_small, base_large = op_counts(O.sgd(0.1), 0, tmp_path), op_counts(O.sgd(0.1), 1, tmp_path)
    per_forward_backward = (base_large.total() - base_small.total()) / 2 - 2  # sgd: Mul, Add
    per_parameter = (large.total() - small.total()) / 2 - per_forward_backward
    assert per_parameter == ops
    guards = {op for op in (large - base_large) if op in GUARDS}
    if name != "radam":  # radam selects its scalars with Where, once per step
        assert not guards, f"{name} adds {guards}"
