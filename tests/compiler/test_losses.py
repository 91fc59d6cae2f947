"""ax.losses: real-Axon golden values, independent formulas, eager vs traced, reductions, errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import axonc as ax
from axonc import losses as L
from axonc.autodiff import tensor_of
from axonc.dtypes import TensorType
from axonc.errors import OptionError, ShapeError
from axonc.interpreter import run
from axonc.ir import Axon
from axonc.tracing import apply, trace
from tests import golden

RTOL, ATOL = 1e-5, 1e-6
RNG = np.random.default_rng(7)


def f32(x):
    return np.asarray(x, dtype=np.float32)


def close(actual, expected, rtol=RTOL, atol=ATOL):
    actual = np.asarray(actual)
    assert actual.shape == np.shape(expected)
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------
# golden files (real Axon 0.8.1); the calls mirror each file's elixir_code

W5 = [1.0, 2.0, 0.5, 1.5, 3.0]


def _cce_softmax_in_same_defn(i):
    """Axon's variant where softmax runs inside the same defn (logits metadata)."""
    body = trace(
        lambda yt, lg: L.categorical_cross_entropy(
            yt, apply("softmax", [lg], {"axis": -1}), reduction="mean"
        ),
        [TensorType((None, 5)), TensorType((None, 5))],
    )
    return run(body, {}, {}, args=[i["y_true"], i["logits"]])[0]


def _ctc(reduction):
    return lambda i: L.connectionist_temporal_classification(
        (i["l_true"], i["y_true"]), i["y_pred"], reduction=reduction
    )


def _plain(fn, reduction):
    return lambda i: fn(i["y_true"], i["y_pred"], reduction=reduction)


GOLDEN_CALLS = {
    "loss_categorical_cross_entropy": {
        "mean": _plain(L.categorical_cross_entropy, "mean"),
        "sum": _plain(L.categorical_cross_entropy, "sum"),
        "none": lambda i: L.categorical_cross_entropy(i["y_true"], i["y_pred"]),
        "sparse_mean": lambda i: L.categorical_cross_entropy(
            i["y_true_sparse"], i["y_pred"], sparse=True, reduction="mean"
        ),
        "from_logits_mean": lambda i: L.categorical_cross_entropy(
            i["y_true"], i["logits"], from_logits=True, reduction="mean"
        ),
        "sparse_from_logits_mean": lambda i: L.categorical_cross_entropy(
            i["y_true_sparse"], i["logits"], sparse=True, from_logits=True, reduction="mean"
        ),
        "class_weights_mean": lambda i: L.categorical_cross_entropy(
            i["y_true"], i["y_pred"], class_weights=W5, reduction="mean"
        ),
        "class_weights_none": lambda i: L.categorical_cross_entropy(
            i["y_true"], i["y_pred"], class_weights=W5
        ),
        "softmax_in_same_defn_mean": _cce_softmax_in_same_defn,
    },
    "loss_connectionist_temporal_classification": {r: _ctc(r) for r in ("none", "sum", "mean")},
    "loss_hinge": {r: _plain(L.hinge, r) for r in ("mean", "none")},
    "loss_kl_divergence": {r: _plain(L.kl_divergence, r) for r in ("mean", "none")},
    "loss_log_cosh": {r: _plain(L.log_cosh, r) for r in ("mean", "none")},
    "loss_mean_absolute_error": {
        r: _plain(L.mean_absolute_error, r) for r in ("mean", "sum", "none")
    },
    "loss_poisson": {r: _plain(L.poisson, r) for r in ("mean", "none")},
    "loss_label_smoothing": {
        "cce_mean_smoothing0.1": lambda i: L.label_smoothing(
            lambda yt, yp: L.categorical_cross_entropy(yt, yp, reduction="mean"), smoothing=0.1
        )(i["y_true"], i["y_pred"]),
        "apply_label_smoothing_0.1": lambda i: L.apply_label_smoothing(
            i["y_true"], i["y_pred"], smoothing=0.1
        ),
    },
}

GOLDEN_VARIANTS = [(case, v) for case, calls in GOLDEN_CALLS.items() for v in calls]


def test_every_loss_golden_file_and_variant_is_checked():
    files = set(golden.case_names("loss_"))
    assert files == set(GOLDEN_CALLS)
    for case in files:
        assert set(golden.load(case)["outputs"]) == set(GOLDEN_CALLS[case]), case


@pytest.mark.parametrize(
    ("case", "variant"), GOLDEN_VARIANTS, ids=[f"{c}-{v}" for c, v in GOLDEN_VARIANTS]
)
def test_matches_axon_golden(case, variant):
    inputs, outputs = golden.io(case)
    tol = 1e-4 if "temporal" in case else RTOL
    golden.assert_tree_close(GOLDEN_CALLS[case][variant](inputs), outputs[variant], tol, ATOL)


# ---------------------------------------------------------------------------
# independent formulas (explicit float64 loops) and Axon's documented examples

Y01 = f32([[0, 1, 1], [1, 0, 0], [1, 1, 0], [0, 0, 1]])
LOGITS = f32(RNG.normal(size=(4, 3)) * 2)
PROBS = f32(1 / (1 + np.exp(-LOGITS.astype(np.float64))))
PM1 = f32([[1, -1, 1], [-1, -1, 1], [1, 1, -1], [-1, 1, 1]])
A = f32(RNG.normal(size=(4, 3)))
B = f32(RNG.normal(size=(4, 3)) * 2)


def _rows(fn, *arrays):
    return np.array([fn(*rows) for rows in zip(*(np.asarray(a, np.float64) for a in arrays))])


def test_bce_probability_path_is_the_clipped_mean_over_the_last_axis():
    def row(y, p):
        total = 0.0
        for yi, pi in zip(y, p):
            pc = min(max(pi, 1e-7), 1 - 1e-7)
            total += -(yi * math.log(pc + 1e-7) + (1 - yi) * math.log(1 - pc + 1e-7))
        return total / len(y)

    close(L.binary_cross_entropy(Y01, PROBS), _rows(row, Y01, PROBS))


def test_bce_clips_saturated_probabilities():
    out = L.binary_cross_entropy(f32([[1.0, 0.0]]), f32([[0.0, 1.0]]))
    assert np.isfinite(out).all()
    upper = float(np.float32(1 - 1e-7))  # the clip bound as an f32, as in Nx
    close(out, [(-math.log(2e-7) - math.log(1 - upper + 1e-7)) / 2], rtol=1e-4)


def test_bce_from_logits_is_the_sigmoid_cross_entropy():
    def row(y, x):
        return np.mean(
            [
                yi * math.log1p(math.exp(-xi)) + (1 - yi) * math.log1p(math.exp(xi))
                for yi, xi in zip(y, x)
            ]
        )

    close(L.binary_cross_entropy(Y01, LOGITS, from_logits=True), _rows(row, Y01, LOGITS))


def test_bce_axon_documented_values():
    y = np.array([[0, 1], [1, 0], [1, 0]], np.int32)
    p = f32([[0.6811, 0.5565], [0.6551, 0.4551], [0.5422, 0.2648]])
    close(
        L.binary_cross_entropy(y, p), [0.8644826412200928, 0.5150600075721741, 0.45986634492874146]
    )
    close(L.binary_cross_entropy(y, p, reduction="mean"), 0.613136351108551)
    close(L.binary_cross_entropy(y, p, reduction="sum"), 1.8394089937210083)


@pytest.mark.parametrize(("pos", "neg"), [(2.0, None), (None, 0.5), (3.0, 0.25)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bce_class_weights_give_one_weighted_mean(pos, neg, reduction):
    y = Y01.astype(np.int32)
    per_elem = np.where(
        y == 1,
        -np.log(np.clip(PROBS, 1e-7, 1 - 1e-7).astype(np.float64) + 1e-7),
        -np.log(1 - np.clip(PROBS, 1e-7, 1 - 1e-7).astype(np.float64) + 1e-7),
    )
    w = np.where(y == 1, 1.0 if pos is None else pos, 1.0 if neg is None else neg)
    out = L.binary_cross_entropy(
        y, PROBS, positive_weight=pos, negative_weight=neg, reduction=reduction
    )
    close(out, np.mean(w * per_elem))
    float_targets = L.binary_cross_entropy(
        Y01, PROBS, positive_weight=pos, negative_weight=neg, reduction=reduction
    )
    close(float_targets, np.mean(w * per_elem))


def test_cce_formula_and_sparse_and_rank1_sparse_indices():
    classes = np.array([2, 0, 1, 2])
    probs = f32(np.exp(LOGITS) / np.exp(LOGITS).sum(-1, keepdims=True))
    expected = np.array([-math.log(float(probs[b, c])) for b, c in enumerate(classes)])
    one_hot = f32(np.eye(3)[classes])
    close(L.categorical_cross_entropy(one_hot, probs), expected)
    close(
        L.categorical_cross_entropy(classes[:, None].astype(np.int32), probs, sparse=True), expected
    )
    close(L.categorical_cross_entropy(classes.astype(np.int32), probs, sparse=True), expected)


def test_cce_ignores_zero_targets_on_zero_probabilities():
    out = L.categorical_cross_entropy(f32([[0, 1, 0]]), f32([[0.0, 1.0, 0.0]]))
    close(out, [0.0])


def test_cce_axon_documented_values():
    y = np.array([[0, 1, 0], [0, 0, 1]], np.int8)
    p = f32([[0.05, 0.95, 0], [0.1, 0.8, 0.1]])
    close(L.categorical_cross_entropy(y, p), [0.051293306052684784, 2.3025851249694824])
    close(L.categorical_cross_entropy(y, p, reduction="sum"), 2.3538784980773926)
    idx = np.array([1, 2], np.int8)
    close(L.categorical_cross_entropy(idx, p, reduction="sum", sparse=True), 2.3538784980773926)


def test_cce_sparse_class_weights_weight_by_the_index():
    classes = np.array([[2], [0], [1], [2]], np.int32)
    w = [0.5, 2.0, 4.0]
    probs = f32(np.exp(LOGITS) / np.exp(LOGITS).sum(-1, keepdims=True))
    loss = np.array([-math.log(float(probs[b, c])) for b, c in enumerate(classes[:, 0])])
    sw = np.array([w[c] for c in classes[:, 0]])
    close(L.categorical_cross_entropy(classes, probs, sparse=True, class_weights=w), sw * loss)
    close(
        L.categorical_cross_entropy(classes, probs, sparse=True, class_weights=w, reduction="mean"),
        (sw * loss).sum() / sw.sum(),
    )


def test_categorical_hinge_formula_and_axon_values():
    def row(y, p):
        neg = max((1 - yi) * pi for yi, pi in zip(y, p))
        pos = sum(yi * pi for yi, pi in zip(y, p))
        return max(0.0, neg - pos + 1)

    close(L.categorical_hinge(Y01, B), _rows(row, Y01, B))
    y = np.array([[1, 0, 0], [0, 0, 1]], np.int8)
    p = f32([[0.05300799, 0.21617081, 0.68642382], [0.3754382, 0.08494169, 0.13442067]])
    close(L.categorical_hinge(y, p), [1.6334158182144165, 1.2410175800323486])
    close(L.categorical_hinge(y, p, reduction="mean"), 1.4372167587280273)


def test_hinge_formula():
    close(
        L.hinge(PM1, B),
        _rows(lambda y, p: np.mean([max(0, 1 - a * b) for a, b in zip(y, p)]), PM1, B),
    )


def test_soft_margin_sums_over_the_batch_axis():
    expected = [
        sum(math.log1p(math.exp(-float(PM1[b, j]) * float(B[b, j]))) for b in range(4))
        for j in range(3)
    ]
    close(L.soft_margin(PM1, B), expected)
    y = f32([[-1.0, 1.0, 1.0]])
    p = f32([[0.2953, -0.1709, 0.9486]])
    close(L.soft_margin(y, p), [0.851658046245575, 0.7822436094284058, 0.3273470401763916])
    close(L.soft_margin(y, p, reduction="sum"), 1.9612486362457275)


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_margin_ranking(margin):
    y = f32([1.0, -1.0, 1.0, -1.0])
    p1, p2 = A[:, 0], A[:, 1]
    expected = [max(0.0, -float(y[i]) * (float(p1[i]) - float(p2[i])) + margin) for i in range(4)]
    close(L.margin_ranking(y, (p1, p2), margin=margin), expected)


def test_margin_ranking_axon_values():
    y = f32([1.0, 1.0, 1.0])
    pair = (f32([0.6934, -0.7239, 1.1954]), f32([-0.4691, 0.2670, -1.7452]))
    close(L.margin_ranking(y, pair), [0.0, 0.9909000396728516, 0.0])
    close(L.margin_ranking(y, pair, reduction="mean"), 0.3303000032901764)


def test_cosine_similarity_is_plus_cos_on_axis_1():
    expected = [
        float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
        for a, b in zip(A.astype(np.float64), B.astype(np.float64))
    ]
    close(L.cosine_similarity(A, B), expected)
    close(
        L.cosine_similarity(f32([[0.0, 1.0], [1.0, 1.0]]), f32([[1.0, 0.0], [1.0, 1.0]])),
        [0.0, 1.0],
    )


def test_cosine_similarity_axes_and_eps():
    x = f32(RNG.normal(size=(2, 3, 4)))
    y = f32(RNG.normal(size=(2, 3, 4)))
    xd, yd = x.astype(np.float64), y.astype(np.float64)
    expected = [
        (xd[b] * yd[b]).sum() / (np.sqrt((xd[b] ** 2).sum()) * np.sqrt((yd[b] ** 2).sum()))
        for b in range(2)
    ]
    close(L.cosine_similarity(x, y, axes=[1, 2]), expected)
    close(L.cosine_similarity(x, y, axes=2).shape, (2, 3))
    zeros = np.zeros((2, 3), np.float32)
    close(L.cosine_similarity(zeros, zeros, eps=0.5), [0.0, 0.0])


def test_mean_squared_error_formula_and_axon_values():
    close(
        L.mean_squared_error(A, B),
        _rows(lambda a, b: np.mean([(x - y) ** 2 for x, y in zip(a, b)]), A, B),
    )
    y = f32([[0.0, 1.0], [0.0, 0.0]])
    p = f32([[1.0, 1.0], [1.0, 0.0]])
    close(L.mean_squared_error(y, p), [0.5, 0.5])
    close(L.mean_squared_error(y, p, reduction="sum"), 1.0)


def test_log_cosh_is_finite_where_axons_form_overflows():
    close(L.log_cosh(f32([[100.0]]), f32([[0.0]])), [100.0 - math.log(2.0)])
    close(
        L.log_cosh(A, B),
        _rows(lambda a, b: np.mean([math.log(math.cosh(y - x)) for x, y in zip(a, b)]), A, B),
    )


@pytest.mark.parametrize("delta", [1.0, 0.3])
def test_huber_is_elementwise(delta):
    def elem(y, p):
        a = abs(p - y)
        return 0.5 * a * a if a <= delta else delta * a - 0.5 * delta**2

    expected = np.vectorize(elem)(A.astype(np.float64), B.astype(np.float64))
    close(L.huber(A, B, delta=delta), expected)
    close(L.huber(A, B, delta=delta, reduction="mean"), expected.mean())
    y = f32([[1], [1.5], [2.0]])
    p = f32([[0.8], [1.8], [2.1]])
    close(L.huber(y, p), [[0.019999997690320015], [0.04499998688697815], [0.004999990575015545]])


def test_kl_divergence_clips_zero_targets():
    y = np.array([[0, 1], [0, 0]], np.uint8)
    p = f32([[0.6, 0.4], [0.4, 0.6]])
    close(L.kl_divergence(y, p), [0.916289210319519, -3.080907390540233e-6], atol=1e-6)


def test_poisson_formula():
    rate = f32(np.exp(B * 0.5))
    counts = f32(RNG.integers(0, 4, size=B.shape))
    close(
        L.poisson(counts, rate),
        _rows(
            lambda y, p: np.mean([pi - yi * math.log(pi + 1e-7) for yi, pi in zip(y, p)]),
            counts,
            rate,
        ),
    )


def _ctc_brute_force(log_probs, target, blank=0):
    """-log of the summed probability of every length-T path collapsing to `target`."""
    steps, classes = log_probs.shape
    total = 0.0
    for path in itertools.product(range(classes), repeat=steps):
        collapsed = [c for i, c in enumerate(path) if (i == 0 or c != path[i - 1]) and c != blank]
        if collapsed == list(target):
            total += math.exp(sum(float(log_probs[t, c]) for t, c in enumerate(path)))
    return -math.log(total)


@pytest.mark.parametrize("blank", [0, 2])
def test_ctc_equals_the_sum_over_all_alignments(blank):
    logits = RNG.normal(size=(3, 5, 3))
    log_probs = f32(logits - np.log(np.exp(logits).sum(-1, keepdims=True)))
    labels = [c for c in range(3) if c != blank]
    targets = np.array(
        [[labels[0], labels[1], 0], [labels[1], labels[1], 0], [labels[0], labels[0], labels[1]]],
        np.int32,
    )
    lengths = np.array([2, 2, 3], np.int32)
    expected = [_ctc_brute_force(log_probs[b], targets[b, : lengths[b]], blank) for b in range(3)]
    out = L.connectionist_temporal_classification((lengths, targets), log_probs, blank=blank)
    close(out, expected, rtol=1e-4)
    close(
        L.connectionist_temporal_classification(
            (lengths, targets), log_probs, blank=blank, reduction="mean"
        ),
        np.mean(np.array(expected) / lengths),
        rtol=1e-4,
    )


def test_apply_label_smoothing_uses_axis_1_classes():
    y = f32(np.eye(4)[[0, 3]])
    close(L.apply_label_smoothing(y, y, smoothing=0.2), y * 0.8 + 0.05)
    close(L.apply_label_smoothing(y, y), y * 0.9 + 0.025)


# ---------------------------------------------------------------------------
# every reduction: "mean"/"sum" are the mean/sum of the "none" values

POS = f32(RNG.uniform(0.05, 0.95, size=(4, 3)))
CTC_ARGS = (
    (np.array([2, 1], np.int32), np.array([[1, 2], [3, 0]], np.int32)),
    f32(np.log(RNG.dirichlet(np.ones(4), size=(2, 5)))),
)

# name -> (call with keyword options, positional args)
CASES = {
    "binary_cross_entropy": (L.binary_cross_entropy, {}, (Y01, POS)),
    "binary_cross_entropy_from_logits": (L.binary_cross_entropy, {"from_logits": True}, (Y01, B)),
    "binary_cross_entropy_weighted": (
        L.binary_cross_entropy,
        {"positive_weight": 2.0, "negative_weight": 0.5},
        (Y01.astype(np.int32), POS),
    ),
    "categorical_cross_entropy": (L.categorical_cross_entropy, {}, (Y01, POS)),
    "categorical_cross_entropy_from_logits": (
        L.categorical_cross_entropy,
        {"from_logits": True},
        (Y01, B),
    ),
    "categorical_cross_entropy_sparse": (
        L.categorical_cross_entropy,
        {"sparse": True},
        (np.array([[0], [2], [1], [2]], np.int32), POS),
    ),
    "categorical_cross_entropy_sparse_from_logits": (
        L.categorical_cross_entropy,
        {"sparse": True, "from_logits": True},
        (np.array([[0], [2], [1], [2]], np.int32), B),
    ),
    "categorical_cross_entropy_class_weights": (
        L.categorical_cross_entropy,
        {"class_weights": [1.0, 2.0, 0.5]},
        (Y01, POS),
    ),
    "categorical_hinge": (L.categorical_hinge, {}, (Y01, B)),
    "hinge": (L.hinge, {}, (PM1, B)),
    "soft_margin": (L.soft_margin, {}, (PM1, B)),
    "margin_ranking": (L.margin_ranking, {"margin": 0.1}, (PM1[:, 0], (A[:, 0], B[:, 0]))),
    "cosine_similarity": (L.cosine_similarity, {}, (A, B)),
    "kl_divergence": (L.kl_divergence, {}, (POS, f32(POS[::-1]))),
    "log_cosh": (L.log_cosh, {}, (A, B)),
    "mean_absolute_error": (L.mean_absolute_error, {}, (A, B)),
    "mean_squared_error": (L.mean_squared_error, {}, (A, B)),
    "poisson": (L.poisson, {}, (Y01, POS)),
    "huber": (L.huber, {"delta": 0.5}, (A, B)),
    "connectionist_temporal_classification": (
        L.connectionist_temporal_classification,
        {},
        CTC_ARGS,
    ),
}
# losses whose "mean" is not the plain mean of the "none" values (checked above)
SPECIAL_MEAN = {
    "binary_cross_entropy_weighted",
    "categorical_cross_entropy_class_weights",
    "connectionist_temporal_classification",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_mean_and_sum_reduce_the_none_values(name):
    fn, opts, args = CASES[name]
    none = fn(*args, **opts)
    default = fn(*args, **opts, reduction="none")
    np.testing.assert_array_equal(none, default)
    assert np.asarray(none).dtype == np.float32
    close(fn(*args, **opts, reduction="sum"), np.sum(np.asarray(none, np.float64)))
    if name not in SPECIAL_MEAN:
        close(fn(*args, **opts, reduction="mean"), np.mean(np.asarray(none, np.float64)))


def test_class_weighted_mean_divides_by_the_weight_sum():
    w = np.array([1.0, 2.0, 0.5])
    fn, opts, args = CASES["categorical_cross_entropy_class_weights"]
    plain = L.categorical_cross_entropy(*args)
    sw = w[np.argmax(Y01, axis=1)]
    close(fn(*args, **opts), sw * plain)
    close(fn(*args, **opts, reduction="mean"), (sw * plain).sum() / sw.sum())


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("reduction", L.REDUCTIONS)
def test_bad_reduction_is_an_option_error(name, reduction):
    fn, opts, args = CASES[name]
    with pytest.raises(OptionError, match="reduction must be one of"):
        fn(*args, **opts, reduction=reduction.upper())


# ---------------------------------------------------------------------------
# eager vs traced (dynamic batch)


def _types(value):
    if isinstance(value, tuple):
        return tuple(_types(v) for v in value)
    return TensorType((None, *value.shape[1:]), str(value.dtype))


def _leaves(value):
    return [leaf for v in value for leaf in _leaves(v)] if isinstance(value, tuple) else [value]


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("reduction", L.REDUCTIONS)
def test_traced_equals_eager(name, reduction):
    fn, opts, args = CASES[name]
    body = trace(lambda *a: fn(*a, **opts, reduction=reduction), [_types(a) for a in args])
    # losses are numpy primitives, plus the log_softmax op for logits (its fused gradient)
    allowed = ("argument", "constant", "log_softmax")
    assert all(n.op.startswith("np.") or n.op in allowed for n in body.nodes.values())
    traced, _ = run(body, {}, {}, args=[leaf for a in args for leaf in _leaves(a)])
    eager = fn(*args, **opts, reduction=reduction)
    assert np.asarray(traced).dtype == np.asarray(eager).dtype
    close(traced, np.asarray(eager, np.float64))


def test_traced_label_smoothing_and_combine_equal_eager():
    fn = L.combine([(L.label_smoothing(L.mean_squared_error, smoothing=0.2), 0.5), ("hinge", 2.0)])
    args = ((A, PM1), (B, B))
    body = trace(fn, [_types(a) for a in args])
    traced, _ = run(body, {}, {}, args=[A, PM1, B, B])
    close(traced, np.asarray(fn(*args), np.float64))


def test_ctc_needs_a_static_time_axis_when_traced():
    types = [
        (TensorType((None,), "s32"), TensorType((None, 2), "s32")),
        TensorType((None, None, 4)),
    ]
    with pytest.raises(ShapeError, match="time axis T"):
        trace(lambda y, p: L.connectionist_temporal_classification(y, p), types)


# ---------------------------------------------------------------------------
# logits metadata: a traced softmax / sigmoid output takes the from-logits path

SATURATED = f32([[1000.0, 0.0, -1000.0], [0.0, 1.0, 2.0], [3.0, -200.0, 1.0]])


def test_cce_on_a_traced_softmax_uses_its_logits():
    classes = [2, 0, 1]  # row 0 targets a class whose f32 softmax probability is 0
    y = f32(np.eye(3)[classes])
    body = trace(
        lambda yt, lg: L.categorical_cross_entropy(yt, apply("softmax", [lg], {"axis": -1})),
        [TensorType((None, 3)), TensorType((None, 3))],
    )
    assert "softmax" not in {n.op for n in body.nodes.values()}
    out, _ = run(body, {}, {}, args=[y, SATURATED])
    x = SATURATED.astype(np.float64)
    expected = [
        -(x[b, c] - x[b].max() - math.log(np.exp(x[b] - x[b].max()).sum()))
        for b, c in enumerate(classes)
    ]
    close(out, expected)
    with np.errstate(divide="ignore"):
        eager = L.categorical_cross_entropy(y, apply("softmax", [SATURATED], {"axis": -1}))
    assert np.isinf(eager).any()  # the probability path, as Axon's eager call


def test_bce_on_a_traced_sigmoid_uses_its_logits():
    y = f32([[1.0, 0.0, 1.0]])
    x = f32([[-200.0, 200.0, 0.5]])
    body = trace(
        lambda yt, lg: L.binary_cross_entropy(yt, apply("sigmoid", [lg], {})),
        [TensorType((None, 3)), TensorType((None, 3))],
    )
    out, _ = run(body, {}, {}, args=[y, x])
    close(out, [(200.0 + 200.0 + math.log1p(math.exp(-0.5))) / 3])


def test_from_logits_on_a_traced_sigmoid_warns_and_uses_its_input():
    y = f32([[1.0, 0.0]])
    x = f32([[0.3, -1.2]])
    with pytest.warns(UserWarning, match="from_logits"):
        body = trace(
            lambda yt, lg: L.binary_cross_entropy(yt, apply("sigmoid", [lg], {}), from_logits=True),
            [TensorType((None, 2)), TensorType((None, 2))],
        )
    out, _ = run(body, {}, {}, args=[y, x])
    close(out, L.binary_cross_entropy(y, x, from_logits=True))


def test_softmax_over_another_axis_keeps_the_probability_path():
    y = f32(np.eye(3))
    body = trace(
        lambda yt, lg: L.categorical_cross_entropy(yt, apply("softmax", [lg], {"axis": 0})),
        [TensorType((3, 3)), TensorType((3, 3))],
    )
    assert "softmax" in {n.op for n in body.nodes.values()}
    x = f32(RNG.normal(size=(3, 3)))
    e = np.exp(x.astype(np.float64))
    p = e / e.sum(0, keepdims=True)
    close(run(body, {}, {}, args=[y, x])[0], -np.log(np.diag(p)))


def test_loss_on_a_model_output_uses_the_softmax_logits():
    model = ax.input("x", (None, 4)).dense(3).softmax()
    state = ax.build(model, compiler="reference")[0](ax.template((1, 4)))
    target = ax.input("y", (None, 3))
    y_pred = tensor_of(model)
    y_true = tensor_of(target, trace=y_pred._trace)
    loss = L.categorical_cross_entropy(y_true, y_pred, reduction="mean")
    graph = Axon(loss.graph.output, loss.graph.nodes)
    x = f32(RNG.normal(size=(5, 4)) * 100)
    y = f32(np.eye(3)[[0, 1, 2, 0, 1]])
    value, _ = run(graph, {"x": x, "y": y}, state.data)
    logits = x.astype(np.float64) @ state.data["dense_0"]["kernel"] + state.data["dense_0"]["bias"]
    log_p = logits - logits.max(1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
    close(value, -(y * log_p).sum(1).mean(), rtol=1e-4)


# ---------------------------------------------------------------------------
# get / build_loss_fn / combine


def test_get_resolves_every_loss_by_name():
    for name in L.names():
        assert L.get(name) is getattr(L, name)
    assert "connectionist_temporal_classification" in L.names()


def test_get_unknown_name_lists_the_valid_ones():
    with pytest.raises(OptionError, match=r"unknown loss 'cross_entropy'.*mean_squared_error"):
        L.get("cross_entropy")


def test_build_loss_fn_name_means_reduction_mean():
    fn = L.build_loss_fn("mean_squared_error")
    close(fn(A, B), np.mean((A.astype(np.float64) - B) ** 2))
    custom = L.build_loss_fn(L.hinge)
    assert custom is L.hinge
    with pytest.raises(OptionError, match="invalid loss"):
        L.build_loss_fn(3)


def test_combine_is_the_weighted_sum_over_outputs():
    def hinge_sum(y, p):
        return L.hinge(y, p, reduction="sum")

    fn = L.combine([("mean_squared_error", 0.5), (hinge_sum, 2.0)])
    mse = np.mean((A.astype(np.float64) - B) ** 2)
    hinge = np.maximum(1 - PM1.astype(np.float64) * B, 0).mean(axis=1).sum()
    close(fn((A, PM1), (B, B)), 0.5 * mse + 2.0 * hinge)
    close(
        L.build_loss_fn([("mean_squared_error", 0.5), (hinge_sum, 2.0)])([A, PM1], [B, B]),
        0.5 * mse + 2.0 * hinge,
    )


def test_combine_resolves_names_with_reduction_mean():
    fn = L.combine([("hinge", 3.0)])
    close(fn((PM1,), (B,)), 3.0 * np.maximum(1 - PM1.astype(np.float64) * B, 0).mean())


def test_combine_errors():
    with pytest.raises(OptionError, match="pair"):
        L.combine(["hinge"])
    with pytest.raises(OptionError, match="weight"):
        L.combine([("hinge", "heavy")])
    with pytest.raises(OptionError, match="unknown loss"):
        L.combine([("nope", 1.0)])
    fn = L.combine([("hinge", 1.0), ("mean_squared_error", 1.0)])
    with pytest.raises(ShapeError, match="tuple/list of at least 2 outputs"):
        fn((A,), (B,))


# ---------------------------------------------------------------------------
# shape and option errors


def test_cce_class_weights_must_have_one_weight_per_class():
    with pytest.raises(OptionError, match="one weight per class"):
        L.categorical_cross_entropy(Y01, POS, class_weights=[1.0, 2.0])


def test_cce_sparse_targets_need_a_size_1_last_axis():
    with pytest.raises(ShapeError, match="size 1 in the last dimension"):
        L.categorical_cross_entropy(np.zeros((4, 2), np.int32), POS, sparse=True)
    with pytest.raises(ShapeError, match="integer"):
        L.categorical_cross_entropy(np.zeros((4, 1), np.float32), POS, sparse=True)


def test_bce_shapes_must_match():
    with pytest.raises(ShapeError, match="same shape"):
        L.binary_cross_entropy(Y01, POS[:, :2])


def test_margin_ranking_needs_a_pair():
    with pytest.raises(ShapeError, match="pair"):
        L.margin_ranking(PM1[:, 0], A[:, 0])


def test_ctc_argument_errors():
    lengths, targets = CTC_ARGS[0]
    with pytest.raises(ShapeError, match="pair"):
        L.connectionist_temporal_classification(targets, CTC_ARGS[1])
    with pytest.raises(ShapeError, match="exceeds"):
        L.connectionist_temporal_classification((lengths, np.zeros((2, 6), np.int32)), CTC_ARGS[1])
    with pytest.raises(ShapeError, match="integer"):
        L.connectionist_temporal_classification((lengths, f32(targets)), CTC_ARGS[1])


def test_apply_label_smoothing_needs_rank_2():
    with pytest.raises(ShapeError, match="rank >= 2"):
        L.apply_label_smoothing(f32([1.0, 0.0]), f32([0.5, 0.5]))


def test_label_smoothing_needs_a_function():
    with pytest.raises(OptionError, match="loss function"):
        L.label_smoothing("categorical_cross_entropy")
