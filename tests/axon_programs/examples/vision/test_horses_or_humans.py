"""Axon's examples/vision/horses_or_humans.exs: a five-stage CNN with spatial dropout on
300x300 RGBA images (synthetic images and one-hot u8 labels of the Kaggle set's shapes),
trained once with adam and once with adam after gradient centralization."""

import numpy as np
import pytest

import axonc as ax
from tests.axon_programs.helpers import record

BATCH_SIZE = 2
IMAGE_CHANNELS = 4
IMAGE_SIDE_PIXELS = 300
CHANNEL_VALUE_MAX = 255


def data(seed):
    rng = np.random.default_rng(seed)
    while True:
        horses = rng.random(BATCH_SIZE) < 0.5
        inp = rng.integers(0, 256, size=(BATCH_SIZE, 300, 300, IMAGE_CHANNELS), dtype=np.uint8)
        inp[horses, :, :, 0] //= 4
        labels = np.where(horses[:, None], [1, 0], [0, 1]).astype(np.uint8)
        yield augment(inp, rng), labels


def augment(inp, rng):
    inp = (inp / CHANNEL_VALUE_MAX).astype(np.float32)
    if rng.uniform() > 0.5:
        return inp[::-1].copy()
    return inp[:, ::-1].copy()


def build_model(input_shape):
    return (
        ax.input("input", shape=input_shape)
        .conv(16, kernel_size=(3, 3), activation="relu")
        .max_pool(kernel_size=(2, 2))
        .conv(32, kernel_size=(3, 3), activation="relu")
        .spatial_dropout(rate=0.5)
        .max_pool(kernel_size=(2, 2))
        .conv(64, kernel_size=(3, 3), activation="relu")
        .spatial_dropout(rate=0.5)
        .max_pool(kernel_size=(2, 2))
        .conv(64, kernel_size=(3, 3), activation="relu")
        .max_pool(kernel_size=(2, 2))
        .conv(64, kernel_size=(3, 3), activation="relu")
        .max_pool(kernel_size=(2, 2))
        .flatten()
        .dropout(rate=0.5)
        .dense(512, activation="relu")
        .dense(2, activation="softmax")
    )


def train_model(model, data, optimizer, epochs, losses):
    return (
        ax.Loop.trainer(model, "binary_cross_entropy", optimizer, log=1)
        .metric("accuracy")
        .handle_event("epoch_completed", record(losses))
        .run(data, {}, epochs=epochs, iterations=2)
    )


def check_trained(model, state, losses):
    assert len(losses) == 2 and all(np.isfinite(losses))
    x, _ = next(data(1))
    preds = ax.predict(model, state, x)
    assert preds.shape == (BATCH_SIZE, 2)
    np.testing.assert_allclose(preds.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_horses_or_humans_without_gradient_centralization():
    model = build_model((None, IMAGE_SIDE_PIXELS, IMAGE_SIDE_PIXELS, IMAGE_CHANNELS))
    optimizer = ax.optimizers.adam(learning_rate=1.0e-4)

    losses = []
    state = train_model(model, data(0), optimizer, 2, losses)
    check_trained(model, state, losses)
