"""Axon's examples/vision/cifar10.exs: a small CNN with batch norm and dropout on 32x32x3
images (synthetic images and labels of CIFAR-10's shapes and dtypes)."""

import numpy as np

import axonc as ax
from tests.axon_programs.helpers import record

BATCH_SIZE = 32
CHANNEL_VALUE_MAX = 255
LABEL_VALUES = list(range(10))
TRAIN_BATCHES = 2


def transform_images(images):
    x = images.transpose(0, 2, 3, 1) / CHANNEL_VALUE_MAX
    b = [x[i : i + BATCH_SIZE].astype(np.float32) for i in range(0, len(x), BATCH_SIZE)]
    return b[:TRAIN_BATCHES], b[TRAIN_BATCHES:]


def transform_labels(labels):
    y = (labels[:, None] == np.array(LABEL_VALUES)).astype(np.uint8)
    b = [y[i : i + BATCH_SIZE] for i in range(0, len(y), BATCH_SIZE)]
    return b[:TRAIN_BATCHES], b[TRAIN_BATCHES:]


def build_model(input_shape):
    return (
        ax.input("input", shape=input_shape)
        .conv(32, kernel_size=(3, 3), activation="relu")
        .batch_norm()
        .max_pool(kernel_size=(2, 2))
        .conv(64, kernel_size=(3, 3), activation="relu")
        .batch_norm()
        .max_pool(kernel_size=(2, 2))
        .flatten()
        .dense(64, activation="relu")
        .dropout(rate=0.5)
        .dense(len(LABEL_VALUES), activation="softmax")
    )


def train_model(model, train_images, train_labels, epochs, losses):
    return (
        ax.Loop.trainer(model, "categorical_cross_entropy", "adam")
        .metric("accuracy", "Accuracy")
        .handle_event("epoch_completed", record(losses))
        .run(list(zip(train_images, train_labels)), {}, epochs=epochs)
    )


def evaluate_model(model, model_state, test_images, test_labels):
    return (
        ax.Loop.evaluator(model)
        .metric("accuracy", "Accuracy")
        .run(list(zip(test_images, test_labels)), model_state)
    )


def test_cifar10():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=96).astype(np.uint8)
    images = rng.integers(0, 256, size=(96, 3, 32, 32)).astype(np.uint8)
    _, channels, width, height = images.shape

    train_images, test_images = transform_images(images)
    train_labels, test_labels = transform_labels(labels)

    model = build_model((None, width, height, channels))
    losses = []
    model_state = train_model(model, train_images, train_labels, 3, losses)
    result = evaluate_model(model, model_state, test_images, test_labels)

    assert losses[-1] < losses[0]
    preds = ax.predict(model, model_state, test_images[0])
    assert preds.shape == (32, 10)
    np.testing.assert_allclose(preds.sum(axis=1), 1.0, rtol=1e-5)
    expected = np.mean(preds.argmax(1) == test_labels[0].argmax(1))
    np.testing.assert_allclose(float(result[0]["Accuracy"]), expected, rtol=1e-5)
