"""Axon's examples/structured/credit_card_fraud.exs: a weighted binary classifier on
tabular data (synthetic rows of the Kaggle CSV's 30 feature columns), evaluated with
running-sum confusion counts."""

import numpy as np

import axonc as ax

CAPTURED = {}


def data():
    rng = np.random.default_rng(0)
    n, features = 640, 30
    targets = (rng.random(n) < 0.1).astype(np.float32)
    x = rng.standard_normal((n, features)).astype(np.float32) + targets[:, None] * 1.5
    num_train = int(np.ceil(0.8 * n))
    x = x / np.abs(x).max(axis=0)
    return (x[:num_train], targets[:num_train, None]), (x[num_train:], targets[num_train:, None])


def build_model(num_features):
    return (
        ax.input("input", shape=(None, num_features))
        .dense(256)
        .relu()
        .dense(256)
        .relu()
        .dropout(rate=0.3)
        .dense(1)
        .sigmoid()
    )


def summarize(state):
    metrics = state.metrics
    CAPTURED.update({k: float(metrics[k]) for k in ("tp", "tn", "fp", "fn")})
    return "continue", state


def metrics(loop):
    return (
        loop.metric("true_positives", "tp", "running_sum")
        .metric("true_negatives", "tn", "running_sum")
        .metric("false_positives", "fp", "running_sum")
        .metric("false_negatives", "fn", "running_sum")
    )


def evaluate_model(model, model_state, test_data):
    return (
        metrics(ax.Loop.evaluator(model))
        .handle_event("epoch_completed", summarize)
        .run(test_data, model_state)
    )


def train_model(model, loss, optimizer, train_data):
    return ax.Loop.trainer(model, loss, optimizer).run(train_data, {}, epochs=3)


def batched(x, size):
    return [x[i : i + size] for i in range(0, len(x), size)]


def test_credit_card_fraud():
    (train_inputs, train_targets), (test_inputs, test_targets) = data()

    fraud = float(train_targets.sum())
    legit = train_targets.size - fraud

    batched_train = list(zip(batched(train_inputs, 64), batched(train_targets, 64)))
    batched_test = list(zip(batched(test_inputs, 64), batched(test_targets, 64)))

    model = build_model(train_inputs.shape[1])

    def loss(y_true, y_pred):
        return ax.losses.binary_cross_entropy(
            y_true,
            y_pred,
            negative_weight=1 / legit,
            positive_weight=1 / fraud,
            reduction="mean",
        )

    optimizer = ax.optimizers.adam(learning_rate=1.0e-2)

    model_state = train_model(model, loss, optimizer, batched_train)
    result = evaluate_model(model, model_state, batched_test)

    frauds, legits = float(test_targets.sum()), float(test_targets.size - test_targets.sum())
    assert CAPTURED["tp"] + CAPTURED["fn"] == frauds
    assert CAPTURED["tn"] + CAPTURED["fp"] == legits
    assert set(result[0]) == {"tp", "tn", "fp", "fn"}

    preds = ax.predict(model, model_state, test_inputs) > 0.5
    assert CAPTURED["tp"] == float(np.sum(preds & (test_targets == 1)))
