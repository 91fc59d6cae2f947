"""Learning-rate schedules: closed forms (Polaris.Schedules' documented formulas), dtypes,
eager vs traced evaluation, option checks."""

import math

import numpy as np
import pytest

from axonc import schedules
from axonc.dtypes import TensorType
from axonc.errors import OptionError
from axonc.interpreter import run
from axonc.tracing import trace

STEPS = list(range(0, 41))


def values(schedule, steps=STEPS):
    return np.array([float(schedule(np.int32(t))) for t in steps])


def assert_close(actual, expected):
    np.testing.assert_allclose(actual, np.asarray(expected, np.float64), rtol=2e-6, atol=1e-9)


def test_constant():
    assert_close(values(schedules.constant(0.25)), [0.25] * len(STEPS))


@pytest.mark.parametrize(
    ("opts", "begin", "k", "rate", "stair"),
    [
        ({}, 0, 10, 0.95, False),
        ({"decay_rate": 0.5, "transition_steps": 4}, 0, 4, 0.5, False),
        ({"decay_rate": 0.5, "transition_steps": 4, "staircase": True}, 0, 4, 0.5, True),
        ({"transition_begin": 7, "decay_rate": 0.8}, 7, 10, 0.8, False),
    ],
)
def test_exponential_decay(opts, begin, k, rate, stair):
    expected = []
    for t in STEPS:
        if t <= begin:
            expected.append(0.1)
        else:
            e = (t - begin) / k
            expected.append(0.1 * rate ** (math.floor(e) if stair else e))
    assert_close(values(schedules.exponential_decay(0.1, **opts)), expected)


@pytest.mark.parametrize(("k", "alpha"), [(10, 0.0), (25, 0.1), (1, 0.5)])
def test_cosine_decay(k, alpha):
    def closed(t):
        frac = min(t, k) / k
        return 0.01 * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * frac)) + alpha)

    opts = {} if (k, alpha) == (10, 0.0) else {"decay_steps": k, "alpha": alpha}
    assert_close(values(schedules.cosine_decay(0.01, **opts)), [closed(t) for t in STEPS])


@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"end_value": 0.0, "power": 1, "transition_steps": 20},
        {"power": 0.5, "transition_begin": 5},
    ],
)
def test_polynomial_decay(opts):
    end = opts.get("end_value", 1e-3)
    power = opts.get("power", 2)
    k = opts.get("transition_steps", 10)
    begin = opts.get("transition_begin", 0)

    def closed(t):
        s = min(max(t - begin, 0), k)
        return (0.05 - end) * (1 - s / k) ** power + end

    assert_close(values(schedules.polynomial_decay(0.05, **opts)), [closed(t) for t in STEPS])


@pytest.mark.parametrize(("warm", "total"), [(0, 1000), (5, 30), (10, 10)])
def test_linear_decay(warm, total):
    def closed(t):
        if t < warm:
            return 0.2 * t / warm
        return 0.2 * max(0.0, (total - t) / max(1, total - warm))

    got = values(schedules.linear_decay(0.2, warmup=warm, steps=total))
    assert_close(got, [closed(t) for t in STEPS])


def test_warmup_ramps_linearly_then_starts_the_wrapped_schedule():
    inner = schedules.exponential_decay(0.1, decay_rate=0.5, transition_steps=3)
    sched = schedules.warmup(inner, 4, init_value=0.02)
    expected = []
    for t in STEPS:
        if t < 4:
            expected.append(0.02 + (0.1 - 0.02) * t / 4)
        else:
            expected.append(0.1 * 0.5 ** ((t - 4) / 3) if t > 4 else 0.1)
    assert_close(values(sched), expected)


def test_warmup_of_a_number_and_of_a_plain_function():
    assert_close(values(schedules.warmup(0.3, 3), range(6)), [0.0, 0.1, 0.2, 0.3, 0.3, 0.3])
    sched = schedules.warmup(lambda c: 1.0 / (1.0 + c), 2)
    assert_close(values(sched, range(5)), [0.0, 0.5, 1.0, 0.5, 1 / 3])


def test_zero_warmup_is_the_wrapped_schedule():
    inner = schedules.cosine_decay(0.1, decay_steps=7)
    assert_close(values(schedules.warmup(inner, 0)), values(inner))


ALL = [
    schedules.constant(0.1),
    schedules.exponential_decay(0.1, staircase=True, transition_begin=2),
    schedules.cosine_decay(0.1, decay_steps=6, alpha=0.2),
    schedules.polynomial_decay(0.1, power=3, transition_begin=1),
    schedules.linear_decay(0.1, warmup=2, steps=9),
    schedules.warmup(schedules.cosine_decay(0.1), 3),
]


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: s.name)
def test_result_is_an_f32_scalar_for_int_array_and_python_int(schedule):
    for count in (3, np.int32(3), np.asarray(3, np.int32)):
        out = schedule(count)
        assert isinstance(out, np.ndarray)
        assert out.shape == ()
        assert out.dtype == np.float32


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: s.name)
def test_traced_schedule_matches_eager(schedule):
    body = trace(schedule, [TensorType((), "s32")])
    for t in range(0, 15):
        out, _ = run(body, {}, {}, args=[np.asarray(t, np.int32)])
        assert np.asarray(out).dtype == np.float32
        np.testing.assert_array_equal(out, schedule(np.int32(t)))


def test_repr_names_the_options():
    text = repr(schedules.cosine_decay(0.1, alpha=0.5))
    assert text == "schedules.cosine_decay(init_value=0.1, decay_steps=10, alpha=0.5)"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: schedules.constant("0.1"), "init_value"),
        (lambda: schedules.exponential_decay(0.1, transition_steps=0), "transition_steps"),
        (lambda: schedules.exponential_decay(0.1, decay_rate=-1.0), "decay_rate"),
        (lambda: schedules.exponential_decay(0.1, staircase=1), "staircase"),
        (lambda: schedules.cosine_decay(0.1, decay_steps=2.5), "decay_steps"),
        (lambda: schedules.cosine_decay(0.1, alpha=1.5), "alpha"),
        (lambda: schedules.polynomial_decay(0.1, transition_begin=-1), "transition_begin"),
        (lambda: schedules.linear_decay(0.1, warmup=-2), "warmup"),
        (lambda: schedules.warmup(schedules.constant(0.1), -1), "warmup_steps"),
        (lambda: schedules.warmup("fast", 3), "schedule"),
    ],
)
def test_bad_options_raise_option_error_naming_the_option(make, message):
    with pytest.raises(OptionError, match=message):
        make()


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError):
        schedules.cosine_decay(0.1, steps=3)
