"""Parameter initializers with Axon's names, as serialisable specs, seeded.

An initializer is given as a name ("glorot_uniform") or a spec dict
(`{"name": "normal", "scale": 0.1}`, what `ax.initializers.normal(scale=0.1)`
returns), so a model file stores it as data, never as code. Formulas follow
Axon.Initializers: fan_in / fan_out use the last two dims ({..., in, out}) and
receptive fields multiply in the leading dims.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from .dtypes import to_numpy_dtype
from .errors import OptionError

# name -> (default options, sampler(rng, shape, **opts) -> float64 array)
_Sampler = Callable[..., np.ndarray]
# marks an option with no default (Axon's `full(value)`)
_REQUIRED = object()


def _fans(shape: tuple[int, ...]) -> tuple[float, float]:
    """Axon's fan computation: rank < 2 uses the size; else receptive field * last two dims."""
    if len(shape) < 1:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    receptive = float(np.prod(shape[:-2])) if len(shape) > 2 else 1.0
    return shape[-2] * receptive, shape[-1] * receptive


def _variance_scaling(rng, shape, scale=1.0, mode="fan_in", distribution="normal"):
    fan_in, fan_out = _fans(shape)
    denom = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    variance = scale / max(denom, 1.0)
    if distribution == "uniform":
        limit = math.sqrt(3.0 * variance)
        return rng.uniform(-limit, limit, size=shape)
    if distribution == "truncated_normal":
        # std of a unit normal truncated to [-2, 2] is 0.87962566103423978
        std = math.sqrt(variance) / 0.87962566103423978
        return _truncated_normal(rng, shape, std)
    return rng.normal(0.0, math.sqrt(variance), size=shape)


def _scaled(mode: str, distribution: str) -> _Sampler:
    """A variance_scaling drawer with a fixed mode and distribution (glorot, he, lecun)."""
    return lambda rng, shape, scale: _variance_scaling(rng, shape, scale, mode, distribution)


def _truncated_normal(rng, shape, std):
    out = rng.normal(0.0, 1.0, size=shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.normal(0.0, 1.0, size=int(bad.sum()))
        bad = np.abs(out) > 2.0
    return out * std


def _orthogonal(rng, shape, distribution="normal"):
    """Axon's rule: flatten to (prod(shape[:-1]), shape[-1]), take Q of a square k x k random
    matrix (k = max(m, n), drawn from `distribution`), keep its top-left m x n block."""
    if len(shape) < 2:
        raise ValueError(f"orthogonal needs a shape of rank >= 2, got {shape}")
    rows = int(np.prod(shape[:-1]))
    cols = shape[-1]
    k = max(rows, cols)
    if distribution == "uniform":
        a = rng.uniform(0.0, 1.0, size=(k, k))
    else:
        a = rng.normal(0.0, 1.0, size=(k, k))
    q, r = np.linalg.qr(a)
    q = q * np.where(np.diag(r) < 0, -1.0, 1.0)
    return q[:rows, :cols].reshape(shape)


def _identity(rng, shape):
    """Nx.eye: ones on the diagonal of the last two axes, repeated over any leading axes."""
    if len(shape) < 2:
        raise ValueError(f"identity needs a shape of rank >= 2, got {shape}")
    return np.broadcast_to(np.eye(shape[-2], shape[-1]), shape).copy()


INITIALIZERS: dict[str, tuple[dict[str, Any], _Sampler]] = {
    "zeros": ({}, lambda rng, shape: np.zeros(shape)),
    "ones": ({}, lambda rng, shape: np.ones(shape)),
    "full": ({"value": _REQUIRED}, lambda rng, shape, value: np.full(shape, float(value))),
    "identity": ({}, _identity),
    "uniform": ({"scale": 0.01}, lambda rng, shape, scale: rng.uniform(-scale, scale, size=shape)),
    "normal": (
        {"mean": 0.0, "scale": 0.01},
        lambda rng, shape, mean, scale: rng.normal(mean, scale, size=shape),
    ),
    "variance_scaling": (
        {"scale": 1.0, "mode": "fan_in", "distribution": "normal"},
        _variance_scaling,
    ),
    "glorot_uniform": ({"scale": 1.0}, _scaled("fan_avg", "uniform")),
    "glorot_normal": ({"scale": 1.0}, _scaled("fan_avg", "truncated_normal")),
    "he_uniform": ({"scale": 2.0}, _scaled("fan_in", "uniform")),
    "he_normal": ({"scale": 2.0}, _scaled("fan_in", "truncated_normal")),
    "lecun_uniform": ({"scale": 1.0}, _scaled("fan_in", "uniform")),
    "lecun_normal": ({"scale": 1.0}, _scaled("fan_in", "truncated_normal")),
    "orthogonal": ({"distribution": "normal"}, _orthogonal),
    # A PRNG key state (dropout layers), as Nx.Random.key(seed): [high 32 bits, low 32 bits].
    "prng_key": (
        {"seed": 0},
        lambda rng, shape, seed: np.array([(int(seed) >> 32) & 0xFFFFFFFF, int(seed) & 0xFFFFFFFF]),
    ),
}

_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("normal", "uniform", "truncated_normal")
_ORTHOGONAL_DISTRIBUTIONS = ("normal", "uniform")
_CHOICE_OPTIONS = ("mode", "distribution")


def check_initializer(spec: Any) -> dict[str, Any]:
    """Normalise an initializer name or spec dict to a full spec dict (an Option check)."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise TypeError(
            "expected an initializer name or spec such as ax.initializers.normal(scale=0.1), "
            f"got {spec!r}"
        )
    name = spec["name"]
    if name not in INITIALIZERS:
        raise ValueError(f"unknown initializer {name!r}; expected one of {', '.join(INITIALIZERS)}")
    defaults, _ = INITIALIZERS[name]
    extra = sorted(set(spec) - {"name"} - set(defaults))
    if extra:
        raise ValueError(
            f"initializer {name!r} has no option(s) {', '.join(extra)}; "
            f"it takes {', '.join(defaults) or 'no options'}"
        )
    out = {"name": name, **defaults, **{k: v for k, v in spec.items() if k != "name"}}
    missing = [k for k, v in out.items() if v is _REQUIRED]
    if missing:
        raise ValueError(
            f"initializer {name!r} needs option(s) {', '.join(missing)}, "
            f"e.g. ax.initializers.{name}(1.0)"
        )
    if name == "orthogonal" and out["distribution"] not in _ORTHOGONAL_DISTRIBUTIONS:
        raise ValueError(
            f"orthogonal distribution must be one of {', '.join(_ORTHOGONAL_DISTRIBUTIONS)}, "
            f"got {out['distribution']!r}"
        )
    if name == "variance_scaling":
        if out["mode"] not in _MODES:
            raise ValueError(
                f"variance_scaling mode must be one of {', '.join(_MODES)}, got {out['mode']!r}"
            )
        if out["distribution"] not in _DISTRIBUTIONS:
            raise ValueError(
                f"variance_scaling distribution must be one of {', '.join(_DISTRIBUTIONS)}, "
                f"got {out['distribution']!r}"
            )
    for k, v in out.items():
        if (
            k != "name"
            and k not in _CHOICE_OPTIONS
            and (isinstance(v, bool) or not isinstance(v, (int, float)))
        ):
            raise TypeError(f"initializer {name!r} option {k!r} must be a number, got {v!r}")
    return out


def initialize(spec: Any, shape: tuple[int, ...], dtype: str = "f32", seed: int = 0) -> np.ndarray:
    """A tensor of `shape` drawn by the initializer `spec` from a generator seeded with `seed`."""
    spec = check_initializer(spec)
    _, sampler = INITIALIZERS[spec["name"]]
    opts = {k: v for k, v in spec.items() if k != "name"}
    rng = np.random.default_rng(seed)
    values = np.asarray(sampler(rng, tuple(shape), **opts))
    return values.astype(to_numpy_dtype(dtype))


def derive_seed(seed: int, *path: str) -> int:
    """A stable per-parameter seed from a model seed and the parameter's path."""
    return zlib.crc32("/".join(path).encode()) ^ (seed & 0xFFFFFFFF)


def _spec_fn(name: str) -> Callable[..., dict[str, Any]]:
    defaults, _ = INITIALIZERS[name]

    def make(*args: Any, **opts: Any) -> dict[str, Any]:
        # only `full` takes a positional argument, as Axon's full(value)
        if args and name == "full" and len(args) == 1 and "value" not in opts:
            opts["value"] = args[0]
        elif args:
            raise TypeError(f"ax.initializers.{name} takes keyword options only, got {args!r}")
        try:
            return check_initializer({"name": name, **opts})
        except (ValueError, TypeError) as exc:
            raise OptionError(f"ax.initializers.{name}: {exc}") from None

    make.__name__ = name
    make.__doc__ = f"The {name} initializer spec; options: {', '.join(defaults) or 'none'}."
    return make


for _name in INITIALIZERS:
    globals()[_name] = _spec_fn(_name)

__all__ = ["INITIALIZERS", "check_initializer", "derive_seed", "initialize", *INITIALIZERS]
