"""Learning-rate schedules (Polaris.Schedules): functions of the optimizer's step count.

A schedule maps the number of updates already applied (`count`, an s32 scalar:
0 on the first update) to a value, here an f32 scalar. Each is written with
`axonc.numpy`, so it evaluates at once on a number or a numpy array and records
graph nodes on a traced tensor: a compiled train step computes its learning rate
from the step count it carries in the optimizer state.

    lr = schedules.warmup(schedules.cosine_decay(1e-3, decay_steps=1000), 100)
    opt = optimizers.adam(learning_rate=lr)

Names, options and defaults follow Polaris 0.1 (`init_value` is positional and
required, as there). `linear_decay` scales by `init_value`, as Polaris does after
0.1.0 (0.1.0 itself forgot to, returning a bare multiplier). `warmup` (linear
warmup into another schedule) is axonc's own: Polaris 0.1 has no schedule joining.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from . import numpy as anp
from .errors import OptionError
from .registry import check_bool, check_float, check_int
from .tracing import Tensor

__all__ = [
    "Schedule",
    "constant",
    "cosine_decay",
    "exponential_decay",
    "linear_decay",
    "polynomial_decay",
    "warmup",
]


class Schedule:
    """A named learning-rate schedule: `schedule(count) -> f32 scalar` (eager or traced)."""

    def __init__(self, name: str, options: dict[str, Any], fn: Callable[[Any], Any]):
        self.name = name
        self.options = options
        self._fn = fn

    def __call__(self, count: Any) -> Any:
        """The value after `count` updates (a Python int, numpy array or traced s32 tensor)."""
        out = self._fn(count)
        return out if isinstance(out, Tensor) else np.asarray(out, dtype=np.float32)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"schedules.{self.name}({opts})"


def _check(schedule: str, key: str, value: Any, check: Callable[[Any], Any]) -> Any:
    try:
        return check(value)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"schedules.{schedule}: option {key!r}: {exc}") from None


def _step(count: Any) -> Any:
    """The step count as f32 (a Python int or an s32 array/tensor)."""
    return anp.astype(count, "f32")


def constant(init_value: float) -> Schedule:
    """The same value at every step: gamma(t) = init_value."""
    v = _check("constant", "init_value", init_value, check_float())
    return Schedule("constant", {"init_value": v}, lambda count: anp.full_like(_step(count), v))


def exponential_decay(
    init_value: float,
    *,
    decay_rate: float = 0.95,
    transition_steps: int = 10,
    transition_begin: int = 0,
    staircase: bool = False,
) -> Schedule:
    """init_value * decay_rate ** ((t - transition_begin) / transition_steps), and init_value
    until `transition_begin`; `staircase` floors the exponent (decay in whole transitions)."""
    name = "exponential_decay"
    v = _check(name, "init_value", init_value, check_float())
    rate = _check(name, "decay_rate", decay_rate, check_float(lo=0.0))
    k = _check(name, "transition_steps", transition_steps, check_int(lo=1))
    begin = _check(name, "transition_begin", transition_begin, check_int(lo=0))
    stair = _check(name, "staircase", staircase, check_bool)

    def fn(count: Any) -> Any:
        t = _step(count) - float(begin)
        p = anp.floor(t / float(k)) if stair else t / float(k)
        return anp.where(t <= 0.0, v, v * anp.power(rate, p))

    opts = {
        "init_value": v,
        "decay_rate": rate,
        "transition_steps": k,
        "transition_begin": begin,
        "staircase": stair,
    }
    return Schedule(name, opts, fn)


def cosine_decay(init_value: float, *, decay_steps: int = 10, alpha: float = 0.0) -> Schedule:
    """init_value * ((1 - alpha) * (1 + cos(pi * min(t, decay_steps) / decay_steps)) / 2 + alpha):
    a half cosine from init_value down to alpha * init_value, then flat (SGDR without restarts)."""
    name = "cosine_decay"
    v = _check(name, "init_value", init_value, check_float())
    k = _check(name, "decay_steps", decay_steps, check_int(lo=1))
    a = _check(name, "alpha", alpha, check_float(lo=0.0, hi=1.0))

    def fn(count: Any) -> Any:
        theta = anp.minimum(_step(count), float(k)) / float(k) * math.pi
        return v * ((anp.cos(theta) + 1.0) / 2.0 * (1.0 - a) + a)

    return Schedule(name, {"init_value": v, "decay_steps": k, "alpha": a}, fn)


def polynomial_decay(
    init_value: float,
    *,
    end_value: float = 1.0e-3,
    power: float = 2,
    transition_steps: int = 10,
    transition_begin: int = 0,
) -> Schedule:
    """(init_value - end_value) * (1 - s / transition_steps) ** power + end_value, with
    s = clip(t - transition_begin, 0, transition_steps)."""
    name = "polynomial_decay"
    v = _check(name, "init_value", init_value, check_float())
    end = _check(name, "end_value", end_value, check_float())
    p = _check(name, "power", power, check_float(lo=0.0))
    k = _check(name, "transition_steps", transition_steps, check_int(lo=1))
    begin = _check(name, "transition_begin", transition_begin, check_int(lo=0))

    def fn(count: Any) -> Any:
        s = anp.clip(_step(count) - float(begin), 0.0, float(k))
        return anp.power(1.0 - s / float(k), p) * (v - end) + end

    opts = {
        "init_value": v,
        "end_value": end,
        "power": p,
        "transition_steps": k,
        "transition_begin": begin,
    }
    return Schedule(name, opts, fn)


def linear_decay(init_value: float, *, warmup: int = 0, steps: int = 1000) -> Schedule:
    """init_value * t / warmup during `warmup` steps, then a straight line down to 0 at `steps`
    (init_value * max(0, (steps - t) / max(1, steps - warmup)))."""
    name = "linear_decay"
    v = _check(name, "init_value", init_value, check_float())
    w = _check(name, "warmup", warmup, check_int(lo=0))
    n = _check(name, "steps", steps, check_int(lo=0))

    def fn(count: Any) -> Any:
        t = _step(count)
        rising = t / float(max(1, w))
        falling = anp.maximum(0.0, (float(n) - t) / float(max(1, n - w)))
        return anp.where(t < float(w), rising, falling) * v

    return Schedule(name, {"init_value": v, "warmup": w, "steps": n}, fn)


def warmup(
    schedule: Schedule | Callable[[Any], Any] | float,
    warmup_steps: int,
    *,
    init_value: float = 0.0,
) -> Schedule:
    """A linear ramp from `init_value` (at count 0) to `schedule(0)` (at count `warmup_steps`),
    then `schedule(count - warmup_steps)`: the wrapped schedule starts when the warmup ends.
    `schedule` may be a number (a constant after the warmup)."""
    name = "warmup"
    steps = _check(name, "warmup_steps", warmup_steps, check_int(lo=0))
    start = _check(name, "init_value", init_value, check_float())
    if not callable(schedule):
        schedule = constant(_check(name, "schedule", schedule, check_float()))
    after = schedule
    peak = after(0)

    def fn(count: Any) -> Any:
        t = _step(count)
        ramp = start + (peak - start) * (t / float(max(1, steps)))
        # never a negative count for the wrapped schedule, even in the unselected branch
        since = anp.maximum(anp.astype(count, "s32") - steps, 0)
        shifted = anp.astype(after(since), "f32")
        return anp.where(t < float(steps), ramp, shifted)

    return Schedule(name, {"schedule": after, "warmup_steps": steps, "init_value": start}, fn)
