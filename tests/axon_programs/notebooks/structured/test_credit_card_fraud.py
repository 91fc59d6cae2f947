"""Axon's notebooks/structured/credit_card_fraud.livemd: the fraud classifier of the
example with a shape-less input (synthetic rows of the Kaggle CSV's 30 feature columns)."""

import numpy as np

import axonc as ax


def split_train_test(x, portion):
    num_examples = len(x)
    num_train = int(np.ceil(portion * num_examples))
    return x[:num_train], x[num_train:]


def normalize_features(tensor):
    max = np.abs(tensor).max(axis=0, keepdims=True)
    return tensor / max


def batched(x, n):
    return [x[i : i + n] for i in range(0, len(x), n)]


def test_credit_card_fraud():
    rng = np.random.default_rng(0)
    n = 640
    targets = (rng.random((n, 1)) < 0.1).astype(np.float32)
    features = rng.standard_normal((n, 30)).astype(np.float32) + targets * 1.5

    train_features, test_features = split_train_test(features, 0.8)
    train_targets, test_targets = split_train_test(targets, 0.8)
    train_inputs = normalize_features(train_features)
    test_inputs = normalize_features(test_features)

    model = (
        ax.input("input").dense(256).relu().dense(256).relu().dropout(rate=0.3).dense(1).sigmoid()
    )

    fraud = float(train_targets.sum())
    legit = train_targets.size - fraud
    batched_train = list(zip(batched(train_inputs, 64), batched(train_targets, 64)))

    def loss(y_true, y_pred):
        return ax.losses.binary_cross_entropy(
            y_true, y_pred, negative_weight=1 / legit, positive_weight=1 / fraud, reduction="mean"
        )

    optimizer = ax.optimizers.adam(learning_rate=1.0e-2)
    params = ax.Loop.trainer(model, loss, optimizer).run(batched_train, {}, epochs=3)

    batched_test = list(zip(batched(test_inputs, 64), batched(test_targets, 64)))
    counts = {}

    def summarize(state):
        counts.update({k: float(v) for k, v in state.metrics.items()})
        return "continue", state

    (
        ax.Loop.evaluator(model)
        .metric("true_positives", "tp", "running_sum")
        .metric("true_negatives", "tn", "running_sum")
        .metric("false_positives", "fp", "running_sum")
        .metric("false_negatives", "fn", "running_sum")
        .handle("epoch_completed", summarize)
        .run(batched_test, params)
    )

    assert counts["tp"] + counts["fn"] == float(test_targets.sum())
    assert counts["tn"] + counts["fp"] == float(test_targets.size - test_targets.sum())
    preds = ax.predict(model, params, test_inputs) > 0.5
    assert counts["tp"] == float(np.sum(preds & (test_targets == 1)))
