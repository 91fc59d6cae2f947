"""`ax.Loop.trainer(..., engine="ort-training")`: the same Loop (metrics, validation,
checkpoints, learning-rate scale) with the step run by onnxruntime.training.api.

The digits recipe is tests/compiler/train/test_digits.py's (pixels / 16, 80/20 split by
default_rng(7), Adam 1e-3, batch 32, 20 epochs, seeded shuffles); its bar for the default
engine is 0.94, and the ort-training engine is held to the same bar and to within 0.01 of
the default engine trained in the same test from the same initial parameters.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

import axonc as ax
from axonc import optimizers
from axonc.loop import deserialize_state

MLP = ax.input("x", shape=(None, 64)).dense(128, activation="relu").dense(10, activation="softmax")


def _digits():
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    order = np.random.default_rng(7).permutation(len(x))
    cut = int(0.8 * len(x))
    train, test = order[:cut], order[cut:]
    onehot = np.eye(10, dtype=np.float32)[digits.target]
    return x[train], onehot[train], x[test], digits.target[test], onehot[test]


def _batches(x, y, size=32):
    def epoch(i: int) -> list:
        order = np.random.default_rng(i).permutation(len(x))
        return [(x[order[s : s + size]], y[order[s : s + size]]) for s in range(0, len(x), size)]

    return epoch


def _accuracy(state, x, labels) -> float:
    _, predict = ax.build(MLP)
    return float(np.mean(predict(state, x).argmax(axis=1) == labels))


def test_the_digits_mlp_reaches_the_default_engine_s_accuracy():
    x, y, x_test, labels, y_test = _digits()
    init, _ = ax.build(MLP, mode="train")
    start = init(ax.template((None, 64), "f32"))
    scores = {}
    for engine in ("axonc", "ort-training"):
        loop = (
            ax.Loop.trainer(
                MLP, "categorical_cross_entropy", optimizers.adam(1e-3), log=0, engine=engine
            )
            .metric("accuracy")
            .validate(MLP, [(x_test, y_test)])
        )
        state = loop.run(_batches(x, y), start, epochs=20, progress=False)
        assert isinstance(state, ax.ModelState)
        scores[engine] = _accuracy(state, x_test, labels)
    assert scores["ort-training"] >= 0.94, scores
    assert scores["ort-training"] >= scores["axonc"] - 0.01, scores


def test_metrics_and_validation_come_from_the_ort_steps():
    x, y, x_test, labels, y_test = _digits()
    seen = []

    def record(state):
        seen.append(dict(state.metrics))
        return "continue", state

    loop = (
        ax.Loop.trainer(MLP, "categorical_cross_entropy", "adam", log=0, engine="ort-training")
        .metric("accuracy")
        .validate(MLP, [(x_test, y_test)])
        .handle("epoch_completed", record)
    )
    out = loop.run(_batches(x[:320], y[:320]), epochs=3, progress=False)
    assert [set(m) for m in seen] == [
        {"loss", "accuracy", "validation_loss", "validation_accuracy"}
    ] * 3
    assert seen[2]["loss"] < seen[0]["loss"]
    np.testing.assert_allclose(seen[2]["validation_accuracy"], _accuracy(out, x_test, labels))


def test_each_step_state_holds_the_trained_parameters_and_the_loss(tmp_path):
    """The checkpoint written after epoch 1 holds the parameters the engine trained: the
    final state of a one-epoch run (SGD, deterministic)."""
    x, y, *_ = _digits()
    data = _batches(x[:256], y[:256])
    init, _ = ax.build(MLP, mode="train")
    start = init(ax.template((None, 64), "f32"))

    def loop():
        return ax.Loop.trainer(
            MLP, "categorical_cross_entropy", optimizers.sgd(0.1), log=0, engine="ort-training"
        )

    one = loop().checkpoint(path=tmp_path).run(data, start, epochs=1, progress=False)
    (ckpt,) = tmp_path.iterdir()
    saved = deserialize_state(ckpt.read_bytes())
    for path in one.paths():
        np.testing.assert_array_equal(saved.step_state["model_state"].get(path), one.get(path))
    assert float(saved.step_state["loss"]) > 0
    assert not np.array_equal(one.get(("dense_0", "kernel")), start.get(("dense_0", "kernel")))


@pytest.mark.parametrize("optimizer", [optimizers.sgd(0.1), optimizers.adam(1e-3)])
@pytest.mark.parametrize("event", ["epoch_completed", "iteration_completed"])
def test_a_run_resumed_from_a_checkpoint_ends_where_the_straight_run_does(
    tmp_path, optimizer, event
):
    """The loop checkpoint carries onnxruntime-training's optimizer state (Adam's moments
    and step count), so resuming continues the same trajectory."""
    x, y, *_ = _digits()
    data = _batches(x[:256], y[:256])
    init, _ = ax.build(MLP, mode="train")
    start = init(ax.template((None, 64), "f32"))

    def loop():
        return ax.Loop.trainer(
            MLP, "categorical_cross_entropy", optimizer, log=0, engine="ort-training"
        )

    straight = loop().run(data, start, epochs=3, progress=False)
    filter = {"only": 5} if event == "iteration_completed" else "always"
    loop().checkpoint(path=tmp_path, event=event, filter=filter, file_pattern="c{epoch}").run(
        data, start, epochs=1, progress=False
    )
    state = deserialize_state((tmp_path / "c0").read_bytes())
    steps_done = state.iteration + 1 if event == "iteration_completed" else 8
    assert 1 < steps_done < 8 or event == "epoch_completed"
    assert int(state.step_state["optimizer_state"]["count"]) == steps_done
    start_epoch = state.epoch + (1 if event == "epoch_completed" else 0)
    resumed = loop().from_state(state).run(data, epochs=3 - start_epoch, progress=False)
    for path in straight.paths():
        np.testing.assert_allclose(
            resumed.get(path), straight.get(path), atol=1e-6, err_msg=str(path)
        )


def test_an_optimizer_state_read_after_a_later_step_is_refused():
    x, y, *_ = _digits()
    init_fn, step_fn = ax.Loop.trainer(
        MLP, "categorical_cross_entropy", "adam", engine="ort-training"
    ).rebuild("onnxruntime")
    batch = (x[:32], y[:32])
    first = step_fn(batch, init_fn(batch, None))
    assert first["optimizer_state"]["checkpoint"].dtype == np.uint8
    step_fn(batch, first)
    with pytest.raises(ax.errors.StateError, match="earlier step"):
        first["optimizer_state"]["checkpoint"]


MODELS = {
    "batch_norm_dropout": (
        ax.input("x", shape=(None, 64))
        .dense(32, activation="relu")
        .batch_norm()
        .dropout(rate=0.3)
        .dense(10, activation="softmax")
    ),
    # tests/compiler/train/test_digits.py's CNN: channels-last convs whose kernels the ONNX
    # lowering transposes, max-pool
    "cnn": (
        ax.input("x", shape=(None, 8, 8, 1))
        .conv(16, kernel_size=3, padding="same", activation="relu")
        .max_pool(kernel_size=2)
        .conv(32, kernel_size=3, padding="same", activation="relu")
        .flatten()
        .dense(10, activation="softmax")
    ),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_models_train_as_with_the_default_engine(name):
    """Same initial state, batches and dropout keys: after a few SGD steps both engines hold
    the same parameters, running statistics and keys (the gradients come from two
    independent builders: onnxruntime's and axonc's autodiff)."""
    model = MODELS[name]
    shape = (8, 8, 1) if name == "cnn" else (64,)
    x, y, *_ = _digits()
    x = x.reshape(-1, *shape)
    data = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)]
    init, _ = ax.build(model, mode="train")
    start = init(ax.template((None, *shape), "f32"))
    states = {}
    for engine in ("axonc", "ort-training"):
        loop = ax.Loop.trainer(
            model, "categorical_cross_entropy", optimizers.sgd(0.1), log=0, engine=engine
        )
        states[engine] = loop.run(data, start, epochs=2, progress=False)
    for path in start.paths():
        assert not np.array_equal(states["axonc"].get(path), start.get(path)), path
        np.testing.assert_allclose(
            states["ort-training"].get(path),
            states["axonc"].get(path),
            atol=1e-5,
            err_msg=str(path),
        )


def test_the_learning_rate_scale_reaches_onnxruntime_training():
    """A step state whose learning_rate_scale is 0 (reduce_lr_on_plateau's lever) leaves
    the parameters where they were."""
    x, y, *_ = _digits()
    init_fn, step_fn = ax.Loop.trainer(
        MLP, "categorical_cross_entropy", "adam", engine="ort-training"
    ).rebuild("onnxruntime")
    batch = (x[:32], y[:32])
    step_state = init_fn(batch, None)
    frozen = step_fn(batch, {**step_state, "learning_rate_scale": 0.0})
    for path in step_state["model_state"].paths():
        np.testing.assert_array_equal(
            frozen["model_state"].get(path), step_state["model_state"].get(path)
        )
    moved = step_fn(batch, {**frozen, "learning_rate_scale": 1.0})
    assert not np.array_equal(
        moved["model_state"].get(("dense_0", "kernel")),
        step_state["model_state"].get(("dense_0", "kernel")),
    )


def test_the_reference_compiler_does_not_apply_to_the_engine():
    loop = ax.Loop.trainer(MLP, "categorical_cross_entropy", "adam", engine="ort-training")
    x, y, *_ = _digits()
    with pytest.raises(ax.errors.OptionError, match="does not apply"):
        loop.run([(x[:8], y[:8])], compiler="reference", progress=False)
