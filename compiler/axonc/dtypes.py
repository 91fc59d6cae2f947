"""Tensor types: axonc's dtype names (Nx's short names) and shapes with dynamic dims."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ShapeError

# Nx-style short names, in the order a user is most likely to want them listed.
_NUMPY = {
    "f32": np.float32,
    "f64": np.float64,
    "f16": np.float16,
    "s8": np.int8,
    "s16": np.int16,
    "s32": np.int32,
    "s64": np.int64,
    "u8": np.uint8,
    "u16": np.uint16,
    "u32": np.uint32,
    "u64": np.uint64,
    "pred": np.bool_,
}
_ALIASES = {
    "float32": "f32",
    "float64": "f64",
    "float16": "f16",
    "int8": "s8",
    "int16": "s16",
    "int32": "s32",
    "int64": "s64",
    "uint8": "u8",
    "uint16": "u16",
    "uint32": "u32",
    "uint64": "u64",
    "bool": "pred",
}
DTYPES = tuple(_NUMPY)


def dtype_name(dtype: Any) -> str:
    """Normalise a dtype given as an axonc name, a numpy dtype or a numpy name."""
    if isinstance(dtype, str) and dtype in _NUMPY:
        return dtype
    if isinstance(dtype, str) and dtype in _ALIASES:
        return _ALIASES[dtype]
    try:
        name = None if dtype is None else np.dtype(dtype).name  # np.dtype(None) is float64
    except TypeError:
        name = None
    if name in _ALIASES:
        return _ALIASES[name]
    raise ShapeError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")


def to_numpy_dtype(dtype: str) -> np.dtype:
    """The numpy dtype of an axonc dtype name."""
    return np.dtype(_NUMPY[dtype_name(dtype)])


def is_float(dtype: str) -> bool:
    return dtype_name(dtype) in ("f16", "f32", "f64")


def is_int(dtype: str) -> bool:
    return dtype_name(dtype)[0] in "su"


Shape = tuple  # a tuple of int | None; None is a dynamic dimension


def normalize_shape(shape: Any, what: str = "shape") -> Shape:
    """Check a user-given shape: a tuple of non-negative ints or None."""
    if isinstance(shape, int):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise ShapeError(f"{what} must be a tuple of ints or None, got {shape!r}") from None
    for d in dims:
        if d is not None and (not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 0):
            raise ShapeError(f"{what} must be a tuple of non-negative ints or None, got {shape!r}")
    return tuple(None if d is None else int(d) for d in dims)


@dataclass(frozen=True)
class TensorType:
    """The static type of a tensor: a shape (None for dynamic dims) and a dtype name."""

    shape: Shape
    dtype: str = "f32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", normalize_shape(self.shape))
        object.__setattr__(self, "dtype", dtype_name(self.dtype))

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"

    def with_shape(self, shape: Shape) -> TensorType:
        return TensorType(shape, self.dtype)

    def with_dtype(self, dtype: str) -> TensorType:
        return TensorType(self.shape, dtype)


def template(shape: Any, dtype: Any = "f32") -> TensorType:
    """An input template, like Nx.template: a shape and a dtype, no data."""
    return TensorType(normalize_shape(shape, "template shape"), dtype)


def type_of(value: Any) -> TensorType:
    """The TensorType of a concrete array."""
    arr = np.asarray(value)
    return TensorType(arr.shape, dtype_name(arr.dtype))


def broadcast_shapes(*shapes: Shape) -> Shape:
    """Numpy broadcasting over shapes that may hold None (dynamic) dims."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise ShapeError(
                f"shapes {', '.join(str(tuple(s)) for s in shapes)} cannot be broadcast together"
            )
        if known:
            out.append(known.pop())
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def same_dim(a: int | None, b: int | None) -> bool:
    """Whether two dims may be equal (a dynamic dim matches anything)."""
    return a is None or b is None or a == b
