"""Tests of the dropout family: Axon golden files, mask statistics, key handling, errors."""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
from axonc.errors import OptionError, ShapeError, StateError
from axonc.initializers import initialize
from axonc.interpreter import run
from axonc.registry import get_op
from tests import golden

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
LAYERS = ["dropout", "spatial_dropout", "alpha_dropout", "feature_alpha_dropout"]


def specs(model: ax.Axon, shape: tuple, mode: str) -> list:
    node = model.node
    return get_op(node.op).params([ax.TensorType(shape)], dict(node.options), mode, node)


def build(layer: str, shape: tuple, **opts) -> ax.Axon:
    return getattr(ax, layer)(ax.input("x", (None, *shape[1:])), **opts)


def train(model: ax.Axon, x: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    name = model.node.op + "_0"
    out, state = run(model, {"x": x}, {name: {"key": key}}, "train")
    return out, state[name]["key"]


KEY = np.array([0, 42], dtype=np.uint32)


# ---------------------------------------------------------------------------
# Golden files (Axon 0.8.1)


@pytest.mark.parametrize(
    ("case", "layer"),
    [
        ("alpha_dropout_inference", "alpha_dropout"),
        ("feature_alpha_dropout_inference", "feature_alpha_dropout"),
    ],
)
def test_inference_golden_is_identity_without_params(case: str, layer: str) -> None:
    data = golden.load(case)
    x = golden.inputs(data)["x"]
    model = build(layer, x.shape, rate=0.5, seed=0)
    assert data["params"] == {}
    assert specs(model, (None, *x.shape[1:]), "inference") == []
    out, state = run(model, {"x": x}, {}, "inference")
    np.testing.assert_array_equal(out, golden.tensor(data["outputs"]))
    assert state == {}


def test_feature_alpha_dropout_train_statistics_match_golden() -> None:
    data = golden.load("feature_alpha_dropout_train_stats")
    stats = data["outputs"]
    shape = tuple(data["inputs"]["x"]["shape"])
    x = np.full(shape, data["inputs"]["x"]["fill"], dtype=np.float32)
    model = build("feature_alpha_dropout", shape, rate=0.5, seed=42)
    key = golden.tensor(data["params"]["feature_alpha_dropout_0"]["key"])
    np.testing.assert_array_equal(key, initial_key(42))
    out, new_key = train(model, x, key)

    assert list(out.shape) == stats["output_shape"] and out.dtype == np.float32
    n = out.size
    assert np.count_nonzero(out == 0.0) / n == stats["fraction_zero"]
    assert np.count_nonzero(out == 1.0) / n == stats["fraction_equal_to_input"]
    values, counts = np.unique(out, return_counts=True)
    fractions = {round(v["value"], 5): v["fraction"] for v in stats["value_counts_top10"]}
    assert {round(float(v), 5) for v in values} == set(fractions)
    for v, c in zip(values, counts):
        assert abs(c / n - fractions[round(float(v), 5)]) < 0.02
    pixels_constant = bool(np.all(out.min(axis=3) == out.max(axis=3)))
    assert pixels_constant == stats["every_pixel_constant_across_channels"]
    maps = out.transpose(0, 3, 1, 2).reshape(shape[0] * shape[3], -1)
    maps_constant = bool(np.all(maps.min(axis=1) == maps.max(axis=1)))
    assert maps_constant == stats["every_channel_map_constant"]
    assert np.mean(maps.min(axis=1) < 1.0) == stats["fraction_channel_maps_with_min_below_input"]

    golden_key = golden.tensor(data["state"]["feature_alpha_dropout_0"]["key"])
    assert new_key.shape == golden_key.shape and new_key.dtype == golden_key.dtype
    assert not np.array_equal(new_key, key)
    inference, _ = run(model, {"x": x}, {}, "inference")
    assert np.array_equal(inference, x) == stats["inference_mode_is_identity"]


# ---------------------------------------------------------------------------
# Parameters and options


@pytest.mark.parametrize("layer", LAYERS)
def test_key_state_only_in_train_mode(layer: str) -> None:
    model = build(layer, (2, 4, 3), seed=7)
    assert specs(model, (None, 4, 3), "inference") == []
    (spec,) = specs(model, (None, 4, 3), "train")
    assert spec.path == ("key",)
    assert spec.shape == (2,)
    assert spec.dtype == "u32"
    assert spec.kind == "state"
    assert spec.initializer == {"name": "prng_key", "seed": 7}


def initial_key(seed: int) -> np.ndarray:
    """The dropout layers' initial key: the prng_key initializer, as init_fn draws it."""
    return initialize({"name": "prng_key", "seed": seed}, (2,), "u32")


def test_initial_key_is_nx_random_key() -> None:
    np.testing.assert_array_equal(initial_key(42), [0, 42])
    np.testing.assert_array_equal(initial_key(2**32 + 5), [1, 5])
    assert initial_key(3).dtype == np.uint32


def test_default_rate_and_drawn_seed() -> None:
    x = ax.input("x", (None, 4))
    a, b = x.dropout(), x.dropout()
    assert a.node.options["rate"] == 0.5
    assert isinstance(a.node.options["seed"], int)
    assert 0 <= a.node.options["seed"] < 2**32
    # two layers created without a seed get different seeds, hence different masks
    assert a.node.options["seed"] != b.node.options["seed"]


@pytest.mark.parametrize("rate", [1.0, 1.5, -0.1, "0.5", True, None])
@pytest.mark.parametrize("layer", LAYERS)
def test_bad_rate_is_an_option_error(layer: str, rate) -> None:
    with pytest.raises(OptionError, match="rate"):
        build(layer, (2, 4, 3), rate=rate)


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "42"])
def test_bad_seed_is_an_option_error(seed) -> None:
    with pytest.raises(OptionError, match="seed"):
        build("dropout", (2, 4), seed=seed)


@pytest.mark.parametrize("layer", ["spatial_dropout", "feature_alpha_dropout"])
def test_spatial_variants_need_rank_3(layer: str) -> None:
    with pytest.raises(ShapeError, match="rank >= 3"):
        build(layer, (2, 6))


@pytest.mark.parametrize("layer", LAYERS)
def test_train_mode_without_key_is_a_state_error(layer: str) -> None:
    model = build(layer, (2, 4, 3), seed=1)
    with pytest.raises(StateError, match="key"):
        run(model, {"x": np.ones((2, 4, 3), np.float32)}, {}, "train")


def test_misshaped_key_is_a_state_error() -> None:
    model = build("dropout", (2, 4), seed=1)
    with pytest.raises(StateError, match="u32\\[2\\]"):
        train(model, np.ones((2, 4), np.float32), np.zeros(3, np.uint32))


# ---------------------------------------------------------------------------
# Modes, reproducibility


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("shape", [(3, 5, 4), (2, 3, 3, 4)])
def test_inference_mode_is_identity(layer: str, shape: tuple) -> None:
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    out, state = run(build(layer, shape, seed=3), {"x": x}, {}, "inference")
    np.testing.assert_array_equal(out, x)
    assert state == {}


@pytest.mark.parametrize("layer", LAYERS)
def test_same_key_same_mask_new_key_new_mask(layer: str) -> None:
    shape = (4, 8, 6)
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    model = build(layer, shape, rate=0.4, seed=42)
    out1, key1 = train(model, x, KEY)
    again, key1_again = train(model, x, KEY)
    np.testing.assert_array_equal(out1, again)
    np.testing.assert_array_equal(key1, key1_again)
    assert key1.dtype == np.uint32 and key1.shape == (2,)
    out2, key2 = train(model, x, key1)
    assert not np.array_equal(out1, out2)
    assert len({tuple(KEY), tuple(key1), tuple(key2)}) == 3


def test_a_seeded_run_is_reproducible() -> None:
    shape = (2, 10)
    x = np.ones(shape, np.float32)

    def three_steps(seed: int) -> list[np.ndarray]:
        model = build("dropout", shape, seed=seed)
        key, outs = initial_key(seed), []
        for _ in range(3):
            out, key = train(model, x, key)
            outs.append(out)
        return outs

    first, second, other = three_steps(11), three_steps(11), three_steps(12)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(first, other))


# ---------------------------------------------------------------------------
# Semantics and statistics of each variant


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.8])
def test_dropout_fraction_dropped_and_scaling(rate: float) -> None:
    shape = (64, 1000)
    x = np.random.default_rng(2).uniform(0.5, 1.5, size=shape).astype(np.float32)
    out, _ = train(build("dropout", shape, rate=rate), x, KEY)
    dropped = out == 0.0
    assert abs(dropped.mean() - rate) < 0.01
    np.testing.assert_allclose(out[~dropped], x[~dropped] / (1.0 - rate), rtol=1e-6)


def test_dropout_mask_is_elementwise_in_rank_4() -> None:
    shape = (2, 8, 8, 16)
    out, _ = train(build("dropout", shape), np.ones(shape, np.float32), KEY)
    # with an elementwise mask the channels of a pixel disagree somewhere
    assert not np.all(out.min(axis=3) == out.max(axis=3))


def test_dropout_rate_zero_keeps_everything() -> None:
    x = np.random.default_rng(3).normal(size=(5, 7)).astype(np.float32)
    out, _ = train(build("dropout", x.shape, rate=0.0), x, KEY)
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("shape", [(8, 50, 6), (4, 10, 10, 8)])
def test_spatial_dropout_shares_decision_across_channels(shape: tuple) -> None:
    rate = 0.3
    x = np.random.default_rng(4).uniform(1.0, 2.0, size=shape).astype(np.float32)
    out, _ = train(build("spatial_dropout", shape, rate=rate), x, KEY)
    dropped = out == 0.0
    # Axon quirk: a pixel is dropped in all its channels or in none
    assert np.all(dropped.all(axis=-1) == dropped.any(axis=-1))
    assert abs(dropped[..., 0].mean() - rate) < 0.05
    np.testing.assert_allclose(out[~dropped], x[~dropped] / (1.0 - rate), rtol=1e-6)
    # ... so whole feature maps are NOT dropped (Keras/PyTorch would)
    maps = np.moveaxis(dropped, -1, 1).reshape(shape[0] * shape[-1], -1)
    assert not np.any(maps.all(axis=1))


def test_alpha_dropout_values_match_axon_constants() -> None:
    shape = (32, 500)
    out, _ = train(build("alpha_dropout", shape, rate=0.5), np.ones(shape, np.float32), KEY)
    values, counts = np.unique(out, return_counts=True)
    # README "Dropout family": 1.5115 kept, -0.7071 dropped for rate 0.5, input ones
    np.testing.assert_allclose(values, [-0.70710677, 1.5115], atol=1e-4)
    assert abs(counts[0] / out.size - 0.5) < 0.01


@pytest.mark.parametrize("rate", [0.2, 0.6])
def test_alpha_dropout_matches_formula(rate: float) -> None:
    shape = (40, 300)
    x = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    out, _ = train(build("alpha_dropout", shape, rate=rate), x, KEY)
    alpha_p = -SELU_ALPHA * SELU_SCALE
    a = (1.0 - rate) ** -0.5 / abs(alpha_p)
    b = -a * alpha_p * rate
    dropped_value = a * alpha_p + b
    dropped = np.isclose(out, dropped_value, atol=1e-6)
    assert abs(dropped.mean() - rate) < 0.01
    np.testing.assert_allclose(out[~dropped], a * x[~dropped] + b, rtol=1e-5, atol=1e-6)


def test_feature_alpha_dropout_matches_formula() -> None:
    shape = (6, 20, 5)
    rate = 0.4
    x = np.random.default_rng(6).normal(size=shape).astype(np.float32)
    out, _ = train(build("feature_alpha_dropout", shape, rate=rate), x, KEY)
    kept = np.isclose(out, x / (1.0 - rate), rtol=1e-6)
    neg_selu = np.array(
        [-SELU_SCALE * (v if v > 0 else SELU_ALPHA * (np.exp(v) - 1.0)) for v in x.ravel()]
    ).reshape(shape)
    np.testing.assert_allclose(out[~kept], neg_selu[~kept], rtol=1e-5, atol=1e-6)
    # one decision per (batch, position), shared by all channels
    assert np.all(kept.all(axis=-1) == kept.any(axis=-1))
    assert abs((~kept[..., 0]).mean() - rate) < 0.1


@pytest.mark.parametrize("layer", LAYERS)
def test_dtype_and_shape_preserved_in_train_mode(layer: str) -> None:
    shape = (3, 4, 5)
    x = np.random.default_rng(7).normal(size=shape)
    model = getattr(ax, layer)(ax.input("x", (None, 4, 5), dtype="f64"), seed=1)
    out, _ = train(model, x, KEY)
    assert out.shape == shape and out.dtype == np.float64
