"""The compiled train step: onnxruntime vs reference, gradients vs finite differences,
freezing, tying, state handling, reproducibility and errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import axonc as ax
from axonc import optimizers
from axonc.errors import InputError, OptionError
from axonc.model_state import ModelState
from axonc.train import TrainState


def _leaves(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], np.ndarray]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = np.asarray(value)
    return out


def _mlp() -> ax.Axon:
    # no bias before batch_norm: its gradient is exactly zero in theory and rounding noise
    # in practice, which Adam's normalisation would amplify to full-size steps
    x = ax.input("x", shape=(None, 6))
    return (
        x.dense(8, use_bias=False).batch_norm().relu().dropout(rate=0.3, seed=5).dense(3).softmax()
    )


def _cnn() -> ax.Axon:
    x = ax.input("x", shape=(None, 6, 6, 2))
    return (
        x.conv(4, kernel_size=3, padding="same", activation="relu")
        .max_pool(kernel_size=2)
        .flatten()
        .dense(3, activation="softmax")
    )


def _batch(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, shape[0])]
    return x, y


def _run(step: Any, ts: TrainState, batches: list) -> tuple[TrainState, list[dict]]:
    outs = []
    for x, y in batches:
        ts, out = step(ts, x, y)
        outs.append(out)
    return ts, outs


def _assert_states_close(a: TrainState, b: TrainState, rtol: float, atol: float) -> None:
    la, lb = _leaves(a.model_state.data), _leaves(b.model_state.data)
    assert la.keys() == lb.keys()
    for path in la:
        if la[path].dtype.kind in "iu":
            np.testing.assert_array_equal(la[path], lb[path], err_msg=str(path))
        else:
            np.testing.assert_allclose(la[path], lb[path], rtol=rtol, atol=atol, err_msg=str(path))
    oa, ob = _leaves(a.optimizer_state), _leaves(b.optimizer_state)
    assert oa.keys() == ob.keys()
    for path in oa:
        np.testing.assert_allclose(oa[path], ob[path], rtol=rtol, atol=atol, err_msg=str(path))


# ---- compiled == reference -------------------------------------------------------------


@pytest.mark.parametrize(
    "optimizer",
    [optimizers.sgd(0.1, momentum=0.9), optimizers.adam(1e-2)],
    ids=["sgd_momentum", "adam"],
)
@pytest.mark.parametrize(
    ("model_fn", "x_shape"), [(_mlp, (5, 6)), (_cnn, (4, 6, 6, 2))], ids=["mlp", "cnn"]
)
def test_compiled_step_matches_reference(model_fn, x_shape, optimizer):
    model = model_fn()
    batches = [_batch(x_shape, seed) for seed in range(3)]
    results = {}
    for compiler in ("onnxruntime", "reference"):
        step = ax.train.compile_step(
            model, "categorical_cross_entropy", optimizer, compiler=compiler
        )
        ts0 = step.init(ax.template((None, *x_shape[1:]), "f32"))
        results[compiler] = (ts0, *_run(step, ts0, batches))
    ts0, ts_ort, outs_ort = results["onnxruntime"]
    _, ts_ref, outs_ref = results["reference"]
    for o, r in zip(outs_ort, outs_ref):
        np.testing.assert_allclose(o["loss"], r["loss"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(o["y_pred"], r["y_pred"], rtol=1e-5, atol=1e-6)
    _assert_states_close(ts_ort, ts_ref, rtol=1e-4, atol=1e-5)
    assert ts_ort.steps == ts_ref.steps == 3
    assert int(ts_ort.optimizer_state["count"]) == 3
    # every trainable parameter moved, and the state that trains moved too
    before, after = _leaves(ts0.model_state.data), _leaves(ts_ort.model_state.data)
    for path in ts0.model_state.parameters:
        assert not np.array_equal(before[path], after[path]), path
    for path in ts0.model_state.state:
        assert not np.array_equal(before[path], after[path]), path


def test_dropout_key_advances_once_per_step_as_the_reference_draws():
    from axonc.ops.dropout import draw

    model = _mlp()
    step = ax.train.compile_step(model, "categorical_cross_entropy", optimizers.sgd(0.1))
    ts = step.init(ax.template((None, 6), "f32"))
    key = ts.model_state.get(("dropout_0", "key"))
    for seed in range(3):
        ts, _ = step(ts, *_batch((5, 6), seed))
        _, key = draw(key, (5, 8))
        np.testing.assert_array_equal(ts.model_state.get(("dropout_0", "key")), key)


# ---- gradients against float64 finite differences ---------------------------------------


def _np_mlp_loss(params: dict, x: np.ndarray, y: np.ndarray) -> float:
    """dense -> tanh -> dense -> softmax -> mean categorical cross entropy, in float64."""
    h = np.tanh(x @ params["d0"]["kernel"] + params["d0"]["bias"])
    z = h @ params["d1"]["kernel"] + params["d1"]["bias"]
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(np.mean(-(y * logp).sum(axis=1)))


def _fd_grad(fn: Any, params: dict, eps: float = 1e-6) -> dict:
    params = {k: {p: np.array(v, np.float64) for p, v in d.items()} for k, d in params.items()}
    grads: dict = {}
    for layer, d in params.items():
        for name, value in d.items():
            g = np.zeros_like(value)
            for idx in np.ndindex(value.shape):
                old = value[idx]
                value[idx] = old + eps
                plus = fn(params)
                value[idx] = old - eps
                minus = fn(params)
                value[idx] = old
                g[idx] = (plus - minus) / (2 * eps)
            grads.setdefault(layer, {})[name] = g
    return grads


@pytest.mark.parametrize("compiler", ["onnxruntime", "reference"])
def test_one_sgd_step_is_params_minus_lr_times_finite_difference_gradient(compiler):
    x_in = ax.input("x", shape=(None, 4))
    model = x_in.dense(5, name="d0").tanh().dense(3, name="d1").softmax()
    lr = 0.5
    step = ax.train.compile_step(
        model, "categorical_cross_entropy", optimizers.sgd(lr), compiler=compiler
    )
    ts = step.init(ax.template((None, 4), "f32"))
    x, y = _batch((6, 4), seed=3)
    x = x[:, :4]
    params = ts.model_state.data
    grads = _fd_grad(lambda p: _np_mlp_loss(p, x.astype(np.float64), y), params)
    new_ts, out = step(ts, x, y)
    np.testing.assert_allclose(out["loss"], _np_mlp_loss(params, x, y), rtol=1e-5)
    for layer in ("d0", "d1"):
        for name in ("kernel", "bias"):
            expected = params[layer][name] - lr * grads[layer][name]
            got = new_ts.model_state.get((layer, name))
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-6, err_msg=layer + name)


def test_loss_decreases_on_a_learnable_problem():
    rng = np.random.default_rng(1)
    w_true = rng.normal(size=(4, 2))
    x_all = rng.normal(size=(64, 4)).astype(np.float32)
    y_all = (x_all @ w_true).astype(np.float32)
    model = ax.input("x", shape=(None, 4)).dense(16, activation="tanh").dense(2)
    step = ax.train.compile_step(model, "mean_squared_error", optimizers.adam(2e-2))
    ts = step.init(ax.template((None, 4), "f32"))
    losses = []
    for _ in range(40):
        for i in range(0, 64, 16):
            ts, out = step(ts, x_all[i : i + 16], y_all[i : i + 16])
        losses.append(float(out["loss"]))
    assert losses[-1] < 0.05 * losses[0], losses


# ---- frozen parameters and state ----------------------------------------------------------


def _two_layer() -> ax.Axon:
    x = ax.input("x", shape=(None, 6))
    return x.dense(8, name="body").relu().dense(3, name="head").softmax()


@pytest.mark.parametrize("compiler", ["onnxruntime", "reference"])
@pytest.mark.parametrize("how", ["model_state_mask", "ax_freeze"])
def test_frozen_parameters_get_no_update_while_the_rest_train(how, compiler):
    model = _two_layer()
    if how == "ax_freeze":
        model = ax.freeze(model, lambda node: node.name == "body")
    step = ax.train.compile_step(
        model, "categorical_cross_entropy", optimizers.adam(1e-2), compiler=compiler
    )
    ts = step.init(ax.template((None, 6), "f32"))
    if how == "model_state_mask":
        frozen = ts.model_state.freeze(lambda path: path[0] == "body")
        ts = step.init(ax.template((None, 6), "f32"), frozen)
    assert ts.model_state.frozen == {("body", "kernel"), ("body", "bias")}
    assert set(ts.optimizer_state["mu"]) == {"head"}
    new_ts, _ = _run(step, ts, [_batch((5, 6), s) for s in range(3)])
    for name in ("kernel", "bias"):
        np.testing.assert_array_equal(
            new_ts.model_state.get(("body", name)), ts.model_state.get(("body", name))
        )
        assert not np.allclose(
            new_ts.model_state.get(("head", name)), ts.model_state.get(("head", name))
        )
    assert new_ts.model_state.frozen == ts.model_state.frozen


@pytest.mark.parametrize("compiler", ["onnxruntime", "reference"])
def test_frozen_batch_norm_state_is_not_updated(compiler):
    x = ax.input("x", shape=(None, 6))
    model = x.dense(4).batch_norm().dense(3).softmax()
    step = ax.train.compile_step(
        model, "categorical_cross_entropy", optimizers.sgd(0.1), compiler=compiler
    )
    ts = step.init(ax.template((None, 6), "f32"))
    frozen = ts.model_state.freeze(lambda path: path == ["batch_norm_0", "mean"])
    ts_frozen = step.init(ax.template((None, 6), "f32"), frozen)
    batch = _batch((5, 6))
    trained, _ = step(ts, *batch)
    trained_frozen, _ = step(ts_frozen, *batch)
    mean = ("batch_norm_0", "mean")
    np.testing.assert_array_equal(trained_frozen.model_state.get(mean), ts.model_state.get(mean))
    assert not np.allclose(trained.model_state.get(mean), ts.model_state.get(mean))
    # the unfrozen var and the parameters still train
    var = ("batch_norm_0", "var")
    np.testing.assert_allclose(trained_frozen.model_state.get(var), trained.model_state.get(var))
    assert not np.allclose(
        trained_frozen.model_state.get(("dense_0", "kernel")),
        ts.model_state.get(("dense_0", "kernel")),
    )


# ---- tied parameters -----------------------------------------------------------------------


def _autoencoder() -> ax.Axon:
    x = ax.input("x", shape=(None, 6))
    return x.dense(3, name="enc").tanh().dense(6, name="dec")


def _tied_state(step: Any) -> TrainState:
    template = ax.template((None, 6), "f32")
    state = step.init(template).model_state
    return step.init(template, state.tie(("dec", "kernel"), ("enc", "kernel"), "transpose"))


def _np_autoencoder_loss(p: dict, x: np.ndarray) -> float:
    k = p["enc"]["kernel"]
    h = np.tanh(x @ k + p["enc"]["bias"])
    out = h @ k.T + p["dec"]["bias"]
    return float(np.mean((out - x) ** 2))


@pytest.mark.parametrize("compiler", ["onnxruntime", "reference"])
def test_tied_parameters_are_one_tensor_whose_gradient_sums_both_uses(compiler):
    lr = 0.3
    step = ax.train.compile_step(
        _autoencoder(), "mean_squared_error", optimizers.sgd(lr), compiler=compiler
    )
    ts = _tied_state(step)
    assert ("dec", "kernel") not in ts.model_state.parameters - set(ts.model_state.ties)
    assert set(ts.optimizer_state) == {"count"}  # plain sgd has no slots
    x = np.random.default_rng(4).normal(size=(7, 6)).astype(np.float32)
    params = {
        "enc": {
            "kernel": ts.model_state.get(("enc", "kernel")),
            "bias": ts.model_state.get(("enc", "bias")),
        },
        "dec": {"bias": ts.model_state.get(("dec", "bias"))},
    }
    grads = _fd_grad(lambda p: _np_autoencoder_loss(p, x.astype(np.float64)), params)
    new_ts, out = step(ts, x, x)
    np.testing.assert_allclose(out["loss"], _np_autoencoder_loss(params, x), rtol=1e-5)
    new_k = new_ts.model_state.get(("enc", "kernel"))
    np.testing.assert_allclose(
        new_k, params["enc"]["kernel"] - lr * grads["enc"]["kernel"], rtol=1e-4, atol=2e-6
    )
    np.testing.assert_allclose(
        new_ts.model_state.get(("dec", "bias")),
        params["dec"]["bias"] - lr * grads["dec"]["bias"],
        rtol=1e-4,
        atol=2e-6,
    )
    # still one tensor: the destination reads the updated source, transposed
    assert dict(new_ts.model_state.ties) == {(("dec", "kernel")): (("enc", "kernel"), "transpose")}
    np.testing.assert_array_equal(new_ts.model_state.get(("dec", "kernel")), new_k.T)


def test_tied_gradient_differs_from_either_use_alone():
    """Guard for the test above: the summed gradient is not just one use's gradient."""
    x = np.random.default_rng(4).normal(size=(7, 6))
    rng = np.random.default_rng(0)
    p = {
        "enc": {"kernel": rng.normal(size=(6, 3)), "bias": np.zeros(3)},
        "dec": {"bias": np.zeros(6)},
    }

    fixed = p["enc"]["kernel"].copy()

    def enc_only(q: dict) -> float:
        h = np.tanh(x @ q["enc"]["kernel"] + q["enc"]["bias"])
        return float(np.mean((h @ fixed.T + q["dec"]["bias"] - x) ** 2))

    tied = _fd_grad(lambda q: _np_autoencoder_loss(q, x), p)["enc"]["kernel"]
    first = _fd_grad(enc_only, p)["enc"]["kernel"]
    assert not np.allclose(tied, first, atol=1e-3)


# ---- reproducibility -------------------------------------------------------------------------


def test_dropout_randomness_is_reproducible_from_the_seed():
    batches = [_batch((5, 6), s) for s in range(3)]

    def train(dropout_seed: int) -> TrainState:
        x = ax.input("x", shape=(None, 6))
        model = x.dense(8).relu().dropout(rate=0.5, seed=dropout_seed).dense(3).softmax()
        step = ax.train.compile_step(model, "categorical_cross_entropy", optimizers.adam(1e-2))
        ts, _ = _run(step, step.init(ax.template((None, 6), "f32")), batches)
        return ts

    a, b, c = train(11), train(11), train(12)
    la, lb, lc = (_leaves(t.model_state.data) for t in (a, b, c))
    for path in la:
        np.testing.assert_array_equal(la[path], lb[path], err_msg=str(path))
    # the same initial parameters (the step seed), another dropout stream: another result
    assert not np.allclose(la[("dense_1", "kernel")], lc[("dense_1", "kernel")])


# ---- errors ------------------------------------------------------------------------------------


def _simple() -> ax.Axon:
    return ax.input("x", shape=(None, 6)).dense(3).softmax()


def test_an_unknown_loss_name_lists_the_valid_ones():
    with pytest.raises(OptionError, match="unknown loss 'cross_entropy'") as err:
        ax.train.compile_step(_simple(), "cross_entropy", optimizers.sgd(0.1))
    for name in ax.losses.names():
        assert name in str(err.value)


@pytest.mark.parametrize("compiler", ["onnxruntime", "reference"])
def test_a_target_of_the_wrong_shape_names_the_target_and_the_expected_shape(compiler):
    step = ax.train.compile_step(
        _simple(), "categorical_cross_entropy", optimizers.sgd(0.1), compiler=compiler
    )
    ts = step.init(ax.template((None, 6), "f32"))
    x = np.zeros((5, 6), np.float32)
    with pytest.raises(
        InputError, match=r"target: .*softmax_0.*\(batch, 3\).*expected \(5, 3\), got \(5, 4\)"
    ):
        step(ts, x, np.zeros((5, 4), np.float32))
    with pytest.raises(InputError, match=r"target: .*expected \(5, 3\), got \(5,\)"):
        step(ts, x, np.zeros((5,), np.float32))
    with pytest.raises(
        InputError, match=r"target: expected a batch of 5 \(the batch of input 'x'\)"
    ):
        step(ts, x, np.zeros((4, 3), np.float32))


def test_a_custom_loss_target_is_checked_for_its_batch():
    def loss(y_true: Any, y_pred: Any) -> Any:
        return ax.losses.mean_squared_error(y_true, y_pred, reduction="mean")

    step = ax.train.compile_step(_simple(), loss, optimizers.sgd(0.1))
    ts = step.init(ax.template((None, 6), "f32"))
    with pytest.raises(InputError, match=r"target: expected a batch of 5"):
        step(ts, np.zeros((5, 6), np.float32), np.zeros((2, 3), np.float32))


def test_a_loss_that_does_not_reduce_to_a_scalar_is_an_error():
    def per_example(y_true: Any, y_pred: Any) -> Any:
        return ax.losses.mean_squared_error(y_true, y_pred)  # reduction "none"

    step = ax.train.compile_step(_simple(), per_example, optimizers.sgd(0.1))
    ts = step.init(ax.template((None, 6), "f32"))
    with pytest.raises(OptionError, match=r"the loss must reduce to a scalar.*reduction='mean'"):
        step(ts, np.zeros((5, 6), np.float32), np.zeros((5, 3), np.float32))


def test_an_unknown_compiler_is_an_error():
    with pytest.raises(OptionError, match="compiler must be 'onnxruntime' or 'reference'"):
        ax.train.compile_step(_simple(), "mean_squared_error", optimizers.sgd(0.1), compiler="xla")


# ---- the train state as flat tensors -----------------------------------------------------------


def test_train_state_flatten_and_load_flat_round_trip():
    step = ax.train.compile_step(_mlp(), "categorical_cross_entropy", optimizers.adam(1e-2))
    ts = step.init(ax.template((None, 6), "f32"))
    trained, _ = step(ts, *_batch((5, 6)))
    flat = trained.flatten()
    assert "dense_0/kernel" in flat
    assert "batch_norm_0/mean" in flat
    assert "__optimizer__/count" in flat
    assert "__optimizer__/mu/dense_0/kernel" in flat
    restored = ts.load_flat(flat)
    _assert_states_close(restored, trained, rtol=0, atol=0)
    with pytest.raises(Exception, match="no tensor 'dense_9/kernel'"):
        ts.load_flat({"dense_9/kernel": np.zeros(1)})
    assert isinstance(restored.model_state, ModelState)


def test_learning_rate_scale_scales_the_next_updates_without_recompiling():
    model = ax.input("x", (None, 3)).dense(2)
    step = ax.train.compile_step(model, "mean_squared_error", optimizers.sgd(0.1))
    ts = step.init(ax.template((4, 3)))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 2)).astype(np.float32)
    full, _ = step(ts, x, y)
    half, _ = step(ts.with_learning_rate_scale(0.5), x, y)
    before = ts.model_state.get(("dense_0", "kernel"))
    np.testing.assert_allclose(
        half.model_state.get(("dense_0", "kernel")) - before,
        0.5 * (full.model_state.get(("dense_0", "kernel")) - before),
        rtol=1e-5,
        atol=1e-7,
    )
    assert half.learning_rate_scale == 0.5
    assert step._compiled_models and len(step._compiled_models) == 1
