"""Loop.metric: accumulation (running average / sum / custom), field picking, names,
per-epoch reset; expected values are plain numpy means and sums over the batches."""

from __future__ import annotations

import numpy as np
import pytest

from axonc import Loop
from axonc.errors import OptionError

RNG = np.random.default_rng(3)
BATCHES = [
    (RNG.random((5, 3)).astype(np.float32), RNG.random((5, 3)).astype(np.float32)) for _ in range(4)
]


def passthrough() -> Loop:
    """A step that exposes each batch as y_true / y_pred."""
    return Loop.loop(lambda batch, s: {"y_true": batch[0], "y_pred": batch[1]})


def per_batch(fn) -> list[float]:
    return [float(fn(t, p)) for t, p in BATCHES]


def mae(t, p):
    return np.mean(np.abs(t.astype(np.float64) - p))


def test_running_average_is_the_mean_over_the_epoch():
    final = passthrough().metric("mean_absolute_error").run(BATCHES, {}, epochs=2)
    for epoch in (0, 1):
        got = float(final.metrics[epoch]["mean_absolute_error"])
        assert got == pytest.approx(np.mean(per_batch(mae)), rel=1e-6)


def test_running_sum_and_custom_accumulator():
    def largest(acc, obs, i):
        return obs if i == 0 else max(acc, obs)

    final = (
        passthrough()
        .metric("mean_absolute_error", "mae_sum", "running_sum")
        .metric(lambda t, p: float(mae(t, p)), "mae_max", largest)
        .run(BATCHES, {})
    )
    assert float(final.metrics[0]["mae_sum"]) == pytest.approx(sum(per_batch(mae)), rel=1e-6)
    assert final.metrics[0]["mae_max"] == pytest.approx(max(per_batch(mae)), rel=1e-12)


def test_metric_values_during_the_epoch_are_running():
    seen = []
    loop = (
        passthrough()
        .metric("mean_absolute_error", "mae")
        .handle(
            "iteration_completed",
            lambda s: (seen.append(float(s.metrics["mae"])), ("continue", s))[1],
        )
    )
    loop.run(BATCHES, {})
    values = per_batch(mae)
    expected = [np.mean(values[: i + 1]) for i in range(len(values))]
    np.testing.assert_allclose(seen, expected, rtol=1e-6)


def test_fields_and_transform_pick_the_metric_inputs():
    loop = Loop.loop(lambda b, s: {"a": b[0], "b": b[1], "pair": (b[1], b[0])})
    final = (
        loop.metric("mean_squared_error", "by_fields", transform_or_fields=["a", "b"])
        .metric("mean_squared_error", "by_fn", transform_or_fields=lambda s: s["pair"])
        .metric(lambda a: float(np.sum(a)), "one_field", "running_sum", "a")
        .run(BATCHES, {})
    )
    mse = np.mean(per_batch(lambda t, p: np.mean((t.astype(np.float64) - p) ** 2)))
    assert float(final.metrics[0]["by_fields"]) == pytest.approx(mse, rel=1e-6)
    assert float(final.metrics[0]["by_fn"]) == pytest.approx(mse, rel=1e-6)
    assert final.metrics[0]["one_field"] == pytest.approx(
        sum(float(np.sum(t)) for t, _ in BATCHES), rel=1e-5
    )


def test_a_name_used_twice_keeps_the_last_metric():
    loop = passthrough().metric("mean_squared_error", "err").metric("mean_absolute_error", "err")
    final = loop.run(BATCHES, {})
    assert list(final.metrics[0]) == ["err"]
    assert float(final.metrics[0]["err"]) == pytest.approx(np.mean(per_batch(mae)), rel=1e-6)


def test_unknown_metric_lists_the_valid_ones():
    with pytest.raises(OptionError, match=r"unknown metric 'acuracy'.*accuracy.*precision"):
        passthrough().metric("acuracy")


def test_metric_errors():
    with pytest.raises(OptionError, match="needs a name"):
        passthrough().metric(lambda t, p: 0.0)
    with pytest.raises(OptionError, match="accumulate must be"):
        passthrough().metric("accuracy", accumulate="running_max")
    with pytest.raises(OptionError, match="transform_or_fields"):
        passthrough().metric("accuracy", transform_or_fields=3)
    loop = passthrough().metric("accuracy", transform_or_fields=["y_true", "labels"])
    with pytest.raises(OptionError, match="'labels' is not in the step state"):
        loop.run(BATCHES, {})
