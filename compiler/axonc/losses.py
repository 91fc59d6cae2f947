"""`ax.losses`: Axon.Losses (Axon 0.8), eager on arrays and traceable on symbolic tensors.

Every loss is written with `axonc.numpy`, so called on numpy arrays it computes at
once and returns numpy arrays, and called on traced tensors (inside a traced train
step) it records primitives. Names, options and defaults are Axon's: `reduction`
is "none" (the default), "mean" or "sum", and each loss reduces the per-element
values over the axis Axon does (see each docstring and the golden-file README).

Like Axon, `categorical_cross_entropy` / `binary_cross_entropy` switch to their
numerically stable from-logits path when `y_pred` is a traced tensor produced by a
`softmax` (last axis) / `sigmoid` layer, the counterpart of Axon's logits metadata.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from . import numpy as anp
from .errors import OptionError, ShapeError
from .ir import Axon
from .tracing import Tensor, apply

__all__ = [
    "REDUCTIONS",
    "apply_label_smoothing",
    "binary_cross_entropy",
    "build_loss_fn",
    "categorical_cross_entropy",
    "categorical_hinge",
    "combine",
    "connectionist_temporal_classification",
    "cosine_similarity",
    "get",
    "hinge",
    "huber",
    "kl_divergence",
    "label_smoothing",
    "log_cosh",
    "margin_ranking",
    "mean_absolute_error",
    "mean_squared_error",
    "names",
    "poisson",
    "soft_margin",
]

REDUCTIONS = ("none", "mean", "sum")
EPSILON = 1.0e-7
# A finite stand-in for log(0) in CTC: exp() of it is 0 and gradients stay finite.
_LOG_ZERO = -1.0e30

Loss = Callable[..., Any]


# ---------------------------------------------------------------------------
# helpers


def _check_reduction(reduction: Any, loss: str) -> str:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise OptionError(
            f"{loss}: reduction must be one of {', '.join(map(repr, REDUCTIONS))}, "
            f"got {reduction!r}"
        )
    return reduction


def _reduce(loss: Any, reduction: str) -> Any:
    """Axon's `reduction/2`: the mean or sum over every element, or the loss as is."""
    if reduction == "mean":
        return anp.mean(loss)
    if reduction == "sum":
        return anp.sum(loss)
    return loss


def _arr(x: Any) -> Any:
    """Traced tensors stay; anything else becomes a numpy array (lists: f32 / s32)."""
    return x if isinstance(x, Tensor) else anp.asarray(x)


def _fmt(shape: Sequence[Any]) -> str:
    dims = ["batch" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _elementwise(y_true: Any, y_pred: Any, loss: str) -> tuple[Any, Any]:
    """Both as arrays; a target shaped unlike the prediction is broadcast against it as Nx
    does (Axon does not check), with a warning naming both shapes (as PyTorch warns)."""
    y_true, y_pred = _arr(y_true), _arr(y_pred)
    st, sp = tuple(anp.shape(y_true)), tuple(anp.shape(y_pred))
    if len(st) != len(sp) or any(a != b and None not in (a, b) for a, b in zip(st, sp)):
        warnings.warn(
            f"{loss}: the target's shape {_fmt(st)} differs from the prediction's shape "
            f"{_fmt(sp)}; they are broadcast against each other as Axon (Nx) does, which is "
            "likely not what you want: give a target shaped like the prediction",
            UserWarning,
            stacklevel=3,
        )
    return y_true, y_pred


def _is_int(x: Any) -> bool:
    return np.dtype(x.dtype).kind in "biu"


def _static_dim(x: Any, axis: int, what: str, loss: str) -> int:
    dim = anp.shape(x)[axis]
    if dim is None:
        raise ShapeError(f"{loss}: the size of {what} (axis {axis}) must be static, got None")
    return int(dim)


def _same_shape(a: Any, b: Any, loss: str) -> None:
    sa, sb = anp.shape(a), anp.shape(b)
    compatible = len(sa) == len(sb) and all(
        x is None or y is None or x == y for x, y in zip(sa, sb)
    )
    if not compatible:
        raise ShapeError(
            f"{loss}: expected y_true and y_pred to have the same shape, "
            f"got {tuple(sa)} and {tuple(sb)}"
        )


def _logits_of(y_pred: Any, activation: str) -> Any:
    """The input of the `activation` layer that produced traced `y_pred`, else None.

    This is what Axon's logits metadata gives inside a defn: a softmax (over the
    last axis) or sigmoid output whose logits are known.
    """
    if not isinstance(y_pred, Tensor) or not isinstance(y_pred.graph.output, int):
        return None
    node = y_pred.graph.nodes[y_pred.graph.output]
    if node.op != activation or len(node.inputs) != 1:
        return None
    if activation == "softmax" and node.options.get("axis", -1) not in (-1, y_pred.ndim - 1):
        return None
    return Tensor(Axon(node.inputs[0], y_pred.graph.nodes), y_pred._trace)


def _log_softmax(x: Any) -> Any:
    """log(softmax(x)) over the last axis, as the log_softmax op: one LogSoftmax node, and
    a gradient cot - softmax * sum(cot) instead of one through the max shift."""
    return apply("log_softmax", [x], {"axis": -1})


def _log_sigmoid(x: Any) -> Any:
    """log(sigmoid(x)) = -softplus(-x) = min(x, 0) - log1p(exp(-|x|))."""
    return anp.subtract(anp.minimum(x, 0.0), anp.log1p(anp.exp(anp.negative(anp.abs(x)))))


def _take_last(values: Any, indices: Any) -> Any:
    """Nx.take_along_axis on the last axis with size-1 indices, as a one-hot select."""
    classes = _static_dim(values, -1, "the class axis", "take_along_axis")
    one_hot = anp.equal(indices, anp.arange(classes))
    return anp.sum(anp.where(one_hot, values, 0.0), axis=-1, keepdims=True)


def _xlogy(x: Any, y: Any) -> Any:
    """x * log(y), 0 where x == 0 (log of a safe operand there, so gradients stay finite)."""
    zero = anp.equal(x, 0)
    safe = anp.where(zero, anp.ones_like(y), y)
    return anp.where(zero, anp.zeros_like(safe), anp.multiply(x, anp.log(safe)))


def _logsumexp(terms: Sequence[Any]) -> Any:
    """log(sum(exp(t))) of same-shaped tensors, shifted by their maximum."""
    m = terms[0]
    for t in terms[1:]:
        m = anp.maximum(m, t)
    total = anp.exp(anp.subtract(terms[0], m))
    for t in terms[1:]:
        total = anp.add(total, anp.exp(anp.subtract(t, m)))
    return anp.add(m, anp.log(total))


# ---------------------------------------------------------------------------
# classification losses


def binary_cross_entropy(
    y_true: Any,
    y_pred: Any,
    *,
    reduction: str = "none",
    from_logits: bool = False,
    positive_weight: float | None = None,
    negative_weight: float | None = None,
) -> Any:
    """Binary cross-entropy, averaged over the last axis.

    With p = clip(y_pred, 1e-7, 1 - 1e-7):
    l = mean_last(-(y * log(p + 1e-7) + (1 - y) * log(1 - p + 1e-7))).
    `from_logits=True` (or y_pred traced out of a sigmoid layer) uses the logits x:
    l = mean_last(-y * log_sigmoid(x) - (1 - y) * log_sigmoid(-x)).
    With `positive_weight` / `negative_weight` (each defaults to 1.0 once either is
    given) every element is weighted by its class (negative_weight where y = 0,
    positive_weight where y = 1; for integer y_true exactly Axon's
    `Nx.take([neg, pos], y_true)`, for float y_true neg + (pos - neg) * y) and, as in
    Axon, the weighted mean is over every axis, giving one scalar even for "none".
    """
    name = "binary_cross_entropy"
    reduction = _check_reduction(reduction, name)
    y_true, y_pred = _arr(y_true), _arr(y_pred)
    _same_shape(y_true, y_pred, name)

    weights = None
    if positive_weight is not None or negative_weight is not None:
        pos = 1.0 if positive_weight is None else float(positive_weight)
        neg = 1.0 if negative_weight is None else float(negative_weight)
        if _is_int(y_true):
            weights = anp.take(np.asarray([neg, pos], np.float32), y_true)
        else:
            weights = anp.add(neg, anp.multiply(y_true, pos - neg))

    logits = _logits_of(y_pred, "sigmoid")
    if from_logits or logits is not None:
        if from_logits and logits is not None:
            warnings.warn(
                "binary_cross_entropy received from_logits=True but y_pred was produced by a "
                "sigmoid activation; using the sigmoid's input as the logits",
                stacklevel=2,
            )
        x = y_pred if logits is None else logits
        loss = anp.subtract(
            anp.negative(anp.multiply(y_true, _log_sigmoid(x))),
            anp.multiply(anp.subtract(1, y_true), _log_sigmoid(anp.negative(x))),
        )
    else:
        p = anp.clip(y_pred, EPSILON, 1 - EPSILON)
        pos_term = anp.multiply(y_true, anp.log(anp.add(p, EPSILON)))
        neg_term = anp.multiply(
            anp.subtract(1, y_true), anp.log(anp.add(anp.subtract(1, p), EPSILON))
        )
        loss = anp.negative(anp.add(pos_term, neg_term))

    if weights is not None:
        return _reduce(anp.mean(anp.multiply(weights, loss)), reduction)
    return _reduce(anp.mean(loss, axis=-1), reduction)


def categorical_cross_entropy(
    y_true: Any,
    y_pred: Any,
    *,
    reduction: str = "none",
    from_logits: bool = False,
    sparse: bool = False,
    class_weights: Sequence[float] | None = None,
) -> Any:
    """Categorical cross-entropy, summed over the last (class) axis.

    l = -sum_c y_c * log(p_c) (0 where y_c = 0). `sparse=True`: y_true holds class
    indices shaped like y_pred with a last axis of size 1 (rank-1 indices get one),
    l = -log(p[y]). `from_logits=True` (or y_pred traced out of a softmax layer over
    the last axis) uses log_softmax(logits) in place of log(p). `class_weights`
    (one per class) scales each sample by the weight of its class (argmax of y_true,
    or the sparse index); then "mean" is sum(w * l) / sum(w).
    """
    name = "categorical_cross_entropy"
    reduction = _check_reduction(reduction, name)
    if sparse:
        y_true, y_pred = _arr(y_true), _arr(y_pred)
    else:
        y_true, y_pred = _elementwise(y_true, y_pred, name)

    if sparse:
        if anp.ndim(y_true) < 2:
            y_true = anp.expand_dims(y_true, -1)
        if anp.shape(y_true)[-1] != 1:
            raise ShapeError(
                f"{name}: sparse target values must have size 1 in the last dimension, "
                f"got shape {tuple(anp.shape(y_true))}"
            )
        if not _is_int(y_true):
            raise ShapeError(f"{name}: sparse targets must be integer class indices")

    weights = None
    if class_weights is not None:
        w = np.asarray(class_weights, dtype=np.float32)
        classes = anp.shape(y_pred if sparse else y_true)[-1]
        if w.ndim != 1 or (classes is not None and w.shape[0] != classes):
            raise OptionError(
                f"{name}: expected class_weights to be a 1-dimensional list with one weight "
                f"per class ({classes}), got {list(class_weights)}"
            )
        index = anp.squeeze(y_true, -1) if sparse else anp.argmax(y_true, axis=-1)
        weights = anp.take(w, index)

    logits = _logits_of(y_pred, "softmax")
    if from_logits or logits is not None:
        if from_logits and logits is not None:
            warnings.warn(
                "categorical_cross_entropy received from_logits=True but y_pred was produced "
                "by a softmax activation; using the softmax's input as the logits",
                stacklevel=2,
            )
        log_p = _log_softmax(y_pred if logits is None else logits)
        if sparse:
            loss = anp.negative(anp.sum(_take_last(log_p, y_true), axis=-1))
        else:
            loss = anp.negative(anp.sum(anp.multiply(y_true, log_p), axis=-1))
    elif sparse:
        loss = anp.negative(anp.sum(anp.log(_take_last(y_pred, y_true)), axis=-1))
    else:
        loss = anp.negative(anp.sum(_xlogy(y_true, y_pred), axis=-1))

    if weights is None:
        return _reduce(loss, reduction)
    weighted = anp.multiply(weights, loss)
    if reduction == "mean":
        return anp.divide(anp.sum(weighted), anp.sum(weights))
    return _reduce(weighted, reduction)


def categorical_hinge(y_true: Any, y_pred: Any, *, reduction: str = "none") -> Any:
    """Categorical hinge, one value per sample (the last axis is reduced).

    l = max(0, 1 + max_c((1 - y_c) * p_c) - sum_c(y_c * p_c)).
    """
    reduction = _check_reduction(reduction, "categorical_hinge")
    y_true, y_pred = _elementwise(y_true, y_pred, "categorical_hinge")
    neg = anp.max(anp.multiply(anp.subtract(1, y_true), y_pred), axis=-1)
    pos = anp.sum(anp.multiply(y_true, y_pred), axis=-1)
    loss = anp.maximum(anp.add(anp.subtract(neg, pos), 1), 0)
    return _reduce(loss, reduction)


def hinge(y_true: Any, y_pred: Any, *, reduction: str = "none") -> Any:
    """Hinge loss for targets in {-1, 1}: l = mean_last(max(0, 1 - y * p))."""
    reduction = _check_reduction(reduction, "hinge")
    y_true, y_pred = _elementwise(y_true, y_pred, "hinge")
    loss = anp.maximum(anp.subtract(1, anp.multiply(y_true, y_pred)), 0)
    return _reduce(anp.mean(loss, axis=-1), reduction)


def soft_margin(y_true: Any, y_pred: Any, *, reduction: str = "none") -> Any:
    """Soft margin loss, summed over axis 0 (the batch axis, as Axon does).

    l = sum_axis0(log(1 + exp(-y * p))).
    """
    reduction = _check_reduction(reduction, "soft_margin")
    y_true, y_pred = _elementwise(y_true, y_pred, "soft_margin")
    loss = anp.log1p(anp.exp(anp.multiply(anp.negative(y_true), y_pred)))
    return _reduce(anp.sum(loss, axis=0), reduction)


def margin_ranking(
    y_true: Any, y_pred: tuple[Any, Any], *, margin: float = 0.0, reduction: str = "none"
) -> Any:
    """Margin ranking loss of a pair of predictions, element-wise.

    y_pred = (p1, p2); l = max(0, -y * (p1 - p2) + margin).
    """
    name = "margin_ranking"
    reduction = _check_reduction(reduction, name)
    if not isinstance(y_pred, (tuple, list)) or len(y_pred) != 2:
        raise ShapeError(f"{name}: y_pred must be a pair (y_pred1, y_pred2)")
    y_true, p1, p2 = _arr(y_true), _arr(y_pred[0]), _arr(y_pred[1])
    loss = anp.multiply(anp.subtract(p1, p2), anp.negative(y_true))
    return _reduce(anp.maximum(anp.add(loss, float(margin)), 0), reduction)


def cosine_similarity(
    y_true: Any,
    y_pred: Any,
    *,
    axes: int | Sequence[int] = (1,),
    eps: float = 1.0e-6,
    reduction: str = "none",
) -> Any:
    """Cosine similarity over `axes` (default axis 1); Axon returns +cos, not 1 - cos.

    l = sum(y * p) / max(||y|| * ||p||, eps), norms are L2 over `axes`.
    """
    reduction = _check_reduction(reduction, "cosine_similarity")
    y_true, y_pred = _arr(y_true), _arr(y_pred)
    axis = (axes,) if isinstance(axes, int) else tuple(axes)
    w12 = anp.sum(anp.multiply(y_true, y_pred), axis=axis)
    w1 = anp.sqrt(anp.sum(anp.square(y_true), axis=axis))
    w2 = anp.sqrt(anp.sum(anp.square(y_pred), axis=axis))
    loss = anp.divide(w12, anp.maximum(anp.multiply(w1, w2), float(eps)))
    return _reduce(loss, reduction)


# ---------------------------------------------------------------------------
# distribution and regression losses


def kl_divergence(y_true: Any, y_pred: Any, *, reduction: str = "none") -> Any:
    """Kullback-Leibler divergence, summed over the last axis.

    With both clipped to [1e-7, 1]: l = sum_last(y * log(y / p)).
    """
    reduction = _check_reduction(reduction, "kl_divergence")
    y, p = _elementwise(y_true, y_pred, "kl_divergence")
    y, p = anp.clip(y, EPSILON, 1), anp.clip(p, EPSILON, 1)
    loss = anp.sum(anp.multiply(anp.log(anp.divide(y, p)), y), axis=-1)
    return _reduce(loss, reduction)


def log_cosh(y_true: Any, y_pred: Any, *, reduction: str = "none") -> Any:
    """Log-cosh, averaged over the last axis.

    With x = p - y: l = mean_last(log(cosh(x))), computed as |x| + log1p(exp(-2|x|)) - log 2
    (Axon's x + log1p(exp(-2x)) - log 2 in the form that does not overflow for x << 0).
    """
    reduction = _check_reduction(reduction, "log_cosh")
    y, p = _elementwise(y_true, y_pred, "log_cosh")
    x = anp.abs(anp.subtract(p, y))
    loss = anp.add(x, anp.log1p(anp.exp(anp.multiply(x, -2.0))))
    return _reduce(anp.mean(anp.subtract(loss, math.log(2.0)), axis=-1), reduction)


def mean_absolute_error(y_true: Any, y_pred: Any, *, reduction: str = "none") -> Any:
    """Mean absolute error over the last axis: l = mean_last(|y - p|)."""
    reduction = _check_reduction(reduction, "mean_absolute_error")
    y, p = _elementwise(y_true, y_pred, "mean_absolute_error")
    loss = anp.abs(anp.subtract(y, p))
    return _reduce(anp.mean(loss, axis=-1), reduction)


def mean_squared_error(y_true: Any, y_pred: Any, *, reduction: str = "none") -> Any:
    """Mean squared error over the last axis: l = mean_last((y - p)^2)."""
    reduction = _check_reduction(reduction, "mean_squared_error")
    y, p = _elementwise(y_true, y_pred, "mean_squared_error")
    loss = anp.square(anp.subtract(y, p))
    return _reduce(anp.mean(loss, axis=-1), reduction)


def poisson(y_true: Any, y_pred: Any, *, reduction: str = "none") -> Any:
    """Poisson negative log-likelihood (without log y!), averaged over the last axis.

    l = mean_last(p - y * log(p + 1e-7)).
    """
    reduction = _check_reduction(reduction, "poisson")
    y, p = _elementwise(y_true, y_pred, "poisson")
    loss = anp.subtract(p, anp.multiply(y, anp.log(anp.add(p, EPSILON))))
    return _reduce(anp.mean(loss, axis=-1), reduction)


def huber(y_true: Any, y_pred: Any, *, delta: float = 1.0, reduction: str = "none") -> Any:
    """Huber loss, element-wise ("none" keeps the full shape).

    With a = |p - y|: l = 0.5 * a^2 where a <= delta, else delta * a - 0.5 * delta^2.
    """
    reduction = _check_reduction(reduction, "huber")
    delta = float(delta)
    y, p = _elementwise(y_true, y_pred, "huber")
    a = anp.abs(anp.subtract(p, y))
    quadratic = anp.multiply(anp.square(a), 0.5)
    linear = anp.subtract(anp.multiply(a, delta), 0.5 * delta * delta)
    return _reduce(anp.where(anp.less_equal(a, delta), quadratic, linear), reduction)


# ---------------------------------------------------------------------------
# sequence loss


def connectionist_temporal_classification(
    y_true: tuple[Any, Any], y_pred: Any, *, blank: int = 0, reduction: str = "none"
) -> Any:
    """CTC negative log-likelihood of target sequences under per-step log-probabilities.

    y_true = (l_true {B} target lengths, targets {B, S} class ids, padded past the
    length); y_pred {B, T, D} log-probabilities (e.g. log_softmax), T and S static.
    With the blank-extended target z = (blank, y1, blank, ..., yL, blank) and the
    forward variables alpha_t(s) = log-sum-exp of alpha_{t-1} at s, s-1 and (when
    z_s != blank and z_s != z_{s-2}) s-2, plus y_pred[t, z_s]:
    l = -log(exp(alpha_{T-1}(2L)) + exp(alpha_{T-1}(2L-1))).
    "mean" is mean(l / l_true) as in Axon; "sum" sums l. Axon adds 1e-7 inside each
    step's log, so it differs from this exact value by about 1e-5.
    """
    name = "connectionist_temporal_classification"
    reduction = _check_reduction(reduction, name)
    if not isinstance(y_true, (tuple, list)) or len(y_true) != 2:
        raise ShapeError(f"{name}: y_true must be the pair (l_true, targets)")
    lengths, targets, log_probs = _arr(y_true[0]), _arr(y_true[1]), _arr(y_pred)
    if anp.ndim(targets) != 2 or anp.ndim(log_probs) != 3 or anp.ndim(lengths) != 1:
        raise ShapeError(
            f"{name}: expected l_true {{B}}, targets {{B, S}} and y_pred {{B, T, D}}, got "
            f"shapes {tuple(anp.shape(lengths))}, {tuple(anp.shape(targets))} and "
            f"{tuple(anp.shape(log_probs))}"
        )
    if not (_is_int(targets) and _is_int(lengths)):
        raise ShapeError(f"{name}: l_true and targets must be integer tensors")
    s = _static_dim(targets, 1, "the target length S", name)
    steps = _static_dim(log_probs, 1, "the time axis T", name)
    classes = _static_dim(log_probs, 2, "the class axis D", name)
    if s > steps:
        raise ShapeError(
            f"{name}: the target length S = {s} exceeds the sequence length T = {steps}"
        )

    blanks = anp.full_like(targets, int(blank))
    ext = anp.reshape(anp.stack([blanks, targets], axis=2), (-1, 2 * s))
    ext = anp.concatenate([ext, blanks[:, :1]], axis=1)  # {B, S'}, S' = 2S + 1
    width = 2 * s + 1

    # log-probability of each extended label at each step: {B, T, S'}
    one_hot = anp.equal(anp.expand_dims(ext, -1), anp.arange(classes))  # {B, S', D}
    picked = anp.where(
        anp.expand_dims(one_hot, 1), anp.expand_dims(log_probs, 2), 0.0
    )  # {B, T, S', D}
    emit = anp.sum(picked, axis=-1)

    ext_prev2 = anp.concatenate([anp.full_like(ext[:, :2], -1), ext[:, :-2]], axis=1)
    can_skip = anp.logical_and(anp.not_equal(ext, int(blank)), anp.not_equal(ext, ext_prev2))
    position = anp.arange(width)

    def shifted(alpha: Any, k: int) -> Any:
        return anp.concatenate([anp.full_like(alpha[:, :k], _LOG_ZERO), alpha[:, :-k]], axis=1)

    alpha = anp.where(anp.less(position, 2), emit[:, 0, :], _LOG_ZERO)
    for t in range(1, steps):
        skip = anp.where(can_skip, shifted(alpha, 2), _LOG_ZERO)
        alpha = anp.add(_logsumexp([alpha, shifted(alpha, 1), skip]), emit[:, t, :])

    end = anp.expand_dims(anp.multiply(lengths, 2), -1)  # {B, 1}
    last = anp.logical_or(anp.equal(position, end), anp.equal(position, anp.subtract(end, 1)))
    final = anp.where(last, alpha, _LOG_ZERO)
    top = anp.max(final, axis=1, keepdims=True)
    total = anp.sum(anp.exp(anp.subtract(final, top)), axis=1)
    loss = anp.negative(anp.add(anp.squeeze(top, 1), anp.log(total)))

    if reduction == "mean":
        return anp.mean(anp.divide(loss, lengths))
    return _reduce(loss, reduction)


# ---------------------------------------------------------------------------
# modifiers


def apply_label_smoothing(y_true: Any, y_pred: Any, *, smoothing: float = 0.1) -> Any:
    """Shrink targets towards uniform: y * (1 - smoothing) + smoothing / C.

    C is the size of y_pred's axis 1 (Axon's choice); both need rank >= 2.
    """
    name = "apply_label_smoothing"
    y_true, y_pred = _arr(y_true), _arr(y_pred)
    for what, x in (("y_true", y_true), ("y_pred", y_pred)):
        if anp.ndim(x) < 2:
            raise ShapeError(f"{name}: {what} must have rank >= 2, got shape {anp.shape(x)}")
    classes = _static_dim(y_pred, 1, "the class axis", name)
    s = float(smoothing)
    return anp.add(anp.multiply(y_true, 1 - s), s / classes)


def label_smoothing(loss_fn: Loss, *, smoothing: float = 0.1) -> Loss:
    """`loss_fn` applied to label-smoothed targets (see `apply_label_smoothing`)."""
    if not callable(loss_fn):
        raise OptionError(f"label_smoothing: expected a loss function, got {loss_fn!r}")

    def smoothed(y_true: Any, y_pred: Any) -> Any:
        return loss_fn(apply_label_smoothing(y_true, y_pred, smoothing=smoothing), y_pred)

    smoothed.__name__ = f"label_smoothed_{getattr(loss_fn, '__name__', 'loss')}"
    return smoothed


# ---------------------------------------------------------------------------
# lookup and multi-output losses

_LOSSES: dict[str, Loss] = {
    f.__name__: f
    for f in (
        binary_cross_entropy,
        categorical_cross_entropy,
        categorical_hinge,
        connectionist_temporal_classification,
        cosine_similarity,
        hinge,
        huber,
        kl_divergence,
        log_cosh,
        margin_ranking,
        mean_absolute_error,
        mean_squared_error,
        poisson,
        soft_margin,
    )
}


def names() -> list[str]:
    """The names `get` resolves, sorted."""
    return sorted(_LOSSES)


def get(name: str) -> Loss:
    """The loss function called `name` (e.g. "categorical_cross_entropy")."""
    if not isinstance(name, str) or name not in _LOSSES:
        raise OptionError(f"unknown loss {name!r}; expected one of {', '.join(names())}")
    return _LOSSES[name]


def build_loss_fn(loss: Any) -> Loss:
    """A `loss(y_true, y_pred)` from what Axon's trainer accepts (Axon.Loop's build_loss_fn).

    A name gives that loss with reduction "mean"; a callable is used as is; a list of
    (loss, weight) pairs (or a dict of them keyed like a dict output) gives the weighted
    multi-output loss of `combine`.
    """
    if isinstance(loss, str):
        fn = get(loss)

        def named(y_true: Any, y_pred: Any) -> Any:
            return fn(y_true, y_pred, reduction="mean")

        named.__name__ = loss
        return named
    if callable(loss):
        return loss
    if isinstance(loss, (list, tuple, Mapping)) and loss:
        return combine(loss)
    raise OptionError(
        f"invalid loss {loss!r}: expected a loss name (one of {', '.join(names())}), a "
        "function loss(y_true, y_pred), or a list of (loss, weight) pairs for multi-output models"
    )


def _pair(entry: Any, where: str) -> tuple[Loss, float]:
    if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
        raise OptionError(f"combine: {where} must be a (loss, weight) pair, got {entry!r}")
    fn, weight = entry
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise OptionError(f"combine: the weight of {where} must be a number, got {weight!r}")
    if isinstance(fn, (list, tuple, Mapping)):
        raise OptionError(f"combine: {where} must be a single loss, not a container")
    return build_loss_fn(fn), float(weight)


def _elements(value: Any, keys: Sequence[Any], what: str) -> list[Any]:
    """The elements of a target or prediction container that the loss pairs use."""
    if isinstance(keys[0], str):
        if not isinstance(value, Mapping) or any(k not in value for k in keys):
            got = sorted(value) if isinstance(value, Mapping) else type(value).__name__
            raise ShapeError(
                f"combined loss: {what} must be a dict with the keys {list(keys)}, got {got}"
            )
        return [value[k] for k in keys]
    if not isinstance(value, (tuple, list)) or len(value) < len(keys):
        got = type(value).__name__ + (
            f" of {len(value)}" if isinstance(value, (tuple, list)) else ""
        )
        raise ShapeError(
            f"combined loss: {what} must be a tuple/list of at least {len(keys)} outputs (one "
            f"per (loss, weight) pair), got {got}"
        )
    return [value[k] for k in keys]


def combine(losses: Sequence[tuple[Any, float]] | Mapping[str, tuple[Any, float]]) -> Loss:
    """Weighted sum of per-output losses for a model with several outputs (Axon's loss list).

    `losses[i] = (loss_i, weight_i)` applies to output i and target i, by position as
    Axon pairs them (`elem(y_true, i)`, `elem(y_pred, i)`; outputs past the list are not
    part of the loss): sum_i weight_i * loss_i(y_true[i], y_pred[i]). A loss given by name
    uses reduction "mean" (as Axon's trainer does). A dict {key: (loss, weight)} pairs by
    key with a dict output and target instead.
    """
    if not isinstance(losses, (list, tuple, Mapping)) or not losses:
        raise OptionError("combine: expected a non-empty list of (loss, weight) pairs")
    if isinstance(losses, Mapping):
        keys: list[Any] = [str(k) for k in losses]
        pairs = [_pair(v, f"entry {k!r}") for k, v in losses.items()]
    else:
        keys = list(range(len(losses)))
        pairs = [_pair(v, f"entry {i}") for i, v in enumerate(losses)]

    def combined(y_true: Any, y_pred: Any) -> Any:
        trues = _elements(y_true, keys, "y_true")
        preds = _elements(y_pred, keys, "y_pred")
        total: Any = None
        for (fn, weight), yt, yp in zip(pairs, trues, preds):
            term = anp.multiply(fn(yt, yp), weight)
            total = term if total is None else anp.add(total, term)
        return total

    return combined
