"""random_normal / random_uniform (Nx.random_normal / random_uniform) and anp.random's keys."""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
import axonc.numpy as anp
from axonc.errors import OptionError, TraceError
from axonc.initializers import initialize


def _model(fn, shape=(None, 4, 3)):
    return ax.nx(ax.input("x", shape=shape), fn)


@pytest.mark.parametrize(
    "fn",
    [
        lambda t: anp.random_normal(t, 1.5, 0.25, seed=11),
        lambda t: anp.random_uniform(t, -2.0, 3.0, seed=12),
        lambda t: t * anp.random_normal(t, seed=13) + anp.random_uniform(t, seed=14),
    ],
)
def test_onnxruntime_draws_exactly_what_the_reference_draws_for_a_seed(fn):
    model = _model(fn)
    x = np.random.default_rng(0).normal(size=(6, 4, 3)).astype(np.float32)
    outs = []
    for compiler in ("onnxruntime", "reference"):
        init_fn, predict_fn = ax.build(model, compiler=compiler)
        outs.append(predict_fn(init_fn(ax.template((1, 4, 3), "f32")), x))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_the_samples_follow_the_documented_stream_and_distribution():
    x = np.zeros((5000, 4), np.float32)
    init_fn, predict_fn = ax.build(
        _model(lambda t: anp.random_normal(t, 1.5, 0.25, seed=7), (None, 4))
    )
    out = predict_fn(init_fn(ax.template((1, 4), "f32")), x)
    unit = initialize({"name": "normal", "mean": 0.0, "scale": 1.0}, (5000, 4), "f32", 7)
    np.testing.assert_array_equal(out, unit * np.float32(0.25) + np.float32(1.5))
    assert abs(out.mean() - 1.5) < 0.01 and abs(out.std() - 0.25) < 0.01
    init_fn, predict_fn = ax.build(_model(lambda t: anp.random_uniform(t, -2.0, 3.0), (None, 4)))
    u = predict_fn(init_fn(ax.template((1, 4), "f32")), x)
    assert u.min() >= -2.0 and u.max() < 3.0 and abs(u.mean() - 0.5) < 0.05


def test_samples_take_a_float_input_dtype_and_f32_otherwise():
    t = ax.input("x", shape=(None, 2), dtype="s32")
    model = ax.nx(t, lambda v: anp.random_normal(v, seed=1))
    init_fn, predict_fn = ax.build(model)
    out = predict_fn(init_fn(ax.template((1, 2), "s32")), np.ones((3, 2), np.int32))
    assert out.dtype == np.float32 and out.shape == (3, 2)


def test_value_and_grad_draws_fresh_samples_on_every_call_from_one_compiled_graph():
    from axonc import defn

    x = np.ones((3,), np.float32)
    before = len(defn._CACHE)
    values = [anp.value_and_grad(x, lambda t: anp.sum(t * anp.random_normal(t)))[0] for _ in "ab"]
    assert values[0] != values[1]
    assert len(defn._CACHE) == before + 1


def test_the_gradient_reaches_mean_and_std_of_a_reparameterised_sample():
    params = {"mu": np.array([0.5, -1.0], np.float32), "sigma": np.array([2.0, 0.5], np.float32)}

    def f(p):
        eps = anp.random_normal(p["mu"], seed=3)
        return anp.sum(p["mu"] + p["sigma"] * eps), eps

    (value, eps), g = anp.value_and_grad(params, f, lambda out: out[0])
    np.testing.assert_allclose(g["mu"], [1.0, 1.0])
    np.testing.assert_allclose(g["sigma"], eps)
    assert float(value) == pytest.approx(float(np.sum(params["mu"] + params["sigma"] * eps)))


def test_eager_calls_draw_arrays_of_a_shape_or_like_an_array():
    a = anp.random_normal((2, 3), seed=4)
    b = anp.random_normal(np.zeros((2, 3), np.float64), seed=4)
    assert a.shape == (2, 3) and a.dtype == np.float32 and b.dtype == np.float64
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert not np.array_equal(anp.random_uniform(5), anp.random_uniform(5))


def test_nx_random_keys_thread_through_samplers():
    key = anp.random.key(9999)
    np.testing.assert_array_equal(key, np.array([0, 9999], np.uint32))
    np.testing.assert_array_equal(anp.random.key(2**32 + 5), np.array([1, 5], np.uint32))
    x1, k1 = anp.random.normal(key, shape=(4, 2))
    x2, k2 = anp.random.normal(k1, shape=(4, 2))
    x1_again, _ = anp.random.normal(key, shape=(4, 2))
    np.testing.assert_array_equal(x1, x1_again)
    assert not np.array_equal(x1, x2) and not np.array_equal(k1, k2)
    u, _ = anp.random.uniform(key, -10, 10, shape=(1000,), type="f32")
    assert u.dtype == np.float32 and u.min() >= -10 and u.max() < 10
    i, _ = anp.random.randint(key, 0, 5, shape=(100,))
    assert i.dtype == np.int32 and set(np.unique(i)) <= set(range(5))
    keys = anp.random.split(key, parts=3)
    assert keys.shape == (3, 2) and keys.dtype == np.uint32 and len({tuple(k) for k in keys}) == 3
    assert not np.array_equal(anp.random.fold_in(key, 1), anp.random.fold_in(key, 2))


def test_a_traced_key_is_refused_with_what_to_use_instead():
    with pytest.raises(TraceError, match="random_normal"):
        ax.nx(ax.input("k", shape=(2,), dtype="u32"), lambda k: anp.random.normal(k)[0])
    with pytest.raises(TraceError, match="u32"):
        anp.random.normal(np.zeros(3))


def test_bad_options_are_refused():
    with pytest.raises(OptionError, match="min_val"):
        _model(lambda t: anp.random_uniform(t, 1.0, 0.0))
    with pytest.raises(OptionError, match="std"):
        _model(lambda t: anp.random_normal(t, 0.0, -1.0))
