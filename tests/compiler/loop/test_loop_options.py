"""Axon.Loop options that programs translate line by line: handle_event's filter keywords
(every: N ...), filters of (state, event), log's device, and run(compiler=)."""

from __future__ import annotations

import io

import numpy as np
import pytest

import axonc as ax
from axonc import Loop
from axonc.errors import OptionError

INIT = {"n": 0}


def counting_loop() -> Loop:
    return Loop.loop(lambda batch, s: {"n": s["n"] + 1})


def _hits(**kwargs) -> list[int]:
    hits = []

    def handler(state):
        hits.append(state.event_counts["iteration_completed"]["total"])
        return "continue", state

    counting_loop().handle_event("iteration_completed", handler, **kwargs).run([1] * 7, INIT)
    return hits


@pytest.mark.parametrize(
    "keywords, fired",
    [
        ({"every": 3}, [1, 4, 7]),  # Axon: rem(count - 1, n) == 0
        ({"only": 5}, [5]),
        ({"once": 2}, [2]),
        ({"before": 3}, [1, 2]),
        ({"after": 5}, [6, 7]),
        ({"every": 2, "after": 2}, [3, 5, 7]),
        ({"filter": {"every": 2}, "after": 2}, [3, 5, 7]),
        ({"filter": [("every", 2), ("after", 2)]}, [3, 5, 7]),  # Axon's [every: 2, after: 2]
    ],
)
def test_filter_predicates_as_keywords(keywords, fired):
    assert _hits(**keywords) == fired


def test_every_as_a_keyword_counts_per_epoch_too():
    hits = []

    def handler(state):
        hits.append((state.epoch, state.iteration))
        return "continue", state

    loop = counting_loop().handle_event("iteration_completed", handler, every=("epoch", 2))
    loop.run([1, 1, 1], INIT, epochs=2)
    assert hits == [(0, 0), (0, 2), (1, 0), (1, 2)]


def test_a_filter_function_of_state_and_event_as_in_axon():
    seen = []

    def only_completed_odd(state, event):
        seen.append(event)
        return state.event_counts[event]["total"] % 2 == 1

    assert _hits(filter=only_completed_odd) == [1, 3, 5, 7]
    assert set(seen) == {"iteration_completed"}


def test_a_filter_and_conflicting_keywords_is_an_error():
    with pytest.raises(OptionError, match=r"either as filter=.*or as keywords"):
        counting_loop().handle_event("epoch_completed", lambda s: ("continue", s), "once", every=2)
    with pytest.raises(OptionError, match="positive integer"):
        counting_loop().handle_event("epoch_completed", lambda s: ("continue", s), every=0)


def _message(state) -> str:
    return f"{state.iteration}\n"


def test_log_writes_to_stdio_stderr_or_a_file(capsys, tmp_path):
    counting_loop().log(_message, device="stdio").run([1, 1], INIT)
    counting_loop().log(_message, device="stderr", every=2).run([1, 1, 1], INIT)
    out = capsys.readouterr()
    assert out.out == "0\n1\n" and out.err == "0\n2\n"
    path = tmp_path / "log.txt"
    with open(path, "w", encoding="utf-8") as f:
        counting_loop().log(_message, device=f, event="epoch_completed").run([1, 1], INIT)
    assert path.read_text() == "2\n"  # iterations done when the epoch completes
    buffer = io.StringIO()
    counting_loop().log(_message, device=buffer).run([1], INIT)
    assert buffer.getvalue() == "0\n"


def test_log_refuses_an_unknown_device():
    with pytest.raises(OptionError, match="device must be 'stdio', 'stderr' or an open file"):
        counting_loop().log(_message, device="stdout.txt")


# ---- run(compiler=) ---------------------------------------------------------------------------

RNG = np.random.default_rng(3)
X = RNG.normal(size=(8, 4)).astype(np.float32)
Y = RNG.normal(size=(8, 2)).astype(np.float32)


def _trainer(**kwargs) -> Loop:
    model = ax.input("x", shape=(None, 4)).dense(2)
    return Loop.trainer(model, "mean_squared_error", ax.optimizers.sgd(0.1), log=0, **kwargs)


def _no_onnxruntime(monkeypatch):
    import axonc.to_onnx.compiled as compiled

    def refuse(*args, **kwargs):
        raise AssertionError("the onnxruntime compiler was used")

    monkeypatch.setattr(compiled.CompiledModel, "__init__", refuse)


def test_run_compiler_reference_runs_the_step_on_the_interpreter(monkeypatch):
    state = _trainer().run([(X, Y)], epochs=2, progress=False)
    trainer = _trainer()
    _no_onnxruntime(monkeypatch)
    with pytest.raises(AssertionError, match="onnxruntime compiler was used"):
        trainer.run([(X, Y)], epochs=2, progress=False)
    for name in ("reference", "Nx.Defn.Evaluator"):
        ref = _trainer().run([(X, Y)], epochs=2, progress=False, compiler=name)
        for p in ("kernel", "bias"):
            np.testing.assert_allclose(
                ref.data["dense_0"][p], state.data["dense_0"][p], rtol=1e-5, atol=1e-6
            )


def test_run_compiler_exla_is_onnxruntime(monkeypatch):
    trainer = _trainer(compiler="reference")
    trainer.run([(X, Y)], progress=False, compiler="EXLA")  # compiles on onnxruntime
    _no_onnxruntime(monkeypatch)
    with pytest.raises(AssertionError, match="onnxruntime compiler was used"):
        _trainer(compiler="reference").run([(X, Y)], progress=False, compiler="onnxruntime")
    trainer.run([(X, Y)], progress=False, compiler="reference")


def test_evaluator_takes_run_compiler(monkeypatch):
    model = ax.input("x", shape=(None, 4)).dense(2)
    state = ax.build(model)[0](ax.template((None, 4)))
    _no_onnxruntime(monkeypatch)
    metrics = (
        Loop.evaluator(model, compiler="reference")
        .metric("mean_absolute_error")
        .run([(X, Y)], state, progress=False, compiler="reference")
    )
    pred = X @ state.data["dense_0"]["kernel"] + state.data["dense_0"]["bias"]
    np.testing.assert_allclose(metrics[0]["mean_absolute_error"], np.mean(np.abs(Y - pred)), 1e-5)


def test_an_unknown_compiler_is_an_error():
    with pytest.raises(OptionError, match="compiler must be 'onnxruntime' or 'reference'"):
        counting_loop().run([1], INIT, compiler="xla")
    with pytest.raises(OptionError, match="compiler must be"):
        _trainer(compiler="gpu")
