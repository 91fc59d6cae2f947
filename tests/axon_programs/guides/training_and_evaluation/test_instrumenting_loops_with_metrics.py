"""Axon's guides/training_and_evaluation/instrumenting_loops_with_metrics.livemd: metrics
by name, under a custom name, and accumulated as a running sum."""

import numpy as np

import axonc as ax
from tests.axon_programs.helpers import sin_batches


def build():
    return ax.input("data").dense(8).relu().dense(4).relu().dense(1)


def batch_errors(errors):
    """Record each iteration's mean absolute error from the step state (y_true, y_pred)."""

    def handler(state):
        step = state.step_state
        errors.append(float(np.mean(np.abs(step["y_true"] - step["y_pred"]))))
        return "continue", state

    return handler


def epoch_metrics(seen):
    def handler(state):
        seen.append({k: float(v) for k, v in state.metrics.items()})
        return "continue", state

    return handler


def test_metric_by_name():
    model = build()
    errors, seen = [], []

    loop = (
        ax.Loop.trainer(model, "mean_squared_error", "sgd")
        .metric("mean_absolute_error")
        .handle_event("iteration_completed", batch_errors(errors))
        .handle_event("epoch_completed", epoch_metrics(seen))
    )
    loop.run(sin_batches(0), {}, iterations=40)

    assert set(seen[0]) == {"loss", "mean_absolute_error"}
    np.testing.assert_allclose(seen[0]["mean_absolute_error"], np.mean(errors), rtol=1e-5)


def test_metric_with_a_name():
    model = build()
    seen = []
    (
        ax.Loop.trainer(model, "mean_squared_error", "sgd")
        .metric("mean_absolute_error", "model error")
        .handle_event("epoch_completed", epoch_metrics(seen))
        .run(sin_batches(1), {}, iterations=40)
    )
    assert set(seen[0]) == {"loss", "model error"}


def test_running_sum():
    model = build()
    errors, seen = [], []
    (
        ax.Loop.trainer(model, "mean_squared_error", "sgd")
        .metric("mean_absolute_error", "total error", "running_sum")
        .handle_event("iteration_completed", batch_errors(errors))
        .handle_event("epoch_completed", epoch_metrics(seen))
        .run(sin_batches(2), {}, iterations=40)
    )
    np.testing.assert_allclose(seen[0]["total error"], np.sum(errors), rtol=1e-5)
