"""Axon's guides/training_and_evaluation/writing_custom_event_handlers.livemd: handlers
that print, halt the loop, and halt each epoch."""

import axonc as ax
from tests.axon_programs.helpers import sin_batches


# CustomEventHandler0
def my_weird_handler(state):
    print("My weird handler: fired")
    return "continue", state


# CustomEventHandler1
def always_halts(state):
    print("stopping loop")
    return "halt_loop", state


# CustomEventHandler2
def always_halts_epoch(state):
    print("\nstopping epoch")
    return "halt_epoch", state


def always_halts_loop(state):
    print("stopping loop\n")
    return "halt_loop", state


def build():
    return ax.input("data").dense(8).relu().dense(4).relu().dense(1)


def test_handler_fires_each_epoch(capsys):
    model = build()
    loop = ax.Loop.trainer(model, "mean_squared_error", "sgd").handle_event(
        "epoch_completed", my_weird_handler
    )
    loop.run(sin_batches(0), {}, epochs=5, iterations=10)

    assert capsys.readouterr().out.count("My weird handler: fired") == 5


def test_halt_loop(capsys):
    model = build()
    state = (
        ax.Loop.trainer(model, "mean_squared_error", "sgd")
        .handle_event("epoch_completed", always_halts)
        .run(sin_batches(1), {}, epochs=5, iterations=10)
    )
    assert capsys.readouterr().out.count("stopping loop") == 1
    assert state.data["dense_0"]["kernel"].shape == (1, 8)


def test_halt_each_epoch(capsys):
    model = build()
    (
        ax.Loop.trainer(model, "mean_squared_error", "sgd")
        .handle_event("iteration_completed", always_halts_epoch)
        .handle_event("epoch_completed", always_halts_loop)
        .run(sin_batches(2), {}, epochs=5, iterations=100)
    )
    out = capsys.readouterr().out
    # a halted epoch fires epoch_halted, not epoch_completed: the loop runs all five
    assert out.count("stopping epoch") == 5
    assert "stopping loop" not in out
