"""`ax.Loop`: Axon.Loop in Python -- a reduction over batches for some epochs, with
metrics, event handlers, checkpoints and resuming.

    loop = (
        ax.Loop.trainer(model, "categorical_cross_entropy", ax.optimizers.adam(1e-3))
        .metric("accuracy")
        .validate(model, val_batches)
        .checkpoint(path="ckpt")
        .early_stop("validation_loss")
    )
    model_state = loop.run(train_batches, epochs=20)

A Loop is immutable: every method returns a new Loop (Axon's pipe style). The
trainer's step is `ax.train.compile_step` (forward, loss, gradient and optimizer
update in one compiled graph); metrics are computed on the host from the step's
y_true / y_pred with `ax.metrics`. spec/loop.md lists where axonc departs from Axon.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import losses as _losses
from .. import metrics as _metrics
from ..build import _feeds, build, input_nodes
from ..errors import InputError, OptionError
from ..ir import Axon, tree_map
from ..optimizers import Optimizer, as_pair
from ..optimizers import get as get_optimizer
from ..train import TrainState, compile_step
from ..train.ort_training import OrtTrainer
from ..train.step import target_tree
from . import handlers as _h
from .progress import ProgressBar
from .state import EVENTS, STATUSES, State, deserialize_state, serialize_state

Handler = Callable[[State], tuple[str, State]]
Filter = Callable[[State, str], bool]

_ITERATION_EVENTS = ("iteration_started", "iteration_completed")


# ---- filters ---------------------------------------------------------------------------------


def _count(state: State, event: str, key: str) -> int:
    count = state.event_counts.get(event, 0)
    return count[key] if isinstance(count, Mapping) else count


def _count_arg(value: Any, name: str) -> tuple[str, int]:
    key, n = value if isinstance(value, tuple) else ("total", value)
    if key not in ("total", "epoch") or isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise OptionError(
            f"filter {name!r} takes a positive integer N or ('epoch' | 'total', N), got {value!r}"
        )
    return key, n


_PREDICATES: dict[str, Callable[[int, int], bool]] = {
    "every": lambda count, n: (count - 1) % n == 0,  # the 1st, N+1-th, ... firing (Axon)
    "only": lambda count, n: count == n,
    "once": lambda count, n: count == n,  # Axon 0.8's name for only
    "before": lambda count, n: count < n,
    "after": lambda count, n: count > n,
}


def make_filter(spec: Any) -> Filter:
    """A filter from "always", "once" / "first", {"every": N, ...} (all must hold; also as
    Axon's keyword list [("every", N), ...]) or a predicate on the loop state."""
    if spec is None or spec == "always":
        return lambda state, event: True
    if spec in ("once", "first"):
        return lambda state, event: _count(state, event, "total") == 1
    if _is_pairs(spec):  # Axon's keyword list [every: 2] written as [("every", 2)]
        spec = dict(spec)
    if isinstance(spec, Mapping) and spec:
        checks = []
        for name, value in spec.items():
            if name not in _PREDICATES:
                raise OptionError(
                    f"unknown filter {name!r}; valid: {', '.join(_PREDICATES)} (each with N)"
                )
            key, n = _count_arg(value, name)
            checks.append((_PREDICATES[name], key, n))
        return lambda state, event: all(p(_count(state, event, k), n) for p, k, n in checks)
    if callable(spec):
        if _arity(spec) >= 2:  # Axon's filter functions take (state, event)
            return lambda state, event: bool(spec(state, event))
        return lambda state, event: bool(spec(state))
    raise OptionError(
        f"invalid filter {spec!r}: expected 'always', 'once', a dict such as {{'every': N}} "
        "or {'only': N}, or a function state -> bool"
    )


def _is_pairs(spec: Any) -> bool:
    return (
        isinstance(spec, list)
        and bool(spec)
        and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in spec)
    )


def _arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return 2 if any(p.kind == p.VAR_POSITIONAL for p in params) else len(positional)


def with_keywords(filter: Any, keywords: Mapping[str, Any]) -> Any:
    """`filter` with the keyword filters (every=, only=, once=, before=, after=) added:
    handle_event(..., every=2) is the filter {"every": 2}, as Axon's keyword list."""
    given = {k: v for k, v in keywords.items() if v is not None}
    if not given:
        return filter
    if filter is None or filter == "always":
        return given
    if isinstance(filter, Mapping) or _is_pairs(filter):
        return {**dict(filter), **given}
    raise OptionError(
        f"give the filter either as filter={filter!r} or as keywords "
        f"({', '.join(f'{k}={v!r}' for k, v in given.items())}), not both"
    )


def _events(event: Any) -> tuple[str, ...]:
    if event == "all":
        return EVENTS
    events = (event,) if isinstance(event, str) else tuple(event)
    bad = [e for e in events if e not in EVENTS]
    if bad or not events:
        raise OptionError(
            f"unknown event {bad[0] if bad else event!r}; valid events: {', '.join(EVENTS)} "
            "(or 'all', or a list of them)"
        )
    return events


def _counted(state: State, event: str) -> State:
    """Axon's update_counts: iteration events count in total and per epoch."""
    counts = dict(state.event_counts)
    if event in _ITERATION_EVENTS:
        old = counts.get(event, {"total": 0, "epoch": 0})
        counts[event] = {"total": old["total"] + 1, "epoch": old["epoch"] + 1}
    else:
        if event in ("epoch_completed", "epoch_halted"):
            for it in _ITERATION_EVENTS:
                old = counts.get(it, {"total": 0, "epoch": 0})
                counts[it] = {"total": old["total"], "epoch": 0}
        counts[event] = counts.get(event, 0) + 1
    return state.replace(event_counts=counts)


# ---- metrics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Metric:
    name: str
    update: Callable[[Any, Any, int], Any]  # (acc, step_state, i) -> acc
    spec: tuple[Any, Any, Any]  # (metric, accumulate, transform_or_fields) to rebuild it


def _metric_fn(metric: Any) -> Callable[..., Any]:
    if isinstance(metric, str):
        return _metrics.get(metric)  # an unknown name lists the valid ones
    if callable(metric):
        return metric
    raise OptionError(
        f"metric must be a metric name (one of {', '.join(_metrics.names())}) or a function, "
        f"got {metric!r}"
    )


def _transform(transform_or_fields: Any) -> Callable[[Any], list[Any]]:
    if callable(transform_or_fields):

        def apply(step_state: Any) -> list[Any]:
            out = transform_or_fields(step_state)
            return list(out) if isinstance(out, (list, tuple)) else [out]

        return apply
    fields = (
        [transform_or_fields]
        if isinstance(transform_or_fields, str)
        else list(transform_or_fields)
        if isinstance(transform_or_fields, (list, tuple))
        else None
    )
    if not fields or not all(isinstance(f, str) for f in fields):
        raise OptionError(
            "transform_or_fields must be a step-state field name, a list of them, or a "
            f"function step_state -> [values], got {transform_or_fields!r}"
        )

    def pick(step_state: Any) -> list[Any]:
        if not isinstance(step_state, Mapping):
            raise OptionError(
                f"metric fields {fields} need a dict step state, got {type(step_state).__name__}"
            )
        missing = [f for f in fields if f not in step_state]
        if missing:
            raise OptionError(
                f"metric field {missing[0]!r} is not in the step state; it has "
                f"{', '.join(map(repr, step_state))}"
            )
        return [step_state[f] for f in fields]

    return pick


def _build_metric(name: str, metric: Any, accumulate: Any, transform_or_fields: Any) -> _Metric:
    fn = _metric_fn(metric)
    pick = _transform(transform_or_fields)
    if accumulate == "running_average":
        acc = _metrics.running_average(fn)
    elif accumulate == "running_sum":
        acc = _metrics.running_sum(fn)
    elif callable(accumulate):

        def acc(total: Any, inputs: Sequence[Any], i: Any) -> Any:
            return accumulate(total, fn(*inputs), i)

    else:
        raise OptionError(
            f"accumulate must be 'running_average', 'running_sum' or a function "
            f"(acc, observation, i) -> acc, got {accumulate!r}"
        )

    def update(total: Any, step_state: Any, i: int) -> Any:
        return acc(total, pick(step_state), i)

    return _Metric(name, update, (metric, accumulate, transform_or_fields))


def _zero_metrics(metrics: Sequence[_Metric]) -> dict[str, Any]:
    return {m.name: np.float32(0.0) for m in metrics}


# ---- data ------------------------------------------------------------------------------------


class _Batches:
    """The data of a run: a re-iterable (a list: iterated afresh each epoch), a
    function epoch -> iterable (e.g. a seeded shuffle per epoch), or an iterator /
    generator (one stream the epochs share)."""

    def __init__(self, data: Any):
        self.per_epoch: Callable[[int], Iterable[Any]] | None = None
        self.stream: Iterator[Any] | None = None
        self.data: Iterable[Any] | None = None
        if callable(data) and not isinstance(data, Iterable):
            self.per_epoch = data
        elif isinstance(data, Iterator):
            self.stream = data
        elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, Mapping)):
            self.data = data
        else:
            raise InputError(
                "data must be an iterable of batches (a list, a generator, ...) or a function "
                f"epoch -> iterable of batches, got {type(data).__name__}"
            )

    def first(self, epoch: int) -> Any:
        if self.stream is not None:
            head = next(self.stream, _EMPTY)
            if head is not _EMPTY:
                self.stream = itertools.chain([head], self.stream)
        else:
            head = next(iter(self._iterable(epoch)), _EMPTY)
        if head is _EMPTY:
            raise InputError(
                "run received an empty dataset: the data yielded no batch (a generator "
                "already consumed, or a filter that removed everything?)"
            )
        return head

    def _iterable(self, epoch: int) -> Iterable[Any]:
        if self.per_epoch is not None:
            return self.per_epoch(epoch)
        assert self.data is not None
        return self.data

    def epoch(self, epoch: int, skip: int) -> Iterator[Any]:
        if self.stream is not None:
            return self.stream
        return itertools.islice(iter(self._iterable(epoch)), skip, None)

    def length(self) -> int | None:
        """Batches per epoch when the data knows it (a list), else None."""
        return len(self.data) if isinstance(self.data, Sized) else None


_EMPTY = object()


# ---- supervised steps ------------------------------------------------------------------------


def _supervised(batch: Any, who: str) -> tuple[Any, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        got = f"a {type(batch).__name__}" + (
            f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""
        )
        raise InputError(
            f"{who}: each batch must be a tuple (inputs, targets), inputs an array or a dict "
            f"keyed by input name; got {got}"
        )
    return batch[0], batch[1]


def _check_inputs(model: Axon, x: Any) -> dict[str, np.ndarray]:
    """The batch's inputs by name (a declared shape is a hint: the data decides, see build)."""
    nodes = input_nodes(model)
    if not isinstance(x, Mapping):
        if len(nodes) != 1:
            raise InputError(
                f"the model has inputs {', '.join(map(repr, nodes))}; give each batch's inputs "
                "as a dict keyed by input name"
            )
        x = {next(iter(nodes)): x}
    for name, node in nodes.items():
        if name not in x and not node.options["optional"]:
            raise InputError(f"input {name!r} is missing from the batch (it has {sorted(x)})")
    return _feeds(model, x)


def _target(y: Any) -> Any:
    """The batch's target in its structure (a tuple / list / dict of targets stays one),
    float64 leaves as float32."""

    def leaf(arr: np.ndarray) -> np.ndarray:
        return arr.astype(np.float32) if arr.dtype == np.float64 else arr

    return tree_map(leaf, target_tree(y))


def _optimizer(optimizer: Any) -> Any:
    """A built-in optimizer (by name or object) or any Polaris-style (init_fn, update_fn) pair."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        return get_optimizer(optimizer)
    try:
        as_pair(optimizer)
    except OptionError:
        raise OptionError(
            f"optimizer must be an optimizer name (e.g. 'adam'), ax.optimizers.<name>(...) or "
            f"an (init_fn, update_fn) pair, got {optimizer!r}"
        ) from None
    return optimizer


def train_step(
    model: Axon,
    loss: Any,
    optimizer: Any,
    *,
    seed: int = 0,
    compiler: str = "onnxruntime",
) -> tuple[Callable[[Any, Any], dict[str, Any]], Callable[[Any, Any], dict[str, Any]]]:
    """(init_fn, step_fn) of a supervised train step (Axon.Loop.train_step).

    init_fn(batch, initial_model_state) -> step state {"model_state", "optimizer_state",
    "learning_rate_scale", "loss", "y_true", "y_pred"}; step_fn(batch, step_state) runs one
    compiled step (`ax.train.compile_step`): `loss` is this batch's loss, `y_pred` the
    train-mode prediction it was computed from.
    """
    step = compile_step(model, loss, _optimizer(optimizer), seed=seed, compiler=compiler)

    def init_fn(batch: Any, init_state: Any) -> dict[str, Any]:
        x, _ = _supervised(batch, "trainer")
        ts = step.init(_check_inputs(model, x), init_state)  # the first batch is the template
        return {
            "model_state": ts.model_state,
            "optimizer_state": ts.optimizer_state,
            "learning_rate_scale": 1.0,
            "loss": np.float32(0.0),
            "y_true": None,
            "y_pred": None,
        }

    def step_fn(batch: Any, step_state: dict[str, Any]) -> dict[str, Any]:
        x, y = _supervised(batch, "trainer")
        feeds, target = _check_inputs(model, x), _target(y)
        ts = TrainState(
            step_state["model_state"],
            step_state["optimizer_state"],
            learning_rate_scale=float(step_state["learning_rate_scale"]),
        )
        ts, out = step(ts, feeds, target)
        return {
            **step_state,
            "model_state": ts.model_state,
            "optimizer_state": ts.optimizer_state,
            "loss": out["loss"],
            "y_true": target,
            "y_pred": out["y_pred"],
        }

    return init_fn, step_fn


def ort_train_step(
    model: Axon,
    loss: Any,
    optimizer: Any,
    *,
    seed: int = 0,
    compiler: str = "onnxruntime",
) -> tuple[Callable[[Any, Any], dict[str, Any]], Callable[[Any, Any], dict[str, Any]]]:
    """`train_step`'s (init_fn, step_fn) with the step run by onnxruntime-training
    (`ax.train.ort_training.OrtTrainer`; spec/ort_training.md), same step state."""
    engine = OrtTrainer(model, loss, optimizer, seed=seed, compiler=compiler)

    def init_fn(batch: Any, init_state: Any) -> dict[str, Any]:
        x, y = _supervised(batch, "trainer")
        return engine.init(_check_inputs(model, x), _target(y), init_state)

    def step_fn(batch: Any, step_state: dict[str, Any]) -> dict[str, Any]:
        x, y = _supervised(batch, "trainer")
        return engine.step(_check_inputs(model, x), _target(y), step_state)

    return init_fn, step_fn


# What runs a trainer's step: axonc's compiled step graph, or onnxruntime-training.
ENGINES = {"axonc": train_step, "ort-training": ort_train_step}


def eval_step(
    model: Axon, *, compiler: str = "onnxruntime"
) -> tuple[Callable[[Any, Any], dict[str, Any]], Callable[[Any, Any], dict[str, Any]]]:
    """(init_fn, step_fn) of a supervised evaluation step (Axon.Loop.eval_step).

    init_fn(batch, model_state) -> {"model_state", "y_true", "y_pred"}; step_fn predicts
    the batch in inference mode.
    """
    _, predict = build(model, "inference", compiler=compiler)

    def init_fn(batch: Any, init_state: Any) -> dict[str, Any]:
        _supervised(batch, "evaluator")
        if init_state is None:
            raise InputError(
                "the evaluator needs the model state to evaluate: run(data, model_state)"
            )
        return {"model_state": init_state, "y_true": None, "y_pred": None}

    def step_fn(batch: Any, step_state: dict[str, Any]) -> dict[str, Any]:
        x, y = _supervised(batch, "evaluator")
        y_pred = predict(step_state["model_state"], _check_inputs(model, x))
        return {**step_state, "y_true": _target(y), "y_pred": y_pred}

    return init_fn, step_fn


def _identity_init(batch: Any, init_state: Any) -> Any:
    return init_state


def _identity(state: State) -> Any:
    return state


def _model_state(state: State) -> Any:
    return state.step_state["model_state"]


def _final_metrics(state: State) -> Any:
    return state.metrics


def _loss_metric(loss_fn: Callable[..., Any]) -> Callable[..., Any]:
    def loss(y_true: Any, y_pred: Any) -> Any:
        return np.asarray(loss_fn(y_true, y_pred), np.float32)

    return loss


def _batch_loss(loss: Any) -> Any:
    return loss


# ---- the loop --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Attached:
    fn: Handler
    filter: Filter
    order: int
    quiet_with_progress: bool = False


@dataclass(frozen=True)
class _Requirement:
    metric: str
    who: str
    order: int


@dataclass(frozen=True, eq=False)
class Loop:
    """A loop: init and step functions, metrics, handlers (see the module doc).

    Build one with `Loop.loop`, `Loop.trainer` or `Loop.evaluator`; run it with `run`.
    """

    step_fn: Callable[[Any, Any], Any]
    init_fn: Callable[[Any, Any], Any] = _identity_init
    output_transform: Callable[[State], Any] = _identity
    metrics: tuple[_Metric, ...] = ()
    handlers: Mapping[str, tuple[_Attached, ...]] = field(
        default_factory=lambda: {e: () for e in EVENTS}
    )
    attached_state: State | None = None
    provides: tuple[tuple[str, int], ...] = ()  # metrics added by handlers, with their order
    requires: tuple[_Requirement, ...] = ()
    history_path: Path | None = None
    attached: int = 0  # how many handlers / metrics were attached (their order)
    # trainer / evaluator: (init_fn, step_fn) for another compiler, for run(compiler=)
    rebuild: Callable[[str], tuple[Callable[..., Any], Callable[..., Any]]] | None = None

    # ---- factories ---------------------------------------------------------------------

    @classmethod
    def loop(
        cls,
        step_fn: Callable[[Any, Any], Any],
        init_fn: Callable[[Any, Any], Any] | None = None,
        output_transform: Callable[[State], Any] | None = None,
    ) -> Loop:
        """A loop from step_fn(batch, step_state) -> step_state, an optional
        init_fn(first_batch, init_state) -> step_state (default: init_state itself) and an
        optional output_transform(final_state) (default: the final State)."""
        for name, fn in (("step_fn", step_fn), ("init_fn", init_fn), ("output", output_transform)):
            if fn is not None and not callable(fn):
                raise OptionError(f"{name} must be a function, got {fn!r}")
        return cls(step_fn, init_fn or _identity_init, output_transform or _identity)

    @classmethod
    def trainer(
        cls,
        model: Axon,
        loss: Any,
        optimizer: Any,
        *,
        log: int = 50,
        seed: int = 0,
        compiler: str = "onnxruntime",
        engine: str = "axonc",
    ) -> Loop:
        """A supervised training loop (Axon.Loop.trainer).

        `loss`: a name from ax.losses, a function loss(y_true, y_pred) -> scalar, or a list
        of (loss, weight) pairs for a multi-output model. `optimizer`: a name, an
        ax.optimizers optimizer or combinator, or any (init_fn, update_fn) pair. The loop
        tracks the metric "loss" (the running average of the batch losses over the epoch)
        and returns the trained ModelState. Every `log` iterations (0: never) it prints the
        epoch, batch and metrics, unless the progress bar shows them. `engine`: what runs
        the step, "axonc" (the compiled step graph) or "ort-training" (onnxruntime-training,
        in its own environment: spec/ort_training.md).
        """
        if engine not in ENGINES:
            raise OptionError(
                f"engine must be one of {', '.join(map(repr, ENGINES))}, got {engine!r}"
            )
        if not isinstance(log, int) or isinstance(log, bool) or log < 0:
            raise OptionError(f"log must be a non-negative integer (0: silent), got {log!r}")
        loss_fn = _losses.build_loss_fn(loss)
        compiler = compiler_name(compiler)

        def steps(compiler: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
            return ENGINES[engine](model, loss, optimizer, seed=seed, compiler=compiler)

        init_fn, step_fn = steps(compiler)
        loop = cls(
            step_fn, init_fn, _model_state, rebuild=_cached(steps, compiler, (init_fn, step_fn))
        )
        loop = loop._add_metric(
            _Metric(
                "loss",
                _build_metric("loss", _batch_loss, "running_average", "loss").update,
                (_loss_metric(loss_fn), "running_average", ("y_true", "y_pred")),
            )
        )
        if log > 0:
            loop = loop._attach(
                ("iteration_completed",),
                _h.log_handler(_h.supervised_message, None),
                {"every": ("epoch", log)},
                quiet_with_progress=True,
            )
        return loop

    @classmethod
    def evaluator(cls, model: Axon, *, log: int = 0, compiler: str = "onnxruntime") -> Loop:
        """A supervised evaluation loop (Axon.Loop.evaluator): run(data, model_state)
        returns {epoch: {metric: value}}, i.e. `{0: {...}}` for one pass."""
        compiler = compiler_name(compiler)

        def steps(compiler: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
            return eval_step(model, compiler=compiler)

        init_fn, step_fn = steps(compiler)
        loop = cls(
            step_fn, init_fn, _final_metrics, rebuild=_cached(steps, compiler, (init_fn, step_fn))
        )
        if log > 0:
            loop = loop._attach(
                ("iteration_completed",),
                _h.log_handler(lambda s: _h.supervised_message(s, False), None),
                {"every": ("epoch", log)},
                quiet_with_progress=True,
            )
        return loop

    train_step = staticmethod(train_step)
    eval_step = staticmethod(eval_step)
    serialize_state = staticmethod(serialize_state)
    deserialize_state = staticmethod(deserialize_state)

    # ---- building ----------------------------------------------------------------------

    def _add_metric(self, metric: _Metric) -> Loop:
        kept = tuple(m for m in self.metrics if m.name != metric.name)
        return dataclasses.replace(self, metrics=(*kept, metric), attached=self.attached + 1)

    def _attach(
        self,
        events: tuple[str, ...],
        fn: Handler,
        filter: Any,
        *,
        quiet_with_progress: bool = False,
        provides: Sequence[str] = (),
        requires: Sequence[tuple[str, str]] = (),
    ) -> Loop:
        order = self.attached
        entry = _Attached(fn, make_filter(filter), order, quiet_with_progress)
        handlers = {e: self.handlers[e] + ((entry,) if e in events else ()) for e in EVENTS}
        return dataclasses.replace(
            self,
            handlers=handlers,
            provides=self.provides + tuple((p, order) for p in provides),
            requires=self.requires + tuple(_Requirement(m, who, order) for m, who in requires),
            attached=order + 1,
        )

    def metric(
        self,
        metric: Any,
        name: str | None = None,
        accumulate: Any = "running_average",
        transform_or_fields: Any = ("y_true", "y_pred"),
    ) -> Loop:
        """Track a metric under `name` (Axon.Loop.metric).

        `metric`: a name from ax.metrics ("accuracy", ...) or a function of the values
        `transform_or_fields` picks from the step state (field names, or a function
        step_state -> [values]; default y_true and y_pred). `accumulate`: "running_average"
        (the mean over the epoch's batches), "running_sum", or a function
        (acc, observation, i) -> acc. A name used twice keeps the last metric.
        """
        if name is None:
            if not isinstance(metric, str):
                raise OptionError("a metric given as a function needs a name: metric(fn, 'name')")
            name = metric
        if not isinstance(name, str):
            raise OptionError(f"a metric name must be a string, got {name!r}")
        return self._add_metric(_build_metric(name, metric, accumulate, transform_or_fields))

    def handle(
        self,
        event: Any,
        handler: Handler,
        filter: Any = "always",
        *,
        every: Any = None,
        only: Any = None,
        once: Any = None,
        before: Any = None,
        after: Any = None,
    ) -> Loop:
        """Run handler(state) -> (status, state) on `event` (a name, a list, or "all") when
        `filter` allows; handlers on one event run in the order they were attached.

        The filter's predicates may also be given as keywords, as Axon's keyword list:
        `handle_event("iteration_completed", fn, every=2)` is `filter={"every": 2}`; each
        takes N or ("epoch" | "total", N), and all given must hold.
        """
        if not callable(handler):
            raise OptionError(
                f"handler must be a function state -> (status, state), got {handler!r}"
            )
        keywords = {"every": every, "only": only, "once": once, "before": before, "after": after}
        return self._attach(_events(event), handler, with_keywords(filter, keywords))

    handle_event = handle

    def log(
        self,
        message_fn: Callable[[State], str] | None = None,
        *,
        event: Any = "iteration_completed",
        filter: Any = "always",
        every: int | None = None,
        device: Any = None,
    ) -> Loop:
        """Write message_fn(state) (default: epoch, batch and metrics) to `device` on
        `event`; `every=N` is the filter {"every": N}.

        `device`, as Axon's IO device: "stdio" (the default: standard output), "stderr",
        or an open text file (anything with `write`).
        """
        out = _h.log_device(device)
        return self._attach(
            _events(event),
            _h.log_handler(message_fn or _h.supervised_message, out),
            with_keywords(filter, {"every": every}),
        )

    def validate(
        self,
        model: Axon,
        validation_data: Any,
        *,
        event: Any = "epoch_completed",
        filter: Any = "always",
        compiler: str = "onnxruntime",
    ) -> Loop:
        """Evaluate the training model state on `validation_data` and add the metrics
        attached so far as "validation_<name>" (Axon.Loop.validate). Attach it before the
        handlers that read those metrics. `validation_data` is iterated once per call, so
        give a list (or another re-iterable), not a generator."""
        evaluator = Loop.evaluator(model, compiler=compiler)
        for m in self.metrics:
            evaluator = evaluator.metric(m.spec[0], m.name, m.spec[1], m.spec[2])
        return self._attach(
            _events(event),
            _h.validation_handler(evaluator, validation_data),
            filter,
            provides=[f"validation_{m.name}" for m in self.metrics],
        )

    def checkpoint(
        self,
        *,
        event: Any = "epoch_completed",
        filter: Any = "always",
        path: str | Path = "checkpoint",
        file_pattern: str | Callable[[State], str] = "checkpoint_{epoch}_{iteration}.ckpt",
        criteria: str | None = None,
        mode: str = "min",
        serialize_step_state: Callable[[Any], Any] | None = None,
    ) -> Loop:
        """Save the loop state (serialize_state) to path/file_pattern on `event`.

        `file_pattern` is a format string with {epoch} and {iteration} or a function
        state -> file name. With `criteria` (a metric name), save only when that metric is
        the best so far (`mode` "min" or "max"). Files are written atomically.
        """
        _h.check_mode(mode, "checkpoint", allow_fn=False)
        handler = _h.checkpoint_handler(path, file_pattern, criteria, mode, serialize_step_state)
        requires = [(criteria, "checkpoint criteria")] if criteria is not None else []
        return self._attach(_events(event), handler, filter, requires=requires)

    def monitor(
        self,
        metric: str,
        fn: Handler,
        name: str,
        *,
        event: Any = "epoch_completed",
        filter: Any = "always",
        mode: Any = "min",
        patience: int = 3,
    ) -> Loop:
        """Fire fn(state) when `metric` has not improved for more than `patience`
        events (Axon.Loop.monitor); its memory lives in handler_metadata[name]."""
        _h.check_mode(mode, name)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise OptionError(f"{name}: patience must be a non-negative integer, got {patience!r}")
        handler = _h.monitor_handler(metric, fn, name, mode, patience)
        return self._attach(_events(event), handler, filter, requires=[(metric, name)])

    def early_stop(
        self,
        monitor: str,
        *,
        event: Any = "epoch_completed",
        filter: Any = "always",
        mode: Any = "min",
        patience: int = 3,
    ) -> Loop:
        """Halt the loop when `monitor` has not improved for more than `patience` events."""
        return self.monitor(
            monitor,
            _h.halt_loop,
            f"early_stop/{monitor}",
            event=event,
            filter=filter,
            mode=mode,
            patience=patience,
        )

    def reduce_lr_on_plateau(
        self,
        monitor: str,
        *,
        event: Any = "epoch_completed",
        filter: Any = "always",
        mode: Any = "min",
        patience: int = 3,
        factor: float = 0.1,
    ) -> Loop:
        """Multiply the learning rate by `factor` when `monitor` has not improved for more
        than `patience` events; the trainer's next steps use the reduced rate."""
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
            raise OptionError(f"reduce_lr_on_plateau: factor must be a number > 0, got {factor!r}")
        return self.monitor(
            monitor,
            _h.reduce_lr(float(factor)),
            f"reduce_lr_on_plateau/{monitor}",
            event=event,
            filter=filter,
            mode=mode,
            patience=patience,
        )

    def history(self, path: str | Path) -> Loop:
        """Write the metric history to `path` as JSON lines, one record per finished epoch
        ({"epoch", "seconds", "metrics"}), after the epoch's handlers ran (so validation
        metrics are in it). `axonc plot` draws it."""
        return dataclasses.replace(self, history_path=Path(path))

    def from_state(self, state: State) -> Loop:
        """Resume from `state` (e.g. deserialize_state of a checkpoint) instead of init_fn.

        A state saved at epoch_completed resumes with the next epoch; one saved at
        iteration_completed resumes with the next batch of its epoch (re-iterable data or
        a function epoch -> batches make that batch the same one). `run(epochs=N)` then
        runs N more epochs.
        """
        if not isinstance(state, State):
            raise OptionError(f"from_state expects a loop State, got {type(state).__name__}")
        return dataclasses.replace(self, attached_state=state)

    # ---- running -------------------------------------------------------------------------

    def _check_requirements(self) -> None:
        """Every metric a monitor or a checkpoint criteria reads must exist when it runs."""
        computed = {m.name for m in self.metrics}
        for req in self.requires:
            if req.metric in computed:
                continue
            if any(name == req.metric and order < req.order for name, order in self.provides):
                continue
            later = [order for name, order in self.provides if name == req.metric]
            if later:
                raise OptionError(
                    f"{req.who} reads metric {req.metric!r}, which a handler attached after it "
                    "adds; attach validate before the handlers that read its metrics"
                )
            available = sorted(computed | {name for name, o in self.provides if o < req.order})
            raise OptionError(
                f"{req.who} reads metric {req.metric!r}, which this loop does not compute; "
                f"it computes: {', '.join(available) or 'no metrics'}"
            )

    def _fire(self, event: str, state: State, bar: bool) -> tuple[str, State]:
        state = _counted(state, event).replace(event=event)
        status = "continue"
        for entry in self.handlers[event]:
            if bar and entry.quiet_with_progress:
                continue
            if not entry.filter(state, event):
                continue
            result = entry.fn(state)
            if (
                not isinstance(result, tuple)
                or len(result) != 2
                or result[0] not in STATUSES
                or not isinstance(result[1], State)
            ):
                raise OptionError(
                    f"a handler on {event!r} returned {result!r}; a handler must return "
                    f"(status, state) with status one of {', '.join(STATUSES)}"
                )
            status, state = result
            if status != "continue":
                break
        return status, state.replace(event=None)

    def _start(self, batches: _Batches, init_state: Any, epochs: int, iterations: int) -> State:
        state = self.attached_state
        if state is None:
            step_state = self.init_fn(batches.first(0), init_state)
            return State(
                epoch=0,
                max_epoch=epochs,
                max_iteration=iterations,
                metrics=_zero_metrics(self.metrics),
                step_state=step_state,
            )
        epoch, skip = _resume_point(state)
        history = dict(state.history)
        if state.event in ("epoch_completed", "epoch_halted") and state.epoch not in history:
            history[state.epoch] = dict(state.metrics)
        metrics = dict(state.metrics) if skip else _zero_metrics(self.metrics)
        return state.replace(
            epoch=epoch,
            iteration=skip,
            max_epoch=epoch + epochs,
            max_iteration=iterations,
            metrics=metrics,
            history=history,
            status="running",
            event=None,
        )

    def run(
        self,
        data: Any,
        init_state: Any = None,
        *,
        epochs: int = 1,
        iterations: int = -1,
        progress: bool | None = None,
        compiler: str | None = None,
    ) -> Any:
        """Run the loop over `data` for `epochs` epochs (Axon.Loop.run).

        `data`: batches -- a list (re-iterated each epoch), a generator (one stream), or a
        function epoch -> batches. `init_state`: what init_fn starts from (the trainer: an
        initial ModelState or dict of known parameters; the evaluator: the model state).
        `iterations`: at most this many batches per epoch (-1: all). `progress`: the
        progress bar, on by default when stderr is a terminal. `compiler`: what runs a
        trainer's or evaluator's step this run (Axon's `compiler:` jit option; see
        `compiler_name`): "onnxruntime" or "reference"; a Loop.loop step is plain Python,
        which no compiler changes. Returns output_transform(final state).
        """
        if compiler is not None and self.rebuild is not None:
            init_fn, step_fn = self.rebuild(compiler_name(compiler))
            loop = dataclasses.replace(self, init_fn=init_fn, step_fn=step_fn, rebuild=None)
            return loop.run(
                data, init_state, epochs=epochs, iterations=iterations, progress=progress
            )
        if compiler is not None:
            compiler_name(compiler)  # checked; a Loop.loop step has nothing to compile
        for name, value in (("epochs", epochs), ("iterations", iterations)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise OptionError(f"{name} must be an integer, got {value!r}")
        if epochs < 0:
            raise OptionError(f"epochs must be non-negative, got {epochs}")
        if iterations == 0 or iterations < -1:
            raise OptionError(f"iterations must be -1 (no limit) or positive, got {iterations}")
        self._check_requirements()
        batches = _Batches(data)
        state = self._start(batches, init_state, epochs, iterations)
        bar = ProgressBar() if ProgressBar.wanted(progress) else None
        if self.history_path is not None:
            _h.write_history(self.history_path, state.history, state.times)
        try:
            state = self._run(batches, state, bar)
        finally:
            if bar is not None:
                bar.close()
        return self.output_transform(state)

    def _run(self, batches: _Batches, state: State, bar: ProgressBar | None) -> State:
        status, state = self._fire("started", state, bar is not None)
        halted = status != "continue"
        while not halted and state.epoch < state.max_epoch:
            epoch, resumed = state.epoch, state.iteration > 0
            status = "continue"
            if not resumed:
                status, state = self._fire("epoch_started", state, bar is not None)
            if bar is not None:
                total = batches.length()
                if total is not None and state.max_iteration > 0:
                    total = min(total, state.max_iteration)
                bar.epoch_started(state, total)
            started = time.perf_counter()
            steps = 0
            if status == "continue":
                status, state, steps = self._run_epoch(
                    batches.epoch(epoch, state.iteration), state, bar
                )
            state = state.replace(times={**state.times, epoch: time.perf_counter() - started})
            completed = status == "continue"
            if completed:
                status, state = self._fire("epoch_completed", state, bar is not None)
            if status == "halt_epoch":
                status, state = self._fire("epoch_halted", state, bar is not None)
                status = "halt_loop" if status == "halt_loop" else "continue"
            if bar is not None:
                bar.epoch_ended(state)
            if completed or steps or resumed:
                state = self._record(state, epoch)
            halted = status == "halt_loop"
            if not halted or completed:
                state = state.replace(
                    epoch=epoch + 1, iteration=0, metrics=_zero_metrics(self.metrics)
                )
        final = "halted" if halted else "completed"
        state = state.replace(status=final)
        _, state = self._fire(final, state, bar is not None)
        return state.replace(metrics=dict(state.history))

    def _record(self, state: State, epoch: int) -> State:
        history = {**state.history, epoch: dict(state.metrics)}
        if self.history_path is not None:
            _h.append_history(self.history_path, epoch, state.metrics, state.times.get(epoch, 0.0))
        return state.replace(history=history)

    def _run_epoch(
        self, batches: Iterator[Any], state: State, bar: ProgressBar | None
    ) -> tuple[str, State, int]:
        """One epoch's iterations: (status, state, number of steps run)."""
        steps = 0
        if state.max_iteration > 0 and state.iteration >= state.max_iteration:
            return "continue", state, steps
        for batch in batches:
            status, state = self._fire("iteration_started", state, bar is not None)
            if status != "continue":
                return status, state, steps
            step_state = self.step_fn(batch, state.step_state)
            steps += 1
            i = state.iteration
            metrics = {
                m.name: m.update(state.metrics.get(m.name, np.float32(0.0)), step_state, i)
                for m in self.metrics
            }
            state = state.replace(step_state=step_state, metrics=metrics)
            if bar is not None:
                bar.iteration_completed(state)
            status, state = self._fire("iteration_completed", state, bar is not None)
            if status != "continue":
                return status, state, steps
            state = state.replace(iteration=state.iteration + 1)
            if state.max_iteration > 0 and state.iteration >= state.max_iteration:
                break
        return "continue", state, steps


# Axon's `compiler:` option names an Nx compiler; axonc's counterparts: a compiled graph
# (EXLA's place) on onnxruntime, or the numpy interpreter (Nx.Defn.Evaluator's place).
_COMPILER_ALIASES = {
    "onnxruntime": "onnxruntime",
    "reference": "reference",
    "EXLA": "onnxruntime",
    "exla": "onnxruntime",
    "Nx.Defn.Evaluator": "reference",
    "evaluator": "reference",
}


def compiler_name(compiler: Any) -> str:
    """axonc's compiler for Axon's `compiler:` option ("EXLA" -> "onnxruntime", ...)."""
    if compiler not in _COMPILER_ALIASES:
        raise OptionError(
            f"compiler must be 'onnxruntime' or 'reference' (Axon's EXLA / Nx.Defn.Evaluator "
            f"are accepted as aliases of them), got {compiler!r}"
        )
    return _COMPILER_ALIASES[compiler]


def _cached(
    steps: Callable[[str], tuple[Callable[..., Any], Callable[..., Any]]],
    compiler: str,
    built: tuple[Callable[..., Any], Callable[..., Any]],
) -> Callable[[str], tuple[Callable[..., Any], Callable[..., Any]]]:
    """`steps` memoised per compiler (starting with the one `built`), so runs with one
    compiler share its compiled step."""
    cache: dict[str, Any] = {compiler: built}

    def rebuild(compiler: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
        if compiler not in cache:
            cache[compiler] = steps(compiler)
        return cache[compiler]

    return rebuild


def _resume_point(state: State) -> tuple[int, int]:
    """(epoch, batches of it already done) to continue from a state saved at state.event."""
    if state.event == "iteration_completed":
        return state.epoch, state.iteration + 1
    if state.event == "iteration_started":
        return state.epoch, state.iteration
    if state.event in ("epoch_completed", "epoch_halted"):
        return state.epoch + 1, 0
    return state.epoch, 0
