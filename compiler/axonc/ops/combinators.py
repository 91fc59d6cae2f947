"""Combinators: element-wise add/subtract/multiply, concatenate, split and stack_columns.

Semantics follow Axon 0.8.1: the element-wise layers take two graphs or a list
and fold left (`a - b - c`) with numpy broadcasting; the result dtype is Nx's
type merge of the inputs (`dtypes.nx_result_dtype`); `concatenate` and `split`
work along axis -1 unless told otherwise; `split` returns a tuple of graphs;
`stack_columns` stacks the leaves of a container (Axon's DataFrame-style input)
as columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from .. import numpy as anp
from ..dtypes import (
    TensorType,
    broadcast_shapes,
    dtype_name,
    is_float,
    nx_result_dtype,
    to_numpy_dtype,
)
from ..errors import GraphError, ShapeError
from ..ir import Axon, tree_leaves, tree_map
from ..registry import Case, Op, Option, check_int, layer_api, register
from ..shape_inference import NONE, make_node
from .special import container, elem


def _merged(values: Sequence[Any]) -> tuple[list[np.ndarray], np.dtype]:
    """The values as arrays, and the numpy dtype of their Nx type merge."""
    arrays = [np.asarray(v) for v in values]
    return arrays, to_numpy_dtype(nx_result_dtype([dtype_name(a.dtype) for a in arrays]))


def _onnx_merged(ctx: Any, values: Sequence[str], types: Sequence[TensorType]) -> list[str]:
    """ONNX values cast (where needed) to the output's dtype, the Nx merge of the inputs."""
    out = ctx.out_type.dtype
    return [v if t.dtype == out else ctx.b.cast(v, out) for v, t in zip(values, types, strict=True)]


def _graph_list(x: Any, y: Any, what: str) -> list[Axon]:
    """Axon's two call forms: (graph, graph) or ([graph, ...])."""
    if isinstance(x, (list, tuple)):
        if y is not None:
            raise GraphError(f"{what}: pass either two graphs or one list of graphs, not both")
        if not x:
            raise GraphError(f"{what}: expected a non-empty list of graphs")
        return list(x)
    if y is None:
        raise GraphError(f"{what}: expected two graphs or a list of graphs, got one graph")
    return [x, y]


def _unbroadcast(g: Any, shape: tuple, out_shape: tuple) -> Any:
    """Sum `g` (of the broadcast `out_shape`) back to an input's `shape`: over the leading
    axes the input lacks and, keeping them, over its size-1 axes that were broadcast."""
    lead = len(out_shape) - len(shape)
    if lead:
        g = anp.sum(g, axis=tuple(range(lead)))
    axes = tuple(i for i, d in enumerate(shape) if d == 1 and out_shape[lead + i] != 1)
    return anp.sum(g, axis=axes, keepdims=True) if axes else g


def _axis_slice(axis: int, start: int | None, stop: int | None) -> tuple:
    return (*(slice(None),) * axis, slice(start, stop))


# ---------------------------------------------------------------------------
# add, subtract, multiply


class _ElementWise(Op):
    """Shared rules of the element-wise combinators (fold left with broadcasting)."""

    family = "combinators"
    arity = None
    fold: Callable[[np.ndarray, np.ndarray], np.ndarray]

    def infer(self, types, opts, node):
        for i, t in enumerate(types):
            if not isinstance(t, TensorType):
                raise ShapeError(f"expected tensor inputs; input {i} is a container {t!r}")
        try:
            shape = broadcast_shapes(*(t.shape for t in types))
        except ShapeError as exc:
            raise ShapeError(f"expected inputs that broadcast together: {exc}") from None
        return TensorType(shape, nx_result_dtype([t.dtype for t in types]))

    def forward(self, ctx, inputs, params, opts):
        arrays, dtype = _merged(inputs)
        out = arrays[0].astype(dtype)
        for a in arrays[1:]:
            out = type(self).fold(out, a.astype(dtype)).astype(dtype)
        return out

    def onnx(self, ctx, inputs, opts):
        values = _onnx_merged(ctx, inputs, ctx.in_types)
        out = values[0]
        for v in values[1:]:
            out = ctx.b.op(self.onnx_op, [out, v])
        return out

    def tflite(self, ctx, inputs, opts):
        values = _onnx_merged(ctx, inputs, ctx.in_types)
        out = values[0]
        kind = {"ADD": "Add", "SUB": "Sub", "MUL": "Mul"}[self.tflite_op]
        for v in values[1:]:
            out = ctx.b.binary(self.tflite_op, out, v, options=ctx.b.options(kind))
        return out

    def vjp(self, ctx, inputs, output, cot, opts):
        """cot (negated for the subtrahends; times the other factors for multiply, in the
        merged dtype) summed back over each input's broadcast axes, in its own dtype."""
        out_shape = ctx.out_type.shape
        cots: list[Any] = []
        for i, (x, t) in enumerate(zip(inputs, ctx.in_types, strict=True)):
            if not is_float(t.dtype):
                cots.append(None)
                continue
            g = -cot if self.name == "subtract" and i > 0 else cot
            if self.name == "multiply":
                for j, y in enumerate(inputs):
                    if j != i:
                        g = g * y.astype(cot.dtype)
            cots.append(_unbroadcast(g, t.shape, out_shape).astype(x.dtype))
        return cots


def _define(
    op: str, fold: Callable[[np.ndarray, np.ndarray], np.ndarray], onnx_op: str, doc: str
) -> None:
    two = [TensorType((None, 3)), TensorType((None, 3))]
    three = [TensorType((None, 2, 3)), TensorType((None, 1, 3)), TensorType((3,))]

    def layer(x: Axon | Sequence[Axon], y: Axon | None = None, *, name: str | None = None) -> Axon:
        return make_node(op, _graph_list(x, y, f"{op} layer"), {}, name=name)

    cls = type(
        op.title(),
        (_ElementWise,),
        {
            "name": op,
            "doc": doc,
            "fold": staticmethod(fold),
            "onnx_op": onnx_op,
            "tflite_op": {"Add": "ADD", "Sub": "SUB", "Mul": "MUL"}[onnx_op],
            "cases": [
                Case("two", lambda a, b: layer(a, b), two),
                Case("list3_broadcast", lambda a, b, c: layer([a, b, c]), three),
            ],
        },
    )
    register(cls)
    layer.__name__ = op
    layer.__doc__ = (
        f"{doc}\n\nCall as {op}(a, b) or {op}([a, b, ...]); the inputs must broadcast together."
    )
    layer_api(layer, name=op)


_define("add", np.add, "Add", "Element-wise sum of the inputs, with broadcasting.")
_define(
    "subtract", np.subtract, "Sub", "Element-wise difference folded left (a - b - c), broadcasting."
)
_define("multiply", np.multiply, "Mul", "Element-wise product of the inputs, with broadcasting.")


# ---------------------------------------------------------------------------
# concatenate


def _normalize_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"axis {axis} is out of range for inputs of rank {rank}")
    return axis % rank


@register
class Concatenate(Op):
    name = "concatenate"
    family = "combinators"
    doc = "Joins the inputs along `axis` (default the last); the other dims must match."
    arity = None
    options: ClassVar[dict[str, Option]] = {
        "axis": Option(-1, check_int(), "the axis to join along (batch axis is 0)")
    }

    def infer(self, types, opts, node):
        rank = types[0].rank
        for i, t in enumerate(types):
            if t.rank != rank:
                raise ShapeError(
                    f"expected inputs of the same rank; input 0 has rank {rank}, "
                    f"input {i} has rank {t.rank}"
                )
        axis = _normalize_axis(opts["axis"], rank)
        shape: list[int | None] = []
        for a in range(rank):
            dims = [t.shape[a] for t in types]
            if a == axis:
                shape.append(None if None in dims else sum(dims))
                continue
            known = {d for d in dims if d is not None}
            if len(known) > 1:
                raise ShapeError(
                    f"expected every dim but the concatenation axis {axis} to match; axis {a} "
                    f"has sizes {', '.join('?' if d is None else str(d) for d in dims)}"
                )
            shape.append(known.pop() if known else None)
        return TensorType(tuple(shape), nx_result_dtype([t.dtype for t in types]))

    def forward(self, ctx, inputs, params, opts):
        arrays, dtype = _merged(inputs)
        return np.concatenate([a.astype(dtype) for a in arrays], axis=opts["axis"])

    def onnx(self, ctx, inputs, opts):
        axis = _normalize_axis(opts["axis"], ctx.in_types[0].rank)
        return ctx.b.op("Concat", _onnx_merged(ctx, inputs, ctx.in_types), axis=axis)

    def tflite(self, ctx, inputs, opts):
        axis = _normalize_axis(opts["axis"], ctx.in_types[0].rank)
        values = _onnx_merged(ctx, inputs, ctx.in_types)
        options = ctx.b.options("Concatenation", axis=axis)
        return ctx.b.op("CONCATENATION", values, ctx.out_type, options=options)

    def vjp(self, ctx, inputs, output, cot, opts):
        """Each input's slice of cot. Offsets are static: inputs before the one piece whose
        size along the axis may be dynamic are counted from the start, those after it
        from the end."""
        types = ctx.in_types
        axis = _normalize_axis(opts["axis"], types[0].rank)
        sizes = [t.shape[axis] for t in types]
        dynamic = [i for i, n in enumerate(sizes) if n is None]
        if len(dynamic) > 1:
            raise ShapeError(
                f"the concatenate gradient needs static sizes along axis {axis} for all but one "
                f"input, got sizes {', '.join('?' if n is None else str(n) for n in sizes)}"
            )
        split = dynamic[0] if dynamic else len(sizes)
        bounds: list[tuple[int | None, int | None]] = []
        start = 0
        for n in sizes[:split]:
            bounds.append((start, start + n))
            start += n
        if dynamic:
            after = sum(sizes[split + 1 :])
            bounds.append((start, -after if after else None))
            for n in sizes[split + 1 :]:
                bounds.append((-after, -after + n if after > n else None))
                after -= n
        return [
            cot[_axis_slice(axis, lo, hi)].astype(x.dtype) if is_float(t.dtype) else None
            for x, t, (lo, hi) in zip(inputs, types, bounds, strict=True)
        ]

    cases: ClassVar[list[Case]] = [
        Case(
            "axis1",
            lambda a, b: concatenate([a, b], axis=1),
            [TensorType((None, 2, 3)), TensorType((None, 1, 3))],
        ),
        Case(
            "last_two_graphs",
            lambda a, b: concatenate(a, b),
            [TensorType((None, 4)), TensorType((None, 2))],
        ),
        Case(
            "three_inputs",
            lambda a, b, c: concatenate([a, b, c]),
            [TensorType((None, 2, 1)), TensorType((None, 2, 2)), TensorType((None, 2, 3))],
        ),
    ]


@layer_api
def concatenate(
    x: Axon | Sequence[Axon], y: Axon | None = None, *, name: str | None = None, **opts: Any
) -> Axon:
    """Concatenate graphs: concatenate(a, b) or concatenate([a, b, ...]).

    Options: axis (default -1, the batch axis is 0).
    """
    return make_node("concatenate", _graph_list(x, y, "concatenate layer"), opts, name=name)


# ---------------------------------------------------------------------------
# split


def _check_splits(v: Any) -> int | tuple[int, ...]:
    if isinstance(v, (list, tuple)):
        if not v:
            raise ValueError("expected a positive integer or a non-empty list of sizes")
        return tuple(check_int(0)(s) for s in v)
    return check_int(1)(v)


def _split_sizes(size: int | None, splits: int | tuple[int, ...]) -> list[int | None]:
    """The size of each piece along the split axis (None while the axis is dynamic)."""
    if isinstance(splits, tuple):
        if size is not None and sum(splits) > size:
            raise ShapeError(
                f"split sizes {list(splits)} add up to {sum(splits)}, more than the axis size "
                f"{size}; expected a total of at most {size}"
            )
        return list(splits)
    if size is None:
        return [None] * splits
    if size % splits:
        raise ShapeError(
            f"cannot split an axis of size {size} into {splits} equal parts; expected a size "
            f"divisible by {splits}"
        )
    return [size // splits] * splits


@register
class Split(Op):
    name = "split"
    family = "combinators"
    doc = "Splits the input along `axis` into n equal parts or pieces of the given sizes."
    options: ClassVar[dict[str, Option]] = {
        "splits": Option(check=_check_splits, doc="a number of equal parts or a list of sizes"),
        "axis": Option(-1, check_int(), "the axis to split (batch axis is 0)"),
    }

    def infer(self, types, opts, node):
        (t,) = types
        if t.rank < 2:
            raise ShapeError(f"expected an input of rank >= 2 (batch and features), got {t!r}")
        axis = _normalize_axis(opts["axis"], t.rank)
        return tuple(
            t.with_shape((*t.shape[:axis], n, *t.shape[axis + 1 :]))
            for n in _split_sizes(t.shape[axis], opts["splits"])
        )

    def forward(self, ctx, inputs, params, opts):
        x = np.asarray(inputs[0])
        axis = _normalize_axis(opts["axis"], x.ndim)
        pieces = []
        start = 0
        for n in _split_sizes(x.shape[axis], opts["splits"]):
            pieces.append(np.take(x, np.arange(start, start + n), axis=axis))
            start += n
        return tuple(pieces)

    def onnx(self, ctx, inputs, opts):
        b, t = ctx.b, ctx.in_types[0]
        axis = _normalize_axis(opts["axis"], t.rank)
        sizes = _split_sizes(t.shape[axis], opts["splits"])
        if None in sizes:
            # equal parts of a dynamic axis: Split divides it at run time
            count = len(sizes)
            if ctx.opset >= 18:
                return tuple(
                    b.op("Split", [inputs[0]], outputs=count, axis=axis, num_outputs=count)
                )
            return tuple(b.op("Split", [inputs[0]], outputs=count, axis=axis))
        pieces, start = [], 0
        for n in sizes:
            bounds = [b.ints([start], "start"), b.ints([start + n], "end"), b.ints([axis], "axis")]
            pieces.append(b.op("Slice", [inputs[0], *bounds]))
            start += n
        return tuple(pieces)

    def tflite(self, ctx, inputs, opts):
        b, t = ctx.b, ctx.in_types[0]
        axis = _normalize_axis(opts["axis"], t.rank)
        sizes = _split_sizes(t.shape[axis], opts["splits"])
        outs = list(ctx.out_type)
        if 0 in sizes:
            raise ctx.unsupported("an empty piece: LiteRT has no zero-sized tensors")
        if None in sizes:
            options = b.options("Split", numSplits=len(sizes))
            return tuple(b.op("SPLIT", [b.ints([axis], "axis"), inputs[0]], outs, options=options))
        pieces, start = [], 0
        for n, out in zip(sizes, outs):
            begin = [0] * t.rank
            begin[axis] = start
            size = [-1] * t.rank
            size[axis] = n
            pieces.append(
                b.op("SLICE", [inputs[0], b.ints(begin, "begin"), b.ints(size, "size")], out)
            )
            start += n
        return tuple(pieces)

    def vjp(self, ctx, inputs, output, cot, opts):
        """The pieces' cotangents joined back along the axis; a None piece is zeros, and
        so is the tail that sizes adding up to less than the axis dropped."""
        (x,) = inputs
        t = ctx.in_types[0]
        given = [c for c in cot if c is not None]
        if not is_float(t.dtype) or not given:
            return [None]
        axis = _normalize_axis(opts["axis"], t.rank)
        sizes = _split_sizes(t.shape[axis], opts["splits"])
        pieces, start = [], 0
        for c, n in zip(cot, sizes, strict=True):
            if n == 0:
                continue
            if c is None:
                # equal parts of a dynamic axis all have the shape of a given piece
                c = anp.zeros_like(
                    given[0] if n is None else x[_axis_slice(axis, start, start + n)]
                )
            pieces.append(c.astype(x.dtype))
            start = None if n is None else start + n
        if start is not None and t.shape[axis] is not None and start < t.shape[axis]:
            pieces.append(anp.zeros_like(x[_axis_slice(axis, start, None)]))
        return [pieces[0] if len(pieces) == 1 else anp.concatenate(pieces, axis=axis)]

    cases: ClassVar[list[Case]] = [
        Case("equal_2", lambda x: container(split(x, 2)), [TensorType((None, 6))]),
        Case("sizes", lambda x: container(split(x, [1, 3, 2])), [TensorType((None, 6))]),
        Case("axis1", lambda x: container(split(x, 3, axis=1)), [TensorType((None, 3, 2))]),
        Case(
            "sizes_short_zero",
            lambda x: container(split(x, [2, 0, 1])),
            [TensorType((None, 4, 5))],
        ),
    ]


@layer_api
def split(
    x: Axon, splits: int | Sequence[int], *, name: str | None = None, **opts: Any
) -> tuple[Axon, ...]:
    """Split `x` into a tuple of graphs: n equal parts (int) or pieces of the given sizes.

    Options: axis (default -1). The sizes of a list may add up to less than the axis,
    as in Axon (the rest is dropped).
    """
    node = make_node("split", [x], {"splits": splits, **opts}, name=name)
    s = node.node.options["splits"]
    count = len(s) if isinstance(s, tuple) else s
    return tuple(elem(node, i) for i in range(count))


# ---------------------------------------------------------------------------
# stack_columns


def _check_ignore(v: Any) -> tuple:
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"expected a list of keys to ignore, got {v!r}")
    return tuple(v)


def _columns(tree: Any, ignore: tuple, what: str) -> list[Any]:
    """The leaves to stack, in container order, without the ignored top-level entries."""
    if isinstance(tree, dict):
        items = [v for k, v in tree.items() if k not in ignore]
    elif isinstance(tree, (tuple, list)):
        items = [v for i, v in enumerate(tree) if i not in ignore]
    else:
        raise ShapeError(
            f"expected a container (a dict, tuple or list of tensors) to stack, got {what}"
        )
    leaves = tree_leaves(items)
    if not leaves:
        raise ShapeError("expected at least one column to stack; every entry is ignored")
    return leaves


@register
class StackColumns(Op):
    name = "stack_columns"
    family = "combinators"
    doc = "Stacks a container's tensors as columns along a new last axis: n x {b} -> {b, n}."
    container_inputs = True
    options: ClassVar[dict[str, Option]] = {
        "ignore": Option((), _check_ignore, "keys (or positions) of entries not to stack")
    }

    def infer(self, types, opts, node):
        leaves = _columns(types[0], opts["ignore"], repr(types[0]))
        if any(t is NONE for t in leaves):
            return NONE
        shape = leaves[0].shape
        for t in leaves[1:]:
            if t.rank != len(shape) or any(
                a is not None and b is not None and a != b
                for a, b in zip(shape, t.shape, strict=True)
            ):
                raise ShapeError(
                    f"expected every column to have the same shape; got {leaves[0]!r} and {t!r}"
                )
        merged = tuple(
            next((d for d in dims if d is not None), None)
            for dims in zip(*(t.shape for t in leaves), strict=True)
        )
        return TensorType((*merged, len(leaves)), nx_result_dtype([t.dtype for t in leaves]))

    def forward(self, ctx, inputs, params, opts):
        leaves = _columns(inputs[0], opts["ignore"], type(inputs[0]).__name__)
        if any(v is NONE for v in leaves):
            return NONE
        arrays, dtype = _merged(leaves)
        try:
            return np.stack([a.astype(dtype) for a in arrays], axis=-1)
        except ValueError:
            shapes = ", ".join(str(a.shape) for a in arrays)
            raise ShapeError(f"expected columns of one shape, got {shapes}") from None

    def onnx(self, ctx, inputs, opts):
        b = ctx.b
        leaves = _columns(inputs[0], opts["ignore"], "a tensor")
        types = _columns(ctx.in_types[0], opts["ignore"], "a tensor")
        columns = [
            b.op("Unsqueeze", [v, b.ints([-1], "axes")]) for v in _onnx_merged(ctx, leaves, types)
        ]
        return b.op("Concat", columns, axis=-1)

    def tflite(self, ctx, inputs, opts):
        b = ctx.b
        leaves = _columns(inputs[0], opts["ignore"], "a tensor")
        types = _columns(ctx.in_types[0], opts["ignore"], "a tensor")
        columns = [b.reshape(v, (*b.type_of(v).shape, 1)) for v in _onnx_merged(ctx, leaves, types)]
        rank = ctx.out_type.rank
        options = b.options("Concatenation", axis=rank - 1)
        return b.op("CONCATENATION", columns, ctx.out_type, options=options)

    def vjp(self, ctx, inputs, output, cot, opts):
        """The container's cotangent: column j of cot for the j-th stacked leaf, None for
        the ignored entries and integer leaves."""
        tree, ignore = ctx.in_types[0], opts["ignore"]
        if any(t is NONE for t in tree_leaves(tree)):
            return [None]
        column = iter(range(ctx.out_type.shape[-1]))

        def leaf(t: TensorType) -> Any:
            j = next(column)
            return cot[..., j].astype(to_numpy_dtype(t.dtype)) if is_float(t.dtype) else None

        def skipped(v: Any) -> Any:
            return tree_map(lambda _: None, v)

        if isinstance(tree, dict):
            return [{k: skipped(v) if k in ignore else tree_map(leaf, v) for k, v in tree.items()}]
        entries = [skipped(v) if i in ignore else tree_map(leaf, v) for i, v in enumerate(tree)]
        return [type(tree)(entries)]

    cases: ClassVar[list[Case]] = [
        Case(
            "dict3",
            lambda a, b, c: stack_columns(container({"a": a, "b": b, "c": c})),
            [TensorType((None,)), TensorType((None,)), TensorType((None,))],
        ),
        Case(
            "ignore",
            lambda a, b, c: stack_columns({"x": a, "y": b, "id": c}, ignore=["id"]),
            [TensorType((None,)), TensorType((None,)), TensorType((None,))],
        ),
    ]


@layer_api
def stack_columns(x: Axon | dict | tuple | list, *, name: str | None = None, **opts: Any) -> Axon:
    """Stack the tensors of a container (e.g. one per data-frame column) as columns.

    `x` is a container graph or a dict/tuple/list of graphs; each column {b} becomes
    one entry of the last axis of the {b, n} output. Options: ignore (keys to skip).
    """
    if isinstance(x, (dict, tuple, list)):
        x = container(x)
    return make_node("stack_columns", [x], opts, name=name)
