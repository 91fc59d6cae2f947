"""ax.metrics: real-Axon golden values, Axon's documented examples, independent formulas,
eager vs traced, ONNX lowering, the running_average / running_sum accumulators, errors."""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
from axonc import metrics as M
from axonc.autodiff import tensor_of
from axonc.dtypes import TensorType
from axonc.errors import OptionError, ShapeError
from axonc.interpreter import run
from axonc.ir import Axon
from axonc.to_onnx.export import to_onnx
from axonc.tracing import _traces, trace
from tests import golden, onnx_run

RTOL = 1e-6
RNG = np.random.default_rng(11)


def f32(x):
    return np.asarray(x, dtype=np.float32)


def s32(x):
    return np.asarray(x, dtype=np.int32)


# ---------------------------------------------------------------------------
# golden files (real Axon 0.8.1); each call mirrors the file's elixir_code


def _counting(fn):
    return {
        "default": lambda i: fn(i["y_true"], i["y_pred"]),
        "threshold0.3": lambda i: fn(i["y_true"], i["y_pred"], threshold=0.3),
    }


def _top_k(k, sparse=False):
    if sparse:
        return lambda i: M.top_k_categorical_accuracy(
            i["classes"][:, None], i["y_pred"], k=k, sparse=True
        )
    return lambda i: M.top_k_categorical_accuracy(i["y_true"], i["y_pred"], k=k)


GOLDEN_CALLS = {
    "metric_accuracy": {
        "binary": lambda i: M.accuracy(i["y_true_binary"], i["y_pred_binary"]),
        "categorical": lambda i: M.accuracy(i["y_true_cat"], i["y_pred_cat"]),
        "categorical_from_logits": lambda i: M.accuracy(
            i["y_true_cat"], i["logits_cat"], from_logits=True
        ),
        "sparse": lambda i: M.accuracy(i["classes"][:, None], i["y_pred_cat"], sparse=True),
    },
    "metric_top_k_categorical_accuracy": {
        "k1": _top_k(1),
        "k2": _top_k(2),
        "k3": _top_k(3),
        "k2_sparse": _top_k(2, sparse=True),
    },
    **{
        f"metric_{name}": _counting(M.get(name))
        for name in (
            "false_negatives",
            "false_positives",
            "precision",
            "recall",
            "sensitivity",
            "true_negatives",
            "true_positives",
        )
    },
}

GOLDEN_VARIANTS = [(case, v) for case, calls in GOLDEN_CALLS.items() for v in calls]


def test_every_metric_golden_file_and_variant_is_checked():
    files = set(golden.case_names("metric_"))
    assert files == set(GOLDEN_CALLS)
    for case in files:
        assert set(golden.load(case)["outputs"]) == set(GOLDEN_CALLS[case]), case


@pytest.mark.parametrize(
    ("case", "variant"), GOLDEN_VARIANTS, ids=[f"{c}-{v}" for c, v in GOLDEN_VARIANTS]
)
def test_matches_axon_golden(case, variant):
    inputs, outputs = golden.io(case)
    golden.assert_tree_close(GOLDEN_CALLS[case][variant](inputs), outputs[variant], RTOL, 0.0)


# ---------------------------------------------------------------------------
# the examples in Axon 0.8.1's documentation of Axon.Metrics

Y4, P4 = s32([0, 1, 1, 1]), s32([1, 0, 1, 1])
Y7 = s32([1, 0, 1, 1, 0, 1, 0])
P7 = f32([0.8, 0.6, 0.4, 0.2, 0.8, 0.2, 0.2])


@pytest.mark.parametrize(
    ("call", "expected", "dtype"),
    [
        (lambda: M.accuracy(s32([[1], [0], [0]]), s32([[1], [1], [1]])), 1 / 3, np.float32),
        (
            lambda: M.accuracy(s32([[0, 1], [1, 0], [1, 0]]), s32([[0, 1], [1, 0], [0, 1]])),
            2 / 3,
            np.float32,
        ),
        (
            lambda: M.accuracy(s32([[0, 1, 0], [1, 0, 0]]), s32([[0, 1, 0], [0, 1, 0]])),
            0.5,
            np.float32,
        ),
        (lambda: M.precision(Y4, P4), 2 / 3, np.float32),
        (lambda: M.recall(Y4, P4), 2 / 3, np.float32),
        (lambda: M.sensitivity(Y4, P4), 2 / 3, np.float32),
        (lambda: M.specificity(Y4, P4), 0.0, np.float32),
        (lambda: M.true_positives(Y7, P7), 1, np.uint32),
        (lambda: M.false_negatives(Y7, P7), 3, np.uint32),
        (lambda: M.true_negatives(Y7, P7), 1, np.uint32),
        (lambda: M.false_positives(Y7, P7), 2, np.uint32),
        (
            lambda: M.mean_absolute_error(f32([[0, 1], [0, 0]]), f32([[1, 1], [1, 0]])),
            0.5,
            np.float32,
        ),
        (
            lambda: M.top_k_categorical_accuracy(
                s32([0, 1, 0, 0, 0]), f32([0.1, 0.4, 0.3, 0.7, 0.1]), k=2
            ),
            1.0,
            np.float32,
        ),
        (
            lambda: M.top_k_categorical_accuracy(
                s32([[0, 1, 0], [1, 0, 0]]), f32([[0.1, 0.4, 0.7], [0.1, 0.4, 0.7]]), k=2
            ),
            0.5,
            np.float32,
        ),
        (
            lambda: M.top_k_categorical_accuracy(
                s32([[0], [2]]), f32([[0.1, 0.4, 0.7], [0.1, 0.4, 0.7]]), k=2, sparse=True
            ),
            0.5,
            np.float32,
        ),
    ],
)
def test_axon_documented_examples(call, expected, dtype):
    out = np.asarray(call())
    assert out.shape == () and out.dtype == dtype
    np.testing.assert_allclose(out.astype(np.float64), expected, rtol=RTOL)


def test_axon_documented_accumulator_examples():
    y = s32([[0, 1], [1, 0], [1, 0]])
    avg = M.running_average(M.accuracy)(f32(0.5), [y, y], s32(1))
    np.testing.assert_allclose(avg, 0.75, rtol=RTOL)
    assert np.asarray(avg).dtype == np.float32
    total = M.running_sum(M.false_positives)(s32(12), [s32([0, 1, 0, 1]), s32([1, 1, 0, 1])], 2)
    assert int(total) == 13


# ---------------------------------------------------------------------------
# independent formulas (explicit Python loops over random data)

YB = (RNG.random((16, 3)) < 0.4).astype(np.int32)
PB = f32(RNG.random((16, 3)))
YF = YB.astype(np.float32)
CLASSES = RNG.integers(0, 6, size=12).astype(np.int32)
ONE_HOT = f32(np.eye(6)[CLASSES])
SCORES = f32(RNG.normal(size=(12, 6)))
REG_T, REG_P = f32(RNG.normal(size=(5, 4))), f32(RNG.normal(size=(5, 4)))


def _confusion(y, p, threshold):
    tp = fp = tn = fn = 0
    for yi, pi in zip(np.ravel(y).tolist(), np.ravel(p).tolist()):
        positive = pi > threshold
        if positive and yi == 1:
            tp += 1
        elif positive:
            fp += 1
        elif yi == 0:
            tn += 1
        else:
            fn += 1
    return tp, fp, tn, fn


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.8, 0])
@pytest.mark.parametrize("y", [YB, YF], ids=["s32_targets", "f32_targets"])
def test_counts_and_ratios_match_a_confusion_table(y, threshold):
    tp, fp, tn, fn = _confusion(y, PB, threshold)
    counts = {
        "true_positives": tp,
        "false_positives": fp,
        "true_negatives": tn,
        "false_negatives": fn,
    }
    for name, want in counts.items():
        got = M.get(name)(y, PB, threshold=threshold)
        assert got.dtype == np.uint32 and got.shape == () and int(got) == want, name
    ratios = {
        "precision": tp / (tp + fp + 1e-16),
        "recall": tp / (tp + fn + 1e-16),
        "sensitivity": tp / (tp + fn + 1e-16),
        "specificity": tn / (tn + fp + 1e-16),
    }
    for name, want in ratios.items():
        got = M.get(name)(y, PB, threshold=threshold)
        assert got.dtype == np.float32 and got.shape == (), name
        np.testing.assert_allclose(float(got), want, rtol=RTOL, err_msg=name)


def test_threshold_is_a_strict_comparison():
    y, p = s32([1, 1, 0]), f32([0.5, 0.51, 0.5])
    assert int(M.true_positives(y, p)) == 1
    assert int(M.false_negatives(y, p)) == 1
    assert int(M.true_negatives(y, p)) == 1


def test_empty_classes_give_zero_not_nan():
    y, p = s32([0, 0, 0]), f32([0.1, 0.2, 0.3])
    for name in ("precision", "recall", "sensitivity"):
        assert float(M.get(name)(y, p)) == 0.0, name
    assert float(M.specificity(s32([1, 1]), f32([0.9, 0.8]))) == 0.0


def test_targets_other_than_0_and_1_count_as_Axon_compares_them():
    # a prediction is 0 or 1 and is compared with y_true: 2 is neither
    y, p = s32([2, 2]), f32([0.9, 0.1])
    assert (int(M.true_positives(y, p)), int(M.false_positives(y, p))) == (0, 1)
    assert (int(M.true_negatives(y, p)), int(M.false_negatives(y, p))) == (0, 1)


def _categorical_accuracy(y_idx, scores):
    hits = [
        int(max(range(len(row)), key=lambda j: (row[j], -j)) == c)
        for c, row in zip(y_idx, scores.tolist())
    ]
    return sum(hits) / len(hits)


def test_categorical_accuracy_dense_sparse_and_rank1_indices():
    want = _categorical_accuracy(CLASSES, SCORES)
    assert M.accuracy(ONE_HOT, SCORES).dtype == np.float32
    np.testing.assert_allclose(M.accuracy(ONE_HOT, SCORES), want, rtol=RTOL)
    np.testing.assert_allclose(M.accuracy(CLASSES[:, None], SCORES, sparse=True), want, rtol=RTOL)
    np.testing.assert_allclose(M.accuracy(CLASSES, SCORES, sparse=True), want, rtol=RTOL)


def test_categorical_accuracy_from_logits_takes_the_softmax_argmax():
    e = np.exp(SCORES.astype(np.float64) - SCORES.max(-1, keepdims=True))
    probs = e / e.sum(-1, keepdims=True)
    want = _categorical_accuracy(CLASSES, probs)
    np.testing.assert_allclose(M.accuracy(ONE_HOT, SCORES, from_logits=True), want, rtol=RTOL)


def test_binary_accuracy_thresholds_at_one_half_and_sigmoid_for_logits():
    y = YB[:, :1]
    logits = f32(RNG.normal(size=(16, 1)) * 3)
    probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
    want = np.mean([int((pv > 0.5) == (yv == 1)) for yv, pv in zip(y.ravel(), probs.ravel())])
    np.testing.assert_allclose(M.accuracy(y, f32(probs)), want, rtol=RTOL)
    np.testing.assert_allclose(M.accuracy(y, logits, from_logits=True), want, rtol=RTOL)
    # binary mode ignores the class-index conventions: a one-column y_true is the label
    np.testing.assert_allclose(M.accuracy(YF[:, :1], f32(probs)), want, rtol=RTOL)


@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_top_k_matches_a_stable_descending_sort(k):
    hits = []
    for c, row in zip(CLASSES.tolist(), SCORES.tolist()):
        order = sorted(range(len(row)), key=lambda j: -row[j])  # Python's sort is stable
        hits.append(c in order[:k])
    want = sum(hits) / len(hits)
    np.testing.assert_allclose(M.top_k_categorical_accuracy(ONE_HOT, SCORES, k=k), want, rtol=RTOL)
    np.testing.assert_allclose(
        M.top_k_categorical_accuracy(CLASSES[:, None], SCORES, k=k, sparse=True), want, rtol=RTOL
    )


def test_top_k_ties_rank_the_lower_class_first():
    p = f32([[0.5, 0.5, 0.5, 0.1]])
    for label, k, want in ((0, 1, 1.0), (2, 1, 0.0), (1, 2, 1.0), (2, 2, 0.0), (2, 3, 1.0)):
        got = M.top_k_categorical_accuracy(s32([[label]]), p, k=k, sparse=True)
        assert float(got) == want, (label, k)


def test_binary_accuracy_at_exactly_one_half_predicts_negative():
    assert float(M.accuracy(s32([[0]]), f32([[0.5]]))) == 1.0
    assert float(M.accuracy(s32([[1]]), f32([[0.5]]))) == 0.0


def test_top_k_default_k_is_5():
    p = f32([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    assert float(M.top_k_categorical_accuracy(s32([[4], [5]]), p, sparse=True)) == 0.5


def test_top_k_out_of_range_sparse_class_is_a_miss():
    p = f32([[-0.1, -0.2, -0.3]])  # below the 0 a missing class would score
    assert float(M.top_k_categorical_accuracy(s32([[7]]), p, k=1, sparse=True)) == 0.0


def test_regression_metrics_are_means_over_every_element():
    diffs = [float(t) - float(p) for t, p in zip(REG_T.ravel(), REG_P.ravel())]
    mae = M.mean_absolute_error(REG_T, REG_P)
    mse = M.mean_squared_error(REG_T, REG_P)
    assert mae.shape == () and mae.dtype == np.float32 and mse.dtype == np.float32
    np.testing.assert_allclose(mae, sum(abs(d) for d in diffs) / len(diffs), rtol=RTOL)
    np.testing.assert_allclose(mse, sum(d * d for d in diffs) / len(diffs), rtol=RTOL)


def test_metrics_accept_python_lists():
    assert int(M.true_positives([1, 0, 1], [0.9, 0.9, 0.1])) == 1
    assert float(M.accuracy([[0, 1], [1, 0]], [[0.2, 0.8], [0.3, 0.7]])) == 0.5


# ---------------------------------------------------------------------------
# eager vs traced (dynamic batch), and the traced metric lowered to ONNX

CASES = {
    "accuracy_binary": (M.accuracy, {}, (YB[:, :1], PB[:, :1])),
    "accuracy_binary_logits": (M.accuracy, {"from_logits": True}, (YF[:, :1], PB[:, :1] - 0.5)),
    "accuracy_categorical": (M.accuracy, {}, (ONE_HOT, SCORES)),
    "accuracy_from_logits": (M.accuracy, {"from_logits": True}, (ONE_HOT, SCORES)),
    "accuracy_sparse": (M.accuracy, {"sparse": True}, (CLASSES[:, None], SCORES)),
    "true_positives": (M.true_positives, {}, (YB, PB)),
    "false_positives": (M.false_positives, {"threshold": 0.3}, (YB, PB)),
    "true_negatives": (M.true_negatives, {}, (YF, PB)),
    "false_negatives": (M.false_negatives, {"threshold": 0.7}, (YB, PB)),
    "precision": (M.precision, {}, (YB, PB)),
    "recall": (M.recall, {"threshold": 0.3}, (YF, PB)),
    "sensitivity": (M.sensitivity, {}, (YB, PB)),
    "specificity": (M.specificity, {"threshold": 0.6}, (YB, PB)),
    "mean_absolute_error": (M.mean_absolute_error, {}, (REG_T, REG_P)),
    "mean_squared_error": (M.mean_squared_error, {}, (REG_T, REG_P)),
    "top_k": (M.top_k_categorical_accuracy, {"k": 3}, (ONE_HOT, SCORES)),
    "top_k_sparse": (
        M.top_k_categorical_accuracy,
        {"k": 2, "sparse": True},
        (CLASSES[:, None], SCORES),
    ),
}


def _type(a):
    return TensorType((None, *a.shape[1:]), str(a.dtype))


@pytest.mark.parametrize("name", sorted(CASES))
def test_traced_equals_eager(name):
    fn, opts, args = CASES[name]
    body = trace(lambda *a: fn(*a, **opts), [_type(a) for a in args])
    traced, _ = run(body, {}, {}, args=list(args))
    eager = fn(*args, **opts)
    assert np.asarray(traced).dtype == eager.dtype and np.shape(traced) == ()
    np.testing.assert_array_equal(traced, eager)


def _onnx_metric(fn, opts, args):
    """The metric traced on ax.input tensors (dynamic batch), exported to ONNX."""
    trace_id = next(_traces)
    names = [f"arg{i}" for i in range(len(args))]
    tensors = [
        tensor_of(ax.input(n, shape=(None, *a.shape[1:]), dtype=str(a.dtype)), trace_id)
        for n, a in zip(names, args)
    ]
    out = fn(*tensors, **opts)
    model = to_onnx(Axon(out.graph.output, out.graph.nodes), {})
    return names, onnx_run.session(model)


@pytest.mark.parametrize("name", sorted(CASES))
def test_traced_metric_lowers_to_onnx_and_matches_eager(name):
    fn, opts, args = CASES[name]
    names, sess = _onnx_metric(fn, opts, args)
    graph_inputs = {i.name for i in sess.get_inputs()}
    for rows in (slice(None), slice(0, 3), slice(2, 3)):
        batch = [a[rows] for a in args]
        (got,) = sess.run(None, {n: a for n, a in zip(names, batch) if n in graph_inputs})
        want = fn(*batch, **opts)
        assert got.dtype == want.dtype and got.shape == ()
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=0)


# ---------------------------------------------------------------------------
# running_average / running_sum over several batches

BATCHES = [(YB[i : i + 4], PB[i : i + 4]) for i in range(0, 16, 4)]


def _accumulate(update, batches, state):
    for i, (y, p) in enumerate(batches):
        state = update(state, [y, p], i)
    return state


def test_running_average_of_equal_batches_is_the_metric_of_their_union():
    state = _accumulate(M.running_average("precision"), BATCHES, f32(0.0))
    per_batch = []
    for y, p in BATCHES:
        tp, fp, _, _ = _confusion(y, p, 0.5)
        per_batch.append(tp / (tp + fp + 1e-16))
    assert state.dtype == np.float32 and state.shape == ()
    np.testing.assert_allclose(state, np.mean(per_batch), rtol=RTOL)
    yb = [(y[:, :1], p[:, :1]) for y, p in BATCHES]
    acc = _accumulate(M.running_average(M.accuracy), yb, f32(0.0))
    np.testing.assert_allclose(acc, M.accuracy(YB[:, :1], PB[:, :1]), rtol=RTOL)


def test_running_average_step_formula():
    update = M.running_average(M.mean_absolute_error)
    y, p = BATCHES[1]
    obs = np.mean(np.abs(y.astype(np.float64) - p))
    for avg, i in ((0.25, 0), (0.25, 3), (1.5, 7)):
        np.testing.assert_allclose(
            update(f32(avg), [y, p], i), (avg * i + obs) / (i + 1), rtol=RTOL
        )


def test_running_sum_of_counts_is_the_count_of_their_union():
    for name in ("true_positives", "false_positives", "true_negatives", "false_negatives"):
        total = _accumulate(M.running_sum(name), BATCHES, f32(0.0))
        assert total.dtype == np.float32
        assert float(total) == float(M.get(name)(YB, PB)), name
    counted = _accumulate(M.running_sum(M.true_positives), BATCHES, np.uint32(0))
    assert counted.dtype == np.uint32 and int(counted) == _confusion(YB, PB, 0.5)[0]


def test_running_accumulators_take_metric_options_through_a_closure():
    update = M.running_sum(lambda y, p: M.false_positives(y, p, threshold=0.3))
    total = _accumulate(update, BATCHES, f32(0.0))
    assert float(total) == _confusion(YB, PB, 0.3)[1]


@pytest.mark.parametrize("combinator", [M.running_average, M.running_sum])
def test_traced_accumulator_step_equals_eager(combinator):
    update = combinator("recall")
    y, p = BATCHES[2]
    types = [TensorType((), "f32"), [_type(y), _type(p)], TensorType((), "s32")]
    body = trace(update, types)
    traced, _ = run(body, {}, {}, args=[f32(0.4), y, p, s32(2)])
    eager = update(f32(0.4), [y, p], s32(2))
    assert np.asarray(traced).dtype == eager.dtype == np.float32
    np.testing.assert_array_equal(traced, eager)


# ---------------------------------------------------------------------------
# names and bad options


def test_get_resolves_every_name_and_names_are_sorted():
    assert M.names() == sorted(M.names())
    assert {
        "accuracy",
        "precision",
        "recall",
        "sensitivity",
        "specificity",
        "true_positives",
        "false_positives",
        "true_negatives",
        "false_negatives",
        "mean_absolute_error",
        "mean_squared_error",
        "top_k_categorical_accuracy",
    } <= set(M.names())
    for name in M.names():
        assert M.get(name).__name__ == name


@pytest.mark.parametrize("bad", ["acc", "Accuracy", 3, None])
def test_unknown_metric_name_lists_the_valid_ones(bad):
    with pytest.raises(OptionError, match=r"unknown metric .*accuracy, false_negatives"):
        M.get(bad)


@pytest.mark.parametrize("combinator", [M.running_average, M.running_sum])
def test_bad_accumulator_arguments(combinator):
    with pytest.raises(OptionError, match="unknown metric 'nope'"):
        combinator("nope")
    with pytest.raises(OptionError, match="expected a metric name"):
        combinator(42)
    with pytest.raises(OptionError, match=r"list of arguments such as \[y_true, y_pred\]"):
        combinator("accuracy")(f32(0.0), YB, 0)


@pytest.mark.parametrize(
    "name",
    ["precision", "recall", "sensitivity", "specificity", "true_positives", "false_negatives"],
)
@pytest.mark.parametrize("bad", ["0.5", None, True])
def test_threshold_must_be_a_number(name, bad):
    with pytest.raises(OptionError, match="threshold must be a number"):
        M.get(name)(YB, PB, threshold=bad)


@pytest.mark.parametrize("option", ["sparse", "from_logits"])
def test_accuracy_flags_must_be_booleans(option):
    with pytest.raises(OptionError, match=f"{option} must be true or false"):
        M.accuracy(ONE_HOT, SCORES, **{option: 1})


@pytest.mark.parametrize("k", [0, -1, 2.0, True])
def test_top_k_k_must_be_a_positive_integer(k):
    with pytest.raises(OptionError, match="k must be a positive integer"):
        M.top_k_categorical_accuracy(ONE_HOT, SCORES, k=k)


def test_top_k_shape_errors():
    with pytest.raises(ShapeError, match=r"k = 7 exceeds the number of classes \(6\)"):
        M.top_k_categorical_accuracy(ONE_HOT, SCORES, k=7)
    with pytest.raises(ShapeError, match="k = 5 exceeds"):
        M.top_k_categorical_accuracy(s32([[0, 1]]), f32([[0.3, 0.7]]))
    with pytest.raises(ShapeError, match=r"class axis .* must be static"):
        trace(
            lambda y, p: M.top_k_categorical_accuracy(y, p, k=1),
            [TensorType((None, None)), TensorType((None, None))],
        )


def test_sparse_targets_must_have_one_index_per_sample():
    with pytest.raises(ShapeError, match=r"one class index per sample.*got shape \(12, 6\)"):
        M.accuracy(ONE_HOT, SCORES, sparse=True)
    with pytest.raises(ShapeError, match="one class index per sample"):
        M.top_k_categorical_accuracy(ONE_HOT, SCORES, k=2, sparse=True)


def test_scalar_predictions_are_shape_errors():
    with pytest.raises(ShapeError, match="y_pred must have rank >= 1"):
        M.accuracy(s32(1), f32(0.3))


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="threshhold"):
        M.precision(YB, PB, threshhold=0.2)
