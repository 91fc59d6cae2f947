"""Axon's guides/serialization/saving_and_loading.livemd: save trained parameters and
load them into the same model; checkpoint a loop and resume from a checkpoint.
`Nx.serialize` of a parameter map is a safetensors file of the flattened parameters."""

from pathlib import Path

import numpy as np
import safetensors.numpy

import axonc as ax
from tests.axon_programs.helpers import mse, sin_batches


def serialize(params):
    return safetensors.numpy.save(ax.ModelState.from_nested(params).flatten())


def deserialize(data):
    return ax.ModelState.unflatten(safetensors.numpy.load(data)).data


def model_3():
    return ax.input("data").dense(8).relu().dense(4).relu().dense(1)


def model_2():
    return ax.input("data").dense(8).relu().dense(1)


def test_save_and_load_parameters(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = model_3()

    loop = ax.Loop.trainer(model, "mean_squared_error", "sgd")

    train_data = sin_batches(0)

    trained_model_state = loop.run(train_data, ax.ModelState.empty(), epochs=2, iterations=20)

    params = trained_model_state.data

    params_bytes = serialize(params)
    Path("model_params.axon").write_bytes(params_bytes)

    # the same model structure, defined again
    model = model_3()

    params = deserialize(Path("model_params.axon").read_bytes())

    input = np.array([[1.0]], np.float32)
    out = ax.predict(model, params, {"data": input})
    np.testing.assert_array_equal(out, ax.predict(model, trained_model_state, input))
    p = params
    h = np.maximum(input @ p["dense_0"]["kernel"] + p["dense_0"]["bias"], 0)
    h = np.maximum(h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"], 0)
    np.testing.assert_allclose(out, h @ p["dense_2"]["kernel"] + p["dense_2"]["bias"], rtol=1e-5)


def test_checkpoint_and_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = model_2()

    loop = ax.Loop.trainer(model, "mean_squared_error", "sgd").checkpoint(
        path="checkpoints", event="epoch_completed"
    )

    train_data = sin_batches(1)

    first = loop.run(train_data, ax.ModelState.empty(), epochs=3, iterations=10)
    assert sorted(p.name for p in Path("checkpoints").iterdir()) == [
        "checkpoint_0_10.ckpt",
        "checkpoint_1_10.ckpt",
        "checkpoint_2_10.ckpt",
    ]

    checkpoint_path = "checkpoints/checkpoint_2_10.ckpt"
    serialized = Path(checkpoint_path).read_bytes()
    state = ax.Loop.deserialize_state(serialized)

    model = model_2()
    loop = ax.Loop.trainer(model, "mean_squared_error", "sgd").from_state(state)

    resumed = loop.run(train_data, ax.ModelState.empty(), epochs=5, iterations=10)

    held_out, ys = next(sin_batches(99, (64, 1)))
    before = mse(ys, ax.predict(model, first, held_out))
    assert mse(ys, ax.predict(model, resumed, held_out)) < before

    # extract the parameters of a checkpoint for inference
    state = ax.Loop.deserialize_state(Path(checkpoint_path).read_bytes())
    model_state = state.step_state["model_state"]
    params = model_state.data
    Path("model_params.axon").write_bytes(serialize(params))
    loaded = deserialize(Path("model_params.axon").read_bytes())
    np.testing.assert_array_equal(
        ax.predict(model, loaded, held_out), ax.predict(model, first, held_out)
    )
