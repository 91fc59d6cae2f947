"""serialize_state / deserialize_state, checkpoint files (pattern, criteria, atomic
writes), from_state resuming to the same parameters, and the history file."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import axonc as ax
from axonc import Loop, ModelState, optimizers
from axonc.errors import FormatError, StateError
from axonc.loop import State, deserialize_state, serialize_state
from axonc.loop import handlers as loop_handlers

RNG = np.random.default_rng(1)
X = RNG.normal(size=(40, 4)).astype(np.float32)
Y = np.eye(3, dtype=np.float32)[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int)]


def batches(epoch: int) -> list:
    """A seeded shuffle per epoch, so a resumed run sees the same batches."""
    order = np.random.default_rng(epoch).permutation(len(X))
    return [(X[order[i : i + 8]], Y[order[i : i + 8]]) for i in range(0, len(X), 8)]


def model() -> ax.Axon:
    return (
        ax.input("x", shape=(None, 4))
        .dense(8, activation="relu")
        .dropout(rate=0.3, seed=7)
        .dense(3, activation="softmax")
    )


def trainer(**kw) -> Loop:
    return Loop.trainer(model(), "categorical_cross_entropy", optimizers.adam(1e-2), log=0, **kw)


def assert_same_state(a: ModelState, b: ModelState) -> None:
    fa, fb = a.flatten(), b.flatten()
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


def test_round_trip_keeps_every_field_and_type():
    ms = ModelState(
        {
            "d": {
                "kernel": np.arange(6, dtype=np.float32).reshape(2, 3),
                "w2": np.zeros((3, 2), np.float32),
            },
            "bn": {"mean": np.ones(3, np.float32)},
            "drop": {"key": np.array([1, 2], np.uint32)},
        },
        state=["bn/mean", "drop/key"],
        frozen=["bn/mean"],
        ties={"d/w2": ("d/kernel", "transpose")},
    )
    state = State(
        epoch=3,
        max_epoch=7,
        iteration=5,
        max_iteration=-1,
        metrics={"loss": np.float32(0.5), "acc": 1.0, "nan": float("nan")},
        times={0: 1.5, 1: 2.0},
        step_state={"model_state": ms, "t": (1, "a", None, [True, 2.5]), "$odd": {1: "x"}},
        handler_metadata={"early_stop/loss": {"best": 0.25, "since_last_improvement": 1}},
        event_counts={"iteration_completed": {"total": 9, "epoch": 2}, "started": 1},
        event="iteration_completed",
        history={0: {"loss": np.float32(1.0)}},
    )
    back = deserialize_state(serialize_state(state))
    assert back.epoch == 3 and back.iteration == 5 and back.event == "iteration_completed"
    assert back.times == {0: 1.5, 1: 2.0} and back.history[0]["loss"] == np.float32(1.0)
    assert isinstance(back.metrics["loss"], np.float32) and np.isnan(back.metrics["nan"])
    assert back.step_state["t"] == (1, "a", None, [True, 2.5])
    assert back.step_state["$odd"] == {1: "x"}
    assert back.handler_metadata == state.handler_metadata
    assert back.event_counts == state.event_counts
    got = back.step_state["model_state"]
    assert got.frozen == ms.frozen and got.state == ms.state and dict(got.ties) == dict(ms.ties)
    assert_same_state(got, ms)
    assert got.data["drop"]["key"].dtype == np.uint32


def test_unsupported_values_and_bad_files_are_clear_errors():
    with pytest.raises(StateError, match="step_state/f of type function"):
        serialize_state(State(step_state={"f": lambda: 0}))
    converted = serialize_state(
        State(step_state={"f": 3}), serialize_step_state=lambda s: {"f": s["f"] * 2}
    )
    assert deserialize_state(converted, deserialize_step_state=lambda s: s["f"]).step_state == 6
    good = serialize_state(State(step_state=np.ones(3)))
    for bad in (b"", b"garbage!" * 3, good[: len(good) // 2], good[:8] + b"{}" + good[10:]):
        with pytest.raises(FormatError):
            deserialize_state(bad)
    from safetensors.numpy import save

    with pytest.raises(FormatError, match=r"no 'axonc.loop_state'"):
        deserialize_state(save({"a": np.ones(2)}))


def test_checkpoint_every_epoch_with_pattern(tmp_path):
    loop = trainer().checkpoint(path=tmp_path, file_pattern="ep{epoch}-it{iteration}.ckpt")
    loop.run(batches, epochs=2, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["ep0-it5.ckpt", "ep1-it5.ckpt"]
    state = deserialize_state((tmp_path / "ep1-it5.ckpt").read_bytes())
    assert state.epoch == 1 and state.event == "epoch_completed"
    loop = trainer().checkpoint(
        path=tmp_path / "it",
        event="iteration_completed",
        filter={"every": 2},
        file_pattern=lambda s: f"{s.epoch}_{s.iteration}",
    )
    loop.run(batches, epochs=1, progress=False)
    assert sorted(os.listdir(tmp_path / "it")) == ["0_0", "0_2", "0_4"]


@pytest.mark.parametrize("mode, best", [("min", [0, 1, 3]), ("max", [0, 2])])
def test_checkpoint_criteria_saves_only_improvements(tmp_path, mode, best):
    values = [5.0, 4.0, 6.0, 3.0]
    loop = (
        Loop.loop(lambda b, s: {"score": b})
        .metric(lambda v: v, "score", transform_or_fields="score")
        .checkpoint(path=tmp_path, criteria="score", mode=mode, file_pattern="c{epoch}")
    )
    loop.run(lambda e: [values[e]], {}, epochs=4)
    assert sorted(os.listdir(tmp_path)) == [f"c{e}" for e in best]


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    target = tmp_path / "c.ckpt"
    loop_handlers.write_atomic(target, b"old")

    def crash(src, dst):
        raise OSError("disk died mid-rename")

    monkeypatch.setattr(loop_handlers.os, "replace", crash)
    with pytest.raises(OSError, match="disk died"):
        loop_handlers.write_atomic(target, b"new contents")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["c.ckpt"]  # no temporary file left behind


@pytest.mark.parametrize(
    "event, filter", [("epoch_completed", "always"), ("iteration_completed", {"every": 3})]
)
def test_resume_from_any_checkpoint_ends_with_the_same_parameters(tmp_path, event, filter):
    epochs = 3
    straight = trainer().run(batches, epochs=epochs, progress=False)
    loop = trainer().checkpoint(path=tmp_path, event=event, filter=filter)
    loop.run(batches, epochs=epochs, progress=False)
    files = sorted(tmp_path.iterdir())
    assert len(files) >= 3
    for ckpt in files[:-1]:
        state = deserialize_state(ckpt.read_bytes())
        start = state.epoch + (1 if event == "epoch_completed" else 0)
        resumed = trainer().from_state(state).run(batches, epochs=epochs - start, progress=False)
        assert_same_state(resumed, straight)


def test_resumed_metrics_and_history_continue(tmp_path):
    history = tmp_path / "h.jsonl"
    straight = trainer().metric("accuracy").history(history)
    expected = straight.run(batches, epochs=3, progress=False)
    full = [json.loads(line) for line in history.read_text().splitlines()]
    assert [r["epoch"] for r in full] == [0, 1, 2]
    loop = (
        trainer()
        .metric("accuracy")
        .checkpoint(path=tmp_path / "c", event="iteration_completed", filter={"only": 7})
        .history(history)
    )
    loop.run(batches, epochs=3, progress=False)
    state = deserialize_state(next((tmp_path / "c").iterdir()).read_bytes())
    assert (state.epoch, state.iteration) == (1, 1)
    resumed = trainer().metric("accuracy").history(history).from_state(state)
    assert_same_state(resumed.run(batches, epochs=2, progress=False), expected)
    again = [json.loads(line) for line in history.read_text().splitlines()]
    assert [r["epoch"] for r in again] == [0, 1, 2]
    for a, b in zip(full, again, strict=True):
        assert a["metrics"] == pytest.approx(b["metrics"], rel=1e-6)
