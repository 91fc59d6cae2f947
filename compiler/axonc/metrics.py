"""`ax.metrics`: Axon.Metrics (Axon 0.8), eager on arrays and traceable on symbolic tensors.

Every metric is written with `axonc.numpy`, so called on numpy arrays it computes
at once and returns numpy arrays, and called on traced tensors (inside a compiled
train or eval step) it records primitives that lower to ONNX. Names, options and
defaults are Axon's:

- `accuracy`: binary (y_pred > 0.5) when y_pred's last axis has size 1, else
  categorical (argmax over the last axis); `from_logits` applies sigmoid / softmax
  first, `sparse` takes class indices as y_true. An f32 scalar.
- `true_positives`, `false_positives`, `true_negatives`, `false_negatives`: counts
  over every element of `y_pred > threshold` (default 0.5) against y_true, as u32.
- `precision`, `recall` (= `sensitivity`), `specificity`: ratios of those counts
  with 1e-16 added to the denominator (0.0 when it is empty), f32 scalars.
- `mean_absolute_error`, `mean_squared_error`: the mean over every element.
- `top_k_categorical_accuracy`: the fraction of samples whose true class is among
  the `k` (default 5) highest predictions; ties rank the lower class index first.

`running_average` / `running_sum` turn a metric into the accumulator update Axon's
loops use: `update(state, [y_true, y_pred], iteration) -> new state`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import numpy as anp
from .errors import OptionError, ShapeError
from .tracing import Tensor, apply

__all__ = [
    "accuracy",
    "false_negatives",
    "false_positives",
    "get",
    "mean_absolute_error",
    "mean_squared_error",
    "names",
    "precision",
    "recall",
    "running_average",
    "running_sum",
    "sensitivity",
    "specificity",
    "top_k_categorical_accuracy",
    "true_negatives",
    "true_positives",
]

# Axon adds this to every ratio's denominator so an empty class gives 0.0, not NaN.
EPSILON = 1.0e-16
COUNT_DTYPE = "u32"

Metric = Callable[..., Any]
Update = Callable[[Any, Sequence[Any], Any], Any]


# ---------------------------------------------------------------------------
# helpers


def _arr(x: Any) -> Any:
    """Traced tensors stay; anything else becomes a numpy array (lists: f32 / s32)."""
    return x if isinstance(x, Tensor) else anp.asarray(x)


def _check_bool(value: Any, option: str, metric: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise OptionError(f"{metric}: {option} must be true or false, got {value!r}")
    return bool(value)


def _check_threshold(value: Any, metric: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise OptionError(f"{metric}: threshold must be a number, got {value!r}")
    return float(value)


def _check_rank(x: Any, what: str, metric: str) -> None:
    if anp.ndim(x) < 1:
        raise ShapeError(f"{metric}: {what} must have rank >= 1, got a scalar")


def _classes(y_pred: Any, metric: str) -> int:
    dim = anp.shape(y_pred)[-1]
    if dim is None:
        raise ShapeError(f"{metric}: the class axis (the last axis of y_pred) must be static")
    return int(dim)


def _sparse_indices(y_true: Any, y_pred: Any, metric: str) -> Any:
    """Class indices shaped like y_pred without its last axis (a trailing size-1 axis goes)."""
    want = anp.ndim(y_pred) - 1
    if anp.ndim(y_true) == want + 1 and anp.shape(y_true)[-1] == 1:
        y_true = anp.squeeze(y_true, -1)
    if anp.ndim(y_true) != want:
        raise ShapeError(
            f"{metric}: sparse y_true must hold one class index per sample, shaped "
            f"{tuple(anp.shape(y_pred)[:-1])} or with a trailing axis of size 1, "
            f"got shape {tuple(anp.shape(y_true))}"
        )
    return y_true


def _predicted(y_pred: Any, threshold: Any, metric: str) -> Any:
    return anp.greater(_arr(y_pred), _check_threshold(threshold, metric))


def _count(mask: Any) -> Any:
    return anp.astype(anp.sum(mask), COUNT_DTYPE)


def _ratio(hits: Any, misses: Any) -> Any:
    """hits / (hits + misses + 1e-16) in f32, Axon's guarded division."""
    return anp.divide(hits, anp.add(anp.add(hits, misses), EPSILON))


# ---------------------------------------------------------------------------
# classification metrics


def accuracy(y_true: Any, y_pred: Any, *, from_logits: bool = False, sparse: bool = False) -> Any:
    """The fraction of correct predictions, an f32 scalar.

    When y_pred's last axis has size 1 the task is binary: a prediction is
    y_pred > 0.5 (after a sigmoid with `from_logits`) and is correct where it equals
    y_true. Otherwise the prediction is argmax(y_pred, -1) (after a softmax with
    `from_logits`), compared with argmax(y_true, -1), or with y_true itself when
    `sparse` (class indices, with or without a trailing axis of size 1).
    """
    name = "accuracy"
    from_logits = _check_bool(from_logits, "from_logits", name)
    sparse = _check_bool(sparse, "sparse", name)
    y_true, y_pred = _arr(y_true), _arr(y_pred)
    _check_rank(y_pred, "y_pred", name)
    if anp.shape(y_pred)[-1] == 1:
        if from_logits:
            y_pred = apply("sigmoid", [y_pred], {})
        positive = anp.greater(y_pred, 0.5)
        correct = anp.where(positive, anp.equal(y_true, 1), anp.equal(y_true, 0))
        return anp.mean(correct)
    if from_logits:
        y_pred = apply("softmax", [y_pred], {"axis": -1})
    labels = _sparse_indices(y_true, y_pred, name) if sparse else anp.argmax(y_true, axis=-1)
    return anp.mean(anp.equal(anp.argmax(y_pred, axis=-1), labels))


def true_positives(y_true: Any, y_pred: Any, *, threshold: float = 0.5) -> Any:
    """Count (u32) of elements predicted positive (y_pred > threshold) where y_true == 1."""
    predicted = _predicted(y_pred, threshold, "true_positives")
    return _count(anp.logical_and(predicted, anp.equal(_arr(y_true), 1)))


def false_positives(y_true: Any, y_pred: Any, *, threshold: float = 0.5) -> Any:
    """Count (u32) of elements predicted positive (y_pred > threshold) where y_true != 1."""
    predicted = _predicted(y_pred, threshold, "false_positives")
    return _count(anp.logical_and(predicted, anp.not_equal(_arr(y_true), 1)))


def true_negatives(y_true: Any, y_pred: Any, *, threshold: float = 0.5) -> Any:
    """Count (u32) of elements predicted negative (y_pred <= threshold) where y_true == 0."""
    predicted = _predicted(y_pred, threshold, "true_negatives")
    return _count(anp.logical_and(anp.logical_not(predicted), anp.equal(_arr(y_true), 0)))


def false_negatives(y_true: Any, y_pred: Any, *, threshold: float = 0.5) -> Any:
    """Count (u32) of elements predicted negative (y_pred <= threshold) where y_true != 0."""
    predicted = _predicted(y_pred, threshold, "false_negatives")
    return _count(anp.logical_and(anp.logical_not(predicted), anp.not_equal(_arr(y_true), 0)))


def precision(y_true: Any, y_pred: Any, *, threshold: float = 0.5) -> Any:
    """tp / (tp + fp + 1e-16), an f32 scalar (0.0 when nothing is predicted positive)."""
    tp = true_positives(y_true, y_pred, threshold=threshold)
    return _ratio(tp, false_positives(y_true, y_pred, threshold=threshold))


def recall(y_true: Any, y_pred: Any, *, threshold: float = 0.5) -> Any:
    """tp / (tp + fn + 1e-16), an f32 scalar (0.0 when y_true has no positive)."""
    tp = true_positives(y_true, y_pred, threshold=threshold)
    return _ratio(tp, false_negatives(y_true, y_pred, threshold=threshold))


def sensitivity(y_true: Any, y_pred: Any, *, threshold: float = 0.5) -> Any:
    """The true positive rate: the same as `recall`."""
    return recall(y_true, y_pred, threshold=threshold)


def specificity(y_true: Any, y_pred: Any, *, threshold: float = 0.5) -> Any:
    """tn / (tn + fp + 1e-16), the true negative rate, an f32 scalar."""
    tn = true_negatives(y_true, y_pred, threshold=threshold)
    return _ratio(tn, false_positives(y_true, y_pred, threshold=threshold))


def top_k_categorical_accuracy(
    y_true: Any, y_pred: Any, *, k: int = 5, sparse: bool = False
) -> Any:
    """The fraction of samples whose true class is among the k highest predictions.

    The true class is argmax(y_true, -1), or y_true itself when `sparse`. Class c is
    in the top k when fewer than k classes rank before it, where j ranks before c if
    y_pred[j] > y_pred[c], or if they are equal and j < c (Axon's descending
    argsort, stable). The last axis of y_pred holds the classes (its size must be
    static and at least k); an f32 scalar.
    """
    name = "top_k_categorical_accuracy"
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise OptionError(f"{name}: k must be a positive integer, got {k!r}")
    sparse = _check_bool(sparse, "sparse", name)
    y_true, y_pred = _arr(y_true), _arr(y_pred)
    _check_rank(y_pred, "y_pred", name)
    classes = _classes(y_pred, name)
    if k > classes:
        raise ShapeError(f"{name}: k = {k} exceeds the number of classes ({classes})")

    labels = _sparse_indices(y_true, y_pred, name) if sparse else anp.argmax(y_true, axis=-1)
    labels = anp.expand_dims(labels, -1)
    index = anp.arange(classes)
    is_label = anp.equal(index, labels)
    score = anp.sum(anp.where(is_label, y_pred, 0.0), axis=-1, keepdims=True)
    ahead = anp.logical_or(
        anp.greater(y_pred, score),
        anp.logical_and(anp.equal(y_pred, score), anp.less(index, labels)),
    )
    rank = anp.sum(ahead, axis=-1)
    hit = anp.logical_and(anp.any(is_label, axis=-1), anp.less(rank, int(k)))
    return anp.mean(hit)


# ---------------------------------------------------------------------------
# regression metrics


def mean_absolute_error(y_true: Any, y_pred: Any) -> Any:
    """mean(|y_true - y_pred|) over every element, a scalar."""
    return anp.mean(anp.abs(anp.subtract(_arr(y_true), _arr(y_pred))))


def mean_squared_error(y_true: Any, y_pred: Any) -> Any:
    """mean((y_true - y_pred)^2) over every element, a scalar."""
    return anp.mean(anp.square(anp.subtract(_arr(y_true), _arr(y_pred))))


# ---------------------------------------------------------------------------
# lookup


_METRICS: dict[str, Metric] = {
    f.__name__: f
    for f in (
        accuracy,
        false_negatives,
        false_positives,
        mean_absolute_error,
        mean_squared_error,
        precision,
        recall,
        sensitivity,
        specificity,
        top_k_categorical_accuracy,
        true_negatives,
        true_positives,
    )
}


def names() -> list[str]:
    """The names `get` resolves, sorted."""
    return sorted(_METRICS)


def get(name: str) -> Metric:
    """The metric function called `name` (e.g. "accuracy")."""
    if not isinstance(name, str) or name not in _METRICS:
        raise OptionError(f"unknown metric {name!r}; expected one of {', '.join(names())}")
    return _METRICS[name]


# ---------------------------------------------------------------------------
# accumulators


def _metric_fn(metric: str | Metric, combinator: str) -> Metric:
    if isinstance(metric, str):
        return get(metric)
    if callable(metric):
        return metric
    raise OptionError(
        f"{combinator}: expected a metric name (one of {', '.join(names())}) or a function, "
        f"got {metric!r}"
    )


def _observe(fn: Metric, inputs: Sequence[Any], combinator: str) -> Any:
    if not isinstance(inputs, (list, tuple)):
        raise OptionError(
            f"{combinator}: the metric inputs must be a list of arguments such as "
            f"[y_true, y_pred], got {type(inputs).__name__}"
        )
    return fn(*inputs)


def running_average(metric: str | Metric) -> Update:
    """An update `(avg, [y_true, y_pred], i) -> (avg * i + metric(y_true, y_pred)) / (i + 1)`.

    `i` is the number of observations already averaged (0 for the first batch), so
    starting from any `avg` the result after n batches is their plain mean. Axon's
    loops start the state at an f32 0.0; the result is f32.
    """
    fn = _metric_fn(metric, "running_average")

    def update(avg: Any, inputs: Sequence[Any], iteration: Any) -> Any:
        obs = _observe(fn, inputs, "running_average")
        total = anp.add(anp.multiply(avg, iteration), obs)
        return anp.divide(total, anp.add(iteration, 1))

    update.__name__ = f"running_average_{getattr(fn, '__name__', 'metric')}"
    return update


def running_sum(metric: str | Metric) -> Update:
    """An update `(total, [y_true, y_pred], i) -> total + metric(y_true, y_pred)`.

    `i` is accepted for the same signature as `running_average` and not used; the
    dtype follows the promotion of the state and the metric (an f32 state stays f32).
    """
    fn = _metric_fn(metric, "running_sum")

    def update(total: Any, inputs: Sequence[Any], iteration: Any) -> Any:
        return anp.add(total, _observe(fn, inputs, "running_sum"))

    update.__name__ = f"running_sum_{getattr(fn, '__name__', 'metric')}"
    return update
