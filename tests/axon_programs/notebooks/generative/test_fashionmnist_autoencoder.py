"""Axon's notebooks/generative/fashionmnist_autoencoder.livemd: a dense autoencoder, and
the reconstruction errors of identical, noised and different images."""

import numpy as np

import axonc as ax
from tests.axon_programs.helpers import record


def encoder(x, latent_dim):
    return x.flatten().dense(latent_dim, activation="relu")


def decoder(x):
    return x.dense(784, activation="sigmoid").reshape(("batch", 1, 28, 28))


def mean_square_error(y_pred, y):
    return np.mean(np.power(y_pred - y, 2))


def mean_absolute_error(y_pred, y):
    return np.mean(np.abs(y_pred - y))


def test_fashionmnist_autoencoder():
    rng = np.random.default_rng(0)
    image_data = rng.integers(0, 256, size=(64, 1, 28, 28), dtype=np.uint8)

    train_images = (image_data / 255.0).astype(np.float32)

    model = decoder(encoder(ax.input("input", shape=(None, 1, 28, 28)), 64))

    batch_size = 32
    epochs = 3

    batched_images = [train_images[i : i + batch_size] for i in range(0, 64, batch_size)]
    train_batches = list(zip(batched_images, batched_images))

    losses = []
    params = (
        ax.Loop.trainer(model, "mean_squared_error", "adam")
        .metric("mean_absolute_error", "Error")
        .handle_event("epoch_completed", record(losses))
        .run(train_batches, {}, epochs=epochs)
    )
    assert losses[-1] < losses[0]

    shoe_image = train_images[0]
    noised_shoe_image = shoe_image + rng.normal(0.0, 0.05, size=shoe_image.shape)
    other_image = train_images[1]

    assert (
        mean_square_error(shoe_image, shoe_image),
        mean_absolute_error(shoe_image, shoe_image),
    ) == (0, 0)
    noised = mean_square_error(shoe_image, noised_shoe_image)
    assert 0 < noised < mean_square_error(shoe_image, other_image)

    sample_image = train_images[0:1]
    compressed_image = ax.predict(model, params, sample_image)
    assert compressed_image.shape == (1, 1, 28, 28)
