"""Axon's notebooks/vision/mnist.livemd: a dense classifier on 1x28x28 digits (synthetic
images and labels of MNIST's IDX files' shapes and dtypes)."""

import numpy as np

import axonc as ax
from tests.axon_programs.helpers import record


def test_mnist():
    rng = np.random.default_rng(0)
    n_images, n_rows, n_cols = 128, 28, 28
    labels = rng.integers(0, 10, size=n_images).astype(np.uint8)
    prototypes = rng.integers(0, 256, size=(10, n_rows, n_cols))
    noise = rng.integers(-40, 41, size=(n_images, n_rows, n_cols))
    raw = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)

    images = (raw.reshape(n_images, 1, n_rows, n_cols) / 255).astype(np.float32)
    images = [images[i : i + 32] for i in range(0, n_images, 32)]

    targets = (labels[:, None] == np.arange(10)).astype(np.uint8)
    targets = [targets[i : i + 32] for i in range(0, n_images, 32)]

    model = (
        ax.input("input", shape=(None, 1, 28, 28))
        .flatten()
        .dense(128, activation="relu")
        .dense(10, activation="softmax")
    )

    losses = []
    params = (
        ax.Loop.trainer(model, "categorical_cross_entropy", "adam")
        .metric("accuracy", "Accuracy")
        .handle_event("epoch_completed", record(losses))
        .run(list(zip(images, targets)), {}, epochs=3)
    )

    first_batch = images[0]
    output = ax.predict(model, params, first_batch)

    predicted = np.argmax(output, axis=1)
    assert output.shape == (32, 10) and predicted.shape == (32,)
    assert losses[-1] < losses[0]
    assert np.mean(predicted == labels[:32]) > 0.5
