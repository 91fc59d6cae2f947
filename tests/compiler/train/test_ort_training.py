"""The onnxruntime-training engine's checks that need no onnxruntime-training: the
optimizer mapping and its refusals, the engine option, and the error that says how to set
up the environment. The engine itself is tested in tests_ort_training/ (its own venv)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from click.testing import CliRunner

import axonc as ax
from axonc import optimizers
from axonc.cli import cli
from axonc.errors import OptionError
from axonc.train import MissingOrtTrainingError
from axonc.train.ort_training import OrtOptimizer, ort_optimizer

MODEL = ax.input("x", shape=(None, 4)).dense(3, activation="softmax")
BATCHES = [(np.zeros((2, 4), np.float32), np.eye(3, dtype=np.float32)[[0, 1]])]


@pytest.fixture
def without_ort_training(monkeypatch):
    """An environment where `import onnxruntime.training` fails, as with stock onnxruntime."""
    monkeypatch.setitem(sys.modules, "onnxruntime.training", None)


def test_adam_maps_to_adamw_without_decay():
    spec = ort_optimizer(optimizers.adam(2e-3, b1=0.8, b2=0.99, eps=1e-7))
    assert spec == OrtOptimizer("AdamW", 2e-3, (0.8, 0.99), 1e-7, 0.0)


def test_adamw_decay_is_adamw_weight_decay():
    spec = ort_optimizer(optimizers.adamw(1e-3, decay=0.01, eps_root=0.0))
    assert spec == OrtOptimizer("AdamW", 1e-3, (0.9, 0.999), 1e-8, 0.01)


def test_sgd_by_name_keeps_its_default_learning_rate():
    assert ort_optimizer("sgd") == OrtOptimizer("SGD", 1e-2)


@pytest.mark.parametrize("name", ["rmsprop", "adagrad", "lamb", "yogi", "noisy_sgd"])
def test_other_optimizers_are_refused_naming_the_supported_ones(name):
    with pytest.raises(OptionError, match=r"AdamW and SGD only.*adam, adamw, sgd"):
        ort_optimizer(name)


@pytest.mark.parametrize(
    ("optimizer", "option"),
    [
        (optimizers.sgd(0.1, momentum=0.9), "momentum"),
        (optimizers.adam(1e-3, clip_norm=1.0), "clip_norm"),
        (optimizers.adam(1e-3, clip_value=0.5), "clip_value"),
        (optimizers.sgd(0.1, weight_decay=1e-4), "weight_decay"),
        (optimizers.adamw(1e-3, eps_root=1e-8), "eps_root"),
    ],
)
def test_options_onnxruntime_training_cannot_express_are_refused(optimizer, option):
    with pytest.raises(OptionError, match=f"cannot express option.*{option}"):
        ort_optimizer(optimizer)


def test_a_schedule_is_refused():
    with pytest.raises(OptionError, match="constant learning rate"):
        ort_optimizer(optimizers.sgd(ax.schedules.exponential_decay(0.1)))


def test_an_optimizer_pair_is_refused():
    pair = (lambda p: {}, lambda g, s, p: (g, s))
    with pytest.raises(OptionError, match="AdamW and SGD only"):
        ort_optimizer(pair)


def test_export_without_onnxruntime_training_says_how_to_set_it_up(without_ort_training, tmp_path):
    with pytest.raises(MissingOrtTrainingError, match=r"1\.19\.2.*spec/ort_training\.md"):
        ax.train.export_ort_training(
            MODEL, "categorical_cross_entropy", "adam", tmp_path, template=None
        )
    assert not any(tmp_path.iterdir())


def test_the_ort_training_engine_without_it_says_how_to_set_it_up(without_ort_training):
    with pytest.raises(MissingOrtTrainingError, match=r"spec/ort_training\.md"):
        ax.Loop.trainer(MODEL, "categorical_cross_entropy", "adam", engine="ort-training")


def test_an_unknown_engine_lists_the_engines():
    with pytest.raises(OptionError, match="'axonc', 'ort-training'"):
        ax.Loop.trainer(MODEL, "categorical_cross_entropy", "adam", engine="torch")


def test_the_optimizer_is_checked_before_the_environment(without_ort_training):
    with pytest.raises(OptionError, match="AdamW and SGD only"):
        ax.Loop.trainer(MODEL, "categorical_cross_entropy", "rmsprop", engine="ort-training")


def test_the_cli_without_onnxruntime_training_is_a_one_line_user_error(
    without_ort_training, tmp_path
):
    path = tmp_path / "m.axon"
    ax.save(MODEL, ax.build(MODEL)[0](ax.template((1, 4), "f32")), path)
    out = str(tmp_path / "out")
    result = CliRunner().invoke(
        cli,
        ["export-training-artifacts", str(path), "--loss", "categorical_cross_entropy", "-o", out],
    )
    assert result.exit_code == 1, (result.stdout, result.stderr)
    (line,) = result.stderr.splitlines()
    assert "onnxruntime-training 1.19.2" in line and "spec/ort_training.md" in line


def test_the_cli_refuses_decay_for_adam(tmp_path):
    path = tmp_path / "m.axon"
    ax.save(MODEL, ax.build(MODEL)[0](ax.template((1, 4), "f32")), path)
    result = CliRunner().invoke(
        cli,
        [
            "export-training-artifacts",
            str(path),
            "--loss",
            "mean_squared_error",
            "--decay",
            "0.1",
            "-o",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "--decay applies to --optimizer adamw" in result.stderr
