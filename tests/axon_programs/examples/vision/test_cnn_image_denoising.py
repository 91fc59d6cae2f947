"""Axon's examples/vision/cnn_image_denoising.exs: a convolutional denoiser. The program
declares its input {nil, 1, 28, 28} and feeds {32, 28, 28, 1} batches, which Axon 0.8.1
accepts (the declared shape is not checked against the data)."""

import numpy as np

import axonc as ax
from tests.axon_programs.helpers import record

NOISE_FACTOR = 0.4
BATCH_SIZE = 32
EPOCHS = 3
IMAGE_CHANNELS = 1
IMAGE_SIDE_PIXELS = 28
CHANNEL_VALUE_MAX = 255
TEST_SPLIT = 2


def transform_images(images):
    x = images.reshape(images.shape[0], IMAGE_SIDE_PIXELS, IMAGE_SIDE_PIXELS, IMAGE_CHANNELS)
    x = (x / CHANNEL_VALUE_MAX).astype(np.float32)
    b = [x[i : i + BATCH_SIZE] for i in range(0, len(x), BATCH_SIZE)]
    return b[:TEST_SPLIT], b[TEST_SPLIT:]


def add_noise(images, rng):
    noisy = NOISE_FACTOR * rng.standard_normal(images.shape) + images
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def build_model(input_shape):
    return decoder(encoder(input_shape))


def encoder(input_shape):
    return (
        ax.input("input", shape=input_shape)
        .conv(32, kernel_size=(3, 3), padding="same", activation="relu")
        .max_pool(kernel_size=(2, 2), padding="same")
        .conv(32, kernel_size=(3, 3), padding="same", activation="relu")
        .max_pool(kernel_size=(2, 2), padding="same")
    )


def decoder(input):
    return (
        input.conv_transpose(
            32, kernel_size=(3, 3), strides=[2, 2], activation="relu", padding="same"
        )
        .conv_transpose(32, kernel_size=(3, 3), strides=[2, 2], activation="relu", padding="same")
        .conv(1, kernel_size=(3, 3), activation="sigmoid", padding="same")
    )


def test_cnn_image_denoising():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(96, 28, 28), dtype=np.uint8)

    train_images, test_images = transform_images(images)
    noisy_train_images = [add_noise(b, rng) for b in train_images]
    noisy_test_images = [add_noise(b, rng) for b in test_images]
    train_data = list(zip(train_images, noisy_train_images))

    model = build_model((None, IMAGE_CHANNELS, IMAGE_SIDE_PIXELS, IMAGE_SIDE_PIXELS))
    losses = []
    model_state = (
        ax.Loop.trainer(model, "binary_cross_entropy", "adam")
        .handle_event("epoch_completed", record(losses))
        .run(train_data, {}, epochs=EPOCHS)
    )

    test = noisy_test_images[0]
    preds = ax.predict(model, model_state, test)

    assert preds.shape == (32, 28, 28, 1)
    assert np.all((preds > 0) & (preds < 1))
    assert losses[-1] < losses[0]
