"""The loop machinery on plain step functions: events, handler order, filters,
statuses, iteration limits, data sources, output transform and errors.

Step states are plain numbers so every expectation is counted by hand.
"""

from __future__ import annotations

import pytest

from axonc import Loop
from axonc.errors import InputError, OptionError
from axonc.loop import EVENTS, State


def counting_loop() -> Loop:
    """step_state counts the batches seen; batches are numbers added to a sum."""
    return Loop.loop(lambda batch, s: {"n": s["n"] + 1, "sum": s["sum"] + batch})


def recorder(log: list, tag: str, status: str = "continue"):
    def handler(state: State):
        log.append((tag, state.event, state.epoch, state.iteration))
        return status, state

    return handler


INIT = {"n": 0, "sum": 0}


def test_events_fire_in_documented_order():
    log: list = []
    loop = counting_loop().handle("all", recorder(log, "h"))
    loop.run([1, 2], INIT, epochs=2)
    events = [e for _, e, _, _ in log]
    per_epoch = [
        "epoch_started",
        "iteration_started",
        "iteration_completed",
        "iteration_started",
        "iteration_completed",
        "epoch_completed",
    ]
    assert events == ["started", *per_epoch, *per_epoch, "completed"]
    # (epoch, iteration) as handlers see them: the iteration advances after its handlers
    seen = [(e, ep, it) for _, e, ep, it in log if e.startswith("iteration_completed")]
    assert seen == [
        ("iteration_completed", 0, 0),
        ("iteration_completed", 0, 1),
        ("iteration_completed", 1, 0),
        ("iteration_completed", 1, 1),
    ]


def test_handlers_run_in_attachment_order():
    log: list = []
    loop = (
        counting_loop()
        .handle("epoch_completed", recorder(log, "first"))
        .handle(["epoch_completed", "started"], recorder(log, "second"))
        .handle("epoch_completed", recorder(log, "third"))
    )
    loop.run([1], INIT)
    assert [(t, e) for t, e, _, _ in log] == [
        ("second", "started"),
        ("first", "epoch_completed"),
        ("second", "epoch_completed"),
        ("third", "epoch_completed"),
    ]


def test_handler_state_changes_reach_later_handlers_and_the_step():
    def bump(state: State):
        return "continue", state.replace(step_state={**state.step_state, "sum": 100})

    seen = []
    loop = (
        counting_loop()
        .handle("epoch_started", bump)
        .handle("epoch_started", lambda s: (seen.append(s.step_state["sum"]), ("continue", s))[1])
    )
    final = loop.run([1, 2], INIT)
    assert seen == [100]
    assert final.step_state == {"n": 2, "sum": 103}


def test_halt_loop_stops_everything_and_fires_halted():
    log: list = []
    loop = (
        counting_loop()
        .handle("iteration_completed", recorder(log, "stop", "halt_loop"), {"only": 3})
        .handle("iteration_completed", recorder(log, "after"))
        .handle(["halted", "completed", "epoch_completed"], recorder(log, "end"))
    )
    final = loop.run([1, 2], INIT, epochs=5)
    assert final.status == "halted"
    assert final.step_state["n"] == 3  # epoch 0: 2 steps, epoch 1: 1 step then halt
    # the handler after the halting one did not run on the halting event
    assert [t for t, _, _, _ in log].count("after") == 2
    assert [(t, e) for t, e, _, _ in log if t == "end"] == [
        ("end", "epoch_completed"),
        ("end", "halted"),
    ]


def test_halt_epoch_skips_the_rest_of_the_epoch_and_fires_epoch_halted():
    log: list = []
    loop = (
        counting_loop()
        .handle("iteration_completed", recorder(log, "cut", "halt_epoch"), {"every": 2})
        .handle(["epoch_halted", "epoch_completed"], recorder(log, "end"))
    )
    final = loop.run([1, 2, 3], INIT, epochs=2)
    # every 2nd firing counted in total: iteration_completed #1 and #3 halt
    assert final.status == "completed"
    ends = [(e, ep) for t, e, ep, _ in log if t == "end"]
    assert ends == [("epoch_halted", 0), ("epoch_halted", 1)]
    assert final.step_state["n"] == 3  # 1 step in epoch 0, 2 steps in epoch 1
    assert final.epoch == 2


def test_halt_at_started_halts_without_running():
    steps = []
    loop = Loop.loop(lambda b, s: steps.append(b) or s).handle(
        "started", lambda s: ("halt_epoch", s)
    )
    final = loop.run([1, 2], 0)
    assert final.status == "halted" and steps == []


@pytest.mark.parametrize(
    "filter, fired",
    [
        ("always", [1, 2, 3, 4, 5, 6, 7]),
        ("once", [1]),
        ("first", [1]),
        ({"every": 3}, [1, 4, 7]),
        ({"only": 5}, [5]),
        ({"once": 2}, [2]),
        ({"before": 3}, [1, 2]),
        ({"after": 5}, [6, 7]),
        ({"every": 2, "after": 2}, [3, 5, 7]),
        (lambda state: state.step_state["n"] % 3 == 0, [3, 6]),
    ],
)
def test_filters(filter, fired):
    hits = []

    def handler(state):
        hits.append(state.event_counts["iteration_completed"]["total"])
        return "continue", state

    counting_loop().handle("iteration_completed", handler, filter).run([1] * 7, INIT)
    assert hits == fired


def test_every_counted_per_epoch():
    hits = []

    def handler(state):
        hits.append((state.epoch, state.iteration))
        return "continue", state

    loop = counting_loop().handle("iteration_completed", handler, {"every": ("epoch", 2)})
    loop.run([1, 1, 1], INIT, epochs=2)
    assert hits == [(0, 0), (0, 2), (1, 0), (1, 2)]


def test_iterations_limit_and_state_fields():
    final = counting_loop().run([1, 2, 3, 4], INIT, epochs=3, iterations=2)
    assert final.step_state == {"n": 6, "sum": 9}
    assert final.max_iteration == 2 and final.max_epoch == 3 and final.epoch == 3
    assert sorted(final.times) == [0, 1, 2] and all(t >= 0 for t in final.times.values())
    assert final.event_counts["epoch_completed"] == 3
    assert final.event_counts["iteration_completed"] == {"total": 6, "epoch": 0}


def test_init_fn_sees_first_batch_and_output_transform_applies():
    loop = Loop.loop(
        lambda b, s: s + b,
        init_fn=lambda first, init: init * 10 + first,
        output_transform=lambda state: ("done", state.step_state),
    )
    assert loop.run([2, 3], 1) == ("done", 12 + 2 + 3)


def test_generator_data_is_one_stream_and_function_data_is_per_epoch():
    def gen():
        yield from range(1, 6)

    final = Loop.loop(lambda b, s: [*s, b]).run(gen(), [], epochs=2, iterations=2)
    assert final.step_state == [1, 2, 3, 4]  # the epochs share the stream
    final = Loop.loop(lambda b, s: [*s, b]).run(lambda e: [e * 10, e * 10 + 1], [], epochs=2)
    assert final.step_state == [0, 1, 10, 11]


def test_final_metrics_are_the_history_by_epoch():
    loop = counting_loop().metric(lambda s: s, "sum_metric", "running_sum", "sum")
    final = loop.run([1, 2], INIT, epochs=2)
    # epoch 0: sums seen 1, 3 -> 4; epoch 1: 4, 6 -> 10 (metrics reset every epoch)
    assert {e: float(m["sum_metric"]) for e, m in final.metrics.items()} == {0: 4.0, 1: 10.0}


def test_errors():
    with pytest.raises(InputError, match="empty dataset"):
        counting_loop().run([], INIT)
    with pytest.raises(InputError, match="iterable of batches"):
        counting_loop().run(5, INIT)
    with pytest.raises(OptionError, match=r"unknown event 'epoch_ended'.*epoch_completed"):
        counting_loop().handle("epoch_ended", recorder([], "x"))
    with pytest.raises(OptionError, match="unknown filter 'sometimes'"):
        counting_loop().handle("started", recorder([], "x"), {"sometimes": 2})
    with pytest.raises(OptionError, match="invalid filter"):
        counting_loop().handle("started", recorder([], "x"), "rarely")
    with pytest.raises(OptionError, match="positive integer"):
        counting_loop().handle("started", recorder([], "x"), {"every": 0})
    bad = counting_loop().handle("epoch_started", lambda s: "continue")
    with pytest.raises(OptionError, match=r"must return \(status, state\)"):
        bad.run([1], INIT)
    with pytest.raises(OptionError, match="iterations"):
        counting_loop().run([1], INIT, iterations=0)
    with pytest.raises(OptionError, match="epochs"):
        counting_loop().run([1], INIT, epochs=-1)


def test_loop_is_immutable():
    base = counting_loop()
    with_handler = base.handle("started", recorder([], "x"))
    assert base.handlers["started"] == () and len(with_handler.handlers["started"]) == 1
    assert set(base.handlers) == set(EVENTS)
