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

from ..autodiff import gradients, tensor_of
from ..build import _feeds, init, template_types
from ..dtypes import TensorType, dtype_name, to_numpy_dtype
from ..errors import InputError, OptionError, StateError
from ..interpreter import run
from ..ir import Axon, assign_names, tree_map
from ..model_state import ModelState
from ..ops.special import container, parameter
from ..ops.special import input as input_layer
from ..shape_inference import infer_types
from ..tracing import Tensor, _traces

OPTIMIZER_KEY = "__optimizer__"
LR_SCALE = "__learning_rate_scale__"
TARGET = "target"
# Losses whose target is not shaped like the model output (CTC takes label sequences).
_OTHER_TARGET_SHAPES = {"connectionist_temporal_classification"}


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
        for path in _paths(self.optimizer_state):
            flat["/".join((OPTIMIZER_KEY, *path))] = np.asarray(_get(self.optimizer_state, path))
        flat[LR_SCALE] = np.asarray(self.learning_rate_scale, np.float32)
        return flat

    def load_flat(self, flat: Mapping[str, Any]) -> TrainState:
        """A train state with the tensors of `flat` (names as in `flatten`) written in.

        The inverse of `flatten` for values trained elsewhere, e.g. by the exported
        step on a device; names it does not hold are a StateError.
        """
        params: dict[str, Any] = {}
        state: dict[str, Any] = {}
        optimizer = _copy(self.optimizer_state)
        model_paths = set(self.model_state.paths())
        optimizer_paths = set(_paths(self.optimizer_state))
        scale = self.learning_rate_scale
        for name, value in flat.items():
            path = tuple(name.split("/"))
            if name == LR_SCALE:
                scale = float(np.asarray(value))
            elif path[0] == OPTIMIZER_KEY:
                if path[1:] not in optimizer_paths:
                    raise StateError(f"the optimizer state has no tensor {name!r}")
                _set(optimizer, path[1:], np.asarray(value))
            elif path in model_paths:
                kind = state if path in self.model_state.state else params
                _set(kind, path, np.asarray(value))
            else:
                raise StateError(f"the train state has no tensor {name!r}")
        model_state = self.model_state.update(params, state)
        return replace(
            self, model_state=model_state, optimizer_state=optimizer, learning_rate_scale=scale
        )


def _paths(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out += _paths(value, (*prefix, key))
        else:
            out.append((*prefix, key))
    return out


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _copy(tree: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def _nest(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        _set(out, path, value)
    return out


def _pin_names(model: Axon) -> Axon:
    """The model with its generated layer names made explicit (so loss nodes cannot shift them)."""
    names = assign_names(model)
    nodes = {nid: node.replace(name=names[nid]) for nid, node in model.nodes.items()}
    return Axon(model.output, nodes)


def _resolve_loss(loss: Any) -> Callable[[Any, Any], Any]:
    from .. import losses

    if callable(loss):
        return loss
    if isinstance(loss, str):
        fn = losses.get(loss)
        return lambda y_true, y_pred: fn(y_true, y_pred, reduction="mean")
    raise OptionError(f"loss must be a loss name or a function (y_true, y_pred), got {loss!r}")


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
        self.optimizer = optimizer
        self.compiler = compiler
        self.seed = seed
        self._graphs: dict[tuple, Axon] = {}
        self._output_types: dict[tuple, Any] = {}
        self._compiled_models: dict[int, Any] = {}
        self._input_types: dict[str, Any] | None = None  # from init's template

    # ---- state ---------------------------------------------------------------

    def init(self, template: Any, initial: Any = None) -> TrainState:
        """A train state: the model state (init_fn in train mode) and a fresh optimizer state."""
        state = init(self.model, template, initial, mode="train", seed=self.seed)
        self._input_types = template_types(self.model, template)
        params = _nest({p: _get(state.data, p) for p in self._trainable(state)})
        return TrainState(state, self.optimizer.init(params))

    def model_state(self, train_state: TrainState) -> ModelState:
        """The ModelState to use with ax.build or ax.export_onnx after training."""
        return train_state.model_state

    @staticmethod
    def _trainable(state: ModelState) -> list[tuple[str, ...]]:
        return sorted(p for p in state.parameters if p not in state.frozen and p not in state.ties)

    # ---- the step graph --------------------------------------------------------

    def graph(self, train_state: TrainState, feeds: Mapping[str, np.ndarray]) -> Axon:
        """The step as an IR graph for inputs shaped like `feeds` (built once per signature)."""
        self._check_target(feeds)
        key = tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in feeds.items()))
        if key not in self._graphs:
            self._graphs[key] = self._build(train_state, feeds)
        return self._graphs[key]

    def _check_target(self, feeds: Mapping[str, np.ndarray]) -> None:
        """The target must match the model output: its batch, and its shape for a named loss."""
        inputs = {k: v for k, v in feeds.items() if k != TARGET}
        key = tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items()))
        if key not in self._output_types:
            types = {
                k: TensorType((None, *v.shape[1:]), dtype_name(v.dtype)) for k, v in inputs.items()
            }
            self._output_types[key] = infer_types(self.model, types)[self.model.output]
        out = self._output_types[key]
        if not isinstance(out, TensorType):
            return  # a multi-output model: the loss function pairs targets with outputs
        target = feeds[TARGET]
        layer = self.model.nodes[self.model.output].name
        batches = {k: v.shape[0] for k, v in inputs.items() if v.ndim}
        if target.ndim == 0:
            raise InputError("target: expected a batch of targets, got a scalar")
        name, batch = next(iter(batches.items()), (None, None))
        if batch is not None and target.shape[0] != batch:
            raise InputError(
                f"target: expected a batch of {batch} (the batch of input {name!r}), "
                f"got a target of shape {target.shape}"
            )
        if self.loss_name in _OTHER_TARGET_SHAPES or self.loss_name is None:
            return
        expected = (target.shape[0], *out.shape[1:])
        if target.shape != expected:
            raise InputError(
                f"target: loss {self.loss_name!r} needs a target shaped like the model "
                f"output (layer {layer!r}, shape {_fmt_shape(out.shape)}): expected "
                f"{expected}, got {target.shape}"
            )

    def _build(self, train_state: TrainState, feeds: Mapping[str, np.ndarray]) -> Axon:
        state = train_state.model_state
        trace = next(_traces)
        y_pred = tensor_of(self.model, trace)
        target = feeds[TARGET]
        y_true = Tensor(
            input_layer(TARGET, shape=(None, *target.shape[1:]), dtype=dtype_name(target.dtype)),
            trace,
        )
        loss = self.loss(y_true, y_pred)
        if not isinstance(loss, Tensor) or loss.shape != ():
            raise OptionError(
                f"the loss must reduce to a scalar tensor, got {getattr(loss, 'shape', loss)!r}; "
                "use reduction='mean' or 'sum'"
            )
        trainable = self._trainable(state)
        ties = {dest: src for dest, (src, _) in state.ties.items()}
        wrt = trainable + [d for d in ties if ties[d] in trainable]
        grads, _ = gradients(self.model, loss, state.data, wrt, mode="train")
        for dest, (src, transform) in state.ties.items():
            if dest in grads and src in grads:
                g = grads.pop(dest)
                grads[src] = grads[src] + (g.T if transform == "transpose" else g)
        data = self._data(train_state)
        params = _nest({p: self._parameter(p, data, trace) for p in trainable})
        opt_state = _nest(
            {
                p: self._parameter((OPTIMIZER_KEY, *p), data, trace)
                for p in _paths(train_state.optimizer_state)
            }
        )
        new_params, new_opt = self.optimizer.update(
            _nest({p: grads[p] for p in trainable}), opt_state, params
        )
        # every Polaris update is linear in the learning rate, so scaling the update is
        # exactly a scaled learning rate
        scale = self._parameter((LR_SCALE,), data, trace)
        new_params = _nest(
            {
                p: _get(params, p)
                + (scale * (_get(new_params, p) - _get(params, p))).astype(_get(params, p).dtype)
                for p in trainable
            }
        )
        out = {
            "loss": loss,
            "y_pred": y_pred,
            "params": new_params,
            "optimizer": new_opt,
        }
        return container(tree_map(lambda t: Axon(t.graph.output, t.graph.nodes), out))

    @staticmethod
    def _parameter(path: tuple[str, ...], data: Mapping[str, Any], trace: int) -> Tensor:
        value = np.asarray(_get(data, path))
        return Tensor(parameter(path, value.shape, dtype_name(value.dtype)), trace)

    @staticmethod
    def _data(train_state: TrainState) -> dict[str, Any]:
        return {
            **train_state.model_state.data,
            OPTIMIZER_KEY: train_state.optimizer_state,
            LR_SCALE: np.asarray(train_state.learning_rate_scale, np.float32),
        }

    # ---- running -----------------------------------------------------------------

    def __call__(
        self, train_state: TrainState, x: Any, y: Any
    ) -> tuple[TrainState, dict[str, np.ndarray]]:
        """One step on a batch: returns the new train state and {"loss", "y_pred"}."""
        feeds = _feeds(self.model, x)
        feeds[TARGET] = np.asarray(y)
        graph = self.graph(train_state, feeds)
        data = self._data(train_state)
        if self.compiler == "reference":
            out, new_state = run(graph, feeds, data, "train")
        else:
            result = self._compiled(graph)(data, feeds)
            out, new_state = result["prediction"], result["state"]
        return self._next(train_state, out, new_state), {
            "loss": out["loss"],
            "y_pred": out["y_pred"],
        }

    def _compiled(self, graph: Axon) -> Any:
        from ..to_onnx.compiled import CompiledModel

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
        `TrainState.flatten`), the model inputs, `target` and the dropout noise;
        outputs: `output_i` (loss, prediction, new parameters and optimizer state, mapped
        by the `axonc.outputs` metadata) and `state/...` (the new model state). The
        `axonc.train_feedback` metadata maps each output that is next step's input to
        that input's name. A tied destination is computed inside the graph from its
        source. See spec/training.md.
        """
        import onnx

        from ..to_onnx.export import save_onnx, to_onnx

        feeds = self._example_inputs() if x is None else _feeds(self.model, x)
        feeds[TARGET] = self._example_target(feeds) if y is None else np.asarray(y)
        template = {
            k: TensorType((None, *v.shape[1:]), dtype_name(v.dtype)) for k, v in feeds.items()
        }
        onnx_model = to_onnx(
            self.graph(train_state, feeds),
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
        out = infer_types(self.model, types)[self.model.output]
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
    from onnx import helper

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
    from onnx import helper

    from ..to_onnx.export import decode_structure

    meta = {p.key: p.value for p in onnx_model.metadata_props}
    structure = decode_structure(json.loads(meta["axonc.outputs"]))
    feedback = {out: "/".join(p) for p, out in _flat(structure["params"]).items()}
    feedback.update(
        {out: "/".join((OPTIMIZER_KEY, *p)) for p, out in _flat(structure["optimizer"]).items()}
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
