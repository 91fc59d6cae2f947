"""Real Axon's outputs (tests/fixtures/axon-golden) reproduced by exported .tflite models on LiteRT.

Every inference-mode golden case of tests/test_conformance.py is exported with
Axon's parameters and a dynamic batch and run through axonrt; the outputs must
match Axon's at rtol 1e-5 / atol 1e-5. Cases TFLite export refuses would be listed in
REFUSED (case -> op), so a new refusal or a newly exported case shows; none is today.
"""

from __future__ import annotations

import pytest

import axonc as ax
import axonrt
from axonc.dtypes import TensorType, dtype_name
from axonc.errors import UnsupportedOpsError
from axonc.to_tflite.export import to_tflite
from tests import golden
from tests.test_conformance import CASES

# case -> the op whose TFLite export is refused
REFUSED: dict[str, str] = {}


def _inference_cases() -> list[str]:
    return sorted(n for n in CASES if golden.load(n)["mode"] != "train")


@pytest.mark.parametrize("name", _inference_cases())
def test_golden_case_matches_axon_on_litert(name):
    case = golden.load(name)
    model = CASES[name]()
    inputs = golden.inputs(case)
    templates = {k: ax.template(v.shape, v.dtype) for k, v in inputs.items()}
    init_fn, _ = ax.build(model)
    state = init_fn(templates, golden.tree(case["params"]))
    dynamic = {
        k: TensorType((None, *v.shape[1:]), dtype_name(v.dtype)) if v.ndim else templates[k]
        for k, v in inputs.items()
    }
    try:
        data = to_tflite(model, state, template=dynamic)
    except UnsupportedOpsError as exc:
        ops = sorted({op for _, op, _ in exc.problems})
        assert name in REFUSED and REFUSED[name] in ops, str(exc)
        return
    assert name not in REFUSED, f"{name} now exports: remove it from REFUSED"
    result = axonrt.load(data)(inputs)
    golden.assert_tree_close(result, golden.tree(case["outputs"]), rtol=1e-5, atol=1e-5)
