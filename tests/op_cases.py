"""Running an op's declared `Case`s: the model, concrete input types and random input values."""

from __future__ import annotations

import numpy as np

import axonc as ax
from axonc.dtypes import TensorType, is_float, to_numpy_dtype
from axonc.ir import Axon
from axonc.registry import Case


def model(case: Case) -> Axon:
    """The case's graph, built on inputs named in0, in1, ..."""
    inputs = [ax.input(f"in{i}", shape=t.shape, dtype=t.dtype) for i, t in enumerate(case.inputs)]
    return case.build(*inputs)


def concrete(t: TensorType, batch: int) -> TensorType:
    """`t` with its dynamic dims set to `batch`."""
    return TensorType(tuple(batch if d is None else d for d in t.shape), t.dtype)


def templates(case: Case, batch: int) -> dict[str, TensorType]:
    """The case's input types by input name, at a concrete batch size."""
    return {f"in{i}": concrete(t, batch) for i, t in enumerate(case.inputs)}


def feeds(case: Case, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Random input values: floats from normal (or the case's float_range), ints in [0, high)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, t in enumerate(case.inputs):
        shape = concrete(t, batch).shape
        if is_float(t.dtype):
            values = (
                rng.uniform(*case.float_range, size=shape)
                if case.float_range
                else rng.normal(size=shape)
            )
            out[f"in{i}"] = values.astype(to_numpy_dtype(t.dtype))
        else:
            high = case.int_inputs.get(i, 2)
            out[f"in{i}"] = rng.integers(0, high, size=shape).astype(to_numpy_dtype(t.dtype))
    return out
