"""Axon's notebooks/generative/mnist_autoencoder_using_kino.livemd: a denoising dense
autoencoder with validation, and a handler that renders an example every 450 iterations
(Kino's frame dropped; the handler's input/output image is checked)."""

import numpy as np

import axonc as ax

NOISE_FACTOR = 0.4


def preprocess(raw):
    return (raw.reshape(raw.shape[0], 1, 28, 28) / 255).astype(np.float32)


def build():
    return (
        ax.input("image", shape=(None, 1, 28, 28))
        .flatten()
        # the encoder
        .dense(256, activation="relu")
        .dense(128, activation="relu")
        .dense(64, activation="relu")
        # bottleneck
        .dense(10, activation="relu")
        # the decoder
        .dense(64, activation="relu")
        .dense(128, activation="relu")
        .dense(256, activation="relu")
        .dense(784, activation="sigmoid")
        .reshape(("auto", 1, 28, 28))
    )


def make_noiser(seed):
    rng = np.random.default_rng(seed)

    def add_noise(images):
        noisy = NOISE_FACTOR * rng.standard_normal(images.shape) + images
        return np.clip(noisy, 0.0, 1.0).astype(np.float32)

    return add_noise


def batched(x, n):
    return [x[i : i + n] for i in range(0, len(x), n)]


def data(train_images, test_images, batch_size, add_noise):
    train_data = [(add_noise(b), b) for b in batched(train_images, batch_size)]
    test_data = [(add_noise(b), b) for b in batched(test_images, batch_size)]
    return train_data, test_data


def test_parameter_count():
    model = build()
    table = ax.display.as_table(model, ax.template((4, 1, 28, 28), "f32"))

    encoder_parameters = 784 * 256 + 256 + (256 * 128 + 128) + (128 * 64 + 64) + (64 * 10 + 10)
    decoder_parameters = 10 * 64 + 64 + (64 * 128 + 128) + (128 * 256 + 256) + (256 * 784 + 784)
    total_parameters = encoder_parameters + decoder_parameters

    specs = ax.trace_init(model, ax.template((4, 1, 28, 28), "f32"))
    assert sum(int(np.prod(s.shape)) for s in specs.values()) == total_parameters
    assert str(total_parameters) in table.replace(",", "")


def test_train_with_validation():
    rng = np.random.default_rng(0)
    train_images = preprocess(rng.integers(0, 256, size=(64, 28, 28), dtype=np.uint8))
    test_images = preprocess(rng.integers(0, 256, size=(32, 28, 28), dtype=np.uint8))
    add_noise = make_noiser(1)
    batch_size = 16
    train_data, test_data = data(train_images, test_images, batch_size, add_noise)

    model = build()
    seen = []

    def record(state):
        seen.append((float(state.metrics["loss"]), float(state.metrics["validation_loss"])))
        return "continue", state

    (
        ax.Loop.trainer(model, "mean_squared_error", ax.optimizers.adamw(learning_rate=0.001))
        .validate(model, test_data)
        .handle_event("epoch_completed", record)
        .run(train_data, {}, epochs=3)
    )
    assert len(seen) == 3 and seen[-1][0] < seen[0][0]
    assert all(np.isfinite(v) for pair in seen for v in pair)


def test_render_example_every_450_iterations():
    rng = np.random.default_rng(2)
    train_images = preprocess(rng.integers(0, 256, size=(900, 28, 28), dtype=np.uint8))
    test_images = preprocess(rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8))
    add_noise = make_noiser(3)
    train_data, test_data = data(train_images, test_images, 2, add_noise)
    model = build()

    def combined_input_output(params, image_index):
        test_image = add_noise(test_images[image_index])
        reconstructed_image = np.squeeze(ax.predict(model, params, test_image), axis=0)
        return np.concatenate([test_image, reconstructed_image], axis=2)

    frames = []

    def render_example_handler(state):
        params = state.step_state["model_state"]
        image_index = int(rng.integers(0, test_images.shape[0]))
        frames.append((state.epoch, state.iteration, combined_input_output(params, image_index)))
        return "continue", state

    (
        ax.Loop.trainer(model, "mean_squared_error", ax.optimizers.adamw(learning_rate=0.001))
        .handle_event("iteration_completed", render_example_handler, every=450)
        .validate(model, test_data)
        .run(train_data, {}, epochs=1)
    )
    # Axon's every: n fires on the 1st, (n+1)th, ... iteration: 0 and 450 of 450 batches
    assert [(e, i) for e, i, _ in frames] == [(0, 0)]
    assert frames[0][2].shape == (1, 28, 56)
