"""Axon's guides/cheatsheets/axon_pytorch.cheatmd: the Axon side of each snippet.

The cheatsheet's hand-written loop calls `Polaris.Optimizers.init/2` and `update/4`, which
Polaris does not have, and differentiates with respect to the inputs; it is translated
as the evident intent: the optimizer's (init, update) pair, gradients of the parameters."""

import numpy as np

import axonc as ax


def test_sequential_model():
    model = (
        ax.input("input", shape=(None, 784))
        .dense(128, activation="relu")
        .dense(10, activation="softmax")
    )
    assert ax.get_output_shape(model, ax.template((1, 784), "f32")) == (1, 10)


def test_dense_layer():
    out_features = 64
    input = ax.input("features")
    dense_layer = ax.dense(input, out_features, activation="relu", name="my_dense_layer")
    template = ax.template((2, 784), "f32")
    assert ax.get_output_shape(dense_layer, template) == (2, 64)
    dense_layer = ax.dense(input, 128)
    assert ax.get_output_shape(dense_layer, template) == (2, 128)


def test_conv_pool_dropout_norm():
    template = ax.template((1, 28, 28, 3), "f32")
    # 32 filters, 3x3 kernel, relu
    x = ax.input("features")
    conv1 = ax.conv(x, 32, kernel_size=3, activation="relu", padding="same", name="conv1")
    assert ax.get_output_shape(conv1, template) == (1, 28, 28, 32)

    conv2 = ax.conv(x, 64, kernel_size=(3, 3), strides=2, padding="valid")
    assert ax.get_output_shape(conv2, template) == (1, 13, 13, 64)

    previous_layer = conv1
    pool1 = ax.max_pool(previous_layer, kernel_size=2, strides=2, name="pool1")
    assert ax.get_output_shape(pool1, template) == (1, 14, 14, 32)
    pool2 = ax.max_pool(previous_layer, kernel_size=(3, 3), strides=1, padding="same")
    assert ax.get_output_shape(pool2, template) == (1, 28, 28, 32)

    dropout1 = ax.dropout(previous_layer, rate=0.5, name="dropout1")
    norm1 = ax.layer_norm(previous_layer, name="layernorm1")
    assert ax.get_output_shape(dropout1, template) == ax.get_output_shape(norm1, template)

    params = ax.build(norm1)[0](template, {})
    assert set(params.data) == {"conv1", "layernorm1"}
    assert params.data["layernorm1"]["gamma"].shape == (32,)


def test_activations():
    # as a layer option
    model = ax.input("input", shape=(None, 784)).dense(128, activation="relu")
    assert ax.get_op_counts(model)["relu"] == 1

    # as a separate layer
    model = ax.input("input", shape=(None, 10)).dense(128).softmax()
    init_fn, predict_fn = ax.build(model)
    params = init_fn(ax.template((1, 10), "f32"), {})
    y = predict_fn(params, np.ones((3, 10), np.float32))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


# MyCustomLayers
def my_dense(x):
    return ax.dense(x, 128, activation="relu", name="my_dense_layer")


def my_block():
    return ax.block(my_dense)


def test_custom_layers_and_blocks():
    input = ax.input("input", shape=(None, 784))
    model = my_dense(my_dense(input))
    assert ax.get_op_counts(model)["dense"] == 2

    dense_block = my_block()
    model = dense_block(dense_block(input))
    assert ax.get_op_counts(model)["block"] == 2


def test_initialize():
    model = ax.input("input", shape=(None, 784)).dense(128, activation="relu")

    init_fn, _predict_fn = ax.build(model)

    input_template = ax.template((1, 784), "f32")
    params = init_fn(input_template, {})
    assert params.data["dense_0"]["kernel"].shape == (784, 128)
    np.testing.assert_array_equal(params.data["dense_0"]["bias"], np.zeros(128, np.float32))


def test_losses():
    rng = np.random.default_rng(0)
    targets = rng.dirichlet(np.ones(4), size=5).astype(np.float32)
    predictions = rng.dirichlet(np.ones(4), size=5).astype(np.float32)

    loss_value = ax.losses.mean_squared_error(predictions, targets)
    np.testing.assert_allclose(loss_value, ((predictions - targets) ** 2).mean(1), rtol=1e-5)
    loss_value = ax.losses.categorical_cross_entropy(predictions, targets)
    np.testing.assert_allclose(loss_value, -(predictions * np.log(targets)).sum(1), rtol=1e-5)

    model = ax.input("input", shape=(None, 784)).dense(10)
    optimizer = ax.optimizers.adam(learning_rate=0.001)
    assert isinstance(ax.Loop.trainer(model, "mean_squared_error", optimizer), ax.Loop)
    assert isinstance(ax.Loop.trainer(model, "categorical_cross_entropy", optimizer), ax.Loop)


def train_data(n):
    rng = np.random.default_rng(1)
    for _ in range(n):
        x = rng.random((16, 784), dtype=np.float32)
        y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, size=16)]
        yield x, y


def test_optimizers_and_loop():
    model = ax.input("input", shape=(None, 784)).dense(10, activation="softmax")
    optimizer = ax.optimizers.sgd(learning_rate=0.01)
    optimizer = ax.optimizers.adam(learning_rate=0.001)

    model_state = ax.Loop.trainer(model, "categorical_cross_entropy", optimizer).run(
        list(train_data(4)), epochs=2
    )
    assert model_state.data["dense_0"]["kernel"].shape == (784, 10)


def test_summary_table():
    model = ax.input("input", shape=(None, 784)).dense(10)
    input_template = ax.template((1, 784), "f32")

    table = ax.display.as_table(model, input_template)
    assert "dense_0" in table
    assert "7850" in table.replace(",", "")
