"""axonc.numpy.value_and_grad / grad (Nx.Defn's), checked against finite differences.

The functions are written with axonc.numpy, which also runs eagerly on numpy
arrays: the finite differences evaluate the very same function in float64 on
arrays, independently of the traced, differentiated and compiled graph.
"""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
import axonc.numpy as anp
from axonc import defn
from axonc.errors import InputError, TraceError
from axonc.interpreter import run
from axonc.model_state import ModelState

EPS = 1e-6
COMPILERS = ("onnxruntime", "reference")


def _leaves(tree, prefix=()):
    if isinstance(tree, ModelState):
        tree = tree.data
    if isinstance(tree, dict):
        return [leaf for k, v in tree.items() for leaf in _leaves(v, (*prefix, k))]
    if isinstance(tree, (tuple, list)):
        return [leaf for i, v in enumerate(tree) for leaf in _leaves(v, (*prefix, i))]
    return [(prefix, tree)]


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _with(tree, path, value):
    """A copy of nested dicts/tuples/lists `tree` with the leaf at `path` replaced."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(tree, dict):
        return {k: _with(v, rest, value) if k == head else v for k, v in tree.items()}
    return type(tree)(_with(v, rest, value) if i == head else v for i, v in enumerate(tree))


def finite_differences(f, x, rng, samples=4):
    """{path: [(index, derivative)]} by central differences in float64 on a few elements."""
    x = _as_f64(x)
    out = {}
    for path, leaf in _leaves(x):
        leaf = np.asarray(leaf)
        if leaf.dtype.kind != "f":
            continue
        picks = []
        for flat in rng.choice(leaf.size, size=min(samples, leaf.size), replace=False):
            idx = np.unravel_index(flat, leaf.shape)
            plus, minus = leaf.copy(), leaf.copy()
            plus[idx] += EPS
            minus[idx] -= EPS
            d = (float(f(_with(x, path, plus))) - float(f(_with(x, path, minus)))) / (2 * EPS)
            picks.append((idx, d))
        out[path] = picks
    return out


def _as_f64(tree):
    if isinstance(tree, dict):
        return {k: _as_f64(v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(_as_f64(v) for v in tree)
    arr = np.asarray(tree)
    return arr.astype(np.float64) if arr.dtype.kind == "f" else arr


def assert_grads_match(grads, expected, rtol=2e-3, atol=2e-4):
    for path, picks in expected.items():
        leaf = np.asarray(_get(grads.data if isinstance(grads, ModelState) else grads, path))
        for idx, d in picks:
            assert leaf[idx] == pytest.approx(d, rel=rtol, abs=atol), (path, idx)


@pytest.mark.parametrize("compiler", COMPILERS)
def test_a_container_of_arrays_gets_gradients_in_its_structure(compiler):
    rng = np.random.default_rng(0)
    x = {
        "w": rng.normal(size=(3, 4)).astype(np.float32),
        "pair": (rng.normal(size=(4,)).astype(np.float32), np.float32(0.7)),
        "steps": np.int32(3),
    }
    target = rng.normal(size=(3,)).astype(np.float32)

    def f(p):
        h = anp.tanh(anp.matmul(p["w"], p["pair"][0]) * p["pair"][1])
        return anp.sum(anp.square(h - target)) + anp.linalg.norm(p["w"])

    value, grads = anp.value_and_grad(x, f, compiler=compiler)
    assert float(value) == pytest.approx(float(f(_as_f64(x))), rel=1e-5)
    assert set(grads) == {"w", "pair", "steps"} and isinstance(grads["pair"], tuple)
    assert grads["w"].shape == (3, 4) and grads["w"].dtype == np.float32
    assert np.asarray(grads["steps"]) == 0  # integer leaves carry no gradient
    assert_grads_match(grads, finite_differences(f, x, rng))


def test_grad_of_a_non_scalar_is_the_gradient_of_its_sum_as_in_nx():
    x = np.array([1.0, 2.0, 3.0], np.float32)
    g = anp.grad(x, lambda t: t * t)
    np.testing.assert_allclose(g, 2 * x, rtol=1e-6)


def test_transform_picks_what_is_differentiated_and_the_value_is_the_whole_output():
    x = np.array([0.5, -1.5], np.float32)
    value, g = anp.value_and_grad(x, lambda t: (t * 3.0, anp.sum(t * t)), lambda out: out[1])
    np.testing.assert_allclose(value[0], x * 3.0)
    assert float(value[1]) == pytest.approx(2.5)
    np.testing.assert_allclose(g, 2 * x, rtol=1e-6)


def test_closed_over_arrays_are_current_on_every_call_and_the_graph_is_reused():
    x = np.ones((4,), np.float32)
    before = len(defn._CACHE)
    for scale in (1.0, -2.0, 5.0):
        c = np.arange(4, dtype=np.float32) * np.float32(scale)
        g = anp.grad(x, lambda t, c=c: anp.sum(t * c))
        np.testing.assert_allclose(g, c)
    assert len(defn._CACHE) == before + 1


def _mlp(dropout: bool):
    x = ax.input("x", shape=(None, 3)).dense(5, activation="tanh").batch_norm()
    if dropout:
        x = x.dropout(rate=0.3, seed=4)
    return x.dense(2)


@pytest.mark.parametrize("mode", ["inference", "train"])
@pytest.mark.parametrize("compiler", COMPILERS)
def test_gradients_through_predict_fn_match_finite_differences(mode, compiler):
    model = _mlp(dropout=True)
    init_fn, predict_fn = ax.build(model, mode=mode)
    state = init_fn(ax.template((1, 3), "f32"))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    w = rng.normal(size=(6, 2))

    def objective(params):
        out = predict_fn(params, x)
        y = out["prediction"] if mode == "train" else out
        return anp.sum(y * w.astype(np.float32))

    value, grads = anp.value_and_grad(state, objective, compiler=compiler)
    assert isinstance(grads, ModelState)
    assert sorted(grads.paths()) == sorted(state.paths())

    def reference(data):  # the interpreter in float64, the state held fixed
        out, _ = run(model, {"x": x.astype(np.float64)}, data, mode)
        return np.sum(out * w)

    assert float(value) == pytest.approx(float(reference(_as_f64(state.data))), rel=1e-4)
    expected = finite_differences(reference, state.data, rng)
    # state (batch-norm statistics, dropout keys) is not differentiated: zero gradients
    for path in state.state:
        assert not np.any(grads.get(path))
    assert_grads_match(grads, {p: d for p, d in expected.items() if p in state.parameters})


def test_train_mode_state_comes_back_updated_from_value_and_grad():
    model = _mlp(dropout=True)
    init_fn, predict_fn = ax.build(model, mode="train")
    state = init_fn(ax.template((1, 3), "f32"))
    x = np.random.default_rng(2).normal(size=(8, 3)).astype(np.float32)

    def objective(params):
        out = predict_fn(params, x)
        return anp.mean(out["prediction"]), out["state"]

    (loss, new_state), _ = anp.value_and_grad(state, objective, lambda o: o[0])
    expected = predict_fn(state, x)["state"]
    for layer in expected:
        for key in expected[layer]:
            np.testing.assert_allclose(new_state[layer][key], expected[layer][key], rtol=1e-5)
    assert float(loss) == pytest.approx(float(np.mean(predict_fn(state, x)["prediction"])), 1e-5)


def test_the_same_model_called_twice_sums_the_gradients_of_both_calls():
    model = ax.input("x", shape=(None, 2)).dense(1, use_bias=False)
    init_fn, predict_fn = ax.build(model)
    state = init_fn(ax.template((1, 2), "f32"))
    a, b = np.array([[1.0, 2.0]], np.float32), np.array([[3.0, -1.0]], np.float32)
    g = anp.grad(state, lambda p: anp.sum(predict_fn(p, a)) + anp.sum(predict_fn(p, b)))
    np.testing.assert_allclose(g.data["dense_0"]["kernel"], (a + b).T)


def test_one_graph_runs_in_one_mode():
    model = ax.input("x", shape=(None, 2)).dense(1)
    init_fn, train_fn = ax.build(model, mode="train")
    _, infer_fn = ax.build(model)
    state = init_fn(ax.template((1, 2), "f32"))
    x = np.ones((1, 2), np.float32)
    with pytest.raises(TraceError, match="both train and inference"):
        anp.grad(state, lambda p: anp.sum(train_fn(p, x)["prediction"]) + anp.sum(infer_fn(p, x)))


def test_a_computed_state_given_to_predict_fn_is_refused_with_the_path():
    model = ax.input("x", shape=(None, 2)).dense(1)
    init_fn, predict_fn = ax.build(model)
    state = init_fn(ax.template((1, 2), "f32"))
    x = np.ones((1, 2), np.float32)

    def f(p):
        scaled = {"dense_0": {k: v * 2.0 for k, v in p.data["dense_0"].items()}}
        return anp.sum(predict_fn(scaled, x))

    with pytest.raises(TraceError, match="dense_0"):
        anp.grad(state, f)


def test_bad_arguments_get_clear_errors():
    with pytest.raises(InputError, match="callable"):
        anp.value_and_grad(np.ones(2, np.float32), 3)
    with pytest.raises(InputError, match="no arrays"):
        anp.grad({}, lambda p: p)
    with pytest.raises(TraceError, match="must return a tensor"):
        anp.grad(np.ones(2, np.float32), lambda t: "loss")
    with pytest.raises(InputError, match="compiler"):
        anp.grad(np.ones(2, np.float32), lambda t: anp.sum(t), compiler="xla")


def test_predict_fn_on_traced_tensors_outside_value_and_grad_is_an_error():
    model = ax.input("x", shape=(None, 2)).dense(1)
    init_fn, predict_fn = ax.build(model)
    state = init_fn(ax.template((1, 2), "f32"))
    with pytest.raises(TraceError, match=r"outside axonc\.numpy\.value_and_grad"):
        ax.nx(ax.input("y", shape=(None, 2)), lambda t: predict_fn(state, t))


def test_a_constant_objective_has_zero_gradients():
    x = np.ones((2,), np.float32)
    value, g = anp.value_and_grad(x, lambda t: 3.0)
    assert value == 3.0
    np.testing.assert_array_equal(g, np.zeros(2, np.float32))


def test_a_train_mode_predict_fn_given_an_inference_state_names_the_missing_key():
    from axonc.errors import StateError

    model = ax.input("x", shape=(None, 2)).dropout(rate=0.5, seed=1).dense(1)
    infer_init, _ = ax.build(model)
    _, train_fn = ax.build(model, mode="train")
    state = infer_init(ax.template((1, 2), "f32"))
    x = np.ones((3, 2), np.float32)
    with pytest.raises(StateError, match="'dropout_0/key'"):
        anp.grad(state, lambda p: anp.sum(train_fn(p, x)["prediction"]))


def test_the_function_forms_return_functions_of_x_as_nx_defn_grad_fun():
    x = np.array([1.0, -2.0], np.float32)
    np.testing.assert_allclose(anp.grad(lambda t: anp.sum(t * t))(x), 2 * x)
    value, g = anp.value_and_grad(lambda t: (t, anp.sum(t**3)), lambda out: out[1])(x)
    np.testing.assert_allclose(value[0], x)
    np.testing.assert_allclose(g, 3 * x**2, rtol=1e-6)


def test_nesting_value_and_grad_is_refused_clearly():
    x = np.ones((2,), np.float32)
    with pytest.raises(TraceError, match="cannot be nested"):
        anp.grad(x, lambda t: anp.sum(anp.grad(t, lambda u: anp.sum(u * u))))


def test_forward_hooks_fire_when_a_hooked_model_is_differentiated():
    seen = []
    model = ax.attach_hook(ax.input("x", shape=(None, 2)).dense(3), seen.append)
    init_fn, predict_fn = ax.build(model)
    state = init_fn(ax.template((1, 2), "f32"))
    x = np.ones((4, 2), np.float32)
    g = anp.grad(lambda p: anp.sum(predict_fn(p, x)))(state)
    assert len(seen) == 1 and seen[0].shape == (4, 3)
    np.testing.assert_allclose(seen[0], predict_fn(state, x), rtol=1e-6)
    np.testing.assert_allclose(g.data["dense_0"]["kernel"], np.full((2, 3), 4.0))
