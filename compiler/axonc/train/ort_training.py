"""The onnxruntime-training engine: axonc's model and loss as onnxruntime-training artifacts.

`export_ort_training` lowers the model's train-mode forward pass plus axonc's own loss
to one ONNX model (outputs: the scalar loss first, then the prediction) and hands it to
`onnxruntime.training.artifacts.generate_artifacts`, which writes `training_model.onnx`
(forward, loss and gradients), `eval_model.onnx`, `optimizer_model.onnx` and
`checkpoint` for onnxruntime's on-device training API (C, C++, C#, Java, Objective-C,
Python). `OrtTrainer` is the Loop engine that runs those artifacts with
`onnxruntime.training.api`.

onnxruntime-training runs AdamW and plain SGD only; `ort_optimizer` maps axonc's
`adam` / `adamw` / `sgd` onto them with the same mathematics and refuses everything
else by name. The package (frozen at 1.19.2, Python <= 3.11, installed in place of
onnxruntime, importing torch) lives in an environment of its own: spec/ort_training.md
says how to set it up and what maps to what.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ..autodiff import tensor_of
from ..dtypes import TensorType, dtype_name, to_numpy_dtype
from ..errors import AxoncError, OptionError, StateError
from ..ir import Axon, tree_map
from ..model_state import ModelState
from ..ops.dropout import draw
from ..ops.special import container
from ..ops.special import input as input_layer
from ..optimizers import Optimizer, get
from ..shape_inference import declared_types, template_types
from ..to_onnx.export import decode_structure, to_onnx
from ..tracing import Tensor, _traces
from .step import TrainStep, _target_feeds, target_tree

SUPPORTED_OPTIMIZERS = ("adam", "adamw", "sgd")
SETUP = "spec/ort_training.md, 'Setting up the environment'"
# Polaris's default eps_root for adam / adamw: mapped to onnxruntime-training's 0 (see
# spec/ort_training.md for the bound on the difference); any other non-zero value is refused.
_DEFAULT_EPS_ROOT = 1.0e-15
CONFIG = "axonc_training.json"


class MissingOrtTrainingError(AxoncError, ImportError):
    """onnxruntime-training was asked for in an environment that does not have it."""


@dataclass(frozen=True)
class OrtOptimizer:
    """An axonc optimizer as onnxruntime-training runs it: "AdamW" or "SGD" and its options."""

    kind: str
    learning_rate: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 0.0
    weight_decay: float = 0.0

    def block(self) -> Any:
        """The onnxblock optimizer `generate_artifacts` builds `optimizer_model.onnx` from."""
        onnxblock = _training().onnxblock
        if self.kind == "SGD":
            return onnxblock.optim.SGD()
        return onnxblock.optim.AdamW(
            bias_correction=True, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay
        )


def ort_optimizer(optimizer: Any) -> OrtOptimizer:
    """The onnxruntime-training form of `optimizer` (a name or ax.optimizers object).

    adam and adamw become AdamW (adam with weight decay 0; adamw's `decay` is AdamW's
    decoupled weight decay), sgd without momentum becomes SGD. Anything the two cannot
    express is an OptionError naming what is supported.
    """
    opt = get(optimizer) if isinstance(optimizer, str) else optimizer
    if not isinstance(opt, Optimizer) or opt.name not in SUPPORTED_OPTIMIZERS:
        got = opt.name if isinstance(opt, Optimizer) else repr(optimizer)
        raise OptionError(
            f"onnxruntime-training runs AdamW and SGD only: use one of "
            f"{', '.join(SUPPORTED_OPTIMIZERS)} (ax.optimizers.adam/adamw/sgd), got {got}"
        )
    o = opt.options
    lr = o["learning_rate"]
    if callable(lr):
        raise OptionError(
            f"{opt.name}: onnxruntime-training takes a constant learning rate (set per step "
            "with Optimizer.set_learning_rate), not a schedule"
        )
    refused = [k for k in ("clip_value", "clip_norm") if o[k] is not None]
    if o["weight_decay"]:
        refused.append("weight_decay")
    if opt.name == "sgd":
        if o["momentum"] is not None:
            refused.append("momentum")
        if refused:
            raise OptionError(_refusal(opt.name, refused, "SGD is plain w -= lr * g"))
        return OrtOptimizer("SGD", float(lr))
    if o["eps_root"] not in (0.0, _DEFAULT_EPS_ROOT):
        refused.append("eps_root")
    if refused:
        raise OptionError(
            _refusal(opt.name, refused, "AdamW has b1, b2, eps and decoupled weight decay")
        )
    decay = float(o["decay"]) if opt.name == "adamw" else 0.0
    return OrtOptimizer(
        "AdamW", float(lr), (float(o["b1"]), float(o["b2"])), float(o["eps"]), decay
    )


def _refusal(name: str, options: list[str], what: str) -> str:
    return (
        f"{name}: onnxruntime-training cannot express option(s) {', '.join(options)} "
        f"({what}); supported optimizers: {', '.join(SUPPORTED_OPTIMIZERS)} with their "
        "learning rate and moment options only"
    )


def _training() -> Any:
    """`onnxruntime.training`, or a MissingOrtTrainingError saying how to get it."""
    try:
        import onnxruntime.training as training
        from onnxruntime.training import api, artifacts, onnxblock  # noqa: F401
    except ImportError as exc:
        raise MissingOrtTrainingError(
            "the onnxruntime-training engine needs onnxruntime-training 1.19.2 (Python <= "
            "3.11, with torch CPU), which replaces onnxruntime and so lives in its own "
            f"environment: see {SETUP} ({exc})"
        ) from None
    return training


# ---- the loss model ------------------------------------------------------------------------


@dataclass(frozen=True)
class LossModel:
    """The forward + loss ONNX model and what the artifacts need to know about it."""

    onnx_model: Any
    trainable: list[str]
    frozen: list[str]
    inputs: list[str]  # the user inputs in order: model inputs, targets, noise
    prediction: Any  # the prediction's structure, output names as leaves
    noise: dict[str, list[int | None]]
    state_outputs: dict[str, str]  # output name -> the writable state tensor it updates


def loss_model(
    step: TrainStep, state: ModelState, template: Any = None, target: Any = None
) -> LossModel:
    """The train-mode forward pass and `step`'s loss as one ONNX model with parameters as
    initializers; outputs: the scalar loss (`output_0`), then the prediction's leaves."""
    if state.ties:
        raise OptionError(
            "the onnxruntime-training engine cannot train tied parameters (it keeps one "
            "tensor per initializer): untie them or use the default engine"
        )
    hooked = sorted(
        node.name or node.op
        for node in step.model.nodes.values()
        if any(mode in ("both", "train") and on != "initialize" for _, mode, on in node.hooks)
    )
    if hooked:
        raise OptionError(
            f"the hooks on {', '.join(hooked)} are host Python code, which "
            "onnxruntime-training cannot call: remove them or use the default engine"
        )
    types = template_types(step.model, template) if template is not None else None
    feeds = step._example_inputs() if types is None else _examples(types)
    y = step._example_target(dict(feeds)) if target is None else target
    targets, target_feeds = _target_feeds(target_tree(y))
    model = step._resolved(feeds)
    trace = next(_traces)
    y_pred = tensor_of(model, trace)

    def target_input(name: str) -> Tensor:
        t = target_feeds[name]
        return Tensor(
            input_layer(name, shape=(None, *t.shape[1:]), dtype=dtype_name(t.dtype)), trace
        )

    loss = step.loss(tree_map(target_input, targets), y_pred)
    if not isinstance(loss, Tensor) or loss.shape != ():
        raise OptionError(
            f"the loss must reduce to a scalar tensor, got {getattr(loss, 'shape', loss)!r}; "
            "use reduction='mean' or 'sum'"
        )
    out = (loss, y_pred)
    graph = container(tree_map(lambda t: Axon(t.graph.output, t.graph.nodes), out), name="__ort__")
    all_feeds = {**feeds, **target_feeds}
    onnx_model = to_onnx(
        graph,
        state,
        mode="train",
        # every parameter an input named by its path, so no pass can fold one into another
        # tensor (a conv kernel's layout transpose stays a node); they become initializers
        params_as_inputs=True,
        template={
            k: TensorType((None, *v.shape[1:]), dtype_name(v.dtype)) for k, v in all_feeds.items()
        },
    )
    meta = {p.key: p.value for p in onnx_model.metadata_props}
    if json.loads(meta["axonc.random_inputs"]):
        raise OptionError(
            "the onnxruntime-training engine does not draw host-side random inputs (an RNN's "
            "random initial state): use the default engine for this model"
        )
    structure = decode_structure(json.loads(meta["axonc.outputs"]))
    state_outputs = {out: "/".join(p) for out, p in json.loads(meta["axonc.state_outputs"]).items()}
    _parameters_as_initializers(onnx_model, state)
    initializers = {i.name for i in onnx_model.graph.initializer}
    trainable = ["/".join(p) for p in TrainStep._trainable(state)]
    not_f32 = [n for n in trainable if np.asarray(state.get(n)).dtype != np.float32]
    if not_f32:
        raise OptionError(
            f"onnxruntime-training's optimizers update float32 parameters only; these are "
            f"not: {', '.join(not_f32)}"
        )
    missing = [n for n in trainable if n not in initializers]
    if missing:
        raise StateError(f"trainable parameters not in the exported graph: {', '.join(missing)}")
    frozen = sorted("/".join(p) for p in state.paths() if p in state.frozen or p in state.state)
    writable = {"/".join(p) for p in state.state - state.frozen}
    return LossModel(
        onnx_model,
        trainable,
        [n for n in frozen if n in initializers],
        [i.name for i in onnx_model.graph.input],
        structure[1],
        json.loads(meta["axonc.noise_inputs"]),
        {out: name for out, name in state_outputs.items() if name in writable},
    )


def _parameters_as_initializers(onnx_model: Any, state: ModelState) -> None:
    """Each graph input that is a parameter or state tensor becomes an initializer holding
    its value: parameters are what generate_artifacts trains or freezes, and train-mode
    state (batch-norm running statistics) a non-trainable parameter of the checkpoint that
    the caller writes back from the state outputs."""
    graph = onnx_model.graph
    values = state.flatten(include_tied=False)
    for value in [i for i in graph.input if i.name in values]:
        graph.input.remove(value)
        graph.initializer.append(numpy_helper.from_array(values[value.name], value.name))


def _examples(types: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {
        name: np.zeros(tuple(1 if d is None else d for d in t.shape), to_numpy_dtype(t.dtype))
        for name, t in types.items()
        if isinstance(t, TensorType)
    }


# ---- artifacts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OrtTrainingArtifacts:
    """Where `export_ort_training` wrote each artifact, and the exported model's user inputs."""

    directory: Path
    training_model: Path
    eval_model: Path
    optimizer_model: Path
    checkpoint: Path
    config: Path
    inputs: list[str]


def export_ort_training(
    model: Axon,
    loss: Any,
    optimizer: Any,
    directory: str | os.PathLike[str],
    *,
    template: Any = None,
    state: Any = None,
    target: Any = None,
    seed: int = 0,
) -> OrtTrainingArtifacts:
    """Write onnxruntime-training artifacts for `model` trained on `loss` with `optimizer`.

    `template`: the inputs' types (as for ax.build's init; None: the declared shapes).
    `state`: a ModelState (or dict) with the initial values, frozen masks honoured;
    None initialises the model (with `seed`). `target`: an example target batch when the
    loss's target is not shaped like the model output. Writes training_model.onnx,
    eval_model.onnx, optimizer_model.onnx, checkpoint and axonc_training.json (inputs in
    order, dropout noise inputs, optimizer, learning rate) to `directory`.
    """
    spec = ort_optimizer(optimizer)
    training = _training()
    step = TrainStep(model, loss, "sgd", seed=seed)
    model_state = _init_state(step, template, state)
    lm = loss_model(step, model_state, template, target)
    if not lm.trainable:
        raise OptionError("the model has no trainable parameter: nothing for onnxruntime-training")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    training.artifacts.generate_artifacts(
        lm.onnx_model,
        requires_grad=lm.trainable,
        frozen_params=lm.frozen,
        loss=None,  # the model's first output is axonc's loss
        optimizer=spec.block(),
        artifact_directory=directory,
    )
    _pytorch_adamw_mode(directory / "optimizer_model.onnx")
    config = directory / CONFIG
    config.write_text(
        json.dumps(
            {
                "inputs": lm.inputs,
                "outputs": {"loss": "output_0", "prediction": lm.prediction},
                "state_outputs": lm.state_outputs,
                "noise_inputs": lm.noise,
                "trainable": lm.trainable,
                "frozen": lm.frozen,
                "optimizer": spec.kind,
                "learning_rate": spec.learning_rate,
            },
            indent=2,
        )
    )
    return OrtTrainingArtifacts(
        directory,
        directory / "training_model.onnx",
        directory / "eval_model.onnx",
        directory / "optimizer_model.onnx",
        directory / "checkpoint",
        config,
        lm.inputs,
    )


def _init_state(step: TrainStep, template: Any, state: Any) -> ModelState:
    if template is None:
        template = declared_types(step.model)
    return step.init(template, state).model_state


def _pytorch_adamw_mode(path: Path) -> None:
    """Switch the AdamW node to onnxruntime's mode 0 (PyTorch's: m_hat / (sqrt(v_hat) + eps),
    decay before the update), which is Polaris's adam / adamw; the artifact builder writes
    mode 1 (Hugging Face's, whose eps is not bias-corrected)."""
    opt = onnx.load(os.fspath(path))
    for node in opt.graph.node:
        if node.op_type == "AdamWOptimizer":
            for attr in node.attribute:
                if attr.name == "adam_mode":
                    attr.i = 0
    onnx.save(opt, os.fspath(path))


# ---- the Loop engine ----------------------------------------------------------------------


class OrtTrainingSession:
    """The artifacts loaded with onnxruntime.training.api: one step is the training model
    (forward, loss, gradients), the optimizer and a gradient reset."""

    def __init__(self, artifacts: OrtTrainingArtifacts, resume: np.ndarray | None = None):
        """`resume`: the bytes of a checkpoint `checkpoint_bytes` wrote, whose optimizer
        state (moments, step count) continues here; the parameters stay the artifacts'."""
        api = _training().api
        cfg = json.loads(artifacts.config.read_text())
        self.artifacts = artifacts
        self.inputs: list[str] = cfg["inputs"]
        self.noise: dict[str, list[int | None]] = cfg["noise_inputs"]
        self.prediction = cfg["outputs"]["prediction"]
        self.trainable: list[str] = cfg["trainable"]
        self.state_outputs: dict[str, str] = cfg["state_outputs"]
        self.learning_rate = float(cfg["learning_rate"])
        self.state = api.CheckpointState.load_checkpoint(os.fspath(artifacts.checkpoint))
        values = {n: np.array(p.data) for n, p in self.state.parameters}
        if resume is not None:
            self.state = _resumed(api, set(values), resume)
        self.steps = 0
        self.module = api.Module(
            os.fspath(artifacts.training_model), self.state, os.fspath(artifacts.eval_model)
        )
        self.optimizer = api.Optimizer(os.fspath(artifacts.optimizer_model), self.module)
        self.optimizer.set_learning_rate(self.learning_rate)
        if resume is not None:  # a parameter can be written once a Module holds the state
            for name, value in values.items():
                self.state.parameters[name] = value
        self.outputs = self.module.output_names()
        self.module.train()

    def set_learning_rate_scale(self, scale: float) -> None:
        """Multiply the exported learning rate by `scale` (reduce_lr_on_plateau)."""
        lr = self.learning_rate * scale
        if not math.isclose(self.optimizer.get_learning_rate(), lr, rel_tol=1e-7):
            self.optimizer.set_learning_rate(lr)

    def step(self, feeds: Mapping[str, np.ndarray]) -> tuple[np.ndarray, Any, dict]:
        """One training step on `feeds` (every user input by name): (loss, prediction,
        the updated train-mode state by name, already written back for the next step)."""
        values = self.module(*(feeds[n] for n in self.inputs))
        self.optimizer.step()
        self.module.lazy_reset_grad()
        self.steps += 1
        by_name = dict(zip(self.outputs, values))
        new_state = {name: by_name[out] for out, name in self.state_outputs.items()}
        for name, value in new_state.items():
            self.state.parameters[name] = value
        prediction = tree_map(lambda n: by_name[n], self.prediction)
        return np.asarray(by_name["output_0"]), prediction, new_state

    def parameters(self) -> dict[str, np.ndarray]:
        """The trainable parameters' current values by path name (copies)."""
        return {n: np.array(self.state.parameters[n].data) for n in self.trainable}

    def checkpoint_bytes(self) -> np.ndarray:
        """onnxruntime-training's checkpoint of this session, optimizer state included, as
        uint8 bytes (what a loop checkpoint stores to resume the moments)."""
        api = _training().api
        with tempfile.TemporaryDirectory(prefix="axonc-ort-training-") as workdir:
            path = os.path.join(workdir, "checkpoint")
            api.CheckpointState.save_checkpoint(self.state, path, include_optimizer_state=True)
            with open(path, "rb") as f:
                return np.frombuffer(f.read(), np.uint8).copy()


def _resumed(api: Any, expected: set[str], data: np.ndarray) -> Any:
    """The checkpoint in `data` (optimizer state included), checked to hold the parameters
    named `expected`."""
    with tempfile.TemporaryDirectory(prefix="axonc-ort-training-") as workdir:
        path = os.path.join(workdir, "checkpoint")
        with open(path, "wb") as f:
            f.write(np.asarray(data, np.uint8).tobytes())
        try:
            state = api.CheckpointState.load_checkpoint(path)
        except Exception as exc:  # onnxruntime raises its own types for a malformed file
            raise StateError(f"the step state's onnxruntime-training checkpoint: {exc}") from None
    if {n for n, _ in state.parameters} != expected:
        raise StateError(
            "the step state's onnxruntime-training checkpoint holds other parameters than "
            f"this model's ({', '.join(sorted(expected))})"
        )
    return state


class OrtOptimizerState(Mapping):
    """The ort-training engine's `optimizer_state`: {"count", "checkpoint"}. "checkpoint"
    (onnxruntime-training's checkpoint with its optimizer moments, as uint8 bytes) is read
    from the session only when asked, i.e. when a loop checkpoint is written, so a step
    costs nothing for it; asked after the session moved on, it is a StateError."""

    def __init__(self, session: OrtTrainingSession, count: int):
        self._session, self._steps, self._count = session, session.steps, np.int32(count)

    def __getitem__(self, key: str) -> Any:
        if key == "count":
            return self._count
        if key != "checkpoint":
            raise KeyError(key)
        if self._session.steps != self._steps:
            raise StateError(
                "this optimizer state is from an earlier step: the onnxruntime-training "
                "session has moved on since (read it in the handler of the step it is from)"
            )
        return self._session.checkpoint_bytes()

    def __iter__(self) -> Any:
        return iter(("count", "checkpoint"))

    def __len__(self) -> int:
        return 2


class OrtTrainer:
    """The ort-training engine of `ax.Loop.trainer`: `init` and `step` on a batch's inputs
    and target, with the step state of the default engine (model_state, optimizer_state
    {"count", "checkpoint"}: OrtOptimizerState), learning_rate_scale, loss, y_true, y_pred.

    `init` exports the artifacts (to a temporary directory, removed once they are loaded)
    for the batch's input types and the initial state; each `step` reads the trained
    parameters back into model_state, so handlers, validation and checkpoints see them.
    A step state this trainer did not produce last (a resumed checkpoint) re-exports from
    its model state and resumes the optimizer from its `optimizer_state["checkpoint"]`.
    """

    def __init__(
        self,
        model: Axon,
        loss: Any,
        optimizer: Any,
        *,
        seed: int = 0,
        compiler: str = "onnxruntime",
    ):
        if compiler != "onnxruntime":
            raise OptionError(
                f"the ort-training engine runs on onnxruntime-training itself; compiler "
                f"{compiler!r} does not apply to it"
            )
        ort_optimizer(optimizer)
        _training()
        self.model, self.loss, self.optimizer, self.seed = model, loss, optimizer, seed
        self._step = TrainStep(model, loss, "sgd", seed=seed)
        self.session: OrtTrainingSession | None = None
        self._last: ModelState | None = None

    def init(
        self,
        feeds: Mapping[str, np.ndarray],
        target: Any,
        initial: Any,
        optimizer_state: Any = None,
    ) -> dict[str, Any]:
        """The first step state: the initial model state, artifacts exported and loaded;
        `optimizer_state` (an earlier step state's) resumes its moments and count."""
        types = {k: TensorType((None, *v.shape[1:]), dtype_name(v.dtype)) for k, v in feeds.items()}
        state = self._step.init(types, initial).model_state
        # the session holds everything it needs once loaded: the files go with the directory
        with tempfile.TemporaryDirectory(prefix="axonc-ort-training-") as workdir:
            arts = export_ort_training(
                self.model,
                self.loss,
                self.optimizer,
                workdir,
                template=types,
                state=state,
                target=target,
                seed=self.seed,
            )
            resume = optimizer_state.get("checkpoint") if optimizer_state else None
            self.session = OrtTrainingSession(arts, resume)
        self._last = state
        count = int(optimizer_state["count"]) if optimizer_state else 0
        return {
            "model_state": state,
            "optimizer_state": OrtOptimizerState(self.session, count),
            "learning_rate_scale": 1.0,
            "loss": np.float32(0.0),
            "y_true": None,
            "y_pred": None,
        }

    def step(
        self, feeds: Mapping[str, np.ndarray], target: Any, step_state: dict[str, Any]
    ) -> dict[str, Any]:
        """One step of onnxruntime-training on the batch: the next step state."""
        state: ModelState = step_state["model_state"]
        if self.session is None or state is not self._last:
            self.init(feeds, target, state, step_state["optimizer_state"])
        session = self.session
        session.set_learning_rate_scale(float(step_state["learning_rate_scale"]))
        _, target_feeds = _target_feeds(target)
        all_feeds = {**feeds, **target_feeds}
        keys = _noise(session, state, all_feeds)
        loss_value, y_pred, new_state = session.step(all_feeds)
        state = state.update(_nested(session.parameters()), _nested({**keys, **new_state}))
        self._last = state
        count = int(step_state["optimizer_state"]["count"]) + 1
        return {
            **step_state,
            "model_state": state,
            "optimizer_state": OrtOptimizerState(session, count),
            "loss": loss_value,
            "y_true": target,
            "y_pred": y_pred,
        }


def _noise(
    session: OrtTrainingSession, state: ModelState, feeds: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Draw each dropout layer's noise into `feeds` from its key, as the default engine
    does; returns the advanced keys by path name."""
    batch = next(iter(feeds.values())).shape[0]
    keys = {}
    for name, shape in session.noise.items():
        layer = tuple(name.split("/")[:-1])
        dims = tuple(batch if d is None else d for d in shape)
        uniform, keys["/".join((*layer, "key"))] = draw(state.get((*layer, "key")), dims)
        feeds[name] = uniform.astype(np.float32)
    return keys


def _nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in flat.items():
        *path, leaf = name.split("/")
        cur = out
        for key in path:
            cur = cur.setdefault(key, {})
        cur[leaf] = value
    return out


__all__ = [
    "SUPPORTED_OPTIMIZERS",
    "LossModel",
    "MissingOrtTrainingError",
    "OrtOptimizer",
    "OrtOptimizerState",
    "OrtTrainer",
    "OrtTrainingArtifacts",
    "OrtTrainingSession",
    "export_ort_training",
    "loss_model",
    "ort_optimizer",
]
