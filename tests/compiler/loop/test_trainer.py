"""Loop.trainer / evaluator / validate / early_stop / reduce_lr_on_plateau / log /
progress on small models, checked against independent computations: a hand-driven
compiled step, numpy predictions, and SGD on a linear model worked out with numpy."""

from __future__ import annotations

import io

import numpy as np
import pytest

import axonc as ax
from axonc import Loop, optimizers
from axonc.errors import InputError, OptionError, ShapeHintWarning
from axonc.loop import State

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 4)).astype(np.float32)
LABELS = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int)
Y = np.eye(3, dtype=np.float32)[LABELS]
BATCHES = [(X[i : i + 16], Y[i : i + 16]) for i in range(0, 48, 16)]


def mlp() -> ax.Axon:
    return ax.input("x", shape=(None, 4)).dense(8, activation="relu").dense(3, activation="softmax")


def test_trainer_matches_a_hand_driven_compiled_step():
    model = mlp()
    state = Loop.trainer(model, "categorical_cross_entropy", optimizers.adam(1e-2), log=0).run(
        BATCHES, epochs=2, progress=False
    )
    step = ax.train.compile_step(model, "categorical_cross_entropy", optimizers.adam(1e-2))
    ts = step.init(ax.template((None, 4), "f32"))
    for _ in range(2):
        for x, y in BATCHES:
            ts, _ = step(ts, x, y)
    for path, value in ts.model_state.flatten().items():
        np.testing.assert_array_equal(state.flatten()[path], value)


def test_loss_metric_is_the_epoch_mean_of_batch_losses():
    model = mlp()
    losses = []
    loop = Loop.trainer(model, "categorical_cross_entropy", optimizers.sgd(0.1), log=0).handle(
        "iteration_completed",
        lambda s: (losses.append(float(s.step_state["loss"])), ("continue", s))[1],
    )
    history = dataclass_history(loop, epochs=2)
    assert float(history[0]["loss"]) == pytest.approx(np.mean(losses[:3]), rel=1e-6)
    assert float(history[1]["loss"]) == pytest.approx(np.mean(losses[3:]), rel=1e-6)
    # each batch loss is the categorical cross entropy of the step's own prediction
    seen = []
    Loop.trainer(model, "categorical_cross_entropy", optimizers.sgd(0.1), log=0).handle(
        "iteration_completed", lambda s: (seen.append(dict(s.step_state)), ("continue", s))[1]
    ).run(BATCHES[:1], progress=False)
    s = seen[0]
    expected = -np.mean(np.sum(s["y_true"] * np.log(np.clip(s["y_pred"], 1e-7, 1)), axis=-1))
    assert float(s["loss"]) == pytest.approx(expected, rel=1e-5)


def dataclass_history(loop: Loop, epochs: int) -> dict:
    """Run `loop` and return the final State's metrics (the per-epoch history)."""
    from dataclasses import replace

    return replace(loop, output_transform=lambda s: s.metrics).run(
        BATCHES, epochs=epochs, progress=False
    )


def test_evaluator_accuracy_matches_numpy_predictions():
    model = mlp()
    init, predict = ax.build(model)
    state = init(ax.template((None, 4)))
    result = Loop.evaluator(model).metric("accuracy").run(BATCHES, state, progress=False)
    expected = np.mean([np.mean(predict(state, x).argmax(1) == y.argmax(1)) for x, y in BATCHES])
    assert list(result) == [0]
    assert float(result[0]["accuracy"]) == pytest.approx(expected, rel=1e-6)


def test_validate_adds_the_metrics_attached_before_it():
    model = mlp()
    seen: list[State] = []
    loop = (
        Loop.trainer(model, "categorical_cross_entropy", optimizers.adam(1e-2), log=0)
        .metric("accuracy")
        .validate(model, BATCHES[:2])
        .metric("mean_squared_error")
        .handle("epoch_completed", lambda s: (seen.append(s), ("continue", s))[1])
    )
    loop.run(BATCHES, epochs=1, progress=False)
    metrics = seen[0].metrics
    assert set(metrics) == {
        "loss",
        "accuracy",
        "mean_squared_error",
        "validation_loss",
        "validation_accuracy",
    }
    _, predict = ax.build(model)
    ms = seen[0].step_state["model_state"]
    preds = [(predict(ms, x), y) for x, y in BATCHES[:2]]
    acc = np.mean([np.mean(p.argmax(1) == y.argmax(1)) for p, y in preds])
    cce = np.mean([-np.mean(np.sum(y * np.log(np.clip(p, 1e-7, 1)), -1)) for p, y in preds])
    assert float(metrics["validation_accuracy"]) == pytest.approx(acc, rel=1e-6)
    assert float(metrics["validation_loss"]) == pytest.approx(cce, rel=1e-5)


def scripted(values: list[float]) -> Loop:
    """One batch per epoch whose 'score' metric is values[epoch]."""
    loop = Loop.loop(
        lambda batch, s: {
            "score": batch,
            "lr": s["lr"],
            "learning_rate_scale": s["learning_rate_scale"],
        }
    )
    return loop.metric(lambda v: v, "score", transform_or_fields="score")


def run_scripted(loop: Loop, values: list[float]) -> State:
    return loop.run(
        lambda e: [values[e]], {"lr": 1, "learning_rate_scale": 1.0}, epochs=len(values)
    )


def test_early_stop_halts_after_patience_events_without_improvement():
    values = [5.0, 4.0, 4.5, 4.2, 4.1, 3.0, 2.0]
    final = run_scripted(scripted(values).early_stop("score", patience=2), values)
    # best 4.0 at epoch 1; epochs 2 and 3 wait, epoch 4 is the third miss -> halt
    assert final.status == "halted"
    assert sorted(final.metrics) == [0, 1, 2, 3, 4]
    final = run_scripted(scripted(values).early_stop("score", patience=2, mode="max"), values)
    # max mode: 5.0 is never beaten; epochs 1, 2 wait, epoch 3 halts
    assert sorted(final.metrics) == [0, 1, 2, 3]


def test_reduce_lr_on_plateau_scales_and_resets_the_reference():
    values = [5.0, 6.0, 6.0, 4.0, 7.0, 7.0]
    scales = []
    loop = (
        scripted(values)
        .reduce_lr_on_plateau("score", patience=1, factor=0.5)
        .handle(
            "epoch_completed",
            lambda s: (scales.append(s.step_state["learning_rate_scale"]), ("continue", s))[1],
        )
    )
    final = run_scripted(loop, values)
    # misses at epochs 1, 2 -> fire at 2 (reference becomes 6.0); 4.0 improves at 3;
    # 7.0 misses at 4, fires at 5
    assert scales == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    assert final.status == "completed"


def test_reduced_learning_rate_drives_the_next_sgd_steps():
    """Linear model, MSE, SGD: the trainer's params equal numpy's hand-derived SGD with the
    learning rate cut by `factor` after the first epoch."""
    model = ax.input("x", shape=(None, 3)).dense(1)
    x = RNG.normal(size=(8, 3)).astype(np.float32)
    y = RNG.normal(size=(8, 1)).astype(np.float32)
    lr, factor = 0.1, 0.25
    loop = Loop.trainer(model, "mean_squared_error", optimizers.sgd(lr), log=0)
    loop = loop.reduce_lr_on_plateau("loss", mode=lambda v: False, patience=0, factor=factor)
    state = loop.run([(x, y)], epochs=3, progress=False)
    init, _ = ax.build(model)
    start = init(ax.template((None, 3)))
    w = start.data["dense_0"]["kernel"].astype(np.float64)
    b = start.data["dense_0"]["bias"].astype(np.float64)
    for scale in (1.0, factor, factor**2):
        r = x @ w + b - y
        gw, gb = 2 * x.T @ r / r.size, 2 * r.sum(0) / r.size
        w, b = w - lr * scale * gw, b - lr * scale * gb
    np.testing.assert_allclose(state.data["dense_0"]["kernel"], w, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(state.data["dense_0"]["bias"], b, rtol=1e-5, atol=1e-7)


def test_a_monitored_metric_the_loop_lacks_fails_at_run_start():
    steps = []
    loop = Loop.loop(lambda b, s: steps.append(b) or s).metric(
        lambda v: v, "score", transform_or_fields=lambda s: 0.0
    )
    with pytest.raises(
        OptionError, match=r"early_stop.*'validation_score'.*does not compute.*score"
    ):
        loop.early_stop("validation_score").run([1, 2], {})
    with pytest.raises(OptionError, match=r"checkpoint criteria.*'acc'"):
        loop.checkpoint(criteria="acc").run([1, 2], {})
    assert steps == []
    model = mlp()
    trainer = Loop.trainer(model, "categorical_cross_entropy", "adam", log=0)
    with pytest.raises(OptionError, match="attach validate before"):
        trainer.early_stop("validation_loss").validate(model, BATCHES).run(BATCHES, progress=False)


def test_unknown_loss_and_optimizer_list_the_valid_ones():
    with pytest.raises(OptionError, match=r"'categorical_crossentropy'.*categorical_cross_entropy"):
        Loop.trainer(mlp(), "categorical_crossentropy", "adam")
    with pytest.raises(OptionError, match=r"unknown optimizer 'adamm'.*adam"):
        Loop.trainer(mlp(), "categorical_cross_entropy", "adamm")


def test_batches_that_do_not_fit_the_model_say_what_was_expected():
    trainer = Loop.trainer(mlp(), "categorical_cross_entropy", "adam", log=0)
    with pytest.warns(ShapeHintWarning, match=r"declared with shape \(None, 4\) but got \(16, 5\)"):
        state = trainer.run([(np.zeros((16, 5), np.float32), Y[:16])], progress=False)
    assert state.data["dense_0"]["kernel"].shape[0] == 5  # the data decides, as in Axon
    with pytest.raises(InputError, match=r"tuple \(inputs, targets\)"):
        trainer.run([X[:16]], progress=False)
    with pytest.raises(InputError, match="target"):
        trainer.run([(X[:16], Y[:16, :2])], progress=False)


def test_multi_input_models_take_dict_batches():
    a, b = ax.input("a", shape=(None, 2)), ax.input("b", shape=(None, 2))
    model = ax.concatenate([a, b]).dense(3, activation="softmax")
    data = [({"a": x[:, :2], "b": x[:, 2:]}, y) for x, y in BATCHES]
    state = Loop.trainer(model, "categorical_cross_entropy", "adam", log=0).run(
        data, progress=False
    )
    assert state.data["dense_0"]["kernel"].shape == (4, 3)
    trainer = Loop.trainer(model, "categorical_cross_entropy", "adam", log=0)
    with pytest.raises(InputError, match="input 'b' is missing"):
        trainer.run([({"a": X[:4, :2]}, Y[:4])], progress=False)
    with pytest.raises(InputError, match="dict keyed by input name"):
        trainer.run([(X[:4], Y[:4])], progress=False)


def test_log_writes_every_n_iterations_to_a_stream():
    out = io.StringIO()
    loop = Loop.loop(lambda b, s: s + b).log(
        lambda s: f"{s.epoch}:{s.iteration}:{s.step_state}\n", every=2, device=out
    )
    loop.run([1, 1, 1], 0, epochs=2)
    assert out.getvalue().splitlines() == ["0:0:1", "0:2:3", "1:1:5"]


def test_trainer_log_and_progress_bar(capsys):
    model = mlp()
    loop = Loop.trainer(model, "categorical_cross_entropy", "adam", log=2).metric("accuracy")
    loop.run(BATCHES, epochs=1, progress=False)
    out = capsys.readouterr()
    assert out.out.splitlines()[0].startswith("Epoch: 0, Batch: 0, loss: ")
    assert "accuracy: " in out.out and out.err == ""
    loop.run(BATCHES, epochs=2, progress=True)
    out = capsys.readouterr()
    assert "Epoch 1/2" in out.err and "Epoch 2/2" in out.err and "3/3" in out.err
    assert "loss: " in out.err and "accuracy: " in out.err
    assert out.out == ""  # the bar replaces the log lines
    loop.run(BATCHES, epochs=1)  # default: stderr is not a terminal under pytest -> no bar
    assert capsys.readouterr().err == ""
