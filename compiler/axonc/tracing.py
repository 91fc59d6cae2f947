"""Tracing: run a Python function once on symbolic tensors and record it as a graph.

`trace(fn, arg_types)` calls `fn` on `Tensor`s, each wrapping one node of a
tracing graph; Python operators and the functions of `axonc.numpy` add primitive
nodes ("np.add", "np.sum", ...). The result is an ordinary `Axon` body whose
"argument" nodes are bound by position when it runs, so a custom layer is a
subgraph that the interpreter, the file format and every backend understand,
and a saved model never holds code (as jax.make_jaxpr does for JAX).

Python numbers mixed with tensors are weakly typed, as in JAX: a Python float
takes the other operand's float dtype (f32 if that is an integer), a Python int
the other operand's dtype; numpy arrays keep their own dtype. Next to a tensor
whose type is unknown (an `ax.input` without a shape) a number is f32 / s32.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .dtypes import TensorType, dtype_kind, dtype_name, jnp_promote, to_numpy_dtype, type_of
from .errors import DTypeError, ShapeError, TraceError
from .ir import Axon, merge_nodes, topo_order, tree_leaves, tree_map
from .ops._primitive_data import encode_index
from .registry import get_op
from .shape_inference import NONE, declared_type, is_guessed, leaves_known, make_node

_traces = itertools.count()


class Tensor:
    """A symbolic tensor inside a traced function: one node of the tracing graph.

    It supports Python's operators, basic indexing, `.shape` / `.dtype` / `.ndim`,
    and the methods numpy arrays have (`.sum`, `.reshape`, `.T`, `.astype`, ...).
    Its values are unknown while tracing, so Python control flow on it is an error.
    """

    __slots__ = ("_graph", "_trace")
    __array_priority__ = 1000

    def __init__(self, graph: Axon, trace_id: int):
        self._graph = graph
        self._trace = trace_id

    # -- identity and type ---------------------------------------------------
    @property
    def graph(self) -> Axon:
        """The single-node graph handle this tensor wraps."""
        return self._graph

    @property
    def type(self) -> TensorType:
        t = declared_type(self._graph, self._graph.output)
        if not isinstance(t, TensorType):
            raise TraceError(
                "this tensor's shape is unknown while tracing; give the model's ax.input a shape"
            )
        return t

    @property
    def shape(self) -> tuple[int | None, ...]:
        """The static shape; None marks a dynamic dim (such as the batch)."""
        return self.type.shape

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype (compare with np.float32, or pass to .astype)."""
        return to_numpy_dtype(self.type.dtype)

    @property
    def ndim(self) -> int:
        return self.type.rank

    @property
    def size(self) -> int | None:
        """The number of elements, or None when a dim is dynamic."""
        shape = self.shape
        return None if None in shape else int(np.prod(shape, dtype=np.int64))

    def __repr__(self) -> str:
        t = declared_type(self._graph, self._graph.output)
        return f"Tensor({t!r}, traced)"

    # -- things tracing cannot record -----------------------------------------
    def __bool__(self) -> bool:
        raise TraceError(
            "the truth value of a traced tensor is unknown while tracing, so Python control "
            "flow (if / while / and / or / assert) cannot depend on it; use anp.where(cond, x, y) "
            "to select values, or ax.cond to choose between graphs"
        )

    def _no_value(self, what: str) -> Any:
        raise TraceError(
            f"{what} of a traced tensor is unknown while tracing; keep it a tensor and use "
            "axonc.numpy functions"
        )

    def __int__(self) -> int:
        return self._no_value("the int value")

    def __float__(self) -> float:
        return self._no_value("the float value")

    def __index__(self) -> int:
        return self._no_value("the index value")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TraceError(
            "a traced tensor cannot become a numpy array; use axonc.numpy "
            "(import axonc.numpy as anp; anp.exp(x), anp.sum(x, axis=1), ...) instead of numpy"
        )

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        # ndarray + tensor reaches here through np.add: record it like tensor.__radd__.
        fn = _OPERATOR_UFUNCS.get(getattr(ufunc, "__name__", ""))
        if method == "__call__" and fn is not None and not kwargs and len(inputs) == 2:
            return apply(f"np.{fn}", list(inputs))
        name = getattr(ufunc, "__name__", str(ufunc))
        raise TraceError(
            f"numpy.{name} was called on a traced tensor; use axonc.numpy.{name} "
            "(import axonc.numpy as anp) so the call is recorded"
        )

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        name = getattr(func, "__name__", str(func))
        raise TraceError(
            f"numpy.{name} was called on a traced tensor; use axonc.numpy.{name} "
            "(import axonc.numpy as anp) so the call is recorded"
        )

    def __setitem__(self, key: Any, value: Any) -> None:
        raise TraceError(
            "traced tensors are immutable; build a new one with anp.where or anp.concatenate"
        )

    def __len__(self) -> int:
        shape = self.shape
        if not shape:
            raise TraceError("len() of a 0-d tensor; it has no first dim to count")
        if shape[0] is None:
            raise TraceError(
                "len() of a tensor whose first dim is dynamic is unknown while tracing"
            )
        return shape[0]

    def __iter__(self) -> Any:
        for i in range(len(self)):
            yield self[i]

    # -- operators -------------------------------------------------------------
    def __add__(self, other: Any) -> Tensor:
        return apply("np.add", [self, other])

    def __radd__(self, other: Any) -> Tensor:
        return apply("np.add", [other, self])

    def __sub__(self, other: Any) -> Tensor:
        return apply("np.subtract", [self, other])

    def __rsub__(self, other: Any) -> Tensor:
        return apply("np.subtract", [other, self])

    def __mul__(self, other: Any) -> Tensor:
        return apply("np.multiply", [self, other])

    def __rmul__(self, other: Any) -> Tensor:
        return apply("np.multiply", [other, self])

    def __truediv__(self, other: Any) -> Tensor:
        return apply("np.divide", [self, other])

    def __rtruediv__(self, other: Any) -> Tensor:
        return apply("np.divide", [other, self])

    def __floordiv__(self, other: Any) -> Tensor:
        return apply("np.floor_divide", [self, other])

    def __rfloordiv__(self, other: Any) -> Tensor:
        return apply("np.floor_divide", [other, self])

    def __mod__(self, other: Any) -> Tensor:
        return apply("np.remainder", [self, other])

    def __rmod__(self, other: Any) -> Tensor:
        return apply("np.remainder", [other, self])

    def __pow__(self, other: Any) -> Tensor:
        return apply("np.power", [self, other])

    def __rpow__(self, other: Any) -> Tensor:
        return apply("np.power", [other, self])

    def __matmul__(self, other: Any) -> Tensor:
        return apply("np.matmul", [self, other])

    def __rmatmul__(self, other: Any) -> Tensor:
        return apply("np.matmul", [other, self])

    def __neg__(self) -> Tensor:
        return apply("np.negative", [self])

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return apply("np.abs", [self])

    def __lt__(self, other: Any) -> Tensor:
        return apply("np.less", [self, other])

    def __le__(self, other: Any) -> Tensor:
        return apply("np.less_equal", [self, other])

    def __gt__(self, other: Any) -> Tensor:
        return apply("np.greater", [self, other])

    def __ge__(self, other: Any) -> Tensor:
        return apply("np.greater_equal", [self, other])

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return apply("np.equal", [self, other])

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return apply("np.not_equal", [self, other])

    __hash__ = None  # type: ignore[assignment]

    def _logical(self, op: str, a: Any, b: Any) -> Tensor:
        if any(isinstance(x, Tensor) and x.type.dtype != "pred" for x in (a, b)):
            raise TraceError(
                f"bitwise operators are only recorded on boolean tensors (as {op}); "
                "use comparisons to make masks, or anp.logical_* functions"
            )
        return apply(op, [a, b])

    def __and__(self, other: Any) -> Tensor:
        return self._logical("np.logical_and", self, other)

    def __rand__(self, other: Any) -> Tensor:
        return self._logical("np.logical_and", other, self)

    def __or__(self, other: Any) -> Tensor:
        return self._logical("np.logical_or", self, other)

    def __ror__(self, other: Any) -> Tensor:
        return self._logical("np.logical_or", other, self)

    def __xor__(self, other: Any) -> Tensor:
        return self._logical("np.logical_xor", self, other)

    def __rxor__(self, other: Any) -> Tensor:
        return self._logical("np.logical_xor", other, self)

    def __invert__(self) -> Tensor:
        if self.type.dtype != "pred":
            raise TraceError("~ is only recorded on boolean tensors (as logical_not)")
        return apply("np.logical_not", [self])

    def __getitem__(self, key: Any) -> Tensor:
        if isinstance(key, (Tensor, list, np.ndarray)):
            arr = key if isinstance(key, Tensor) else np.asarray(key)
            dt = arr.type.dtype if isinstance(arr, Tensor) else dtype_name(arr.dtype)
            if dt == "pred":
                raise TraceError(
                    "boolean-mask indexing gives a data-dependent shape and cannot be traced; "
                    "use anp.where(mask, x, 0) instead"
                )
            return apply("np.take", [self, as_indices(arr)], {"axis": 0})
        keys = key if isinstance(key, tuple) else (key,)
        if any(isinstance(k, (Tensor, list, np.ndarray)) for k in keys):
            raise TraceError(
                "advanced indexing with arrays inside a tuple index is not supported; "
                "use anp.take(x, indices, axis=...)"
            )
        try:
            index = encode_index(key)
        except (TypeError, ValueError) as exc:
            raise TraceError(f"unsupported index {key!r}: {exc}") from None
        return apply("np.getitem", [self], {"index": index})

    # -- numpy-array methods -----------------------------------------------------
    @property
    def T(self) -> Tensor:
        return apply("np.transpose", [self])

    def reshape(self, *shape: Any) -> Tensor:
        return apply("np.reshape", [self], {"shape": shape[0] if len(shape) == 1 else shape})

    def transpose(self, *axes: Any) -> Tensor:
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            axes = axes[0]
        return apply("np.transpose", [self], {"axes": axes or None})

    def flatten(self) -> Tensor:
        return apply("np.reshape", [self], {"shape": (-1,)})

    def astype(self, dtype: Any) -> Tensor:
        return apply("np.astype", [self], {"dtype": dtype_name(dtype)})

    def squeeze(self, axis: Any = None) -> Tensor:
        return apply("np.squeeze", [self], {"axis": axis})

    def clip(self, min: Any = None, max: Any = None) -> Tensor:
        if min is None and max is None:
            raise ValueError("clip: give min or max (or both)")
        out = self if min is None else apply("np.maximum", [self, min])
        return out if max is None else apply("np.minimum", [out, max])

    def _reduce(
        self, fn: str, axis: Any = None, dtype: Any = None, *, keepdims: bool = False
    ) -> Tensor:
        x = self if dtype is None else self.astype(dtype)
        return apply(f"np.{fn}", [x], {"axis": axis, "keepdims": keepdims})

    def sum(self, axis: Any = None, dtype: Any = None, *, keepdims: bool = False) -> Tensor:
        return self._reduce("sum", axis, dtype, keepdims=keepdims)

    def mean(self, axis: Any = None, dtype: Any = None, *, keepdims: bool = False) -> Tensor:
        return self._reduce("mean", axis, dtype, keepdims=keepdims)

    def prod(self, axis: Any = None, dtype: Any = None, *, keepdims: bool = False) -> Tensor:
        return self._reduce("prod", axis, dtype, keepdims=keepdims)

    def max(self, axis: Any = None, *, keepdims: bool = False) -> Tensor:
        return self._reduce("max", axis, keepdims=keepdims)

    def min(self, axis: Any = None, *, keepdims: bool = False) -> Tensor:
        return self._reduce("min", axis, keepdims=keepdims)

    def any(self, axis: Any = None, *, keepdims: bool = False) -> Tensor:
        return self._reduce("any", axis, keepdims=keepdims)

    def all(self, axis: Any = None, *, keepdims: bool = False) -> Tensor:
        return self._reduce("all", axis, keepdims=keepdims)

    def argmax(self, axis: Any = None, *, keepdims: bool = False) -> Tensor:
        return self._reduce("argmax", axis, keepdims=keepdims)

    def argmin(self, axis: Any = None, *, keepdims: bool = False) -> Tensor:
        return self._reduce("argmin", axis, keepdims=keepdims)


# numpy ufuncs that ndarray's operators call, recorded when the right operand is a Tensor.
_OPERATOR_UFUNCS = {
    "add": "add",
    "subtract": "subtract",
    "multiply": "multiply",
    "divide": "divide",
    "true_divide": "divide",
    "floor_divide": "floor_divide",
    "remainder": "remainder",
    "power": "power",
    "matmul": "matmul",
    "equal": "equal",
    "not_equal": "not_equal",
    "less": "less",
    "less_equal": "less_equal",
    "greater": "greater",
    "greater_equal": "greater_equal",
}


# ---------------------------------------------------------------------------
# Applying an op to tensors or (eagerly) to arrays


def _is_weak(x: Any) -> bool:
    return isinstance(x, (bool, int, float)) and not isinstance(x, np.generic)


def _default_array(x: Any) -> np.ndarray:
    """Non-tensor, non-scalar values: numpy arrays keep their dtype; lists use f32 / s32."""
    if isinstance(x, (np.ndarray, np.generic)):
        arr = np.asarray(x)
    else:
        arr = np.asarray(x)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        elif arr.dtype.kind in "iu" and arr.dtype.itemsize == 8:
            arr = arr.astype(np.int32)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TraceError(f"cannot use a {type(x).__name__} as a tensor")
    dtype_name(arr.dtype)
    return arr


def _weak_dtype(value: bool | int | float, strong: str | None) -> str:
    """The dtype a Python scalar takes next to operands of dtype `strong` (JAX's weak types)."""
    mine = 0 if isinstance(value, bool) else 1 if isinstance(value, int) else 2
    if strong is not None and dtype_kind(strong) >= mine:
        return strong
    return ("pred", "s32", "f32")[mine]


def _dtype_of(x: Any) -> str | None:
    """An operand's dtype; None for a tensor whose type is unknown (shapeless input)."""
    if isinstance(x, Tensor):
        t = declared_type(x.graph, x.graph.output)
        return t.dtype if isinstance(t, TensorType) else None
    return dtype_name(x.dtype)


def coerce(args: list[Any]) -> list[Any]:
    """Tensors stay; arrays and lists become arrays; Python scalars take a weak dtype."""
    out = [a if isinstance(a, Tensor) or _is_weak(a) else _default_array(a) for a in args]
    strong = [d for a in out if not _is_weak(a) and (d := _dtype_of(a)) is not None]
    weak = [a for a in out if _is_weak(a)]
    if strong:
        common: str | None = jnp_promote(*strong)
    elif weak:
        common = jnp_promote(*(_weak_dtype(a, None) for a in weak))
    else:
        common = None
    return [
        np.asarray(a, dtype=to_numpy_dtype(_weak_dtype(a, common))) if _is_weak(a) else a
        for a in out
    ]


# Eager calls whose options and input types passed the checks before, with their full
# options: a loop's metrics repeat the same few calls every batch, and the checks
# (option normalisation, shape and dtype inference) cost more than the numpy work.
_EAGER_CHECKED: dict[tuple, dict[str, Any]] = {}
_EAGER_CACHE_SIZE = 4096


def _eager_key(op: str, values: list[Any], opts: Mapping[str, Any] | None) -> tuple | None:
    """(op, input shapes and dtypes, options) if the options are hashable, else None."""
    try:
        key = (
            op,
            tuple((v.shape, v.dtype) for v in values),
            tuple(sorted((opts or {}).items())),
        )
        hash(key)
    except (TypeError, AttributeError):
        return None
    return key


def as_indices(indices: Any) -> Any:
    """Gather indices: a tensor as it is; anything else as an integer array (s64 as s32)."""
    if isinstance(indices, Tensor):
        return indices
    indices = np.asarray(indices)
    if indices.dtype.kind in "iu" and indices.dtype.itemsize == 8:
        indices = indices.astype(np.int32)
    if indices.dtype.kind not in "iu":
        raise ShapeError(f"take: indices must be integers, got {indices.dtype}")
    return indices


def apply(op: str, args: list[Any], opts: Mapping[str, Any] | None = None) -> Any:
    """Apply primitive `op`: recorded when an argument is a Tensor, else run on numpy arrays.

    Non-tensor arguments of a traced call become `constant` nodes. The eager path
    runs the same op's shape rule (for the same errors) and its numpy forward rule.
    """
    values = coerce(list(args))
    tensors = [v for v in values if isinstance(v, Tensor)]
    if not tensors:
        spec = get_op(op)
        key = _eager_key(op, values, opts)
        full = _EAGER_CHECKED.get(key) if key is not None else None
        if full is None:
            full = spec.normalize_options(dict(opts or {}), op)
            spec.infer([type_of(v) for v in values], full, None)
            if key is not None and len(_EAGER_CHECKED) < _EAGER_CACHE_SIZE:
                _EAGER_CHECKED[key] = full
        return spec.forward(None, values, {}, dict(full))
    trace_id = tensors[0]._trace
    if any(t._trace != trace_id for t in tensors):
        raise TraceError(
            "tensors from two different traced functions were mixed; a traced function can "
            "only use its own arguments (a tensor leaked out of another trace)"
        )
    graphs = [v.graph if isinstance(v, Tensor) else constant_graph(v) for v in values]
    return Tensor(make_node(op, graphs, opts or {}), trace_id)


def constant_graph(value: np.ndarray) -> Axon:
    """A `constant` node holding an array (its dtype kept)."""
    return make_node("constant", [], {"value": np.asarray(value)})


# ---------------------------------------------------------------------------
# trace


def flatten_types(types: list[Any]) -> list[Any]:
    """The leaves of argument types (or values), in the order trace numbers arguments."""
    return [leaf for t in types for leaf in tree_leaves(t)]


def trace(fn: Callable[..., Any], arg_types: list[Any], **kwargs: Any) -> Axon:
    """Record `fn(*tensors, **kwargs)` as a graph of primitives.

    `arg_types` holds one TensorType (or None when unknown, or a tuple/list/dict
    container of them) per positional argument. Each leaf becomes an "argument"
    node numbered in `flatten_types` order, and `fn` receives Tensors in the same
    container structure. The returned graph's output mirrors fn's result (a
    tensor or a container of tensors).
    """
    trace_id = next(_traces)
    counter = itertools.count()

    def argument(t: Any) -> Tensor:
        if t is not None and t is not NONE and not isinstance(t, TensorType):
            raise TraceError(f"trace: argument types must be TensorTypes, got {t!r}")
        opts: dict[str, Any] = {"index": next(counter)}
        if isinstance(t, TensorType):
            opts.update(shape=t.shape, dtype=t.dtype)
        return Tensor(make_node("argument", [], opts), trace_id)

    args = [tree_map(argument, t) for t in arg_types]
    name = getattr(fn, "__name__", type(fn).__name__)
    try:
        result = fn(*args, **kwargs)
    except ShapeError as exc:
        raise ShapeError(f"in traced function {name!r}: {exc}") from None

    def leaf_id(x: Any) -> int:
        if not isinstance(x, Tensor):
            raise TraceError(
                f"traced function {name!r} must return a tensor or a tuple/list/dict of tensors "
                f"computed from its arguments, got {type(x).__name__}"
            )
        if x._trace != trace_id:
            raise TraceError(f"traced function {name!r} returned a tensor from another trace")
        return x.graph.output

    if isinstance(result, (tuple, list, dict)) and not tree_leaves(result):
        raise TraceError(f"traced function {name!r} returned an empty container")
    output = tree_map(leaf_id, result)
    leaves = [x for x in tree_leaves(result)]
    nodes = merge_nodes(*(x.graph for x in leaves))
    return Axon(output, {i: nodes[i] for i in topo_order(nodes, output)})


def traced_types(body: Axon) -> list[Any]:
    """The argument types a traced body was recorded for, by argument index."""
    args = sorted((n.options["index"], n) for n in body.nodes.values() if n.op == "argument")
    return [get_op("argument").infer([], dict(n.options), n) for _, n in args]


def trace_now(make: Callable[[], Any], graphs: list[Axon]) -> Any:
    """Trace a layer's function for its inputs' declared types, or defer it.

    When an input's type is not known yet (no declared shape, or a dtype still
    assumed), a function that needs it cannot be traced now: the layer is
    traced when a template or data gives the types (`shape_inference.specialize`);
    None says so.
    """
    try:
        return make()
    except (TraceError, ShapeError) as exc:
        known = all(leaves_known(declared_type(g, g.output)) for g in graphs)
        guessed = isinstance(exc, DTypeError) and any(is_guessed(g) for g in graphs)
        if known and not guessed:
            raise
        return None
