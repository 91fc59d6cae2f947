"""`ax.train.compile_step`: the train step as ONE graph, run by onnxruntime.

The step graph holds the model's train-mode forward pass, the loss, the
gradient (reverse-mode autodiff over the IR) and the optimizer update. Its
outputs are the loss, the prediction, the new parameters and the new optimizer
state; batch-norm statistics and dropout keys come back as the model's
train-mode state. The same graph runs on the reference interpreter
(`compiler="reference"`) and exports as a plain ONNX model (`export`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..autodiff import gradients, tensor_of
from ..build import _feeds, init
from ..dtypes import TensorType, dtype_name
from ..errors import OptionError
from ..interpreter import run
from ..ir import Axon, assign_names, tree_map
from ..model_state import ModelState
from ..ops.special import container, parameter
from ..ops.special import input as input_layer
from ..tracing import Tensor, _traces

OPTIMIZER_KEY = "__optimizer__"
TARGET = "target"


@dataclass(frozen=True)
class TrainState:
    """Everything a step reads and writes: the model state and the optimizer state."""

    model_state: ModelState
    optimizer_state: dict[str, Any]
    steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


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
        self.optimizer = optimizer
        self.compiler = compiler
        self.seed = seed
        self._graphs: dict[tuple, Axon] = {}
        self._compiled_models: dict[int, Any] = {}

    # ---- state ---------------------------------------------------------------

    def init(self, template: Any, initial: Any = None) -> TrainState:
        """A train state: the model state (init_fn in train mode) and a fresh optimizer state."""
        state = init(self.model, template, initial, mode="train", seed=self.seed)
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
        key = tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in feeds.items()))
        if key not in self._graphs:
            self._graphs[key] = self._build(train_state, feeds)
        return self._graphs[key]

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
        return {**train_state.model_state.data, OPTIMIZER_KEY: train_state.optimizer_state}

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
        return TrainState(model_state, out["optimizer"], train_state.steps + 1)

    # ---- export -------------------------------------------------------------------

    def export(self, path: Any, train_state: TrainState, x: Any, y: Any) -> Any:
        """Write the step as a standard ONNX model for batches shaped like (x, y).

        Inputs: every parameter, optimizer-state and model-state leaf (by path), the
        model inputs and `target`; outputs: the loss, the prediction, the new
        parameters and optimizer state, and the new model state (spec/training.md).
        """
        from ..to_onnx.export import save_onnx, to_onnx

        feeds = _feeds(self.model, x)
        feeds[TARGET] = np.asarray(y)
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
        save_onnx(onnx_model, path)
        return onnx_model


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
