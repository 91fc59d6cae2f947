"""Axon's guides/model_execution/accelerating_axon.livemd: the same model run by different
compilers. Axon's backends (Nx's default, EXLA, Torchx) map to axonc's two engines: the
numpy reference interpreter and onnxruntime; the Benchee timings belong in bench/."""

import numpy as np

import axonc as ax


def build():
    return ax.input("data").dense(32).relu().dense(1).softmax()


def test_default_compiler():
    model = build()
    assert 'outputs: "softmax_0"' in str(model) and "nodes: 5" in str(model)

    inputs = np.random.default_rng(9999).uniform(size=(2, 128)).astype(np.float32)

    init_fn, predict_fn = ax.build(model)
    params = init_fn(inputs, {})
    np.testing.assert_array_equal(predict_fn(params, inputs), np.ones((2, 1), np.float32))


def test_compilers_agree():
    model = build()
    inputs = np.random.default_rng(9999).uniform(size=(2, 128)).astype(np.float32)

    init_fn, predict_fn = ax.build(model, compiler="onnxruntime")
    params = init_fn(inputs, {})
    ref_init_fn, ref_predict_fn = ax.build(model, compiler="reference")
    ref_params = ref_init_fn(inputs, {})

    np.testing.assert_array_equal(
        params.data["dense_0"]["kernel"], ref_params.data["dense_0"]["kernel"]
    )
    np.testing.assert_allclose(predict_fn(params, inputs), ref_predict_fn(ref_params, inputs))
    np.testing.assert_array_equal(predict_fn(params, inputs), np.ones((2, 1), np.float32))
