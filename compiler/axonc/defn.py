"""Nx.Defn's `value_and_grad` / `grad` for plain Python: numpy arrays in, numpy arrays out.

`value_and_grad(x, fn, transform=None)` calls `fn` on symbolic tensors standing for
the leaves of `x` (an array, a tuple / list / dict of them, or a ModelState),
differentiates `transform(fn(x))` (the sum of it when it is not a scalar, as Nx
seeds every element with 1.0) with axonc's reverse-mode autodiff, and returns
`(fn(x), gradients)` with the gradients in `x`'s structure (integer leaves such as
dropout keys get zeros, as they carry no gradient).

Inside `fn`, `axonc.numpy` code, Python operators, losses and a built model's
`predict_fn` (either mode) are recorded. A `predict_fn` call whose state holds
`fn`'s tensors is inlined into the graph under its own layer-name suffix (`@<call>`),
its parameters reading the same values as the leaves of `x` they came from, so their
gradients add up on those leaves; a call on concrete arrays only runs at once.

Each call traces `fn` again (cheap: it only records nodes), so arrays that `fn`
closes over -- the other network's parameters in a GAN step, a batch -- are always
current: non-scalar constants become graph inputs fed on every call, never baked
into the graph. The recorded graph's structure (ops, options, shapes, dtypes,
scalar constants) keys a cache of compiled gradient graphs, so the autodiff, the
ONNX lowering and the onnxruntime session are built once per signature.

Train-mode `predict_fn` returns {"prediction", "state"} inside `fn` too; the
"state" leaves are placeholders filled with the updated state (batch-norm
statistics, advanced dropout keys) when the value comes back, so they may be
returned from `fn` but not computed with. One graph runs in one mode: a `fn` mixing
train-mode and inference-mode models is refused.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnxruntime as ort

from .autodiff import gradients
from .dtypes import dtype_name, is_float
from .errors import InputError, StateError, TraceError
from .interpreter import run as run_graph
from .ir import Axon, Node, assign_names, merge_nodes, new_id, topo_order, tree_leaves, tree_map
from .model_state import ModelState
from .ops.dropout import draw
from .ops.random import RANDOM_OPS, host_samples
from .ops.special import container, parameter
from .tracing import Tensor, _traces, coerce, constant_graph

COMPILERS = ("onnxruntime", "reference")
ROOT = "x"
CONST = "const"
_MAX_CACHE = 64


class StateRef:
    """A train-mode state leaf of an inlined predict_fn call, known only after the run."""

    __slots__ = ("call", "path")

    def __init__(self, call: int, path: tuple[str, ...]):
        self.call = call
        self.path = path

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TraceError(
            "a predict_fn's train-mode 'state' inside value_and_grad is only known after the "
            "run; return it from the function instead of computing with it"
        )

    def __repr__(self) -> str:
        return f"StateRef({'/'.join(self.path)})"


class _Recording:
    """What one trace of `fn` collects besides its nodes: fed data, aliases, modes."""

    def __init__(self, trace_id: int, x_paths: Mapping[int, tuple[str, ...]]):
        self.trace_id = trace_id
        self.x_paths = x_paths  # parameter node id -> its x path
        self.data: dict[tuple[str, ...], np.ndarray] = {}
        self.aliases: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.modes: set[str] = set()
        self.calls = itertools.count()
        self.call_layers: dict[int, dict[str, str]] = {}
        self.order: list[int] = []  # the recorded graph's node order (set by _record)


_active: list[_Recording] = []


# ---------------------------------------------------------------------------
# containers


def _as_leaf(v: Any) -> np.ndarray:
    if isinstance(v, np.ndarray) and v.dtype.kind in "biuf":
        return v  # arrays keep their dtype (as coerce keeps them)
    (arr,) = coerce([v])
    return np.asarray(arr)


def _map_paths(
    fn: Callable[[tuple[str, ...], Any], Any], x: Any, prefix: tuple[str, ...] = ()
) -> Any:
    """Apply fn(path, leaf) to every leaf of x, keeping x's structure."""
    if isinstance(x, ModelState):
        return _model_state_like(x, _map_paths(fn, x.data, prefix))
    if isinstance(x, Mapping):
        return {k: _map_paths(fn, v, (*prefix, str(k))) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_map_paths(fn, v, (*prefix, str(i))) for i, v in enumerate(x))
    return fn(prefix, x)


def _model_state_like(like: ModelState, data: Mapping[str, Any]) -> ModelState:
    """A ModelState with `like`'s classification and `data` as is (leaves may be tensors)."""
    out = ModelState.__new__(ModelState)
    for name, value in (
        ("_data", data),
        ("parameters", like.parameters),
        ("state", like.state),
        ("frozen", like.frozen),
        ("ties", {}),
    ):
        object.__setattr__(out, name, value)
    return out


def _leaves_with_paths(x: Any) -> list[tuple[tuple[str, ...], Any]]:
    out: list[tuple[tuple[str, ...], Any]] = []
    _map_paths(lambda p, v: out.append((p, v)), x)
    return out


def _state_data(state: Any) -> Any:
    if isinstance(state, ModelState):
        return state.data
    if state is None or isinstance(state, Mapping):
        return state or {}
    raise StateError(
        f"state must be a ModelState or a nested dict of arrays, got {type(state).__name__}"
    )


def _nest(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        cur = out
        for k in path[:-1]:
            cur = cur.setdefault(k, {})
        cur[path[-1]] = value
    return out


# ---------------------------------------------------------------------------
# inlining a built model's predict_fn


def has_tensors(state: Any, inputs: Any) -> bool:
    """Whether predict_fn's state or inputs hold traced tensors (ModelStates opened up).

    Outside value_and_grad only the inputs are looked at (the state cannot hold tensors
    there), which keeps an ordinary predict_fn call free of a walk over its state.
    """
    if isinstance(inputs, Tensor):
        return True
    if isinstance(inputs, Mapping) and any(isinstance(v, Tensor) for v in inputs.values()):
        return True
    if not _active:
        return False
    for tree in (state, inputs):
        if isinstance(tree, ModelState):
            tree = tree._data
        if any(isinstance(leaf, Tensor) for leaf in tree_leaves(_plain(tree))):
            return True
    return False


def _plain(tree: Any) -> Any:
    if isinstance(tree, Mapping) and not isinstance(tree, dict):
        return dict(tree)
    return tree


def inline_call(model: Axon, mode: str, state: Any, inputs: Any) -> Any:
    """predict_fn on traced tensors: the model's nodes recorded into the active trace."""
    from .build import input_nodes  # build's predict_fn calls this function

    if not _active:
        raise TraceError(
            "predict_fn was given traced tensors outside axonc.numpy.value_and_grad / grad; "
            "call it there, or on arrays"
        )
    rec = _active[-1]
    call = next(rec.calls)
    rec.modes.add(mode)
    names, order = _layout(model)
    suffix = f"@{call}"
    rec.call_layers[call] = {}
    for path, leaf in _leaves_with_paths(_state_data(state)):
        new = (path[0] + suffix, *path[1:])
        rec.call_layers[call][new[0]] = path[0]
        rec.data[new] = _call_leaf(rec, new, leaf)
    nodes = input_nodes(model)
    if not isinstance(inputs, Mapping):
        required = [n for n, node in nodes.items() if not node.options["optional"]]
        if len(nodes) != 1 and len(required) != 1:
            raise InputError(
                f"the model has inputs {', '.join(map(repr, nodes))}; give a dict keyed by "
                "input name"
            )
        inputs = {(required or list(nodes))[0]: inputs}
    unknown = sorted(set(inputs) - set(nodes))
    if unknown:
        raise InputError(f"unknown input(s) {', '.join(map(repr, unknown))}")
    graphs: dict[int, Axon] = {}
    for name, node in nodes.items():
        value = inputs.get(name)
        if value is None:
            if not node.options["optional"]:
                raise InputError(f"input {name!r} is required but was not given")
            continue
        graphs[node.id] = _input_graph(rec, value)
    merged = merge_nodes(*graphs.values())
    ids = {old: g.output for old, g in graphs.items()}
    for nid in order:
        node = model.nodes[nid]
        if nid in ids:
            continue
        if node.op == "input":
            raise InputError(f"input {node.options['name']!r} is required but was not given")
        copy = node.replace(
            id=new_id(), inputs=tuple(ids[i] for i in node.inputs), name=names[nid] + suffix
        )
        ids[nid] = copy.id
        merged[copy.id] = copy
    prediction = _open(merged, tree_map(lambda i: ids[i], model.output), rec.trace_id)
    if mode != "train":
        return prediction
    state_paths = state.state if isinstance(state, ModelState) else set()
    return {"prediction": prediction, "state": _nest({p: StateRef(call, p) for p in state_paths})}


_LAYOUTS: dict[int, tuple[Axon, dict[int, str], list[int]]] = {}


def _layout(model: Axon) -> tuple[dict[int, str], list[int]]:
    """A model's layer names and node order, computed once per model (graphs are immutable)."""
    hit = _LAYOUTS.get(id(model))
    if hit is None or hit[0] is not model:
        if len(_LAYOUTS) >= _MAX_CACHE:
            _LAYOUTS.pop(next(iter(_LAYOUTS)))
        hit = (model, assign_names(model), topo_order(model.nodes, model.output))
        _LAYOUTS[id(model)] = hit
    return hit[1], hit[2]


def _call_leaf(rec: _Recording, path: tuple[str, ...], leaf: Any) -> np.ndarray:
    if isinstance(leaf, Tensor):
        node = leaf.graph.nodes[leaf.graph.output]
        if leaf._trace != rec.trace_id or leaf.graph.output not in rec.x_paths:
            raise TraceError(
                f"the state given to predict_fn has a computed tensor at {'/'.join(path)!r}; "
                "inside value_and_grad pass the differentiated state itself (or arrays)"
            )
        rec.aliases[path] = rec.x_paths[node.id]
        return rec.data[rec.x_paths[node.id]]
    return _as_leaf(leaf)


def _input_graph(rec: _Recording, value: Any) -> Axon:
    if isinstance(value, Tensor):
        if value._trace != rec.trace_id:
            raise TraceError("a tensor from another traced function was given to predict_fn")
        return value.graph
    return constant_graph(_as_leaf(value))


def _open(nodes: Mapping[int, Node], output: Any, trace_id: int) -> Any:
    """Tensors for the output ids; a container node is opened into its structure."""

    def leaf(nid: int) -> Any:
        node = nodes[nid]
        if node.op == "container":
            return tree_map(lambda i: leaf(node.inputs[i]), node.options["structure"])
        return Tensor(Axon(nid, nodes), trace_id)

    return tree_map(leaf, output)


# ---------------------------------------------------------------------------
# value_and_grad


def value_and_grad(
    x: Any,
    fn: Callable[[Any], Any],
    transform: Callable[[Any], Any] | None = None,
    *,
    compiler: str = "onnxruntime",
) -> tuple[Any, Any]:
    """(fn(x), d transform(fn(x)) / dx), the gradients in x's structure (see module doc).

    `compiler="reference"` runs the graph on the numpy reference interpreter instead
    of onnxruntime (the same graph, for checking).
    """
    if compiler not in COMPILERS:
        raise InputError(f"compiler must be one of {', '.join(COMPILERS)}, got {compiler!r}")
    if not callable(fn):
        raise InputError(f"value_and_grad: fn must be callable, got {type(fn).__name__}")
    raw = _leaves_with_paths(x)
    if any(isinstance(v, Tensor) for _, v in raw):
        raise TraceError(
            "value_and_grad differentiates arrays, but x holds traced tensors: it cannot be "
            "nested inside another value_and_grad or a traced function (higher-order "
            "gradients are not supported)"
        )
    leaves = [(p, _as_leaf(v)) for p, v in raw]
    if not leaves:
        raise InputError("value_and_grad: x has no arrays to differentiate")
    out, rec = _trace(x, leaves, fn)
    target = out if transform is None else transform(out)
    graph, loss_id = _record(rec, out, target)
    if not graph.output:  # nothing depends on x: fn's value as is, zero gradients
        return out, _map_paths(lambda p, v: np.zeros_like(_as_leaf(v)), x)
    if compiler == "reference" or any(node.hooks for node in graph.nodes.values()):
        # forward hooks are Python callbacks: only the reference interpreter calls them
        entry = _Entry.build(graph, loss_id, rec, leaves, mode=_mode(rec), compile_onnx=False)
    else:
        key = _signature(graph, rec)
        entry = _CACHE.get(key)
        if entry is None:
            entry = _Entry.build(graph, loss_id, rec, leaves, mode=_mode(rec), compile_onnx=True)
            if len(_CACHE) >= _MAX_CACHE:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = entry
    values, grads, new_state = entry.run(
        rec, graph, "onnxruntime" if entry.session else "reference"
    )
    value = _fill(out, values, new_state, rec)
    flat_grads = dict(zip([p for p, _ in leaves], grads))
    return value, _map_paths(lambda p, v: flat_grads[p], x)


def grad(x: Any, fn: Callable[[Any], Any], *, compiler: str = "onnxruntime") -> Any:
    """d fn(x) / dx in x's structure (Nx.Defn.grad); see value_and_grad."""
    return value_and_grad(x, fn, compiler=compiler)[1]


def _trace(
    x: Any, leaves: list[tuple[tuple[str, ...], np.ndarray]], fn: Callable[[Any], Any]
) -> tuple[Any, _Recording]:
    trace_id = next(_traces)
    arrays = dict(leaves)
    x_paths: dict[int, tuple[str, ...]] = {}
    rec = _Recording(trace_id, x_paths)

    def leaf(path: tuple[str, ...], _: Any) -> Tensor:
        value = arrays[path]
        full = (ROOT, *path)
        graph = parameter(full, value.shape, dtype_name(value.dtype))
        x_paths[graph.output] = full
        rec.data[full] = value
        return Tensor(graph, trace_id)

    traced_x = _map_paths(leaf, x)
    _active.append(rec)
    try:
        return fn(traced_x), rec
    finally:
        _active.pop()


def _mode(rec: _Recording) -> str:
    if len(rec.modes) > 1:
        raise TraceError(
            "value_and_grad: the function calls predict_fns built in both train and "
            "inference mode; one graph runs in one mode, so build them in the same mode"
        )
    return next(iter(rec.modes), "inference")


def _record(rec: _Recording, out: Any, target: Any) -> tuple[Axon, int | None]:
    """One graph of fn's tensor outputs and the differentiated target; constants hoisted."""
    tensors = [t for t in tree_leaves(_plain_tree(out)) if isinstance(t, Tensor)]
    if isinstance(target, Tensor):
        if target._trace != rec.trace_id:
            raise TraceError("value_and_grad: fn returned a tensor from another trace")
        if not is_float(target.type.dtype):
            raise TraceError(
                f"value_and_grad: the differentiated value must be a float tensor, "
                f"got {target.type.dtype}"
            )
        tensors.append(target)
        loss_id = target.graph.output
    elif isinstance(target, (int, float, np.ndarray, np.generic)):
        loss_id = None  # a constant: every gradient is zero
    else:
        raise TraceError(
            "value_and_grad: fn (or transform) must return a tensor computed with "
            f"axonc.numpy, got {type(target).__name__}"
        )
    for t in tensors:
        if t._trace != rec.trace_id:
            raise TraceError("value_and_grad: fn returned a tensor from another trace")
    nodes = merge_nodes(*(t.graph for t in tensors))
    outputs = [t.graph.output for t in tensors]
    order = topo_order(nodes, outputs)
    rec.order = order
    kept: dict[int, Node] = {}
    hoisted = itertools.count()
    for nid in order:
        node = nodes[nid]
        if node.op == "constant" and np.size(node.options["value"]) > 1:
            value = np.asarray(node.options["value"])
            path = (CONST, str(next(hoisted)))
            rec.data[path] = value
            opts = {"path": path, "shape": value.shape, "dtype": dtype_name(value.dtype)}
            node = node.replace(op="parameter", options=opts)
        kept[nid] = node
    return Axon(outputs, kept), loss_id


def _plain_tree(out: Any) -> Any:
    if isinstance(out, ModelState):
        return out._data
    if isinstance(out, Mapping) and not isinstance(out, dict):
        return dict(out)
    return out


def _signature(graph: Axon, rec: _Recording) -> tuple:
    """The graph's structure: what a compiled gradient graph depends on (not data values)."""
    order = rec.order
    index = {nid: i for i, nid in enumerate(order)}
    rows = []
    for nid in order:
        node = graph.nodes[nid]
        random = node.op in RANDOM_OPS
        opts = tuple(
            (k, _freeze(v)) for k, v in node.options.items() if not (random and k == "seed")
        )
        rows.append(
            (
                node.op,
                opts,
                tuple(index[i] for i in node.inputs),
                node.name,
                node.op_name,
                tuple(sorted((k, id(v)) for k, v in node.subgraphs.items())),
            )
        )
    outs = tuple(index[o] for o in graph.output)
    data = tuple(sorted((p, v.dtype.str, v.shape) for p, v in rec.data.items()))
    aliases = tuple(sorted(rec.aliases.items()))
    return (tuple(rows), outs, data, aliases, tuple(sorted(rec.modes)))


def _freeze(v: Any) -> Any:
    if v is None or isinstance(v, (str, int, float)):
        return v
    if isinstance(v, (np.ndarray, np.generic)):
        arr = np.asarray(v)
        return ("array", arr.dtype.str, arr.shape, arr.tobytes())
    if isinstance(v, Mapping):
        return tuple((k, _freeze(x)) for k, x in v.items())
    if isinstance(v, (tuple, list)):
        return (type(v).__name__, tuple(_freeze(x) for x in v))
    if isinstance(v, Axon):
        return ("graph", id(v))
    return v


class _Entry:
    """One differentiated graph: its value outputs and gradients, compiled or not."""

    def __init__(
        self,
        graph: Axon,
        mode: str,
        x_paths: list[tuple[str, ...]],
        floats: list[tuple[str, ...]],
    ):
        self.graph = graph
        self.mode = mode
        self.x_paths = x_paths
        self.floats = floats  # the float leaves of x, in the order of the graph's gradients
        self.session: Any = None

    @classmethod
    def build(
        cls,
        graph: Axon,
        loss_id: int | None,
        rec: _Recording,
        leaves: list[tuple[tuple[str, ...], np.ndarray]],
        *,
        mode: str,
        compile_onnx: bool,
    ) -> _Entry:
        data = _nest(rec.data)
        x_paths = [(ROOT, *p) for p, _ in leaves]
        floats = [p for p in x_paths if is_float(dtype_name(rec.data[p].dtype))]
        wrt = floats + [a for a, src in rec.aliases.items() if src in floats]
        outputs = list(graph.output)
        values = [Axon(o, graph.nodes) for o in outputs]
        if loss_id is not None:
            loss = Tensor(Axon(loss_id, graph.nodes), next(_traces))
            grads, _ = gradients(Axon(loss_id, graph.nodes), loss, data, wrt, mode=mode)
            total = {p: grads[p] for p in floats}
            for alias, src in rec.aliases.items():
                if alias in grads and src in total:
                    total[src] = total[src] + grads[alias]
            grad_graphs = [Axon(total[p].graph.output, total[p].graph.nodes) for p in floats]
        else:
            grad_graphs = []
        body = container({"values": values, "grads": grad_graphs})
        entry = cls(body, mode, x_paths, floats)
        if compile_onnx:
            entry._compile(data)
        return entry

    def _compile(self, data: Mapping[str, Any]) -> None:
        # to_onnx reads input nodes from axonc.build, which imports this module
        from .to_onnx.export import decode_structure, to_onnx

        model = to_onnx(self.graph, ModelState.new(data), mode=self.mode, params_as_inputs=True)
        self.session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        meta = {p.key: p.value for p in model.metadata_props}
        self.noise = json.loads(meta["axonc.noise_inputs"])
        self.random = json.loads(meta["axonc.random_inputs"])
        self.structure = decode_structure(json.loads(meta["axonc.outputs"]))
        self.state_outputs = json.loads(meta["axonc.state_outputs"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(
        self, rec: _Recording, graph: Axon, compiler: str
    ) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, Any]]:
        data = _nest(rec.data)
        if compiler == "reference":
            out, new_state = run_graph(self.graph, {}, data, self.mode)
        else:
            out, new_state = self._run_onnx(rec, graph, data)
        grads = dict(zip(self.floats, out["grads"]))
        ordered = [grads[p] if p in grads else np.zeros_like(rec.data[p]) for p in self.x_paths]
        return list(out["values"]), ordered, new_state

    def _run_onnx(
        self, rec: _Recording, graph: Axon, data: Mapping[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        noise = self.noise
        random = host_samples(graph, self.random) if self.random else {}
        feeds: dict[str, np.ndarray] = {}
        new_keys: dict[tuple[str, ...], np.ndarray] = {}
        for name in self.input_names:
            if name in random:
                feeds[name] = random[name]
            elif name in noise:
                layer = tuple(name.split("/")[:-1])
                uniform, new_keys[layer] = draw(_lookup(data, (*layer, "key")), noise[name])
                feeds[name] = uniform.astype(np.float32)
            else:
                feeds[name] = np.asarray(_lookup(data, tuple(name.split("/"))))
        names = self.output_names
        values = dict(zip(names, self.session.run(names, feeds)))
        out = tree_map(lambda n: values[n], self.structure)
        new_state: dict[str, Any] = {}
        for name, path in self.state_outputs.items():
            _insert(new_state, tuple(path), values[name])
        for layer, key in new_keys.items():
            _insert(new_state, (*layer, "key"), key)
        return out, new_state


_CACHE: dict[tuple, _Entry] = {}


def _lookup(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for k in path:
        if not isinstance(tree, Mapping) or k not in tree:
            shown = (path[0].rsplit("@", 1)[0], *path[1:])  # the layer as its model names it
            raise StateError(
                f"the state has no value for {'/'.join(shown)!r}; a train-mode predict_fn needs "
                "the state its init_fn made in train mode (dropout keys)"
            )
        tree = tree[k]
    return tree


def _insert(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def _fill(out: Any, values: list[np.ndarray], new_state: Mapping[str, Any], rec: _Recording) -> Any:
    """fn's output with its tensors replaced by their values and state placeholders filled."""
    it = iter(values)

    def leaf(v: Any) -> Any:
        if isinstance(v, Tensor):
            return next(it)
        if isinstance(v, StateRef):
            layer = next(k for k, orig in rec.call_layers[v.call].items() if orig == v.path[0])
            found = new_state.get(layer, {})
            for k in v.path[1:]:
                found = found.get(k) if isinstance(found, Mapping) else None
            return found if found is not None else rec.data[(layer, *v.path[1:])]
        return v

    return _fill_tree(leaf, out)


def _fill_tree(fn: Callable[[Any], Any], out: Any) -> Any:
    if isinstance(out, ModelState):
        return ModelState(
            _fill_tree(fn, out._data),
            parameters=out.parameters,
            state=out.state,
            frozen=out.frozen,
        )
    if isinstance(out, Mapping):
        return {k: _fill_tree(fn, v) for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return type(out)(_fill_tree(fn, v) for v in out)
    return fn(out)
