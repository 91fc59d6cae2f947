"""Axon's guides/training_and_evaluation/using_loop_event_handlers.livemd: checkpoints on
events, a log line on each epoch, and a filter that fires every other epoch."""

from pathlib import Path

import axonc as ax
from tests.axon_programs.helpers import sin_batches

EVENTS = [
    "started",  # after loop state initialization
    "epoch_started",  # on epoch start
    "iteration_started",  # on iteration start
    "iteration_completed",  # on iteration complete
    "epoch_completed",  # on epoch complete
    "epoch_halted",  # on epoch halt, if early halted
    "halted",  # on loop halt, if early halted
    "completed",  # on loop completion
]


def build():
    return ax.input("data").dense(8).relu().dense(4).relu().dense(1)


def test_checkpoint_every_epoch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = build()

    loop = ax.Loop.trainer(model, "mean_squared_error", "sgd").checkpoint(event="epoch_completed")

    loop.run(sin_batches(0), {}, epochs=5, iterations=10)

    assert sorted(p.name for p in Path("checkpoint").iterdir()) == [
        f"checkpoint_{epoch}_10.ckpt" for epoch in range(5)
    ]


def test_log_on_epoch_completed(capsys):
    model = build()
    (
        ax.Loop.trainer(model, "mean_squared_error", "sgd")
        .log(lambda _state: "epoch is over\n", event="epoch_completed", device="stdio")
        .run(sin_batches(1), {}, epochs=5, iterations=10)
    )
    assert capsys.readouterr().out.count("epoch is over\n") == 5


def test_checkpoint_every_other_epoch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = build()
    (
        ax.Loop.trainer(model, "mean_squared_error", "sgd")
        .checkpoint(event="epoch_completed", filter={"every": 2})
        .run(sin_batches(2), {}, epochs=5, iterations=10)
    )
    # Axon's `every: n` fires on the 1st, (n+1)th, ... occurrence of the event
    assert sorted(p.name for p in Path("checkpoint").iterdir()) == [
        "checkpoint_0_10.ckpt",
        "checkpoint_2_10.ckpt",
        "checkpoint_4_10.ckpt",
    ]
    assert len(EVENTS) == len(set(EVENTS)) == 8
