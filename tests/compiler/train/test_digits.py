"""Training on real data: scikit-learn's bundled 8x8 digits (no network needed).

Recipe: pixels / 16, an 80/20 split by np.random.default_rng(7).permutation, Adam
1e-3, batch 32, 20 epochs, categorical cross entropy on one-hot targets, each epoch
shuffled by a seeded generator. The bars sit below what PyTorch reaches with the
same recipe (MLP about 0.95-0.97, CNN 0.964-0.978 over seeds).
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

import axonc as ax
from axonc import optimizers


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    labels = digits.target
    order = np.random.default_rng(7).permutation(len(x))
    cut = int(0.8 * len(x))
    train, test = order[:cut], order[cut:]
    return x[train], labels[train], x[test], labels[test]


def _train_and_score(model: ax.Axon, x_shape: tuple[int, ...], seed: int = 0) -> float:
    x_train, y_train, x_test, y_test = _digits()
    x_train = x_train.reshape(-1, *x_shape)
    x_test = x_test.reshape(-1, *x_shape)
    onehot = np.eye(10, dtype=np.float32)[y_train]
    step = ax.train.compile_step(
        model, "categorical_cross_entropy", optimizers.adam(1e-3), seed=seed
    )
    ts = step.init(ax.template((None, *x_shape), "f32"))
    rng = np.random.default_rng(seed)
    for _ in range(20):
        order = rng.permutation(len(x_train))
        for start in range(0, len(order), 32):
            batch = order[start : start + 32]
            ts, _ = step(ts, x_train[batch], onehot[batch])
    _, predict = ax.build(model)
    predicted = predict(step.model_state(ts), x_test).argmax(axis=1)
    return float(np.mean(predicted == y_test))


def test_mlp_learns_the_digits():
    model = (
        ax.input("x", shape=(None, 64))
        .dense(128, activation="relu")
        .dense(10, activation="softmax")
    )
    assert _train_and_score(model, (64,)) >= 0.94


def test_cnn_learns_the_digits():
    model = (
        ax.input("x", shape=(None, 8, 8, 1))
        .conv(16, kernel_size=3, padding="same", activation="relu")
        .max_pool(kernel_size=2)
        .conv(32, kernel_size=3, padding="same", activation="relu")
        .flatten()
        .dense(10, activation="softmax")
    )
    # PyTorch's 0.964-0.978 is a range over seeds, and one seed alone spans about
    # 0.955-0.98 here (as in PyTorch with the same initial weights), so the bar
    # applies to the mean over three seeds, not to one lucky or unlucky draw
    scores = [_train_and_score(model, (8, 8, 1), seed) for seed in range(3)]
    assert np.mean(scores) >= 0.955, scores
