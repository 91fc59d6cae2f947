"""Axon's guides/model_execution/training_and_inference_mode.livemd: dropout and batch
norm act differently when the model is built for training or for inference."""

import numpy as np

import axonc as ax
from tests.axon_programs.helpers import iota


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def dropout_model():
    return ax.input("data").dense(4).sigmoid().dropout(rate=0.99).dense(1)


def no_dropout(params, x):
    p = params.data
    h = sigmoid(x @ p["dense_0"]["kernel"] + p["dense_0"]["bias"])
    return h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"]


def test_inference_is_the_default():
    inputs = iota(2, 8)
    model = dropout_model()

    init_fn, predict_fn = ax.build(model)
    params = init_fn(inputs, {})
    np.testing.assert_allclose(predict_fn(params, inputs), no_dropout(params, inputs), rtol=1e-5)

    init_fn, predict_fn = ax.build(model, mode="inference")
    params = init_fn(inputs, {})
    np.testing.assert_allclose(predict_fn(params, inputs), no_dropout(params, inputs), rtol=1e-5)


def test_train_mode_drops():
    inputs = iota(2, 8)
    init_fn, predict_fn = ax.build(dropout_model(), mode="train")
    params = init_fn(inputs, {})
    out = predict_fn(params, inputs)

    assert set(out) == {"prediction", "state"}
    assert out["prediction"].shape == (2, 1)
    p = params.data
    h = sigmoid(inputs @ p["dense_0"]["kernel"] + p["dense_0"]["bias"])
    # each kept unit is scaled by 1 / (1 - rate); the prediction is a sum over a subset
    w = p["dense_1"]["kernel"][:, 0] / (1 - 0.99)
    for row in range(2):
        sums = [float(np.sum(h[row] * w * np.array(mask))) for mask in np.ndindex(2, 2, 2, 2)]
        got = float(out["prediction"][row, 0] - p["dense_1"]["bias"][0])
        assert min(abs(got - s) for s in sums) < 1e-3 * max(1.0, abs(got))


def test_train_mode_batch_norm():
    inputs = iota(2, 8)
    model = ax.input("data").dense(4).sigmoid().batch_norm().dense(1)

    init_fn, predict_fn = ax.build(model, mode="train")
    params = init_fn(inputs, {})
    out = predict_fn(params, inputs)

    # normalised over a batch of two rows, the features are opposite, and so are the outputs
    pred = out["prediction"]
    assert pred.shape == (2, 1)
    np.testing.assert_allclose(pred[0], -pred[1], rtol=1e-4, atol=1e-5)

    p = params.data
    h = sigmoid(inputs @ p["dense_0"]["kernel"] + p["dense_0"]["bias"])
    state = out["state"]["batch_norm_0"]
    np.testing.assert_allclose(state["mean"], 0.9 * h.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(state["var"], 0.1 + 0.9 * h.var(0), rtol=1e-4, atol=1e-6)
