"""Tensor types: axonc's dtype names (Nx's short names) and shapes with dynamic dims."""

from __future__ import annotations

import functools
from collections.abc import Sequence
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
_NUMPY_DTYPES = {name: np.dtype(numpy_name) for name, numpy_name in _NUMPY.items()}


# numpy dtype objects by their axonc name, filled on first use (numpy's dtype.name is slow,
# and eager axonc.numpy calls ask for it several times per op)
_BY_NUMPY_DTYPE: dict[np.dtype, str] = {}


def dtype_name(dtype: Any) -> str:
    """Normalise a dtype given as an axonc name, a numpy dtype or a numpy name."""
    if isinstance(dtype, str) and dtype in _NUMPY:
        return dtype
    if isinstance(dtype, str) and dtype in _ALIASES:
        return _ALIASES[dtype]
    if isinstance(dtype, np.dtype):
        known = _BY_NUMPY_DTYPE.get(dtype)
        if known is not None:
            return known
        if dtype.name in _ALIASES:
            _BY_NUMPY_DTYPE[dtype] = _ALIASES[dtype.name]
            return _BY_NUMPY_DTYPE[dtype]
    try:
        name = None if dtype is None else np.dtype(dtype).name  # np.dtype(None) is float64
    except TypeError:
        name = None
    if name in _ALIASES:
        return _ALIASES[name]
    raise ShapeError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")


def to_numpy_dtype(dtype: str) -> np.dtype:
    """The numpy dtype of an axonc dtype name."""
    return _NUMPY_DTYPES[dtype_name(dtype)]


def is_float(dtype: str) -> bool:
    return dtype_name(dtype) in ("f16", "f32", "f64")


def is_int(dtype: str) -> bool:
    return dtype_name(dtype)[0] in "su"


# ---------------------------------------------------------------------------
# Result dtypes. Two promotion rules on purpose: layers follow Nx (no boolean
# type, so pred merges as u8), traced `axonc.numpy` primitives follow jax.numpy
# (pred is the lowest kind and takes the other operand's type). They differ
# only where a pred meets an integer: nx_merge("pred", "s8") is s16,
# jnp_promote("pred", "s8") is s8.

_NX_KIND_RANK = {"u": 0, "s": 1, "f": 3}


def _nx_kind_bits(dtype: str) -> tuple[str, int]:
    name = dtype_name(dtype)
    if name == "pred":  # Nx has no boolean type: comparisons produce u8
        return "u", 8
    return name[0], int(name[1:])


def nx_merge(a: str, b: str) -> str:
    """Nx.Type.merge: the dtype of a binary op's result (e.g. s32 + f32 -> f32, u8 + s8 -> s16)."""
    (ka, na), (kb, nb) = _nx_kind_bits(a), _nx_kind_bits(b)
    if ka == kb:
        return f"{ka}{max(na, nb)}"
    (k1, n1), (k2, n2) = sorted([(ka, na), (kb, nb)], key=lambda kn: _NX_KIND_RANK[kn[0]])
    if (k1, k2) == ("u", "s"):
        return f"s{max(min(n1 * 2, 64), n2)}"
    return f"{k2}{n2}"


def nx_result_dtype(dtypes: Sequence[str]) -> str:
    """The merged dtype of several inputs, folding `nx_merge` left to right."""
    out = dtype_name(dtypes[0])
    for d in dtypes[1:]:
        out = nx_merge(out, d)
    return out


def dtype_kind(dtype: str) -> int:
    """jax.numpy's kind order: 0 = pred, 1 = integer, 2 = float."""
    return 0 if dtype == "pred" else 1 if is_int(dtype) else 2


def jnp_promote(*dtypes: str) -> str:
    """jax.numpy's common dtype: numpy's rule, except int + float = the float type."""
    return _jnp_promote(tuple(dtype_name(d) for d in dtypes))


@functools.cache
def _jnp_promote(names: tuple[str, ...]) -> str:
    top = max(dtype_kind(d) for d in names)
    same_kind = [d for d in names if dtype_kind(d) == top]
    out = dtype_name(np.result_type(*(to_numpy_dtype(d) for d in same_kind)))
    return "s64" if top != 2 and out == "f64" else out  # u64 with a signed type


def with_f32_params(dtype: str) -> str:
    """Nx's merge of an input dtype with f32 parameters: f64 stays f64, all else is f32."""
    return "f64" if dtype == "f64" else "f32"


def with_f32_params_np(dtype: Any) -> type:
    """`with_f32_params` for a numpy dtype."""
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


def float_or_f32(dtype: str) -> str:
    """Floats keep their dtype, the rest give f32 (Nx averages and norms, jnp's exp or mean)."""
    return dtype if is_float(dtype) else "f32"


def float_or_f32_np(dtype: Any) -> np.dtype:
    """`float_or_f32` for a numpy dtype."""
    dtype = np.dtype(dtype)
    return dtype if dtype.kind == "f" else np.dtype(np.float32)


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
