"""Axon's guides/training_and_evaluation/your_first_evaluation_loop.livemd: train, then
evaluate the mean absolute error with Axon.Loop.evaluator."""

import numpy as np

import axonc as ax
from tests.axon_programs.helpers import sin_batches


def test_evaluation_loop():
    model = ax.input("data").dense(8).relu().dense(4).relu().dense(1)

    train_loop = ax.Loop.trainer(model, "mean_squared_error", "sgd")

    data = sin_batches(0)

    trained_model_state = train_loop.run(data, {}, iterations=100)

    test_loop = ax.Loop.evaluator(model)
    test_loop = test_loop.metric("mean_absolute_error")

    result = ax.Loop.run(test_loop, sin_batches(7), trained_model_state, iterations=20)

    assert list(result) == [0] and list(result[0]) == ["mean_absolute_error"]
    batches = sin_batches(7)
    errors = []
    for _ in range(20):
        xs, ys = next(batches)
        errors.append(np.mean(np.abs(ys - ax.predict(model, trained_model_state, xs))))
    np.testing.assert_allclose(float(result[0]["mean_absolute_error"]), np.mean(errors), rtol=1e-5)
