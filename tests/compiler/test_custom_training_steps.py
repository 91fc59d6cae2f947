"""Hand-written training steps as Axon programs write them: a GAN, a VAE sampling layer,
the PyTorch cheatsheet's manual loop, and Loop.trainer given (init_fn, predict_fn)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import axonc as ax
import axonc.numpy as anp
from axonc import defn
from axonc.interpreter import run

Z, BATCH = 4, 32
CENTER = np.array([2.0, -1.0], np.float32)
FAKE = np.tile(np.array([[1.0, 0.0]], np.float32), (BATCH, 1))
REAL = FAKE[:, ::-1].copy()


def _sgd(params: ax.ModelState, grads: ax.ModelState, lr: float) -> ax.ModelState:
    """Plain gradient descent on every parameter (state passes through)."""
    data = {
        layer: {k: v - lr * grads.data[layer][k] for k, v in leaves.items()}
        for layer, leaves in params.data.items()
    }
    return ax.ModelState(data, parameters=params.parameters, state=params.state)


def _cce(y_true, y_pred):
    return -anp.mean(anp.sum(y_true * anp.log(anp.clip(y_pred, 1e-7, 1.0)), axis=-1))


def _gan():
    gen = ax.input("noise", shape=(None, Z)).dense(16).leaky_relu(alpha=0.2).dense(2)
    disc = (
        ax.input("x", shape=(None, 2))
        .dense(16)
        .leaky_relu(alpha=0.2)
        .dense(2, activation="softmax")
    )
    init_g, g_model = ax.build(gen, mode="train")
    init_d, d_model = ax.build(disc, mode="train")
    return init_g, g_model, init_d, d_model


@pytest.mark.slow
def test_a_gan_step_of_two_value_and_grad_calls_trains_the_generator_towards_the_data():
    init_g, g_model, init_d, d_model = _gan()
    g_params = init_g(ax.template((1, Z), "f32"))
    d_params = init_d(ax.template((1, 2), "f32"))
    key = anp.random.key(9999)
    rng = np.random.default_rng(0)
    probe, _ = anp.random.normal(anp.random.key(1), shape=(256, Z))

    def distance(params):
        return float(np.linalg.norm(g_model(params, probe)["prediction"].mean(0) - CENTER))

    start = distance(g_params)
    defn._CACHE.clear()
    d_losses, late = [], []
    for i in range(300):
        real = (CENTER + 0.3 * rng.normal(size=(BATCH, 2))).astype(np.float32)
        noise, key = anp.random.normal(key, shape=(BATCH, Z))

        def d_loss_fn(params, real=real, noise=noise, g_params=g_params):
            fake = g_model(g_params, noise)["prediction"]
            joint = anp.concatenate(
                [d_model(params, fake)["prediction"], d_model(params, real)["prediction"]]
            )
            return _cce(np.concatenate([FAKE, REAL]), joint)

        d_loss, d_grads = anp.value_and_grad(d_params, d_loss_fn)
        d_params = _sgd(d_params, d_grads, 0.05)

        def g_loss_fn(params, noise=noise, d_params=d_params):
            fake = g_model(params, noise)["prediction"]
            return _cce(REAL, d_model(d_params, fake)["prediction"])

        _, g_grads = anp.value_and_grad(g_params, g_loss_fn)
        g_params = _sgd(g_params, g_grads, 0.05)
        d_losses.append(float(d_loss))
        if i >= 200 and i % 10 == 0:
            late.append(distance(g_params))
    # the generator's samples move onto the data and stay near it (a GAN orbits its
    # equilibrium); the discriminator ends near chance (ln 2)
    assert max(late) < 0.4 * start and np.mean(late) < 0.25 * start
    assert len(defn._CACHE) == 2  # one compiled graph per step function, reused 300 times
    assert np.mean(d_losses[-50:]) == pytest.approx(np.log(2), abs=0.1)


def test_a_discriminator_step_alone_lowers_its_loss_with_the_generator_fixed():
    init_g, g_model, init_d, d_model = _gan()
    g_params = init_g(ax.template((1, Z), "f32"))
    d_params = init_d(ax.template((1, 2), "f32"))
    noise, _ = anp.random.normal(anp.random.key(3), shape=(BATCH, Z))
    real = (CENTER + 0.3 * np.random.default_rng(1).normal(size=(BATCH, 2))).astype(np.float32)

    def d_loss_fn(params):
        fake = g_model(g_params, noise)["prediction"]
        joint = anp.concatenate(
            [d_model(params, fake)["prediction"], d_model(params, real)["prediction"]]
        )
        return _cce(np.concatenate([FAKE, REAL]), joint)

    losses = []
    for _ in range(20):
        loss, grads = anp.value_and_grad(d_params, d_loss_fn)
        d_params = _sgd(d_params, grads, 0.1)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    assert all(b <= a + 1e-6 for a, b in itertools.pairwise(losses))


def _sampling(x, mode=None):
    """Fashion-MNIST VAE's sampling layer: x = (batch, 2, latent) holding mu and log_var."""
    mu = x[:, 0, :]
    log_var = x[:, 1, :]
    std = anp.exp(0.5 * log_var)
    eps = anp.random_normal(std)
    return anp.stack([mu + std * eps, mu, std], axis=1)


@pytest.mark.parametrize("compiler", ["onnxruntime", "reference"])
def test_a_vae_sampling_layer_draws_the_right_distribution(compiler):
    model = ax.layer(_sampling, [ax.input("x", shape=(None, 2, 3))], name="sampling_layer")
    init_fn, predict_fn = ax.build(model, compiler=compiler)
    state = init_fn(ax.template((1, 2, 3), "f32"))
    mu = np.array([0.5, -2.0, 3.0], np.float32)
    log_var = np.log(np.array([1.0, 0.25, 4.0], np.float32) ** 2)
    x = np.broadcast_to(np.stack([mu, log_var]), (20000, 2, 3)).astype(np.float32)
    out = predict_fn(state, x)
    sample = out[:, 0, :]
    sigma = np.array([1.0, 0.25, 4.0])
    # within 4 standard errors of the mean, and the spread within 3 %
    assert np.all(np.abs(sample.mean(0) - mu) < 4 * sigma / np.sqrt(len(x))), sample.mean(0)
    np.testing.assert_allclose(sample.std(0), sigma, rtol=0.03)


def test_the_vae_sample_is_the_same_on_onnxruntime_and_the_reference():
    model = ax.layer(_sampling, [ax.input("x", shape=(None, 2, 3))], name="sampling_layer")
    x = np.random.default_rng(4).normal(size=(5, 2, 3)).astype(np.float32)
    outs = []
    for compiler in ("onnxruntime", "reference"):
        init_fn, predict_fn = ax.build(model, compiler=compiler)
        outs.append(predict_fn(init_fn(ax.template((1, 2, 3), "f32")), x))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_gradients_flow_through_the_reparameterised_sample():
    model = ax.layer(_sampling, [ax.input("x", shape=(None, 2, 3))], name="sampling_layer")
    init_fn, predict_fn = ax.build(model)
    state = init_fn(ax.template((1, 2, 3), "f32"))
    x = np.random.default_rng(5).normal(size=(4, 2, 3)).astype(np.float32)
    out, g = anp.value_and_grad(x, lambda t: predict_fn(state, t), lambda o: anp.sum(o[:, 0, :]))
    sample, mu, std = out[:, 0], out[:, 1], out[:, 2]
    eps = (sample - mu) / std
    # d sum(mu + exp(log_var / 2) eps) / d mu = 1, / d log_var = exp(log_var / 2) eps / 2
    np.testing.assert_allclose(g[:, 0], np.ones_like(mu))
    np.testing.assert_allclose(g[:, 1], 0.5 * std * eps, rtol=1e-4, atol=1e-6)


def test_an_encoder_with_a_sampling_layer_matches_finite_differences():
    encoder = ax.input("image", shape=(None, 5)).dense(6, name="bottleneck")
    model = ax.layer(_sampling, [encoder.reshape(("batch", 2, 3))], name="sampling_layer")
    init_fn, predict_fn = ax.build(model, mode="train")
    state = init_fn(ax.template((1, 5), "f32"))
    x = np.random.default_rng(6).normal(size=(3, 5)).astype(np.float32)

    def loss(params):
        return anp.sum(anp.square(predict_fn(params, x)["prediction"][:, 0, :]))

    _, grads = anp.value_and_grad(state, loss)
    kernel = state.data["bottleneck"]["kernel"].astype(np.float64)

    def reference(k):
        data = {"bottleneck": {"kernel": k, "bias": state.data["bottleneck"]["bias"]}}
        out, _ = run(model, {"image": x.astype(np.float64)}, data, "train")
        return float(np.sum(np.asarray(out)[:, 0, :] ** 2))

    for idx in [(0, 0), (2, 4), (4, 1)]:
        plus, minus = kernel.copy(), kernel.copy()
        plus[idx] += 1e-6
        minus[idx] -= 1e-6
        fd = (reference(plus) - reference(minus)) / 2e-6
        assert grads.data["bottleneck"]["kernel"][idx] == pytest.approx(fd, rel=2e-3, abs=1e-4)


def _regression_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [2.0], [-1.0]], np.float32)).astype(np.float32)
    return x, y


def test_the_cheatsheet_manual_loop_differentiates_predict_fn_and_learns():
    model = ax.input("x", shape=(None, 3)).dense(8, activation="tanh").dense(1)
    init_fn, predict_fn = ax.build(model, mode="train")
    params = init_fn(ax.template((1, 3), "f32"))
    x, y = _regression_data()

    def loss_of(p):
        preds = predict_fn(p, x)["prediction"]
        return preds, anp.mean(anp.square(preds - y))

    losses = []
    for _ in range(60):
        (_, loss), grads = anp.value_and_grad(params, loss_of, lambda out: out[1])
        params = _sgd(params, grads, 0.05)
        losses.append(float(loss))
    assert losses[-1] < 0.2 * losses[0]


def test_loop_trainer_takes_the_pair_from_build_in_place_of_a_model():
    model = ax.input("x", shape=(None, 3)).dense(8, activation="tanh").dense(1)
    pair = ax.build(model, mode="train", seed=3)
    x, y = _regression_data()
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    from_pair = ax.Loop.trainer(pair, "mean_squared_error", ax.optimizers.sgd(0.05), log=0)
    from_model = ax.Loop.trainer(
        model, "mean_squared_error", ax.optimizers.sgd(0.05), log=0, seed=3
    )
    a = from_pair.run(batches, ax.ModelState.empty(), epochs=2)
    b = from_model.run(batches, ax.ModelState.empty(), epochs=2)
    for path in b.paths():
        np.testing.assert_array_equal(a.get(path), b.get(path))


def test_loop_trainer_refuses_a_pair_of_plain_functions():
    from axonc.errors import OptionError

    with pytest.raises(OptionError, match=r"from ax\.build"):
        ax.Loop.trainer((lambda *a: None, lambda *a: None), "mean_squared_error", "sgd")


def test_loop_evaluator_takes_the_pair_too():
    model = ax.input("x", shape=(None, 3)).dense(1)
    init_fn, predict_fn = ax.build(model)
    state = init_fn(ax.template((1, 3), "f32"))
    x, y = _regression_data()
    metrics = (
        ax.Loop.evaluator((init_fn, predict_fn)).metric("mean_absolute_error").run([(x, y)], state)
    )
    expected = np.mean(np.abs(predict_fn(state, x) - y))
    assert float(metrics[0]["mean_absolute_error"]) == pytest.approx(float(expected), rel=1e-5)


def test_loop_trainer_trains_a_model_with_a_sampling_layer():
    encoder = ax.input("image", shape=(None, 6)).dense(8, activation="relu").dense(4)
    sampled = ax.layer(_sampling, [encoder.reshape(("batch", 2, 2))], name="sampling_layer")
    decoder = sampled.nx(lambda t: t[:, 0, :]).dense(8, activation="relu").dense(6)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    batches = [(x[i : i + 16], x[i : i + 16]) for i in range(0, 64, 16)]
    losses = []
    loop = ax.Loop.trainer(decoder, "mean_squared_error", ax.optimizers.adam(1e-2), log=0)
    loop = loop.handle_event(
        "epoch_completed", lambda s: losses.append(float(s.metrics["loss"])) or ("continue", s)
    )
    loop.run(batches, ax.ModelState.empty(), epochs=15)
    assert losses[-1] < 0.7 * losses[0]
