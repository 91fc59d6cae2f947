"""Special layers: input, constant, container, and taking one element of a container."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..dtypes import TensorType, dtype_name, normalize_shape, type_of
from ..errors import GraphError, ShapeError, StateError
from ..ir import Axon, Node, merge_nodes, new_id, tree_leaves, tree_map
from ..registry import Case, Op, Option, check_bool, check_optional, layer_api, register
from ..shape_inference import make_node


def _check_name(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise TypeError(f"expected a non-empty string, got {v!r}")
    return v


def _check_shape(v: Any) -> tuple | None:
    return None if v is None else normalize_shape(v, "input shape")


@register
class Input(Op):
    name = "input"
    family = "special"
    doc = "A model input: a name, and optionally a shape hint (None for dynamic dims) and a dtype."
    arity = 0
    options = {
        "name": Option(check=_check_name, doc="the input's name, used to feed it"),
        "shape": Option(None, _check_shape, "declared shape (a hint); None dims are dynamic"),
        "dtype": Option(None, check_optional(dtype_name), "dtype; None takes the data's"),
        "optional": Option(False, check_bool, "the input may be omitted (Axon.None)"),
    }

    def infer(self, types, opts, node):
        if opts["shape"] is None:
            return None
        return TensorType(opts["shape"], opts["dtype"] or "f32")


@layer_api(method=False)
def input(name: str, shape: Any = None, *, dtype: Any = None, optional: bool = False) -> Axon:
    """A model input, as Axon.input: a name, and optionally a shape and a dtype.

    Shapes and dtypes come from the template at init and from the data at run
    time; a declared `shape` (None for dynamic dims, e.g. `(None, 784)`) is a
    hint that gives early shape errors and the exported graph's shape. Without a
    `dtype` the input takes the data's (f64 arrays become f32), so integer ids
    reach `embedding` as integers.
    """
    opts = {"name": name, "shape": shape, "dtype": dtype, "optional": optional}
    return make_node("input", [], opts, name=name if isinstance(name, str) else None)


@register
class Argument(Op):
    """A traced body's positional argument (never a top-level layer)."""

    name = "argument"
    family = "special"
    arity = 0
    options = {
        "index": Option(check=lambda v: int(v)),
        "shape": Option(None, _check_shape),
        "dtype": Option("f32", check_optional(dtype_name)),
    }

    def infer(self, types, opts, node):
        if opts["shape"] is None:
            return None
        return TensorType(opts["shape"], opts["dtype"] or "f32")


def _check_value(v: Any) -> np.ndarray:
    arr = np.asarray(v)
    if arr.dtype == object:
        raise TypeError("expected a numeric array")
    if arr.dtype == np.float64 and not isinstance(v, np.ndarray):
        arr = arr.astype(np.float32)  # Python floats default to f32, as Nx does
    if arr.dtype == np.int64 and not isinstance(v, np.ndarray):
        arr = arr.astype(np.int32)  # Python ints default to s32, as Nx 0.10 does
    dtype_name(arr.dtype)
    return arr


def _check_leaf_path(v: Any) -> tuple[str, ...]:
    if not isinstance(v, (list, tuple)) or not v or not all(isinstance(k, str) and k for k in v):
        raise TypeError(f"expected a non-empty path of strings (('dense_0', 'kernel')), got {v!r}")
    return tuple(v)


@register
class Parameter(Op):
    """Reads one leaf of the whole parameter/state map by its full path.

    Gradient and optimizer graphs use it to refer to a parameter outside the layer
    that owns it (the layer itself reads its parameters by its own name).
    """

    name = "parameter"
    family = "special"
    doc = "The value of the parameter or state leaf at `path` (e.g. ('dense_0', 'kernel'))."
    arity = 0
    options = {
        "path": Option(check=_check_leaf_path, doc="the leaf's full path"),
        "shape": Option(check=lambda v: normalize_shape(v, "parameter shape"), doc="its shape"),
        "dtype": Option("f32", dtype_name, "its dtype"),
    }

    def infer(self, types, opts, node):
        return TensorType(opts["shape"], opts["dtype"])

    def forward(self, ctx, inputs, params, opts):
        value: Any = ctx.root
        for key in opts["path"]:
            if not isinstance(value, Mapping) or key not in value:
                raise StateError(
                    f"the state has no value for {'/'.join(opts['path'])!r}; initialise it"
                )
            value = value[key]
        return np.asarray(value)

    def onnx(self, ctx, inputs, opts):
        return ctx.param_at(opts["path"])

    tflite = onnx  # the same generic rule: values, subgraphs and parameters


def parameter(path: tuple[str, ...], shape: tuple[int, ...], dtype: str = "f32") -> Axon:
    """A node reading the state leaf at `path` (used by gradient and optimizer graphs)."""
    return make_node("parameter", [], {"path": path, "shape": shape, "dtype": dtype})


@register
class Constant(Op):
    name = "constant"
    family = "special"
    doc = "A constant tensor; it keeps its own dtype."
    arity = 0
    options = {"value": Option(check=_check_value, doc="the tensor")}

    def infer(self, types, opts, node):
        return type_of(opts["value"])

    def forward(self, ctx, inputs, params, opts):
        return opts["value"]

    def onnx(self, ctx, inputs, opts):
        return ctx.b.const(opts["value"], hint="value")

    tflite = onnx  # the same generic rule: values, subgraphs and parameters

    cases = [Case("vector", lambda: constant(np.arange(3, dtype=np.float32)), [])]


@layer_api(method=False)
def constant(value: Any, *, name: str | None = None) -> Axon:
    """A constant layer holding `value` (Python numbers become f32 / s32, as in Nx)."""
    return make_node("constant", [], {"value": value}, name=name)


def _check_structure(v: Any) -> Any:
    return v


@register
class Container(Op):
    name = "container"
    family = "special"
    doc = "Joins graphs into a nested tuple/list/dict output."
    arity = None
    accepts_none = True
    container_inputs = True
    options = {
        "structure": Option(check=_check_structure, doc="the container, leaves = input index")
    }

    def infer(self, types, opts, node):
        return tree_map(lambda i: types[i], opts["structure"])

    def forward(self, ctx, inputs, params, opts):
        return tree_map(lambda i: inputs[i], opts["structure"])

    def onnx(self, ctx, inputs, opts):
        return tree_map(lambda i: inputs[i], opts["structure"])

    tflite = onnx  # the same generic rule: values, subgraphs and parameters

    def vjp(self, ctx, inputs, output, cot, opts):
        cots: list[Any] = [None] * len(inputs)

        def collect(index: Any, c: Any) -> None:
            if isinstance(index, (tuple, list)):
                for i, ci in zip(index, c if c is not None else [None] * len(index)):
                    collect(i, ci)
            elif isinstance(index, dict):
                for k, i in index.items():
                    collect(i, None if c is None else c[k])
            elif c is not None:
                cots[index] = c if cots[index] is None else cots[index] + c

        collect(opts["structure"], cot)
        return cots


def _index_structure(tree: Any, handles: list[Axon]) -> Any:
    """Replace each graph leaf of a container by its position in `handles`."""
    if isinstance(tree, tuple):
        return tuple(_index_structure(t, handles) for t in tree)
    if isinstance(tree, list):
        return [_index_structure(t, handles) for t in tree]
    if isinstance(tree, dict):
        for k in tree:
            if not isinstance(k, str):
                raise GraphError(f"container dict keys must be strings, got {k!r}")
        return {k: _index_structure(v, handles) for k, v in tree.items()}
    if not isinstance(tree, Axon):
        raise GraphError(f"container leaves must be Axon graphs, got {type(tree).__name__}")
    handles.append(tree)
    return len(handles) - 1


@layer_api(method=False)
def container(structure: Any, *, name: str | None = None) -> Axon:
    """Join graphs into one output with a nested tuple / list / dict structure."""
    handles: list[Axon] = []
    index = _index_structure(structure, handles)
    return make_node("container", handles, {"structure": index}, name=name)


def _check_path(v: Any) -> tuple:
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"expected a path (a list of indices and keys), got {v!r}")
    for k in v:
        if not isinstance(k, (int, str)) or isinstance(k, bool):
            raise TypeError(f"path elements must be ints or strings, got {k!r}")
    return tuple(v)


def _get(tree: Any, path: tuple, what: str) -> Any:
    for k in path:
        try:
            tree = tree[k]
        except (IndexError, KeyError, TypeError):
            raise ShapeError(f"{what}: the container has no element {k!r}") from None
    return tree


@register
class Elem(Op):
    name = "elem"
    family = "special"
    doc = "One element of a container output, by path (Elixir's elem/2 through Axon.nx)."
    accepts_none = True
    container_inputs = True
    options = {"path": Option(check=_check_path, doc="indices / keys into the container")}

    def infer(self, types, opts, node):
        return _get(types[0], opts["path"], "elem")

    def forward(self, ctx, inputs, params, opts):
        return _get(inputs[0], opts["path"], "elem")

    def onnx(self, ctx, inputs, opts):
        return _get(inputs[0], opts["path"], "elem")

    tflite = onnx  # the same generic rule: values, subgraphs and parameters

    def vjp(self, ctx, inputs, output, cot, opts):
        """The container's cotangent: `cot` at this element's path, None (zero) elsewhere."""

        def place(t: Any, path: tuple) -> Any:
            if not path:
                return cot
            head, rest = path[0], path[1:]
            if isinstance(t, dict):
                return {k: place(v, rest) if k == head else None for k, v in t.items()}
            return type(t)(place(v, rest) if i == head else None for i, v in enumerate(t))

        return [place(ctx.in_types[0], opts["path"])]


def elem(x: Axon, *path: int | str) -> Axon:
    """Take one element of a container graph (a tuple index or a dict key per level)."""
    return make_node("elem", [x], {"path": path})


def unpack(model: Axon, structure_type: Any) -> Any:
    """Split a container-valued node into a matching container of single-node graphs."""

    def walk(t: Any, path: tuple) -> Any:
        if isinstance(t, (tuple, list)):
            items = [walk(v, (*path, i)) for i, v in enumerate(t)]
            return tuple(items) if isinstance(t, tuple) else items
        if isinstance(t, dict):
            return {k: walk(v, (*path, k)) for k, v in t.items()}
        return elem(model, *path)

    return walk(structure_type, ())


def graph_of(output: Any, nodes: dict[int, Node]) -> Axon:
    """A handle with a container output over existing nodes."""
    return Axon(output, nodes)


__all__ = [
    "constant",
    "container",
    "elem",
    "graph_of",
    "input",
    "merge_nodes",
    "new_id",
    "tree_leaves",
    "unpack",
]
