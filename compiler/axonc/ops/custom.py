"""Function layers: `ax.nx(x, fn)` and custom layers `ax.layer(fn, [x, ax.param(...)])`.

The Python function is traced once (`axonc.tracing`) into primitives and stored
as a subgraph of the node, so the layer runs in the interpreter, saves to the
model file and lowers to every backend like any other op; the model never holds
code. `ax.layer` traces once per mode so `fn` may branch on `mode` in Python,
and once more per combination of missing `ax.optional` inputs (`fn` sees None).
Their gradients run the gradient rules of the body's primitives in reverse
(`_body.backprop_body`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..dtypes import TensorType, dtype_name, normalize_shape
from ..errors import GraphError, OptionError, ShapeError
from ..initializers import check_initializer
from ..interpreter import MODES, layer_param
from ..ir import Axon, tree_map
from ..registry import Case, Op, Option, ParamSpec, check_int, layer_api, register
from ..shape_inference import (
    NONE,
    declared_type,
    infer_types,
    leaves_known,
    make_node,
    output_types,
)
from ..tracing import flatten_types, trace, trace_now, traced_types
from ._body import backprop_body, choose_present, graph_tensors, leaf_graphs, leaf_structure
from .special import container
from .special import input as input_layer


def _single(x: Any, label: str) -> Axon:
    """A one-node handle: a graph whose output is a container gets a container node."""
    if not isinstance(x, Axon):
        raise GraphError(f"{label} must be an Axon graph, got {type(x).__name__}")
    if isinstance(x.output, int):
        return x
    return container(_structure(x.output, x))


def _structure(out: Any, graph: Axon) -> Any:
    if isinstance(out, tuple):
        return tuple(_structure(o, graph) for o in out)
    if isinstance(out, list):
        return [_structure(o, graph) for o in out]
    if isinstance(out, dict):
        return {k: _structure(v, graph) for k, v in out.items()}
    return Axon(out, graph.nodes)


def _body_type(body: Axon, arg_types: list[Any]) -> Any:
    """The output type of a traced body for concrete argument types."""
    types = infer_types(body, arg_types=flatten_types(arg_types))
    return output_types(body, types)


@register
class Nx(Op):
    name = "nx"
    family = "custom"
    doc = "A function of the input traced into primitives (Axon.nx); no parameters."
    container_inputs = True

    def infer(self, types, opts, node):
        return _body_type(node.subgraphs["body"], list(types))

    def forward(self, ctx, inputs, params, opts):
        return ctx.run(ctx.node.subgraphs["body"], flatten_types(list(inputs)))

    def onnx(self, ctx, inputs, opts):
        return ctx.lower(ctx.node.subgraphs["body"], flatten_types(list(inputs)), scoped=True)

    tflite = onnx  # the same generic rule: values, subgraphs and parameters

    def vjp(self, ctx, inputs, output, cot, opts):
        """Through the traced body: its primitives' gradient rules, run in reverse."""
        (x,) = inputs
        t = ctx.in_types[0]
        args = graph_tensors(ctx, leaf_graphs(x, t))
        leaf_cots = backprop_body(ctx, ctx.node.subgraphs["body"], args, cot, ctx.path)
        return [leaf_structure(t, leaf_cots)]

    cases = [
        Case("square_plus_one", lambda x: nx(x, lambda t: t * t + 1), [TensorType((None, 3))]),
        Case(
            "reduce",
            lambda x: nx(x, lambda t: (t - t.mean(axis=-1, keepdims=True)).max(axis=1)),
            [TensorType((None, 4, 2))],
        ),
    ]


@layer_api
def nx(x: Axon, fn: Callable[..., Any], *, name: str | None = None) -> Axon:
    """Apply `fn` (written with Python operators and `axonc.numpy`) to the output of `x`.

    `fn` is traced once on a symbolic tensor (a container of them when `x`'s output is a
    container, e.g. `ax.nx(model, lambda t: t[0])`) and must return tensors.
    """
    if not callable(fn):
        raise GraphError(f"nx: expected a function, got {type(fn).__name__}")
    x = _single(x, "nx input")

    def retrace(node: Any, types: list[Any]) -> Any:
        body = node.subgraphs.get("body")
        if body is not None and traced_types(body) == flatten_types(types):
            return node
        return node.replace(subgraphs={"body": trace(fn, list(types))})

    body = trace_now(lambda: trace(fn, [declared_type(x, x.output)]), [x])
    bodies = {} if body is None else {"body": body}
    return make_node("nx", [x], {}, name=name, subgraphs=bodies, retrace=retrace)


# ---------------------------------------------------------------------------
# custom layers


@dataclass(frozen=True)
class Param:
    """A trainable parameter declared for `ax.layer` (Axon.param)."""

    name: str
    shape: tuple[int, ...] | Callable[..., Any]
    initializer: Any = "glorot_uniform"
    dtype: str = "f32"


@layer_api(method=False)
def param(
    name: str,
    shape: Any,
    *,
    initializer: Any = "glorot_uniform",
    dtype: Any = "f32",
) -> Param:
    """A trainable parameter for `ax.layer`: a shape tuple, or a function of the input shapes."""
    if not isinstance(name, str) or not name:
        raise GraphError(f"param: name must be a non-empty string, got {name!r}")
    if not callable(shape):
        shape = normalize_shape(shape, f"param {name!r} shape")
    try:
        initializer = check_initializer(initializer)
    except (TypeError, ValueError) as exc:
        raise GraphError(f"param {name!r}: {exc}") from None
    return Param(name, shape, initializer, dtype_name(dtype))


def _check_json(v: Any, where: str = "opts") -> Any:
    """Layer options are saved in the model file: numbers, strings, bools, None, lists, dicts."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_check_json(x, f"{where}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, dict):
        for k in v:
            if not isinstance(k, str):
                raise TypeError(f"{where}: dict keys must be strings, got {k!r}")
        return {k: _check_json(x, f"{where}.{k}") for k, x in v.items()}
    raise TypeError(
        f"{where}: custom layer options are saved with the model, so they must be numbers, "
        f"strings, booleans, None, lists or dicts; got {type(v).__name__}"
    )


def _check_params(v: Any) -> tuple[dict[str, Any], ...]:
    out = []
    for p in v:
        if not isinstance(p, dict) or set(p) != {"name", "shape", "initializer", "dtype"}:
            raise TypeError(f"expected parameter records name/shape/initializer/dtype, got {p!r}")
        shape = normalize_shape(p["shape"], f"param {p['name']!r} shape")
        if None in shape:
            raise ValueError(f"param {p['name']!r} shape must be fully known, got {shape}")
        out.append(
            {
                "name": str(p["name"]),
                "shape": shape,
                "initializer": check_initializer(p["initializer"]),
                "dtype": dtype_name(p["dtype"]),
            }
        )
    names = [p["name"] for p in out]
    if len(set(names)) != len(names):
        raise ValueError(f"parameter names must be unique, got {names}")
    return tuple(out)


def _param_type(p: dict[str, Any]) -> TensorType:
    return TensorType(p["shape"], p["dtype"])


MAX_OPTIONAL = 6  # every combination of missing optional inputs is traced: 2**6 per mode


def _check_optional(v: Any) -> tuple[int, ...]:
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"expected a list of input indices, got {v!r}")
    out = tuple(check_int(0)(i) for i in v)
    if list(out) != sorted(set(out)):
        raise ValueError(f"expected increasing, distinct input indices, got {list(out)}")
    if len(out) > MAX_OPTIONAL:
        raise ValueError(
            f"at most {MAX_OPTIONAL} optional inputs (each combination is traced), got {len(out)}"
        )
    return out


def absent_patterns(optional: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every combination of missing optional inputs, all present first."""
    return [c for r in range(len(optional) + 1) for c in itertools.combinations(optional, r)]


def body_role(mode: str, absent: tuple[int, ...] = ()) -> str:
    """The subgraph role of the body traced for `mode` with the inputs at `absent` missing."""
    return mode if not absent else f"{mode}/absent={','.join(map(str, absent))}"


def _missing(values: list[Any], optional: tuple[int, ...]) -> tuple[int, ...] | None:
    """The indices of missing inputs, or None when a required (not optional) one is missing."""
    absent = tuple(i for i, v in enumerate(values) if v is NONE)
    return absent if set(absent) <= set(optional) else None


@register
class Custom(Op):
    """One traced body per mode and per combination of missing optional inputs.

    Subgraph roles: "inference" and "train" with every input present; with
    some missing, "<mode>/absent=<i>,<j>", where i < j index the layer's graph inputs
    (its node inputs, `ax.param`s not counted), e.g. "train/absent=1". Option
    `optional` lists the inputs that may be missing (they came from `ax.optional`);
    a body takes the present inputs then the parameters as arguments. A missing
    input that is not optional makes the layer's output missing too (ax.NONE).
    """

    name = "custom"
    family = "custom"
    doc = "A custom layer (Axon.layer): a traced function of its inputs and parameters."
    arity = None
    accepts_none = True
    container_inputs = True
    options = {
        "opts": Option({}, lambda v: _check_json(dict(v)), "options passed to the function"),
        "params": Option((), _check_params, "the layer's parameters, in argument order"),
        "optional": Option(
            (), _check_optional, "indices of graph inputs that may be missing (ax.optional)"
        ),
    }

    def params(self, types, opts, mode, node):
        return [
            ParamSpec((p["name"],), p["shape"], p["initializer"], p["dtype"])
            for p in opts["params"]
        ]

    def _body(self, node: Any, mode: str, absent: tuple[int, ...]) -> Axon:
        return node.subgraphs[body_role(mode, absent)]

    def _check_bodies(self, types: list[Any], opts: dict[str, Any], node: Any) -> None:
        optional = opts["optional"]
        if optional and optional[-1] >= len(types):
            raise GraphError(
                f"optional input index {optional[-1]} is out of range: the layer has "
                f"{len(types)} input(s)"
            )
        want = {body_role(m, a) for m in MODES for a in absent_patterns(optional)}
        if set(node.subgraphs) != want:
            raise GraphError(f"expected traced bodies {sorted(want)}, got {sorted(node.subgraphs)}")

    def infer(self, types, opts, node):
        self._check_bodies(types, opts, node)
        absent = _missing(types, opts["optional"])
        if absent is None:
            return NONE
        present = [t for i, t in enumerate(types) if i not in absent]
        arg_types = [*present, *(_param_type(p) for p in opts["params"])]
        out = {mode: _body_type(self._body(node, mode, absent), arg_types) for mode in MODES}
        if out["inference"] != out["train"]:
            raise ShapeError(
                f"the function returns {out['inference']!r} in inference mode but "
                f"{out['train']!r} in train mode; both modes must give the same types"
            )
        return out["inference"]

    def forward(self, ctx, inputs, params, opts):
        absent = _missing(inputs, opts["optional"])
        if absent is None:
            return NONE
        present = [x for i, x in enumerate(inputs) if i not in absent]
        values = [layer_param(params, p["name"], ctx) for p in opts["params"]]
        args = flatten_types([*present, *values])
        return ctx.run(self._body(ctx.node, ctx.mode, absent), args)

    def onnx(self, ctx, inputs, opts):
        """The body traced for this mode and these missing inputs, lowered inline."""
        absent = _missing(inputs, opts["optional"])
        if absent is None:
            return NONE
        present = [x for i, x in enumerate(inputs) if i not in absent]
        values = []
        for p in opts["params"]:
            values.append(ctx.param(p["name"]))
        args = flatten_types([*present, *values])
        return ctx.lower(self._body(ctx.node, ctx.mode, absent), args, scoped=True)

    tflite = onnx  # the same generic rule: values, subgraphs and parameters

    def vjp(self, ctx, inputs, output, cot, opts):
        """Through the body traced for this mode: input cotangents and parameter gradients.

        An `ax.optional` input may still turn out missing when the gradient graph runs,
        so each such input doubles the bodies differentiated; at run time the result of
        the body matching the inputs given is chosen (see `choose_present`).
        """
        absent = _missing(inputs, opts["optional"])
        if absent is None:
            return [None] * len(inputs)
        params = [ctx.param(p["name"]) for p in opts["params"]]
        maybe = tuple(i for i in opts["optional"] if i not in absent)
        patterns = [tuple(sorted((*absent, *a))) for a in absent_patterns(maybe)]
        leaves = {
            i: graph_tensors(ctx, leaf_graphs(inputs[i], ctx.in_types[i]))
            for i in range(len(inputs))
            if i not in absent
        }
        per_pattern = []
        for pattern in patterns:
            present = [i for i in leaves if i not in pattern]
            args = [*(t for i in present for t in leaves[i]), *params]
            body = self._body(ctx.node, ctx.mode, pattern)
            flat = iter(backprop_body(ctx, body, args, cot, ctx.path))
            got = {i: [next(flat) for _ in leaves[i]] for i in present}
            needs = [inputs[i] for i in maybe if i not in pattern]
            per_pattern.append((got, [next(flat) for _ in params], needs))
        cots: list[Any] = [None] * len(inputs)
        for i, tensors in leaves.items():
            options = [(got[i], needs) for got, _, needs in per_pattern if i in got]
            chosen = [
                choose_present(ctx, [(c[k], needs) for c, needs in options], t)
                for k, t in enumerate(tensors)
            ]
            cots[i] = leaf_structure(ctx.in_types[i], chosen)
        for k, (p, value) in enumerate(zip(opts["params"], params, strict=True)):
            grad = choose_present(
                ctx, [(grads[k], needs) for _, grads, needs in per_pattern], value
            )
            if grad is not None:
                ctx.add_param_grad(p["name"], grad)
        return cots

    cases = [
        Case(
            "scale_shift",
            lambda x: layer(
                lambda t, w, b, mode: t * w + b,
                [x, param("w", lambda s: (s[-1],)), param("b", (1,), initializer="zeros")],
            ),
            [TensorType((None, 3))],
        ),
        Case(
            "mode_dependent",
            lambda x: layer(
                lambda t, w, mode, scale: t @ w * (scale if mode == "train" else 1.0),
                [x, param("w", (3, 2))],
                scale=0.5,
            ),
            [TensorType((None, 3))],
        ),
        Case("optional_input_missing", lambda x: _masked_scale(x), [TensorType((None, 3))]),
        Case("optional_input_given", lambda x, m: _masked_scale(x, m), [TensorType((None, 3))] * 2),
    ]


def _masked_scale(x: Axon, mask: Axon | None = None) -> Axon:
    """`x * w`, times the mask when it is given: an `ax.optional` input of a custom layer.

    The `optional` node is made through the registry: the composite family, which
    defines it, builds on this one.
    """
    if mask is None:
        mask = input_layer("mask", shape=(None, 3), optional=True)
    return layer(
        lambda t, m, w, **_: t * w if m is None else t * w * m,
        [x, make_node("optional", [mask], {}), param("w", (3,))],
    )


@layer_api(method=False)
def layer(
    fn: Callable[..., Any],
    inputs: list[Any],
    *,
    name: str | None = None,
    op_name: str | None = None,
    **opts: Any,
) -> Axon:
    """A custom layer: `fn(*tensors, **opts, mode=mode)` over graphs and `ax.param`s.

    `inputs` mixes graphs and parameters in the order `fn` takes them. `fn` is traced
    once per mode ("inference", "train") into primitives, so it may branch on `mode`
    in Python; `opts` must be JSON-able because they are saved with the model.

    An input wrapped in `ax.optional` may be missing (Axon.optional): `fn` then gets
    None for it, e.g. `ax.layer(lambda x, m, **o: x if m is None else x * m,
    [x, ax.optional(mask)])`, and is traced once more per mode for each combination
    of missing optional inputs (at most 6 such inputs). Any other missing input makes
    the layer's output missing (ax.NONE), as in Axon.
    """
    if not callable(fn):
        raise GraphError(f"layer: expected a function, got {type(fn).__name__}")
    if not isinstance(inputs, (list, tuple)):
        raise GraphError(
            f"layer: inputs must be a list of graphs and ax.param(...), got {inputs!r}"
        )
    label = f"{op_name or 'custom'} layer" + (f" {name!r}" if name else "")
    if "mode" in opts:
        raise OptionError(f"{label}: 'mode' is passed by axonc to the function; pick another name")
    try:
        saved = _check_json(opts)
    except TypeError as exc:
        raise OptionError(f"{label}: {exc}") from None
    graphs: list[Axon] = []
    params: list[Param] = []
    slots: list[tuple[str, int]] = []
    for i, x in enumerate(inputs):
        if isinstance(x, Param):
            slots.append(("param", len(params)))
            params.append(x)
        else:
            slots.append(("input", len(graphs)))
            graphs.append(_single(x, f"{label}: input {i}"))
    optional = tuple(i for i, g in enumerate(graphs) if g.nodes[g.output].op == "optional")
    try:
        optional = _check_optional(optional)
    except ValueError as exc:
        raise OptionError(f"{label}: {exc}") from None

    def traced(in_types: list[Any]) -> tuple[tuple[dict[str, Any], ...], dict[str, Axon]]:
        return _trace_custom(fn, slots, params, in_types, optional, saved, label)

    def retrace(node: Any, types: list[Any]) -> Any:
        in_types = [_present_or(t, node, i) for i, t in enumerate(types)]
        if any(t is None for t in in_types):
            return node
        records, bodies = traced(in_types)
        if (
            node.subgraphs
            and node.options["params"] == records
            and all(traced_types(node.subgraphs[r]) == traced_types(b) for r, b in bodies.items())
        ):
            return node
        return node.replace(options={**node.options, "params": records}, subgraphs=bodies)

    now = trace_now(lambda: traced([_present_type(g) for g in graphs]), graphs)
    records, bodies = ((), {}) if now is None else now
    return make_node(
        "custom",
        graphs,
        {"opts": saved, "params": records, "optional": optional},
        name=name,
        op_name=op_name,
        subgraphs=bodies,
        retrace=retrace,
    )


def _present_or(t: Any, node: Any, i: int) -> Any:
    """Input i's type, or (a missing optional input) the type its body was traced with."""
    if t is not NONE:
        return t
    body = node.subgraphs.get("inference")
    if body is None:
        return None
    return traced_types(body)[i]


def _trace_custom(
    fn: Callable[..., Any],
    slots: list[tuple[str, int]],
    params: list[Param],
    in_types: list[Any],
    optional: tuple[int, ...],
    saved: dict[str, Any],
    label: str,
) -> tuple[tuple[dict[str, Any], ...], dict[str, Axon]]:
    """A custom layer's parameter records and traced bodies for these input types."""
    records = [_param_record(p, in_types, label) for p in params]
    try:
        records = list(_check_params(records))
    except (TypeError, ValueError) as exc:
        raise OptionError(f"{label}: {exc}") from None
    param_types = [_param_type(p) for p in records]
    bodies = {}
    for absent in absent_patterns(optional):
        present = [i for i in range(len(in_types)) if i not in absent]
        arg_types = [*(in_types[i] for i in present), *param_types]
        traced = _call_in_order(fn, slots, present)
        for mode in MODES:
            try:
                bodies[body_role(mode, absent)] = trace(traced, arg_types, **saved, mode=mode)
            except TypeError as exc:
                if not absent:
                    raise
                raise GraphError(
                    f"{label}: the function failed with input(s) {list(absent)} missing: {exc}; "
                    "a missing ax.optional input is passed as None, so test for it "
                    "(`x if mask is None else x * mask`)"
                ) from exc
    return tuple(records), bodies


def _call_in_order(
    fn: Callable[..., Any], slots: list[tuple[str, int]], present: list[int]
) -> Callable[..., Any]:
    """`fn` taking (present graph inputs..., params...) and called in the user's order.

    Graph inputs not in `present` (missing optional inputs) are passed as None.
    """

    def ordered(*args: Any, **kw: Any) -> Any:
        graph_args = dict(zip(present, args[: len(present)]))
        param_args = args[len(present) :]
        call = [graph_args.get(j) if kind == "input" else param_args[j] for kind, j in slots]
        return fn(*call, **kw)

    ordered.__name__ = getattr(fn, "__name__", "custom")
    return ordered


def _present_type(g: Axon) -> Any:
    """A graph's declared type as if every optional `ax.input` were given.

    An optional input's declared type is ax.NONE (it may be left out); the body
    where that input is present is traced with the shape it was declared with.
    """
    t = declared_type(g, g.output)
    if t is not NONE:
        return t
    given = {
        n.options["name"]: TensorType(n.options["shape"], n.options["dtype"] or "f32")
        for n in g.nodes.values()
        if n.op == "input" and n.options["optional"] and n.options["shape"] is not None
    }
    t = output_types(g, infer_types(g, given))
    return None if t is NONE else t


def _param_record(p: Param, in_types: list[Any], label: str) -> dict[str, Any]:
    shape = p.shape
    if callable(shape):
        if not leaves_known(list(in_types)):
            raise ShapeError(
                f"{label}: param {p.name!r} has a shape function but an input's shape is unknown "
                "until a template or data gives it"
            )
        shapes = [tree_map(lambda t: t.shape, t) for t in in_types]
        shape = shape(*shapes)
        try:
            shape = normalize_shape(shape, f"param {p.name!r} shape")
        except ShapeError as exc:
            raise ShapeError(f"{label}: {exc}") from None
    if None in shape:
        raise ShapeError(
            f"{label}: param {p.name!r} shape must be fully known, got {shape}; "
            "a parameter cannot have a dynamic dim"
        )
    return {"name": p.name, "shape": shape, "initializer": p.initializer, "dtype": p.dtype}


__all__ = ["Param", "layer", "nx", "param"]
