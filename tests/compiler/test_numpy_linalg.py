"""anp.linalg.norm (Nx.LinAlg.norm) against numpy, traced and eager; its gradient."""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
import axonc.numpy as anp

INF = float("inf")
X = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)

CASES = [
    # (anp kwargs, numpy.linalg.norm kwargs)
    ({}, {}),
    ({"ord": "fro"}, {"ord": "fro"}),
    ({"ord": 1}, {"ord": 1}),
    ({"ord": -1}, {"ord": -1}),
    ({"ord": INF}, {"ord": INF}),
    ({"ord": -INF}, {"ord": -INF}),
    ({"axes": [-1]}, {"axis": -1}),
    ({"axes": [0], "ord": 1}, {"axis": 0, "ord": 1}),
    ({"axes": [1], "ord": 3}, {"axis": 1, "ord": 3}),
    ({"axes": [1], "ord": INF}, {"axis": 1, "ord": INF}),
    ({"axes": [1], "ord": -INF}, {"axis": 1, "ord": -INF}),
    ({"axes": [1], "ord": 0}, {"axis": 1, "ord": 0}),
    ({"axes": [-1], "keep_axes": True}, {"axis": -1, "keepdims": True}),
    ({"axes": [0, 1], "ord": 1, "keep_axes": True}, {"axis": (0, 1), "ord": 1, "keepdims": True}),
]


@pytest.mark.parametrize(("ours", "theirs"), CASES, ids=[str(c[0]) for c in CASES])
def test_eager_and_compiled_norms_match_numpy(ours, theirs):
    expected = np.linalg.norm(X.astype(np.float64), **theirs)
    np.testing.assert_allclose(anp.linalg.norm(X, **ours), expected, rtol=1e-5)
    model = ax.nx(ax.input("x", shape=(4, 3)), lambda t: anp.linalg.norm(t, **ours))
    init_fn, predict_fn = ax.build(model)
    got = predict_fn(init_fn(ax.template((4, 3), "f32")), X)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_a_vector_and_a_higher_rank_tensor_default_to_the_2_norm_of_all_elements():
    v = np.array([3.0, 4.0], np.float32)
    assert float(anp.linalg.norm(v)) == pytest.approx(5.0)
    t = np.ones((2, 2, 2), np.float32)
    assert float(anp.linalg.norm(t)) == pytest.approx(np.sqrt(8.0))


def test_the_metric_learning_normalisation_has_the_right_gradient():
    """x / norm(x, axes: [-1], keep_axes: true), differentiated, against finite differences."""
    w = np.random.default_rng(1).normal(size=(4, 3))

    def f(x):
        return anp.sum((x / anp.linalg.norm(x, axes=[-1], keep_axes=True)) * w.astype(x.dtype))

    g = anp.grad(X, f)
    x64 = X.astype(np.float64)
    for idx in [(0, 0), (1, 2), (3, 1)]:
        plus, minus = x64.copy(), x64.copy()
        plus[idx] += 1e-6
        minus[idx] -= 1e-6
        fd = (float(f(plus)) - float(f(minus))) / 2e-6
        assert g[idx] == pytest.approx(fd, rel=1e-3, abs=1e-5)


@pytest.mark.parametrize("ord", [None, 1, INF])
def test_matrix_norm_gradients_match_finite_differences(ord):
    g = anp.grad(X, lambda x: anp.linalg.norm(x, ord))
    x64 = X.astype(np.float64)
    for idx in [(0, 1), (2, 2), (3, 0)]:
        plus, minus = x64.copy(), x64.copy()
        plus[idx] += 1e-6
        minus[idx] -= 1e-6
        fd = (np.linalg.norm(plus, ord) - np.linalg.norm(minus, ord)) / 2e-6
        assert g[idx] == pytest.approx(fd, rel=1e-3, abs=1e-5)


def test_unsupported_orders_are_named():
    with pytest.raises(ValueError, match="nuclear"):
        anp.linalg.norm(X, "nuclear")
    with pytest.raises(ValueError, match="axes"):
        anp.linalg.norm(np.ones((2, 2, 2), np.float32), 1)
