"""`ax.train.compile_step`: the train step as ONE graph, run by onnxruntime.

The step graph holds the model's train-mode forward pass, the loss, the
gradient (reverse-mode autodiff over the IR) and the optimizer update. Its
outputs are the loss, the prediction, the new parameters and the new optimizer
state; batch-norm statistics and dropout keys come back as the model's
train-mode state. The same graph runs on the reference interpreter
(`compiler="reference"`) and exports as a plain ONNX model (`export`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx
from onnx import helper

from .. import losses
from .. import numpy as anp
from ..autodiff import gradients, tensor_of
from ..build import _feeds, check_fit, init, resolve
from ..dtypes import TensorType, dtype_name, to_numpy_dtype, type_of
from ..errors import InputError, OptionError, StateError
from ..hooks import runs_hooks
from ..interpreter import run
from ..ir import Axon, assign_names, tree_leaves, tree_map
from ..model_state import ModelState
from ..ops.special import container, parameter
from ..ops.special import input as input_layer
from ..optimizers import Optimizer, apply_updates, as_pair, get, normal_noise
from ..shape_inference import infer_types, input_nodes, template_types
from ..to_onnx.compiled import CompiledModel
from ..to_onnx.export import decode_structure, save_onnx, to_onnx
from ..tracing import Tensor, _traces

OPTIMIZER_KEY = "__optimizer__"
LR_SCALE = "__learning_rate_scale__"
NOISE_KEY = "__noise__"
TARGET = "target"
# Losses whose target is not shaped like the model output (CTC takes label sequences).
_OTHER_TARGET_SHAPES = {"connectionist_temporal_classification"}
# Losses that require the target's shape to be the output's (Axon asserts it); the others
# broadcast a differently shaped target as Nx does, with a warning (see ax.losses).
_SAME_SHAPE = {"binary_cross_entropy"}


@dataclass(frozen=True)
class TrainState:
    """Everything a step reads and writes: the model state and the optimizer state."""

    model_state: ModelState
    optimizer_state: dict[str, Any]
    steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # Multiplies every parameter update (reduce_lr_on_plateau lowers it); an input of
    # the compiled step, so changing it needs no recompilation.
    learning_rate_scale: float = 1.0

    def with_learning_rate_scale(self, scale: float) -> TrainState:
        """This state with the updates of the following steps scaled by `scale`."""
        return replace(self, learning_rate_scale=float(scale))

    def flatten(self) -> dict[str, np.ndarray]:
        """Every tensor by the name the exported step uses for it (spec/training.md).

        Model-state leaves are "layer/param" (tied destinations left out: the step
        derives them from their source), optimizer leaves "__optimizer__/slot/layer/param"
        and "__optimizer__/count". Feed the ones a session lists as inputs.
        """
        flat = dict(self.model_state.flatten(include_tied=False))
        for path, leaf in _leaf_items(self.optimizer_state).items():
            flat["/".join((OPTIMIZER_KEY, *path))] = np.asarray(leaf)
        flat[LR_SCALE] = np.asarray(self.learning_rate_scale, np.float32)
        return flat

    def load_flat(self, flat: Mapping[str, Any]) -> TrainState:
        """A train state with the tensors of `flat` (names as in `flatten`) written in.

        The inverse of `flatten` for values trained elsewhere, e.g. by the exported
        step on a device; names it does not hold are a StateError.
        """
        params: dict[str, Any] = {}
        state: dict[str, Any] = {}
        optimizer: dict[tuple[str, ...], Any] = {}
        model_paths = set(self.model_state.paths())
        optimizer_paths = set(_leaf_items(self.optimizer_state))
        scale = self.learning_rate_scale
        for name, value in flat.items():
            path = tuple(name.split("/"))
            if name == LR_SCALE:
                scale = float(np.asarray(value))
            elif path[0] == OPTIMIZER_KEY:
                if path[1:] not in optimizer_paths:
                    raise StateError(f"the optimizer state has no tensor {name!r}")
                optimizer[path[1:]] = np.asarray(value)
            elif path in model_paths:
                kind = state if path in self.model_state.state else params
                _set(kind, path, np.asarray(value))
            else:
                raise StateError(f"the train state has no tensor {name!r}")
        model_state = self.model_state.update(params, state)
        return replace(
            self,
            model_state=model_state,
            optimizer_state=_replace_leaves(self.optimizer_state, optimizer),
            learning_rate_scale=scale,
        )


def _dtype(x: Any) -> np.dtype:
    return x.dtype if isinstance(x, Tensor) else np.asarray(x).dtype


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _leaf_items(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every leaf of a nested mapping / list / tuple by its path (a sequence index as text)."""
    if isinstance(tree, Mapping):
        items = [(str(k), v) for k, v in tree.items()]
    elif isinstance(tree, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(tree)]
    else:
        return {prefix: tree}
    out: dict[tuple[str, ...], Any] = {}
    for key, value in items:
        out.update(_leaf_items(value, (*prefix, key)))
    return out


def _replace_leaves(
    tree: Any, values: Mapping[tuple[str, ...], Any], prefix: tuple[str, ...] = ()
) -> Any:
    """`tree` with the leaves at the paths of `values` (as `_leaf_items` names them) replaced."""
    if isinstance(tree, Mapping):
        return {k: _replace_leaves(v, values, (*prefix, str(k))) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        out = [_replace_leaves(v, values, (*prefix, str(i))) for i, v in enumerate(tree)]
        return tuple(out) if isinstance(tree, tuple) else out
    return values.get(prefix, tree)


def _as_mapping(tree: Any) -> Any:
    """Nested mappings only (a sequence becomes {"0": ..., "1": ...}), as ModelState holds data."""
    if isinstance(tree, Mapping):
        return {k: _as_mapping(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return {str(i): _as_mapping(v) for i, v in enumerate(tree)}
    return tree


def _resolve_optimizer(optimizer: Any) -> Any:
    """A built-in Optimizer (by name or object) or any (init_fn, update_fn) pair, checked."""
    if isinstance(optimizer, str):
        return get(optimizer)
    if not isinstance(optimizer, Optimizer):
        as_pair(optimizer)
    return optimizer


def _nest(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        _set(out, path, value)
    return out


def _numbers(x: Any) -> bool:
    """Whether `x` is a number or nested Python lists/tuples of numbers (one array's data)."""
    if isinstance(x, (tuple, list)):
        return all(_numbers(v) for v in x)
    return isinstance(x, (int, float, complex, np.generic))


def target_tree(y: Any) -> Any:
    """The target as arrays in its own structure: a tuple, list or dict of targets stays one
    (a list of plain numbers, nested or not, is one array's data)."""
    if isinstance(y, (tuple, list)) and not _numbers(y):
        return type(y)(target_tree(v) for v in y)
    if isinstance(y, Mapping):
        return {str(k): target_tree(v) for k, v in y.items()}
    arr = np.asarray(y)
    if arr.dtype == object:
        raise InputError(f"target: expected an array or a tuple/list/dict of arrays, got {y!r}")
    return arr


def _target_names(tree: Any, path: tuple[str, ...] = ()) -> Any:
    """The step input names of a target tree's leaves: `target`, or `target/0`, `target/a`..."""
    if isinstance(tree, (tuple, list)):
        return type(tree)(_target_names(v, (*path, str(i))) for i, v in enumerate(tree))
    if isinstance(tree, Mapping):
        return {k: _target_names(v, (*path, k)) for k, v in tree.items()}
    return "/".join((TARGET, *path))


def _target_feeds(tree: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """(names tree, {name: array}) of a target tree."""
    names = _target_names(tree)
    return names, dict(zip(tree_leaves(names), tree_leaves(tree), strict=True))


def _broadcastable(a: tuple, b: tuple) -> bool:
    return all(x == y or 1 in (x, y) or None in (x, y) for x, y in zip(a[::-1], b[::-1]))


def _pin_names(model: Axon) -> Axon:
    """The model with its generated layer names made explicit (so loss nodes cannot shift them)."""
    names = assign_names(model)
    nodes = {nid: node.replace(name=names[nid]) for nid, node in model.nodes.items()}
    return Axon(model.output, nodes)


def _resolve_loss(loss: Any) -> Callable[[Any, Any], Any]:
    """Axon's build_loss_fn: a name (reduction "mean"), a function, or (loss, weight) pairs."""
    return losses.build_loss_fn(loss)


def _fmt_shape(shape: tuple) -> str:
    return "(" + ", ".join("batch" if d is None else str(d) for d in shape) + ")"


class TrainStep:
    """A compiled train step for one model, loss and optimizer (see module doc)."""

    def __init__(
        self,
        model: Axon,
        loss: Any,
        optimizer: Any,
        *,
        compiler: str = "onnxruntime",
        seed: int = 0,
    ):
        if compiler not in ("onnxruntime", "reference"):
            raise OptionError(f"compiler must be 'onnxruntime' or 'reference', got {compiler!r}")
        self.model = _pin_names(model)
        self.loss = _resolve_loss(loss)
        self.loss_name = loss if isinstance(loss, str) else None
        self.optimizer = _resolve_optimizer(optimizer)
        self.compiler = compiler
        self.seed = seed
        self._graphs: dict[tuple, Axon] = {}
        self._output_types: dict[tuple, Any] = {}
        self._compiled_models: dict[int, Any] = {}
        self._unused: dict[int, list[str]] = {}
        self._hooked: dict[int, bool] = {}
        self._input_types: dict[str, Any] | None = None  # from init's template

    # ---- state ---------------------------------------------------------------

    def init(self, template: Any, initial: Any = None) -> TrainState:
        """A train state: the model state (init_fn in train mode) and a fresh optimizer state."""
        state = init(self.model, template, initial, mode="train", seed=self.seed)
        self._input_types = template_types(self.model, template)
        params = _nest({p: _get(state.data, p) for p in self._trainable(state)})
        init_fn, _ = self.optimizer
        return TrainState(state, init_fn(params))

    def model_state(self, train_state: TrainState) -> ModelState:
        """The ModelState to use with ax.build or ax.export_onnx after training."""
        return train_state.model_state

    @staticmethod
    def _trainable(state: ModelState) -> list[tuple[str, ...]]:
        return sorted(p for p in state.parameters if p not in state.frozen and p not in state.ties)

    # ---- the step graph --------------------------------------------------------

    def graph(
        self, train_state: TrainState, feeds: Mapping[str, np.ndarray], targets: Any = TARGET
    ) -> Axon:
        """The step as an IR graph for inputs shaped like `feeds` (built once per signature).

        `targets` is the target's structure with each leaf's feed name (`target` for one
        array; `("target/0", "target/1")` for a tuple of two, ...).
        """
        self._check_target(feeds, targets)
        key = (
            tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in feeds.items())),
            repr(targets),
        )
        names = set(tree_leaves(targets))
        inputs = {k: v for k, v in feeds.items() if k not in names}
        model = self._resolved(inputs)
        check_fit(self.model, model, train_state.model_state.data, inputs, "train")
        if key not in self._graphs:
            graph = self._build(model, train_state, feeds, targets)
            used = set(input_nodes(graph))
            self._unused[id(graph)] = [n for n in tree_leaves(targets) if n not in used]
            self._graphs[key] = graph
        return self._graphs[key]

    def _resolved(self, inputs: Mapping[str, np.ndarray]) -> Axon:
        """The model resolved for the batch's input types (cached per signature)."""
        return resolve(self.model, {k: type_of(v) for k, v in inputs.items()})

    def _feeds_of(self, graph: Axon, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`feeds` less the target leaves the loss does not read (outputs past a loss list)."""
        for name in self._unused.get(id(graph), ()):
            feeds.pop(name, None)
        return feeds

    def _output_type(self, inputs: Mapping[str, np.ndarray]) -> Any:
        key = tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items()))
        if key not in self._output_types:
            model = self._resolved(inputs)
            self._output_types[key] = infer_types(model)[model.output]
        return self._output_types[key]

    def _check_target(self, feeds: Mapping[str, np.ndarray], targets: Any = TARGET) -> None:
        """Every target leaf must have the inputs' batch; a named loss's single target must
        have the output's shape or one that broadcasts against it (as Nx would)."""
        names = set(tree_leaves(targets))
        inputs = {k: v for k, v in feeds.items() if k not in names}
        batches = {k: v.shape[0] for k, v in inputs.items() if v.ndim}
        name, batch = next(iter(batches.items()), (None, None))
        for leaf in tree_leaves(targets):
            target = feeds[leaf]
            if target.ndim == 0:
                raise InputError(f"{leaf}: expected a batch of targets, got a scalar")
            if batch is not None and target.shape[0] != batch:
                raise InputError(
                    f"{leaf}: expected a batch of {batch} (the batch of input {name!r}), "
                    f"got a target of shape {target.shape}"
                )
        out = self._output_type(inputs)
        if not isinstance(out, TensorType) or not isinstance(targets, str):
            return  # a container output or target: the loss pairs targets with outputs
        if self.loss_name in _OTHER_TARGET_SHAPES or self.loss_name is None:
            return
        target = feeds[targets]
        expected = (target.shape[0], *out.shape[1:])
        same = target.shape == expected
        if same or (self.loss_name not in _SAME_SHAPE and _broadcastable(target.shape, expected)):
            return
        layer = self.model.nodes[self.model.output].name
        raise InputError(
            f"target: loss {self.loss_name!r} needs a target shaped like the model "
            f"output (layer {layer!r}, shape {_fmt_shape(out.shape)}): expected "
            f"{expected}, got {target.shape}"
        )

    def _build(
        self,
        model: Axon,
        train_state: TrainState,
        feeds: Mapping[str, np.ndarray],
        targets: Any = TARGET,
    ) -> Axon:
        state = train_state.model_state
        trace = next(_traces)
        y_pred = tensor_of(model, trace)

        def target_input(name: str) -> Tensor:
            t = feeds[name]
            node = input_layer(name, shape=(None, *t.shape[1:]), dtype=dtype_name(t.dtype))
            return Tensor(node, trace)

        y_true = tree_map(target_input, targets)
        loss = self.loss(y_true, y_pred)
        if not isinstance(loss, Tensor) or loss.shape != ():
            raise OptionError(
                f"the loss must reduce to a scalar tensor, got {getattr(loss, 'shape', loss)!r}; "
                "use reduction='mean' or 'sum'"
            )
        trainable = self._trainable(state)
        ties = {dest: src for dest, (src, _) in state.ties.items()}
        wrt = trainable + [d for d in ties if ties[d] in trainable]
        grads, _ = gradients(model, loss, state.data, wrt, mode="train")
        for dest, (src, transform) in state.ties.items():
            if dest in grads and src in grads:
                g = grads.pop(dest)
                grads[src] = grads[src] + (g.T if transform == "transpose" else g)
        data = self._data(train_state)
        params = _nest({p: self._parameter(p, data, trace) for p in trainable})
        opt_state = _replace_leaves(
            train_state.optimizer_state,
            {
                p: self._parameter((OPTIMIZER_KEY, *p), data, trace)
                for p in _leaf_items(train_state.optimizer_state)
            },
        )
        grads = _nest({p: grads[p] for p in trainable})
        # The learning-rate scale multiplies every update: for Polaris's optimizers, linear
        # in the learning rate, that is exactly a scaled learning rate.
        scale = self._parameter((LR_SCALE,), data, trace)
        noise = None
        if self._needs_noise:
            noise = _nest({p: self._parameter((NOISE_KEY, *p), data, trace) for p in trainable})
        new_params, new_opt = self._apply_optimizer(grads, opt_state, params, scale, noise)
        out = {
            "loss": loss,
            "y_pred": y_pred,
            "params": new_params,
            "optimizer": new_opt,
        }
        # named, so a generated name cannot clash with a container of the model (pinned)
        return container(
            tree_map(lambda t: Axon(t.graph.output, t.graph.nodes), out), name="__step__"
        )

    @property
    def _needs_noise(self) -> bool:
        return isinstance(self.optimizer, Optimizer) and self.optimizer.needs_noise

    def _apply_optimizer(
        self, grads: Any, opt_state: Any, params: Any, scale: Tensor, noise: Any
    ) -> tuple[Any, Any]:
        """(new params, new optimizer state): a built-in folds `scale` into its scalar
        coefficient; any other pair's updates are scaled, then added."""
        if isinstance(self.optimizer, Optimizer):
            return self.optimizer.apply(grads, opt_state, params, noise=noise, scale=scale)
        _, update_fn = self.optimizer
        updates, new_opt = update_fn(grads, opt_state, params)
        scaled = tree_map(lambda u: anp.multiply(u, scale.astype(_dtype(u))), updates)
        return apply_updates(params, scaled), new_opt

    @staticmethod
    def _parameter(path: tuple[str, ...], data: Mapping[str, Any], trace: int) -> Tensor:
        value = np.asarray(_get(data, path))
        return Tensor(parameter(path, value.shape, dtype_name(value.dtype)), trace)

    def _data(self, train_state: TrainState) -> dict[str, Any]:
        data = {
            **train_state.model_state.data,
            OPTIMIZER_KEY: _as_mapping(train_state.optimizer_state),
            LR_SCALE: np.asarray(train_state.learning_rate_scale, np.float32),
        }
        if self._needs_noise:
            data[NOISE_KEY] = self.noise(train_state)
        return data

    def noise(self, train_state: TrainState) -> dict[str, Any]:
        """noisy_sgd's standard-normal noise for the next step: drawn on the host from the
        step's seed and the optimizer's update count, so a run (resumed ones included) is
        reproducible; the exported step takes it as the inputs `__noise__/<layer>/<param>`."""
        state = train_state.model_state
        params = _nest({p: _get(state.data, p) for p in self._trainable(state)})
        count = int(np.asarray(train_state.optimizer_state["count"]))
        return normal_noise(params, np.random.default_rng([self.seed, count]))

    # ---- running -----------------------------------------------------------------

    def __call__(
        self, train_state: TrainState, x: Any, y: Any
    ) -> tuple[TrainState, dict[str, np.ndarray]]:
        """One step on a batch: returns the new train state and {"loss", "y_pred"}.

        `y` is an array, or a tuple / list / dict of arrays that reaches the loss as such.
        """
        feeds = _feeds(self.model, x)
        targets, target_feeds = _target_feeds(target_tree(y))
        feeds.update(target_feeds)
        graph = self.graph(train_state, feeds, targets)
        feeds = self._feeds_of(graph, feeds)
        data = self._data(train_state)
        if self.compiler == "reference" or self._has_hooks(graph):
            out, new_state = run(graph, feeds, data, "train")
        else:
            result = self._compiled(graph)(data, feeds)
            out, new_state = result["prediction"], result["state"]
        return self._next(train_state, out, new_state), {
            "loss": out["loss"],
            "y_pred": out["y_pred"],
        }

    def _has_hooks(self, graph: Axon) -> bool:
        """Hooks are host Python code: a step graph with any runs on the reference
        interpreter, which calls them with the values (spec/training.md)."""
        if id(graph) not in self._hooked:
            self._hooked[id(graph)] = runs_hooks(graph, "train")
        return self._hooked[id(graph)]

    def _compiled(self, graph: Axon) -> Any:
        if id(graph) not in self._compiled_models:
            self._compiled_models[id(graph)] = CompiledModel(graph, "train")
        return self._compiled_models[id(graph)]

    def _next(
        self, train_state: TrainState, out: Mapping[str, Any], new_state: Mapping
    ) -> TrainState:
        state = train_state.model_state
        flat = {p: out_value for p, out_value in _flat(out["params"]).items()}
        updates = {p: v for p, v in _flat(new_state).items() if p in state.state}
        frozen_state = {p for p in updates if p in state.frozen}
        model_state = state.update(
            _nest(flat), _nest({p: v for p, v in updates.items() if p not in frozen_state})
        )
        return replace(
            train_state,
            model_state=model_state,
            optimizer_state=out["optimizer"],
            steps=train_state.steps + 1,
        )

    # ---- export -------------------------------------------------------------------

    def export(self, path: Any, train_state: TrainState, x: Any = None, y: Any = None) -> Any:
        """Write the step as a standard ONNX model for batches shaped like (x, y).

        Without `x` the inputs are those of `init`'s template; without `y` the target
        is shaped like the model output (give `y` for a loss whose target is not, such
        as CTC, or for a model with several outputs).

        Inputs: every parameter, model-state and optimizer-state tensor by name (as
        `TrainState.flatten`), the model inputs, `target`, the dropout noise and noisy_sgd's;
        outputs: `output_i` (loss, prediction, new parameters and optimizer state, mapped
        by the `axonc.outputs` metadata) and `state/...` (the new model state). The
        `axonc.train_feedback` metadata maps each output that is next step's input to
        that input's name. A tied destination is computed inside the graph from its
        source. See spec/training.md.
        """
        feeds = self._example_inputs() if x is None else _feeds(self.model, x)
        y = self._example_target(feeds) if y is None else y
        targets, target_feeds = _target_feeds(target_tree(y))
        feeds.update(target_feeds)
        graph = self.graph(train_state, feeds, targets)
        feeds = self._feeds_of(graph, feeds)
        template = {
            k: TensorType((None, *v.shape[1:]), dtype_name(v.dtype)) for k, v in feeds.items()
        }
        onnx_model = to_onnx(
            graph,
            ModelState.new(self._data(train_state)),
            mode="train",
            params_as_inputs=True,
            template=template,
        )
        _derive_tied_inputs(onnx_model, train_state.model_state)
        _add_feedback(onnx_model, train_state.model_state)
        onnx.checker.check_model(onnx_model, full_check=True)
        save_onnx(onnx_model, path)
        return onnx_model

    def _example_inputs(self) -> dict[str, np.ndarray]:
        """A batch of one, zeros, of init's template (the step's input signature)."""
        if self._input_types is None:
            raise InputError(
                "export without an example batch needs the input signature: call "
                "step.init(template) first, or pass x and y"
            )
        return {
            name: np.zeros(tuple(1 if d is None else d for d in t.shape), to_numpy_dtype(t.dtype))
            for name, t in self._input_types.items()
            if isinstance(t, TensorType)
        }

    def _example_target(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """A target of one, zeros, shaped like the model output (see `export`)."""
        types = {k: TensorType((None, *v.shape[1:]), dtype_name(v.dtype)) for k, v in feeds.items()}
        model = resolve(self.model, types)
        out = infer_types(model)[model.output]
        if (
            not isinstance(out, TensorType)
            or self.loss_name in _OTHER_TARGET_SHAPES
            or any(d is None for d in out.shape[1:])
        ):
            raise InputError(
                "export cannot derive the target's shape from the model output here (several "
                "outputs, a dynamic non-batch dimension, or a loss with its own target "
                "shape); pass an example target y"
            )
        return np.zeros((1, *out.shape[1:]), to_numpy_dtype(out.dtype))


def _derive_tied_inputs(onnx_model: Any, state: ModelState) -> None:
    """Replace each tied destination's graph input by a node computing it from the source."""
    graph = onnx_model.graph
    inputs = {i.name: i for i in graph.input}
    nodes = []
    for dest, (source, transform) in sorted(state.ties.items()):
        name, src = "/".join(dest), "/".join(source)
        if name not in inputs:
            continue
        op = "Transpose" if transform == "transpose" else "Identity"
        nodes.append(helper.make_node(op, [src], [name], name=f"tie/{name}"))
        graph.input.remove(inputs[name])
    for i, node in enumerate(nodes):
        graph.node.insert(i, node)


def _add_feedback(onnx_model: Any, state: ModelState) -> None:
    """Metadata `axonc.train_feedback`: output name -> the input it feeds next step."""
    meta = {p.key: p.value for p in onnx_model.metadata_props}
    structure = decode_structure(json.loads(meta["axonc.outputs"]))
    feedback = {out: "/".join(p) for p, out in _flat(structure["params"]).items()}
    feedback.update(
        {
            out: "/".join((OPTIMIZER_KEY, *p))
            for p, out in _leaf_items(structure["optimizer"]).items()
        }
    )
    writable = state.state - state.frozen
    for out, path in json.loads(meta["axonc.state_outputs"]).items():
        if tuple(path) in writable:
            feedback[out] = "/".join(path)
    meta["axonc.train_feedback"] = json.dumps(feedback)
    helper.set_model_props(onnx_model, meta)


def _flat(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = v
    return out


def compile_step(model: Axon, loss: Any, optimizer: Any, **options: Any) -> TrainStep:
    """A compiled train step: `step.init(template, initial)`, `step(train_state, x, y)`."""
    return TrainStep(model, loss, optimizer, **options)
