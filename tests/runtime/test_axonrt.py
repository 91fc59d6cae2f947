"""axonrt: loading, signatures, input validation, output structure, train mode, errors.

Models come from two places: axonc's exporter (dense/relu/softmax/sigmoid/tanh,
which lower today) and small ONNX graphs written here with onnx.helper, which
pin down the metadata conventions (train mode, noise and state) independently
of the exporter. Expected values are computed with numpy formulas.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import axonc as ax
import axonrt
from axonc.to_onnx.export import export_onnx
from axonrt import InputError, ModelError, OptionError, ProviderError, RunError, Signature
from tests.onnx_models import plain_model, save_model, train_model, typed_model

RUNTIME_SRC = Path(__file__).resolve().parents[2] / "runtime" / "axonrt"


# ---- models -------------------------------------------------------------------------------


def _mlp_state():
    x = ax.input("x", shape=(None, 4))
    model = x.dense(8, activation="relu").dense(3).softmax()
    init, _ = ax.build(model)
    return model, init(ax.template((1, 4)), {})


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """(path to an exported dense-relu-dense-softmax model, its parameters)."""
    model, state = _mlp_state()
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    export_onnx(model, state, path)
    return path, state.data


def mlp_reference(params, x):
    """softmax(relu(x W0 + b0) W1 + b1), in float64."""
    h = np.maximum(x @ params["dense_0"]["kernel"] + params["dense_0"]["bias"], 0.0)
    z = h @ params["dense_1"]["kernel"] + params["dense_1"]["bias"]
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def nested(tmp_path_factory):
    """A two-input model whose output is {"first": a, "rest": (b, [sigmoid(a)])}."""
    x = ax.input("x", shape=(None, 4))
    y = ax.input("y", shape=(None, 2))
    a = x.dense(3, name="a")
    b = y.dense(2, activation="tanh", name="b")
    model = ax.container({"first": a, "rest": (b, [a.sigmoid()])})
    init, _ = ax.build(model)
    state = init({"x": ax.template((1, 4)), "y": ax.template((1, 2))}, {})
    path = tmp_path_factory.mktemp("nested") / "nested.onnx"
    export_onnx(model, state, path)
    return path, state.data


# ---- loading and signatures ------------------------------------------------------------------


def test_signatures_of_an_exported_model(mlp):
    model = axonrt.load(mlp[0])
    assert model.inputs == [Signature("x", "float32", ("batch", 4))]
    assert model.outputs == [Signature("output", "float32", ("batch", 3))]
    assert model.mode == "inference"
    assert model.noise_inputs == [] and model.state_inputs == []
    assert str(model.inputs[0]) == "x: float32[batch, 4]"


def test_call_matches_a_numpy_formula_at_several_batch_sizes(mlp):
    path, params = mlp
    model = axonrt.load(path)
    rng = np.random.default_rng(0)
    for batch in (1, 3, 17):
        x = rng.standard_normal((batch, 4)).astype(np.float32)
        out = model(x)
        assert isinstance(out, np.ndarray) and out.dtype == np.float32
        np.testing.assert_allclose(out, mlp_reference(params, x), rtol=1e-5, atol=1e-6)


def test_positional_keyword_and_dict_calls_agree(mlp):
    model = axonrt.load(mlp[0])
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    expected = model(x)
    np.testing.assert_array_equal(model(x=x), expected)
    np.testing.assert_array_equal(model({"x": x}), expected)
    np.testing.assert_array_equal(model.run({"x": x})["output"], expected)


def test_load_from_bytes(mlp):
    path, params = mlp
    model = axonrt.load(path.read_bytes())
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(model(x), mlp_reference(params, x), rtol=1e-5, atol=1e-6)
    assert model.source == "<bytes>"


def test_nested_outputs_come_back_in_their_structure(nested):
    path, p = nested
    model = axonrt.load(path)
    assert [s.name for s in model.inputs] == ["x", "y"]
    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 8
    y = np.array([[0.5, -1.0], [2.0, 0.25]], np.float32)
    out = model(x, y)
    assert set(out) == {"first", "rest"}
    assert isinstance(out["rest"], tuple) and isinstance(out["rest"][1], list)
    a = x @ p["a"]["kernel"] + p["a"]["bias"]
    b = np.tanh(y @ p["b"]["kernel"] + p["b"]["bias"])
    np.testing.assert_allclose(out["first"], a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["rest"][0], b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["rest"][1][0], 1 / (1 + np.exp(-a)), rtol=1e-5, atol=1e-6)
    raw = model.run({"x": x, "y": y})
    assert set(raw) == {"output_0", "output_1", "output_2"}


def test_plain_onnx_models_without_metadata(tmp_path):
    x = np.array([[1.0, 2.0]], np.float32)
    single = axonrt.load(plain_model(tmp_path, 1))
    assert single.mode is None
    assert single.inputs == [Signature("x", "float32", (None, 2))]
    np.testing.assert_array_equal(single(x), x + 1)
    double = axonrt.load(plain_model(tmp_path, 2))
    out = double(x)
    assert set(out) == {"plus", "times"}
    np.testing.assert_array_equal(out["times"], x * 2)


# ---- input validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("feeds", "words"),
    [
        ({"y": np.ones((1, 4), np.float32)}, ["unknown input 'y'", "'x'"]),
        ({}, ["missing input(s) 'x'", "x: float32[batch, 4]"]),
        ({"x": np.ones((1, 5), np.float32)}, ["input 'x'", "[batch, 4]", "(1, 5)", "must be 4"]),
        ({"x": np.ones(4, np.float32)}, ["input 'x'", "rank 2", "rank 1"]),
        ({"x": np.ones((1, 1, 4), np.float32)}, ["input 'x'", "rank 2", "(1, 1, 4)"]),
        ({"x": np.full((1, 4), 1e300)}, ["input 'x'", "float32", "float64", "overflow"]),
        ({"x": np.full((1, 4), 2**24 + 1, np.int64)}, ["input 'x'", "int64", "precision"]),
        ({"x": np.array([["a", "b", "c", "d"]])}, ["input 'x'", "float32", "not a numeric"]),
        ({"x": [[1.0, 2.0], [3.0]]}, ["input 'x'", "float32", "list"]),
    ],
)
def test_bad_inputs_raise_input_error_naming_input_expected_and_got(mlp, feeds, words):
    model = axonrt.load(mlp[0])
    with pytest.raises(InputError) as err:
        model(feeds)
    for w in words:
        assert w in str(err.value)


def test_too_many_positional_inputs_and_duplicates(mlp):
    model = axonrt.load(mlp[0])
    x = np.ones((1, 4), np.float32)
    with pytest.raises(InputError, match=r"takes 1 input\(s\) \(x\), got 2"):
        model(x, x)
    with pytest.raises(InputError, match="'x' given twice"):
        model(x, x=x)


def test_named_batch_dims_must_agree_across_inputs(nested):
    model = axonrt.load(nested[0])
    with pytest.raises(InputError, match=r"input 'y': dimension 0 \('batch'\) is 3.*'x'.* = 2"):
        model(np.ones((2, 4), np.float32), np.ones((3, 2), np.float32))


def test_lossless_casts_are_accepted(mlp):
    path, params = mlp
    model = axonrt.load(path)
    x64 = np.array([[0.1, -0.2, 0.3, 4.0]])
    expected = mlp_reference(params, x64.astype(np.float32))
    np.testing.assert_allclose(model(x64), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model(x64.tolist()), expected, rtol=1e-5, atol=1e-6)
    ints = np.array([[0, 255, -3, 2**24]], np.int64)
    np.testing.assert_allclose(
        model(ints), mlp_reference(params, ints.astype(np.float32)), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        model(np.array([[True, False, True, True]])),
        mlp_reference(params, np.array([[1.0, 0.0, 1.0, 1.0]], np.float32)),
        rtol=1e-5,
        atol=1e-6,
    )


def test_integer_bool_and_half_inputs(tmp_path):
    model = axonrt.load(typed_model(tmp_path))
    assert [s.dtype for s in model.inputs] == ["int32", "bool", "float16"]
    out = model(ids=np.array([1, 2], np.int64), flag=[True, False], half=[0.5, 2.0])
    assert out["ids_out"].dtype == np.int32 and out["ids_out"].tolist() == [1, 2]
    assert out["flag_out"].tolist() == [True, False]
    assert out["half_out"].dtype == np.float16 and out["half_out"].tolist() == [0.5, 2.0]
    good = {"flag": [True], "half": [1.0]}
    with pytest.raises(InputError, match=r"input 'ids'.*int32.*float64.*truncated"):
        model(ids=[1.0], **good)
    with pytest.raises(InputError, match=r"input 'ids'.*int32.*outside"):
        model(ids=np.array([2**31], np.int64), **good)
    with pytest.raises(InputError, match=r"input 'flag'.*bool.*int64"):
        model(ids=[1], flag=[1], half=[1.0])
    with pytest.raises(InputError, match=r"input 'half'.*float16.*overflow"):
        model(ids=[1], flag=[True], half=[1e6])
    with pytest.raises(InputError, match=r"dimension 0 \('n'\) is 2"):
        model(ids=[1], flag=[True, False], half=[1.0])


# ---- train mode: state outputs and dropout noise -----------------------------------------------


def test_train_mode_returns_prediction_and_state(tmp_path):
    model = axonrt.load(train_model(tmp_path))
    assert model.mode == "train"
    assert [s.name for s in model.inputs] == ["x"]
    assert model.noise_inputs == [Signature("drop/noise", "float32", ("batch", 3))]
    assert model.state_inputs == [Signature("drop/mean", "float32", (3,))]
    x = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]], np.float32)
    noise = np.array([[0.5, 0.0, 1.0], [0.25, 0.75, 0.1]], np.float32)
    out = model({"x": x, "drop/noise": noise})
    assert set(out) == {"prediction", "state"}
    np.testing.assert_allclose(out["prediction"], x * noise)
    assert set(out["state"]) == {"drop"} and set(out["state"]["drop"]) == {"mean"}
    np.testing.assert_allclose(out["state"]["drop"]["mean"], [2.0, 3.0, 4.0])
    fed_back = model({"x": x, "drop/noise": noise, "drop/mean": out["state"]["drop"]["mean"]})
    np.testing.assert_allclose(fed_back["prediction"], (x + np.array([2.0, 3.0, 4.0])) * noise)


def test_train_mode_noise_is_drawn_from_rng(tmp_path):
    model = axonrt.load(train_model(tmp_path))
    x = np.ones((4, 3), np.float32)
    expected = np.random.default_rng(7).random((4, 3), dtype=np.float32)
    out = model(x, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(out["prediction"], expected)
    np.testing.assert_array_equal(model(x, rng=7)["prediction"], expected)
    assert np.all((expected >= 0) & (expected < 1))


def test_train_mode_without_noise_or_rng_says_what_to_pass(tmp_path):
    model = axonrt.load(train_model(tmp_path))
    with pytest.raises(InputError, match=r"'drop/noise'.*pass them by name, or pass rng="):
        model(np.ones((2, 3), np.float32))
    with pytest.raises(InputError, match="rng must be a numpy Generator or an int seed"):
        model(np.ones((2, 3), np.float32), rng="seed")
    with pytest.raises(InputError, match=r"input 'drop/noise'.*\(2, 4\)"):
        model({"x": np.ones((2, 3), np.float32), "drop/noise": np.ones((2, 4), np.float32)})


# ---- malformed files -------------------------------------------------------------------------


def test_truncated_garbage_and_missing_files_raise_model_error_naming_the_file(mlp, tmp_path):
    data = mlp[0].read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 3])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffnot a model at all" * 50)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    for path in (truncated, garbage, empty, tmp_path / "missing.onnx", tmp_path):
        with pytest.raises(ModelError) as err:
            axonrt.load(path)
        message = str(err.value)
        assert str(path) in message and "\n" not in message and "Traceback" not in message
    with pytest.raises(ModelError, match="<bytes>"):
        axonrt.load(b"garbage")
    with pytest.raises(ModelError, match="path or the model's bytes"):
        axonrt.load(42)


def test_malformed_axonc_metadata_is_a_model_error(tmp_path):
    path = plain_model(tmp_path)
    cases = {
        "axonc.outputs": ("{not json", "not valid JSON"),
        "axonc.state_outputs": (json.dumps({"nope": ["a"]}), "state_outputs"),
    }
    for key, (value, words) in cases.items():
        m = onnx.load(path)
        helper.set_model_props(m, {key: value})
        with pytest.raises(ModelError, match=words):
            axonrt.load(m.SerializeToString())
    for structure, words in (
        ({"tuple": ["plus", "ghost"]}, "'ghost'"),
        ({"set": ["plus"]}, "expected an output name"),
    ):
        m = onnx.load(path)
        helper.set_model_props(m, {"axonc.outputs": json.dumps(structure)})
        with pytest.raises(ModelError, match=words):
            axonrt.load(m.SerializeToString())


def test_failures_inside_onnxruntime_are_run_errors(tmp_path):
    f = TensorProto.FLOAT
    shape = numpy_helper.from_array(np.array([5], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "reshape",
        [helper.make_tensor_value_info("x", f, [None])],
        [helper.make_tensor_value_info("y", f, [5])],
        [shape],
    )
    model = axonrt.load(save_model(tmp_path, graph, {}, "reshape.onnx"))
    np.testing.assert_array_equal(model(np.arange(5, dtype=np.float32)), np.arange(5))
    with pytest.raises(RunError, match=r"reshape\.onnx: onnxruntime failed"):
        model(np.arange(3, dtype=np.float32))


# ---- session options and providers -------------------------------------------------------------


def test_session_options_are_applied_and_keep_results(mlp):
    path, params = mlp
    x = np.full((3, 4), 0.5, np.float32)
    for kwargs in (
        {"threads": 1, "optimization": "disable", "spinning": False},
        {"threads": 2, "optimization": "basic"},
        {"optimization": "extended"},
    ):
        model = axonrt.load(path, "cpu", **kwargs)
        assert model.providers == ["CPUExecutionProvider"]
        np.testing.assert_allclose(model(x), mlp_reference(params, x), rtol=1e-5, atol=1e-6)
    options = axonrt.load(path, threads=1, spinning=False).session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"threads": 0}, "threads must be a positive integer"),
        ({"threads": 1.5}, "threads must be a positive integer"),
        ({"optimization": "max"}, "optimization must be one of"),
        ({"spinning": "yes"}, "spinning must be True or False"),
    ],
)
def test_bad_session_options(mlp, kwargs, words):
    with pytest.raises(OptionError, match=words):
        axonrt.load(mlp[0], **kwargs)


def test_unavailable_provider_is_refused_listing_available_ones(mlp):
    with pytest.raises(ProviderError, match=r"'NoSuchExecutionProvider'.*CPUExecutionProvider"):
        axonrt.load(mlp[0], ["NoSuchExecutionProvider"])


# ---- axonrt stands alone -----------------------------------------------------------------------


def test_axonrt_sources_never_import_axonc():
    for path in RUNTIME_SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            assert not any(n == "axonc" or n.startswith("axonc.") for n in names), path


def test_loading_and_running_does_not_import_axonc(mlp):
    """In a fresh interpreter where importing axonc fails, load and run a model."""
    script = f"""
import sys, importlib.abc

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "axonc" or name.startswith("axonc."):
            raise ImportError("axonrt must not import " + name)

sys.meta_path.insert(0, Block())
import numpy as np
import axonrt
model = axonrt.load({str(mlp[0])!r})
out = model(np.ones((2, 4), np.float32))
assert out.shape == (2, 3), out.shape
assert not any(m == "axonc" or m.startswith("axonc.") for m in sys.modules)
print("ok")
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
