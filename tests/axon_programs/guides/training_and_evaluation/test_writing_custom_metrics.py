"""Axon's guides/training_and_evaluation/writing_custom_metrics.livemd: a metric written
as a function, metrics over the model state through an output transform, and a custom
accumulator (an exponential moving average)."""

import numpy as np

import axonc as ax
import axonc.numpy as anp
from tests.axon_programs.helpers import sin_batches


# CustomMetric
def my_weird_metric(y_true, y_pred):
    return anp.sum(anp.arctan2(y_true, y_pred))


# CustomAccumulator
def running_ema(acc, obs, _i, alpha=0.9):
    return obs * alpha + acc * (1 - alpha)


def build():
    return ax.input("data").dense(8).relu().dense(4).relu().dense(1)


def output_transform(step_state):
    return [step_state["model_state"].data["dense_0"]["kernel"]]


def observe(fn, seen):
    """Record fn(step_state) after every iteration."""

    def handler(state):
        seen.append(float(fn(state.step_state)))
        return "continue", state

    return handler


def final_metrics(out):
    def handler(state):
        out.update({k: float(v) for k, v in state.metrics.items()})
        return "continue", state

    return handler


def test_function_metric():
    model = build()
    seen, metrics = [], {}

    loop = (
        ax.Loop.trainer(model, "mean_squared_error", "sgd")
        .metric(my_weird_metric, "my weird metric")
        .handle_event(
            "iteration_completed",
            observe(lambda s: np.sum(np.arctan2(s["y_true"], s["y_pred"])), seen),
        )
        .handle_event("epoch_completed", final_metrics(metrics))
    )

    loop.run(sin_batches(0), {}, iterations=40)

    np.testing.assert_allclose(metrics["my weird metric"], np.mean(seen), rtol=1e-4)


def test_metrics_of_the_model_state():
    model = build()
    means, variances, metrics = [], [], {}

    kernel = lambda s: s["model_state"].data["dense_0"]["kernel"]  # noqa: E731
    loop = (
        ax.Loop.trainer(model, "mean_squared_error", "sgd")
        .metric(anp.mean, "dense_0_kernel_mean", "running_average", output_transform)
        .metric(anp.var, "dense_0_kernel_var", "running_average", output_transform)
        .handle_event("iteration_completed", observe(lambda s: np.mean(kernel(s)), means))
        .handle_event("iteration_completed", observe(lambda s: np.var(kernel(s)), variances))
        .handle_event("epoch_completed", final_metrics(metrics))
    )

    loop.run(sin_batches(1), {}, iterations=40)

    np.testing.assert_allclose(metrics["dense_0_kernel_mean"], np.mean(means), rtol=1e-4)
    np.testing.assert_allclose(metrics["dense_0_kernel_var"], np.mean(variances), rtol=1e-4)


def test_custom_accumulator():
    model = build()
    means, metrics = [], {}

    loop = (
        ax.Loop.trainer(model, "mean_squared_error", "sgd")
        .metric(anp.mean, "dense_0_kernel_ema_mean", running_ema, output_transform)
        .handle_event(
            "iteration_completed",
            observe(lambda s: np.mean(s["model_state"].data["dense_0"]["kernel"]), means),
        )
        .handle_event("epoch_completed", final_metrics(metrics))
    )

    loop.run(sin_batches(2), {}, iterations=40)

    ema = 0.0
    for obs in means:
        ema = obs * 0.9 + ema * 0.1
    np.testing.assert_allclose(metrics["dense_0_kernel_ema_mean"], ema, rtol=1e-4, atol=1e-7)
