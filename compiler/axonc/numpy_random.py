"""`anp.random`: Nx.Random's explicit-key API, run on the host with numpy arrays.

A key is a u32[2] array, `key(seed)` = [seed >> 32, seed & 0xFFFFFFFF] as Nx's.
Its stream is numpy's Philox keyed by the 64-bit number the key spells (the
stream dropout masks use): a sampler's first two 32-bit words are the next key,
the rest the samples, so `sample, key = normal(key, shape=...)` threads keys as
Nx does. Samples agree with Nx in distribution, not bit for bit (Nx runs
threefry). Keys must be concrete arrays: inside a traced function use
`anp.random_normal(tensor)` (a recorded op) or pass samples in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .dtypes import dtype_name, to_numpy_dtype
from .errors import TraceError
from .tracing import Tensor

__all__ = ["fold_in", "key", "normal", "randint", "split", "uniform"]


def key(seed: int) -> np.ndarray:
    """Nx.Random.key(seed): the u32[2] key [seed >> 32, seed & 0xFFFFFFFF]."""
    if isinstance(seed, Tensor):
        _traced("key")
    seed = int(seed)
    return np.array([(seed >> 32) & 0xFFFFFFFF, seed & 0xFFFFFFFF], np.uint32)


def _generator(k: Any, what: str, counter: int = 0) -> np.random.Generator:
    if isinstance(k, Tensor):
        _traced(what)
    arr = np.asarray(k)
    if arr.shape != (2,) or arr.dtype.kind not in "iu":
        raise TraceError(f"{what}: expected a u32[2] key (anp.random.key(seed)), got {arr!r}")
    arr = arr.astype(np.uint64)
    bits = (int(arr[0]) << 32) | int(arr[1])
    return np.random.Generator(np.random.Philox(key=bits, counter=counter))


def _traced(what: str) -> None:
    raise TraceError(
        f"anp.random.{what} runs on the host and needs a concrete key, got a traced tensor; "
        "inside a traced function use anp.random_normal(tensor) / anp.random_uniform(tensor)"
    )


def _next_key(gen: np.random.Generator) -> np.ndarray:
    return gen.integers(0, 2**32, size=2, dtype=np.uint32)


def split(k: Any, parts: int = 2) -> np.ndarray:
    """Nx.Random.split(key, parts: n): n new keys as a u32[n, 2] array."""
    return _generator(k, "split").integers(0, 2**32, size=(int(parts), 2), dtype=np.uint32)


def fold_in(k: Any, data: int) -> np.ndarray:
    """Nx.Random.fold_in(key, data): a new key mixing `data` (an integer) into `key`."""
    return _next_key(_generator(k, "fold_in", counter=int(data) + 1))


def normal(
    k: Any,
    mean: float = 0.0,
    std: float = 1.0,
    *,
    shape: tuple[int, ...] = (),
    type: Any = "f32",
) -> tuple[np.ndarray, np.ndarray]:
    """Nx.Random.normal(key, mean, std, shape:, type:): (samples, next key)."""
    gen = _generator(k, "normal")
    nxt = _next_key(gen)
    out = gen.normal(float(mean), float(std), size=tuple(shape))
    return out.astype(to_numpy_dtype(dtype_name(type))), nxt


def uniform(
    k: Any,
    min_val: float = 0.0,
    max_val: float = 1.0,
    *,
    shape: tuple[int, ...] = (),
    type: Any = "f32",
) -> tuple[np.ndarray, np.ndarray]:
    """Nx.Random.uniform(key, min, max, shape:, type:): samples in [min, max), next key."""
    gen = _generator(k, "uniform")
    nxt = _next_key(gen)
    out = gen.uniform(float(min_val), float(max_val), size=tuple(shape))
    return out.astype(to_numpy_dtype(dtype_name(type))), nxt


def randint(
    k: Any, min_val: int, max_val: int, *, shape: tuple[int, ...] = (), type: Any = "s32"
) -> tuple[np.ndarray, np.ndarray]:
    """Nx.Random.randint(key, min, max, shape:, type:): integers in [min, max), next key."""
    gen = _generator(k, "randint")
    nxt = _next_key(gen)
    out = gen.integers(int(min_val), int(max_val), size=tuple(shape))
    return out.astype(to_numpy_dtype(dtype_name(type))), nxt
