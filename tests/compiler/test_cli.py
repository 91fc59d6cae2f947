"""The axonc command line: compile, inspect, run; exit codes and one-line errors.

Commands run through click's CliRunner (stdout and stderr apart), and a few
through a real subprocess to check the process exit codes. Expected numbers
come from numpy formulas over the saved parameters.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import axonc as ax
import axonrt
from axonc import cli as cli_module
from axonc.cli import cli
from axonc.errors import FormatError
from axonc.passes import PASSES
from axonc.to_onnx.export import max_opset
from tests.onnx_models import train_model

PARAMS = 4 * 8 + 8 + 8 * 3 + 3  # dense 4->8 and 8->3, kernels and biases


@pytest.fixture(scope="module")
def axon_file(tmp_path_factory) -> tuple[Path, dict]:
    x = ax.input("x", shape=(None, 4))
    model = x.dense(8, activation="relu").dense(3).softmax()
    init, _ = ax.build(model)
    state = init(ax.template((1, 4)), {})
    path = tmp_path_factory.mktemp("cli") / "mlp.axon"
    ax.save(model, state, path)
    return path, state.data


def reference(p: dict, x: np.ndarray) -> np.ndarray:
    h = np.maximum(x @ p["dense_0"]["kernel"] + p["dense_0"]["bias"], 0.0)
    z = h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"]
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def onnx_file(axon_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli_onnx") / "mlp.onnx"
    result = invoke("compile", str(axon_file[0]), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    return out


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def assert_user_error(result, *words: str) -> None:
    """Exit code 1, exactly one line on stderr, no traceback, the given words in it."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    for w in words:
        assert w in lines[0], lines[0]


# ---- help ---------------------------------------------------------------------------------


def test_help_lists_the_commands_and_exit_codes():
    result = invoke("--help")
    assert result.exit_code == 0
    for word in ("compile", "inspect", "run", "--debug", "Exit codes"):
        assert word in result.stdout
    assert invoke().stdout == result.stdout


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("compile", ["--mode", "-O", "--opset", "--dump-after", "--timings", "--verify-each"]),
        ("inspect", ["FILE", ".axon", ".onnx"]),
        ("run", ["--input", "NAME=FILE.npy", "--output-dir", "--seed"]),
    ],
)
def test_command_help(command, words):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    for word in words:
        assert word in result.stdout


# ---- compile --------------------------------------------------------------------------------


def test_compile_writes_a_model_axonrt_runs(axon_file, tmp_path):
    path, params = axon_file
    out = tmp_path / "model.onnx"
    result = invoke("compile", str(path), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert f"wrote {out}" in result.stdout and "opset 17" in result.stdout
    model = axonrt.load(out)
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_allclose(model(x), reference(params, x), rtol=1e-5, atol=1e-6)


def test_compile_default_output_is_next_to_the_input(axon_file, tmp_path):
    source = tmp_path / "copy.axon"
    source.write_bytes(axon_file[0].read_bytes())
    assert invoke("compile", str(source)).exit_code == 0
    assert (tmp_path / "copy.onnx").is_file()


@pytest.mark.parametrize("level", ["0", "1", "2"])
def test_compile_at_every_level_and_newest_opset(axon_file, tmp_path, level):
    path, params = axon_file
    out = tmp_path / f"o{level}.onnx"
    result = invoke("compile", str(path), "-o", str(out), "-O", level, "--opset", str(max_opset()))
    assert result.exit_code == 0, result.stderr
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(axonrt.load(out)(x), reference(params, x), rtol=1e-5, atol=1e-6)


def test_compile_train_mode(axon_file, tmp_path):
    out = tmp_path / "train.onnx"
    result = invoke("compile", str(axon_file[0]), "-o", str(out), "--mode", "train")
    assert result.exit_code == 0, result.stderr
    model = axonrt.load(out)
    assert model.mode == "train"
    out_tree = model(np.ones((1, 4), np.float32))
    assert set(out_tree) == {"prediction", "state"} and out_tree["state"] == {}
    assert "mode: train" in invoke("inspect", str(out)).stdout


def test_compile_timings_dump_and_verify_each(axon_file, tmp_path):
    scheduled = [
        p.name
        for p in PASSES.values()
        if p.level <= 2 and "inference" in p.modes and "onnx" in p.targets and p.name != "verify"
    ]
    assert scheduled, "no optimisation pass is registered"
    dump_args = [a for name in scheduled for a in ("--dump-after", name)]
    result = invoke(
        "compile", str(axon_file[0]), "-o", str(tmp_path / "t.onnx"), "--timings",
        "--verify-each", *dump_args,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    for name in scheduled:
        assert f"--- after {name} ---" in result.stdout
    assert "pass" in result.stdout and "runs" in result.stdout and "ms" in result.stdout
    assert "dense_0" in result.stdout  # the dumped graph names its layers


def test_dump_after_a_pass_that_does_not_run_notes_it(axon_file, tmp_path):
    name = next(p.name for p in PASSES.values() if p.level >= 1)
    result = invoke(
        "compile", str(axon_file[0]), "-o", str(tmp_path / "n.onnx"), "-O", "0",
        "--dump-after", name,
    )  # fmt: skip
    assert result.exit_code == 0
    assert f"note: pass {name!r} does not run at -O0" in result.stderr


def test_compile_bad_inputs_are_one_line_user_errors(axon_file, tmp_path):
    path = str(axon_file[0])
    garbage = tmp_path / "garbage.axon"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    truncated = tmp_path / "truncated.axon"
    truncated.write_bytes(axon_file[0].read_bytes()[:40])
    tiny = tmp_path / "tiny.axon"
    tiny.write_bytes(b"abc")
    out = str(tmp_path / "x.onnx")
    assert_user_error(invoke("compile", str(tmp_path / "missing.axon")), "does not exist")
    assert_user_error(invoke("compile", str(garbage), "-o", out), str(garbage))
    assert_user_error(invoke("compile", str(truncated), "-o", out), str(truncated))
    assert_user_error(invoke("compile", str(tiny), "-o", out), str(tiny), "truncated")
    assert_user_error(invoke("compile", path, "-o", out, "--opset", "99"), "opset 99")
    assert_user_error(invoke("compile", path, "-o", out, "--opset", "abc"), "--opset")
    assert_user_error(invoke("compile", path, "-o", out, "-O", "5"), "-O")
    assert_user_error(invoke("compile", path, "-o", out, "--mode", "fast"), "--mode")
    assert_user_error(
        invoke("compile", path, "-o", out, "--dump-after", "nope"), "unknown pass 'nope'"
    )
    assert_user_error(
        invoke("compile", path, "-o", str(tmp_path / "no" / "dir" / "x.onnx")),
        "does not exist",
    )
    assert_user_error(invoke("compile", path, "-o", path), "overwrite")
    assert_user_error(invoke("compile", path, "--bogus"), "--bogus")
    assert_user_error(invoke("frobnicate"), "frobnicate")


def test_debug_shows_the_exception(tmp_path):
    garbage = tmp_path / "garbage.axon"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    result = invoke("--debug", "inspect", str(garbage))
    assert result.exit_code == 1
    assert isinstance(result.exception.__cause__, FormatError)


def test_internal_errors_exit_2_with_one_line(axon_file, monkeypatch):
    def broken(file):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli_module, "_inspect_axon", broken)
    result = invoke("inspect", str(axon_file[0]))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "axonc: internal error: RuntimeError: boom (a bug in axonc; rerun with --debug for "
        "the traceback)"
    ]


def test_progress_spinner_draws_only_on_a_terminal(capsys):
    import time

    with cli_module._Progress("compiling m.axon") as progress:
        assert not progress.enabled  # pytest's stderr is not a TTY
        time.sleep(0.15)
    assert capsys.readouterr().err == ""
    spinner = cli_module._Progress("compiling m.axon")
    spinner.enabled = True
    with spinner:
        time.sleep(0.25)
        spinner.echo("dumped")
    captured = capsys.readouterr()
    assert "compiling m.axon (" in captured.err and captured.err.endswith("\r\033[K")
    assert captured.out == "dumped\n"


# ---- inspect --------------------------------------------------------------------------------


def test_inspect_axon_shows_the_layer_table_and_parameter_count(axon_file):
    result = invoke("inspect", str(axon_file[0]))
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "input 'x': {nil, 4}" in out  # no dtype declared: it comes from the data
    for row in ('dense_0 ( dense["x"] )', 'relu_0 ( relu["dense_0"] )', "softmax_0"):
        assert row in out
    assert "{1, 3}" in out  # softmax output at batch 1
    assert f"Total parameters: {PARAMS}" in out
    assert f"stored: 4 parameter tensors, 0 state tensors, {PARAMS} values" in out


def test_inspect_axon_without_input_shapes(tmp_path):
    model = ax.input("x").dense(2)
    init, _ = ax.build(model)
    state = init(ax.template((1, 3)), {})
    path = tmp_path / "shapeless.axon"
    ax.save(model, state, path)
    result = invoke("inspect", str(path))
    assert result.exit_code == 0, result.stderr
    assert "no layer table: input(s) 'x' declare no shape" in result.stdout
    assert "stored: 2 parameter tensors, 0 state tensors, 8 values" in result.stdout


def test_inspect_onnx(onnx_file):
    result = invoke("inspect", str(onnx_file))
    assert result.exit_code == 0, result.stderr
    out = result.stdout.splitlines()
    assert "opset: ai.onnx 17" in out and "mode: inference" in out
    assert any(line.startswith("IR version: ") for line in out)
    assert "  x  float32  [batch, 4]" in out
    assert "  output  float32  [batch, 3]" in out
    assert 'output structure: "output"' in out
    gemm = next(line for line in out if line.strip().startswith("Gemm"))
    assert gemm.split()[-1] == "2"


def test_inspect_bad_files_are_one_line_user_errors(tmp_path, onnx_file):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\xfe\x00garbage" * 20)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(onnx_file.read_bytes()[:100])
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    assert_user_error(invoke("inspect", str(garbage)), str(garbage), "not a valid ONNX model")
    assert_user_error(invoke("inspect", str(truncated)), str(truncated))
    assert_user_error(invoke("inspect", str(other)), "unknown file type '.txt'")
    assert_user_error(invoke("inspect", str(tmp_path / "nope.onnx")), "does not exist")


# ---- run ------------------------------------------------------------------------------------


def test_run_prints_outputs_and_writes_npy(axon_file, onnx_file, tmp_path):
    x = np.linspace(0, 1, 8, dtype=np.float32).reshape(2, 4)
    np.save(tmp_path / "x.npy", x)
    out_dir = tmp_path / "out"
    result = invoke(
        "run", str(onnx_file), "--input", f"x={tmp_path / 'x.npy'}", "--output-dir", str(out_dir)
    )
    assert result.exit_code == 0, result.stderr
    line = result.stdout.splitlines()[0]
    assert line.split()[:4] == ["output", "float32", "[2,", "3]"]
    assert "min" in line and "max" in line and "mean 0.333333" in line
    written = np.load(out_dir / "output.npy", allow_pickle=False)
    np.testing.assert_allclose(written, reference(axon_file[1], x), rtol=1e-5, atol=1e-6)
    positional = invoke("run", str(onnx_file), "-i", str(tmp_path / "x.npy"))
    assert positional.exit_code == 0 and positional.stdout.splitlines()[0] == line


def test_run_bad_inputs_are_one_line_user_errors(onnx_file, tmp_path):
    model = str(onnx_file)
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    np.save(tmp_path / "wide.npy", np.ones((2, 5), np.float32))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "both.npz", x=np.ones((2, 4)))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "x.npy").read_bytes()[:60])
    (tmp_path / "text.npy").write_text("not numpy")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"garbage")
    x = str(tmp_path / "x.npy")
    assert_user_error(invoke("run", model, "--input", f"y={x}"), "unknown input 'y'")
    assert_user_error(invoke("run", model), "missing input(s) 'x'")
    assert_user_error(
        invoke("run", model, "--input", f"x={tmp_path / 'wide.npy'}"), "input 'x'", "(2, 5)"
    )
    assert_user_error(
        invoke("run", model, "--input", f"x={tmp_path / 'obj.npy'}"), "input 'x'", "allow_pickle"
    )
    assert_user_error(invoke("run", model, "--input", f"x={tmp_path / 'both.npz'}"), ".npz")
    assert_user_error(invoke("run", model, "--input", f"x={tmp_path / 'cut.npy'}"), "cut.npy")
    assert_user_error(invoke("run", model, "--input", f"x={tmp_path / 'text.npy'}"), "text.npy")
    assert_user_error(invoke("run", model, "--input", f"x={tmp_path / 'gone.npy'}"), "gone.npy")
    assert_user_error(invoke("run", model, "-i", f"x={x}", "-i", f"x={x}"), "given twice")
    assert_user_error(invoke("run", model, "-i", x, "-i", x), "name the input")
    assert_user_error(invoke("run", str(garbage), "-i", x), str(garbage))
    assert_user_error(invoke("run", model, "-i", x, "--provider", "nosuch"), "'nosuch'")


def test_run_train_model_needs_noise_or_seed(tmp_path):
    model = str(train_model(tmp_path))
    x = np.ones((2, 3), np.float32)
    np.save(tmp_path / "x.npy", x)
    feed = f"x={tmp_path / 'x.npy'}"
    assert_user_error(invoke("run", model, "-i", feed), "'drop/noise'", "--seed")
    out_dir = tmp_path / "out"
    result = invoke("run", model, "-i", feed, "--seed", "3", "--output-dir", str(out_dir))
    assert result.exit_code == 0, result.stderr
    expected = np.random.default_rng(3).random((2, 3), dtype=np.float32)
    np.testing.assert_array_equal(np.load(out_dir / "output.npy"), expected)
    np.testing.assert_array_equal(np.load(out_dir / "state.drop.mean.npy"), [1.0, 1.0, 1.0])


# ---- the real process --------------------------------------------------------------------------


def _process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "axonc.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_process_exit_codes(axon_file, tmp_path):
    out = tmp_path / "p.onnx"
    ok = _process("compile", str(axon_file[0]), "-o", str(out))
    assert ok.returncode == 0, ok.stderr
    assert out.is_file()
    np.save(tmp_path / "x.npy", np.ones((1, 3), np.float32))
    for args in (
        ("inspect", str(tmp_path / "missing.axon")),
        ("run", str(out), "--input", f"x={tmp_path / 'x.npy'}"),
        ("compile", str(axon_file[0]), "-o", str(tmp_path / "q.onnx"), "--opset", "1"),
    ):
        bad = _process(*args)
        assert bad.returncode == 1, (args, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert "Traceback" not in bad.stderr
    debug = _process("--debug", "run", str(out), "--input", f"x={tmp_path / 'x.npy'}")
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert _process("--help").returncode == 0


def test_compile_a_shapeless_model_needs_a_template(tmp_path):
    model = ax.input("x").dense(2)
    state = ax.build(model)[0](ax.template((1, 3)))
    path = tmp_path / "shapeless.axon"
    ax.save(model, state, path)
    out = tmp_path / "shapeless.onnx"
    assert_user_error(invoke("compile", str(path), "-o", str(out)), "give a template")
    result = invoke("compile", str(path), "-o", str(out), "--template", "x=1,3:f32")
    assert result.exit_code == 0, result.stderr
    dims = onnx.load(out).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 3
    assert invoke("compile", str(path), "-o", str(out), "--template", "1,3").exit_code == 0
    assert_user_error(invoke("compile", str(path), "--template", "x=1,a"), "--template 'x=1,a'")
