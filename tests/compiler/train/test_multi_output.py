"""Multi-output training and structured targets: Axon's (loss, weight) list, tuple / list /
dict targets reaching the loss as such, and a target shaped unlike the output broadcast
as Nx does (with a warning). Expected values are written out in numpy from the formulas
(a dense layer is x @ W + b; SGD moves W by -lr * dL/dW)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import axonc as ax
from axonc import optimizers
from axonc.errors import InputError
from axonc.loop import Loop

COMPILERS = ("onnxruntime", "reference")
LR = 0.1
RNG = np.random.default_rng(11)
X = RNG.normal(size=(6, 3)).astype(np.float32)


def _two_heads(structure: str = "tuple") -> ax.Axon:
    x = ax.input("x", shape=(None, 3))
    a, b = x.dense(1, name="a"), x.dense(2, name="b")
    if structure == "dict":
        return ax.container({"a": a, "b": b})
    return ax.container([a, b] if structure == "list" else (a, b))


def _dense(p: dict, x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) @ p["kernel"] + p["bias"]


def _sgd(p: dict, x: np.ndarray, d_out: np.ndarray) -> dict:
    """One SGD step of a dense layer given dL/d(output)."""
    return {"kernel": p["kernel"] - LR * x.T @ d_out, "bias": p["bias"] - LR * d_out.sum(0)}


def _step(model: ax.Axon, loss: Any, compiler: str) -> tuple[Any, Any]:
    step = ax.train.compile_step(model, loss, optimizers.sgd(LR), compiler=compiler)
    return step, step.init(ax.template((None, 3), "f32"))


def _params(ts: Any, layer: str) -> dict:
    return {k: np.asarray(v, np.float64) for k, v in ts.model_state.data[layer].items()}


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("structure", ["tuple", "list"])
def test_a_loss_list_weights_each_output_loss_and_trains_each_head(compiler, structure):
    step, ts = _step(
        _two_heads(structure),
        [("mean_squared_error", 0.5), ("mean_absolute_error", 2.0)],
        compiler,
    )
    ya = RNG.normal(size=(6, 1)).astype(np.float32)
    yb = RNG.normal(size=(6, 2)).astype(np.float32)
    pa0, pb0 = _params(ts, "a"), _params(ts, "b")
    target = (ya, yb) if structure == "tuple" else [ya, yb]
    ts, out = step(ts, X, target)

    pa, pb = _dense(pa0, X), _dense(pb0, X)
    want = 0.5 * np.mean((ya - pa) ** 2) + 2.0 * np.mean(np.abs(yb - pb))
    np.testing.assert_allclose(out["loss"], want, rtol=1e-5)
    da = 0.5 * 2 * (pa - ya) / ya.size
    db = 2.0 * np.sign(pb - yb) / yb.size
    for layer, p0, d in (("a", pa0, da), ("b", pb0, db)):
        for name, value in _sgd(p0, X, d).items():
            np.testing.assert_allclose(_params(ts, layer)[name], value, rtol=1e-5, atol=1e-6)
    assert isinstance(out["y_pred"], (tuple, list)) and len(out["y_pred"]) == 2


@pytest.mark.parametrize("compiler", COMPILERS)
def test_outputs_past_the_loss_list_are_not_trained_as_axon_pairs_by_position(compiler):
    x = ax.input("x", shape=(None, 3))
    model = ax.container((x.dense(1, name="a"), x.dense(2, name="c")))
    step, ts = _step(model, [("mean_squared_error", 1.0)], compiler)
    a0, c0 = _params(ts, "a"), _params(ts, "c")
    y = RNG.normal(size=(6, 1)).astype(np.float32)
    ts, out = step(ts, X, (y, np.zeros((6, 2), np.float32)))
    np.testing.assert_allclose(out["loss"], np.mean((y - _dense(a0, X)) ** 2), rtol=1e-5)
    for name, value in c0.items():
        np.testing.assert_array_equal(_params(ts, "c")[name], value)


def test_more_losses_than_outputs_is_an_error_that_counts_both():
    x = ax.input("x", shape=(None, 3))
    model = ax.container((x.dense(1),))
    step, ts = _step(model, [("mean_squared_error", 1.0), ("mean_squared_error", 1.0)], "reference")
    with pytest.raises(Exception, match="at least 2 outputs"):
        step(ts, X, (np.zeros((6, 1), np.float32),))


@pytest.mark.parametrize("compiler", COMPILERS)
def test_a_dict_of_losses_pairs_by_key_with_a_dict_output(compiler):
    step, ts = _step(
        _two_heads("dict"),
        {"b": ("mean_squared_error", 3.0), "a": ("mean_squared_error", 1.0)},
        compiler,
    )
    ya = RNG.normal(size=(6, 1)).astype(np.float32)
    yb = RNG.normal(size=(6, 2)).astype(np.float32)
    pa, pb = _dense(_params(ts, "a"), X), _dense(_params(ts, "b"), X)
    _, out = step(ts, X, {"a": ya, "b": yb})
    want = np.mean((ya - pa) ** 2) + 3.0 * np.mean((yb - pb) ** 2)
    np.testing.assert_allclose(out["loss"], want, rtol=1e-5)


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("structure", ["tuple", "list", "dict"])
def test_a_custom_loss_receives_targets_in_their_structure(compiler, structure):
    seen = []

    def loss(y_true: Any, y_pred: Any) -> Any:
        seen.append((type(y_true), type(y_pred)))
        if structure == "dict":
            t0, t1, p0, p1 = y_true["a"], y_true["b"], y_pred["a"], y_pred["b"]
        else:
            (t0, t1), (p0, p1) = y_true, y_pred
        return ax.losses.mean_squared_error(t0, p0, reduction="sum") + ax.losses.hinge(
            t1, p1, reduction="mean"
        )

    step, ts = _step(_two_heads(structure), loss, compiler)
    ya = RNG.normal(size=(6, 1)).astype(np.float32)
    yb = np.sign(RNG.normal(size=(6, 2))).astype(np.float32)
    target = {"tuple": (ya, yb), "list": [ya, yb], "dict": {"a": ya, "b": yb}}[structure]
    pa, pb = _dense(_params(ts, "a"), X), _dense(_params(ts, "b"), X)
    _, out = step(ts, X, target)
    want = np.sum(np.mean((ya - pa) ** 2, -1)) + np.mean(np.maximum(1 - yb * pb, 0))
    np.testing.assert_allclose(out["loss"], want, rtol=1e-5)
    kind = {"tuple": tuple, "list": list, "dict": dict}[structure]
    assert seen and all(t is kind for t, _ in seen)


@pytest.mark.parametrize("compiler", COMPILERS)
def test_a_target_shaped_unlike_the_output_broadcasts_as_nx_does_with_a_warning(compiler):
    model = ax.input("x", shape=(None, 3)).dense(1, name="a")
    step, ts = _step(model, "mean_squared_error", compiler)
    y = RNG.normal(size=(6,)).astype(np.float32)
    p0 = _params(ts, "a")
    with pytest.warns(
        UserWarning, match=r"target's shape \(batch,\).*prediction's shape \(batch, 1\)"
    ):
        ts, out = step(ts, X, y)
    p = _dense(p0, X)  # (6, 1)
    diff = y[None, :] - p  # numpy broadcasting: (6, 1) against (6,) -> (6, 6)
    np.testing.assert_allclose(out["loss"], np.mean(diff**2), rtol=1e-5)
    d_out = (-2 * diff / diff.size).sum(axis=1, keepdims=True)
    for name, value in _sgd(p0, X, d_out).items():
        np.testing.assert_allclose(_params(ts, "a")[name], value, rtol=1e-5, atol=1e-6)


def test_the_eager_loss_warns_with_both_shapes_and_broadcasts_like_numpy():
    y, p = np.arange(6, dtype=np.float32), np.ones((6, 1), np.float32)
    with pytest.warns(UserWarning, match=r"\(6,\) differs from the prediction's shape \(6, 1\)"):
        got = ax.losses.mean_squared_error(y, p, reduction="mean")
    np.testing.assert_allclose(got, np.mean((y - p) ** 2), rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ax.losses.mean_squared_error(p, p, reduction="mean")


def test_a_cce_target_broadcast_against_the_classes_warns_but_sparse_targets_do_not():
    p = np.full((4, 3), 1 / 3, np.float32)
    y = np.ones((4, 1), np.float32)
    with pytest.warns(UserWarning, match=r"\(4, 1\) differs from the prediction's shape \(4, 3\)"):
        got = ax.losses.categorical_cross_entropy(y, p, reduction="mean")
    np.testing.assert_allclose(got, -np.sum(y * np.log(p), axis=-1).mean(), rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        idx = np.array([[0], [2], [1], [1]])
        got = ax.losses.categorical_cross_entropy(idx, p, reduction="mean", sparse=True)
    np.testing.assert_allclose(got, np.log(3.0), rtol=1e-6)


def test_a_target_that_cannot_broadcast_or_a_bce_target_of_another_shape_is_an_input_error():
    model = ax.input("x", shape=(None, 3)).dense(2, name="a")
    step, ts = _step(model, "mean_squared_error", "reference")
    with pytest.raises(InputError, match=r"expected \(6, 2\), got \(6, 3\)"):
        step(ts, X, np.zeros((6, 3), np.float32))
    step, ts = _step(model.sigmoid(), "binary_cross_entropy", "reference")
    with pytest.raises(InputError, match=r"expected \(6, 2\), got \(6, 1\)"):
        step(ts, X, np.zeros((6, 1), np.float32))


def test_a_target_given_as_nested_lists_of_numbers_is_one_array():
    model = ax.input("x", shape=(None, 3)).dense(2, name="a")
    step, ts = _step(model, "mean_squared_error", "reference")
    y = RNG.normal(size=(6, 2)).round(3)
    p = _dense(_params(ts, "a"), X)
    _, out = step(ts, X, y.tolist())
    np.testing.assert_allclose(out["loss"], np.mean((y - p) ** 2), rtol=1e-5)


def test_the_trainer_takes_a_loss_list_and_tuple_targets():
    ya = RNG.normal(size=(6, 1)).astype(np.float32)
    yb = RNG.normal(size=(6, 2)).astype(np.float32)
    model = _two_heads()
    loss = [("mean_squared_error", 0.5), ("mean_squared_error", 0.5)]
    state = ax.build(model)[0](ax.template((None, 3), "f32"))
    start = 0.5 * np.mean((ya - _dense(_params_of(state, "a"), X)) ** 2) + 0.5 * np.mean(
        (yb - _dense(_params_of(state, "b"), X)) ** 2
    )
    loop = Loop.trainer(model, loss, optimizers.sgd(LR), log=0)
    history = []
    loop = loop.handle(
        "epoch_completed", lambda s: (history.append(s.metrics["loss"]), ("continue", s))[1]
    )
    trained = loop.run([(X, (ya, yb))], state, epochs=5, progress=False)
    np.testing.assert_allclose(history[0], start, rtol=1e-5)  # the first epoch's one batch
    assert history[-1] < history[0]
    assert set(trained.data) == {"a", "b"}


def _params_of(state: Any, layer: str) -> dict:
    return {k: np.asarray(v, np.float64) for k, v in state.data[layer].items()}


def test_the_exported_step_takes_one_input_per_target_leaf(tmp_path):
    step, ts = _step(
        _two_heads(), [("mean_squared_error", 1.0), ("mean_squared_error", 1.0)], "reference"
    )
    y = (np.zeros((6, 1), np.float32), np.zeros((6, 2), np.float32))
    model = step.export(tmp_path / "step.onnx", ts, X, y)
    names = {i.name for i in model.graph.input}
    assert {"target/0", "target/1"} <= names and "target" not in names
