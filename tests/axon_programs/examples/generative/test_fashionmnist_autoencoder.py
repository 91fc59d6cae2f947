"""Axon's examples/generative/fashionmnist_autoencoder.exs: a dense autoencoder on
28x28 images (synthetic images of Fashion-MNIST's shape and dtype)."""

import numpy as np

import axonc as ax
from tests.axon_programs.helpers import record

BATCH_SIZE = 32
IMAGE_CHANNELS = 1
IMAGE_SIDE_PIXELS = 28
CHANNEL_VALUE_MAX = 255


def encoder(x, latent_dim):
    return x.flatten().dense(latent_dim, activation="relu")


def decoder(x):
    return x.dense(IMAGE_SIDE_PIXELS**2, activation="sigmoid").reshape(
        ("batch", IMAGE_CHANNELS, IMAGE_SIDE_PIXELS, IMAGE_SIDE_PIXELS)
    )


def build_model(input_shape, latent_dim):
    return decoder(encoder(ax.input("input", shape=input_shape), latent_dim))


def transform_images(images):
    images = images.reshape(images.shape[0], IMAGE_CHANNELS, IMAGE_SIDE_PIXELS, IMAGE_SIDE_PIXELS)
    images = (images / CHANNEL_VALUE_MAX).astype(np.float32)
    return [images[i : i + BATCH_SIZE] for i in range(0, len(images), BATCH_SIZE)]


def train_model(model, train_images, epochs, losses):
    return (
        ax.Loop.trainer(model, "mean_squared_error", "adam")
        .metric("mean_absolute_error", "Error")
        .handle_event("epoch_completed", record(losses))
        .run(list(zip(train_images, train_images)), {}, epochs=epochs)
    )


def test_fashionmnist_autoencoder():
    images = np.random.default_rng(0).integers(0, 256, size=(64, 28, 28), dtype=np.uint8)

    train_images = transform_images(images)

    model = build_model((None, IMAGE_CHANNELS, IMAGE_SIDE_PIXELS, IMAGE_SIDE_PIXELS), 64)
    losses = []
    model_state = train_model(model, train_images, 3, losses)

    sample_image = train_images[0][0:1].reshape(
        1, IMAGE_CHANNELS, IMAGE_SIDE_PIXELS, IMAGE_SIDE_PIXELS
    )
    out = ax.predict(model, model_state, sample_image)

    assert out.shape == (1, 1, 28, 28)
    assert np.all((out > 0) & (out < 1))
    assert losses[-1] < losses[0]
