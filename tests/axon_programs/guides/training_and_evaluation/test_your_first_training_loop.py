"""Axon's guides/training_and_evaluation/your_first_training_loop.livemd: a regression on
sin(x) with Axon.Loop.trainer, for a number of iterations, then of epochs."""

import re

import axonc as ax
from tests.axon_programs.helpers import mse, record, sin_batches


def build():
    return ax.input("data").dense(8).relu().dense(4).relu().dense(1)


def held_out_error(model, state):
    xs, ys = next(sin_batches(99, (256, 1)))
    return mse(ys, ax.predict(model, state, xs))


def test_run_for_iterations():
    train_data = sin_batches(0)
    model = build()
    assert 'outputs: "dense_2"' in str(model) and "nodes: 6" in str(model)

    loop = ax.Loop.trainer(model, "mean_squared_error", "sgd")
    state = loop.run(train_data, {}, iterations=100)

    assert state.data["dense_0"]["kernel"].shape == (1, 8)
    init_fn, _ = ax.build(model)
    initial = init_fn(ax.template((8, 1), "f32"), {})
    assert held_out_error(model, state) < held_out_error(model, initial)


def test_run_for_epochs():
    train_data = sin_batches(1)
    model = build()
    losses = []

    loop = ax.Loop.trainer(model, "mean_squared_error", "sgd").handle_event(
        "epoch_completed", record(losses)
    )
    loop.run(train_data, {}, epochs=3, iterations=50)

    assert len(losses) == 3
    assert losses[-1] < losses[0]


def test_log_every(capsys):
    train_data = sin_batches(2)
    model = build()

    ax.Loop.trainer(model, "mean_squared_error", "sgd", log=10).run(train_data, {}, iterations=30)

    out = capsys.readouterr().out
    assert re.search(r"Epoch: 0, Batch: \d+, loss: \d+\.\d+", out)
