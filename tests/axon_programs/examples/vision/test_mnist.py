"""Axon's examples/vision/mnist.exs: a dense classifier on flattened 28x28 digits
(synthetic images and labels of MNIST's shapes and dtypes), trained with adamw."""

import numpy as np

import axonc as ax
from tests.axon_programs.helpers import record

BATCH_SIZE = 32
IMAGE_SIDE_PIXELS = 28
CHANNEL_VALUE_MAX = 255
LABEL_VALUES = list(range(10))
TEST_SPLIT = 4


def batches(x):
    return [x[i : i + BATCH_SIZE] for i in range(0, len(x), BATCH_SIZE)]


def transform_images(images):
    x = images.reshape(images.shape[0], IMAGE_SIDE_PIXELS**2) / CHANNEL_VALUE_MAX
    b = batches(x.astype(np.float32))
    return b[:TEST_SPLIT], b[TEST_SPLIT:]


def transform_labels(labels):
    y = (labels[:, None] == np.array(LABEL_VALUES)).astype(np.uint8)
    b = batches(y)
    return b[:TEST_SPLIT], b[TEST_SPLIT:]


def build_model(input_shape):
    return (
        ax.input("input", shape=input_shape)
        .dense(128, activation="relu")
        .dropout()
        .dense(len(LABEL_VALUES), activation="softmax")
    )


def train_model(model, train_images, train_labels, epochs, losses):
    return (
        ax.Loop.trainer(
            model, "categorical_cross_entropy", ax.optimizers.adamw(learning_rate=0.005)
        )
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


def test_mnist():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=192).astype(np.uint8)
    prototypes = rng.integers(0, 256, size=(10, 28, 28))
    noise = rng.integers(-40, 41, size=(192, 28, 28))
    images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)

    train_images, test_images = transform_images(images)
    train_labels, test_labels = transform_labels(labels)

    model = build_model((None, IMAGE_SIDE_PIXELS**2))
    losses = []
    model_state = train_model(model, train_images, train_labels, 3, losses)
    result = evaluate_model(model, model_state, test_images, test_labels)

    assert losses[-1] < losses[0]
    preds = ax.predict(model, model_state, np.concatenate(test_images))
    expected = np.mean(preds.argmax(1) == np.concatenate(test_labels).argmax(1))
    np.testing.assert_allclose(float(result[0]["Accuracy"]), expected, rtol=1e-5)
    assert expected > 0.5
