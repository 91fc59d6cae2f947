"""`axonc plot`: learning curves from a Loop.history file, and its one-line errors."""

from __future__ import annotations

import builtins
import json

import numpy as np
from click.testing import CliRunner

from axonc import Loop
from axonc.cli import cli
from axonc.loop.plot import curves, read_history


def write_history(path) -> None:
    loop = (
        Loop.loop(lambda b, s: {"y_true": b[0], "y_pred": b[1]})
        .metric("mean_absolute_error", "loss")
        .handle(
            "epoch_completed",
            lambda s: ("continue", s.replace(metrics={**s.metrics, "validation_loss": 0.5})),
        )
        .history(path)
    )
    ones = np.ones((2, 2), np.float32)
    loop.run(lambda e: [(ones, ones * e)], {}, epochs=3)


def test_history_file_has_one_record_per_epoch(tmp_path):
    path = tmp_path / "h.jsonl"
    write_history(path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert [r["metrics"]["loss"] for r in records] == [1.0, 0.0, 1.0]
    assert all(r["metrics"]["validation_loss"] == 0.5 and r["seconds"] >= 0 for r in records)
    assert curves(read_history(path))["loss"] == {
        "train": [(0, 1.0), (1, 0.0), (2, 1.0)],
        "validation": [(0, 0.5), (1, 0.5), (2, 0.5)],
    }


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "h.jsonl"
    write_history(path)
    result = CliRunner().invoke(cli, ["plot", str(path), "-o", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "loss" in result.output
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_errors_are_one_line(tmp_path, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"epoch": 0, "metrics": {}}\nnot json\n')
    result = CliRunner().invoke(cli, ["plot", str(bad)])
    assert result.exit_code == 1 and "bad.jsonl:2: not a JSON line" in result.output
    good = tmp_path / "h.jsonl"
    write_history(good)
    result = CliRunner().invoke(cli, ["plot", str(good), "--metric", "accuracy"])
    assert result.exit_code == 1 and "no metric 'accuracy'" in result.output
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = CliRunner().invoke(cli, ["plot", str(good)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "pip install 'axonc[plot]'" in lines[0]
