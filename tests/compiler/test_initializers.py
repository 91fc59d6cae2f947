"""Initializers: statistics from each published formula (Axon 0.8.1's), options and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

import axonc as ax
from axonc import initializers as init
from axonc.errors import OptionError
from axonc.initializers import check_initializer, derive_seed, initialize

# big enough that sample moments sit within ~1% of the true ones
BIG = (300, 400)
# std of a unit normal truncated to [-2, 2], from scipy (independent of the code's constant)
TRUNC_STD = stats.truncnorm(-2.0, 2.0).std()


def _draw(spec, shape=BIG, seed=0):
    return initialize(spec, shape, "f64", seed).astype(np.float64)


def _fans_by_hand(shape):
    """fan_in, fan_out for a kernel {k1, ..., kn, in, out}: receptive field times in/out."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = 1
    for d in shape[:-2]:
        receptive *= d
    return shape[-2] * receptive, shape[-1] * receptive


def _assert_uniform(values, limit):
    assert values.min() >= -limit and values.max() <= limit
    # the draws reach close to both ends of the interval
    assert values.min() < -0.99 * limit and values.max() > 0.99 * limit
    assert abs(values.mean()) < 0.01 * limit
    np.testing.assert_allclose(values.std(), limit / math.sqrt(3.0), rtol=0.01)


def _assert_truncated(values, std):
    """Unit normal truncated to [-2, 2], scaled so the result's std is `std`."""
    bound = 2.0 * std / TRUNC_STD
    assert np.abs(values).max() <= bound * (1 + 1e-6)
    assert np.abs(values).max() > 0.98 * bound
    np.testing.assert_allclose(values.std(), std, rtol=0.015)
    assert abs(values.mean()) < 0.01 * std


def _assert_normal(values, mean, std):
    np.testing.assert_allclose(values.std(), std, rtol=0.015)
    assert abs(values.mean() - mean) < 0.01 * std
    # untruncated: about 4.55% of draws lie beyond 2 std
    beyond = np.mean(np.abs(values - mean) > 2 * std)
    assert 0.04 < beyond < 0.051


class TestConstants:
    def test_zeros_and_ones(self):
        np.testing.assert_array_equal(initialize("zeros", (2, 3)), np.zeros((2, 3)))
        np.testing.assert_array_equal(initialize("ones", (4,)), np.ones(4))

    def test_full_takes_value_positionally_as_axon(self):
        spec = init.full(2.5)
        assert spec == {"name": "full", "value": 2.5}
        np.testing.assert_array_equal(initialize(spec, (2, 2)), np.full((2, 2), 2.5))
        np.testing.assert_array_equal(
            initialize(init.full(value=-1), (3,), "s32"), np.array([-1, -1, -1])
        )

    def test_full_without_value_is_an_error(self):
        with pytest.raises(ValueError, match="'full' needs option"):
            check_initializer("full")

    def test_identity_square_and_rectangular(self):
        np.testing.assert_array_equal(initialize("identity", (3, 3)), np.eye(3))
        expected = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float32)
        np.testing.assert_array_equal(initialize("identity", (2, 4)), expected)

    def test_identity_batched_over_leading_axes(self):
        out = initialize("identity", (2, 3, 3))
        for matrix in out:
            np.testing.assert_array_equal(matrix, np.eye(3))

    def test_identity_rank_one_is_an_error(self):
        with pytest.raises(ValueError, match="rank >= 2"):
            initialize("identity", (3,))

    def test_identity_has_no_options(self):
        with pytest.raises(ValueError, match="no option"):
            check_initializer({"name": "identity", "scale": 2.0})

    def test_dtype_is_applied(self):
        assert initialize("glorot_uniform", (3, 4), "f32").dtype == np.float32
        assert initialize("normal", (3, 4), "f64").dtype == np.float64
        assert initialize("ones", (2,), "s64").dtype == np.int64

    def test_prng_key_is_zero_then_seed(self):
        np.testing.assert_array_equal(
            initialize({"name": "prng_key", "seed": 42}, (2,), "u32"), [0, 42]
        )


class TestRandomDefaults:
    def test_uniform_default_scale_is_0_01(self):
        _assert_uniform(_draw("uniform"), 0.01)

    def test_uniform_scale_option(self):
        _assert_uniform(_draw(init.uniform(scale=0.5)), 0.5)

    def test_normal_defaults_mean_0_scale_0_01(self):
        _assert_normal(_draw("normal"), 0.0, 0.01)

    def test_normal_mean_and_scale_options(self):
        _assert_normal(_draw(init.normal(mean=1.0, scale=2.0)), 1.0, 2.0)


class TestVarianceScalingFamily:
    def test_glorot_uniform_limit(self):
        fan_in, fan_out = BIG
        _assert_uniform(_draw("glorot_uniform"), math.sqrt(6.0 / (fan_in + fan_out)))

    def test_glorot_normal_is_truncated_with_fan_avg(self):
        fan_in, fan_out = BIG
        _assert_truncated(_draw("glorot_normal"), math.sqrt(2.0 / (fan_in + fan_out)))

    def test_he_uniform_limit(self):
        _assert_uniform(_draw("he_uniform"), math.sqrt(6.0 / BIG[0]))

    def test_he_normal_is_truncated_with_fan_in_scale_2(self):
        _assert_truncated(_draw("he_normal"), math.sqrt(2.0 / BIG[0]))

    def test_lecun_uniform_limit(self):
        _assert_uniform(_draw("lecun_uniform"), math.sqrt(3.0 / BIG[0]))

    def test_lecun_normal_is_truncated_with_fan_in(self):
        _assert_truncated(_draw("lecun_normal"), math.sqrt(1.0 / BIG[0]))

    def test_scale_option_multiplies_the_variance(self):
        fan_in, fan_out = BIG
        limit = math.sqrt(3.0 * 0.25 / ((fan_in + fan_out) / 2))
        _assert_uniform(_draw(init.glorot_uniform(scale=0.25)), limit)

    def test_variance_scaling_defaults_are_fan_in_normal_scale_1(self):
        assert check_initializer("variance_scaling") == {
            "name": "variance_scaling",
            "scale": 1.0,
            "mode": "fan_in",
            "distribution": "normal",
        }
        _assert_normal(_draw("variance_scaling"), 0.0, math.sqrt(1.0 / BIG[0]))

    @pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
    @pytest.mark.parametrize("distribution", ["normal", "uniform", "truncated_normal"])
    def test_variance_scaling_modes_and_distributions(self, mode, distribution):
        shape = (3, 3, 16, 32)  # a conv kernel {kh, kw, in, out}: receptive field 9
        fan_in, fan_out = _fans_by_hand(shape)
        assert (fan_in, fan_out) == (144, 288)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        std = math.sqrt(3.0 / fan)
        spec = init.variance_scaling(scale=3.0, mode=mode, distribution=distribution)
        # many independent kernels of the same shape (a leading axis would change the fans)
        values = np.concatenate([_draw(spec, shape=shape, seed=s).reshape(-1) for s in range(20)])
        if distribution == "uniform":
            _assert_uniform(values, math.sqrt(3.0) * std)
        elif distribution == "normal":
            _assert_normal(values, 0.0, std)
        else:
            _assert_truncated(values, std)

    def test_rank_one_uses_its_size_for_both_fans(self):
        values = np.concatenate([_draw("lecun_uniform", (50,), s) for s in range(400)])
        _assert_uniform(values, math.sqrt(3.0 / 50))

    def test_scalar_uses_fans_of_one(self):
        values = np.array([_draw("he_uniform", (), s) for s in range(4000)])
        _assert_uniform(values, math.sqrt(3.0 * 2.0))

    def test_variance_denominator_is_at_least_one(self):
        # shape {0} would give fan 0; Axon divides by max(fan, 1)
        assert initialize("glorot_uniform", (0,)).shape == (0,)


class TestOrthogonal:
    def test_square_is_orthogonal(self):
        w = _draw("orthogonal", (64, 64))
        np.testing.assert_allclose(w.T @ w, np.eye(64), atol=1e-10)
        np.testing.assert_allclose(w @ w.T, np.eye(64), atol=1e-10)

    def test_tall_has_orthonormal_columns(self):
        w = _draw("orthogonal", (50, 20))
        np.testing.assert_allclose(w.T @ w, np.eye(20), atol=1e-10)

    def test_wide_has_orthonormal_rows(self):
        # e.g. an LSTM-like {hidden, 4 * hidden} kernel
        w = _draw("orthogonal", (16, 64))
        np.testing.assert_allclose(w @ w.T, np.eye(16), atol=1e-10)

    def test_higher_rank_flattens_leading_dims(self):
        w = _draw("orthogonal", (4, 5, 6))
        assert w.shape == (4, 5, 6)
        flat = w.reshape(20, 6)
        np.testing.assert_allclose(flat.T @ flat, np.eye(6), atol=1e-10)

    def test_uniform_distribution_option_is_also_orthogonal(self):
        w = _draw(init.orthogonal(distribution="uniform"), (30, 30))
        np.testing.assert_allclose(w.T @ w, np.eye(30), atol=1e-10)
        assert not np.allclose(w, _draw("orthogonal", (30, 30)))

    def test_f32_result_is_orthogonal_to_f32_precision(self):
        w = initialize("orthogonal", (32, 32), "f32", 3)
        assert w.dtype == np.float32
        np.testing.assert_allclose(w.T @ w, np.eye(32), atol=1e-5)

    def test_rank_one_is_an_error(self):
        with pytest.raises(ValueError, match="rank >= 2"):
            initialize("orthogonal", (8,))

    def test_bad_distribution_is_an_error(self):
        with pytest.raises(ValueError, match="orthogonal distribution must be one of"):
            check_initializer({"name": "orthogonal", "distribution": "truncated_normal"})


class TestSeeding:
    @pytest.mark.parametrize("name", ["uniform", "normal", "glorot_normal", "orthogonal"])
    def test_same_seed_same_values(self, name):
        np.testing.assert_array_equal(
            initialize(name, (5, 7), "f32", 11), initialize(name, (5, 7), "f32", 11)
        )

    @pytest.mark.parametrize("name", ["uniform", "normal", "glorot_normal", "orthogonal"])
    def test_different_seeds_differ(self, name):
        a = initialize(name, (5, 7), "f32", 11)
        b = initialize(name, (5, 7), "f32", 12)
        assert not np.allclose(a, b)

    def test_derive_seed_is_stable_and_depends_on_path_and_seed(self):
        assert derive_seed(0, "dense_0", "kernel") == derive_seed(0, "dense_0", "kernel")
        assert derive_seed(0, "dense_0", "kernel") != derive_seed(0, "dense_1", "kernel")
        assert derive_seed(0, "dense_0", "kernel") != derive_seed(1, "dense_0", "kernel")


class TestSpecsAndErrors:
    def test_name_normalises_to_full_spec_with_axon_defaults(self):
        assert check_initializer("he_uniform") == {"name": "he_uniform", "scale": 2.0}
        assert check_initializer("glorot_normal") == {"name": "glorot_normal", "scale": 1.0}
        assert check_initializer("uniform") == {"name": "uniform", "scale": 0.01}
        assert check_initializer("normal") == {"name": "normal", "mean": 0.0, "scale": 0.01}
        assert check_initializer("orthogonal") == {"name": "orthogonal", "distribution": "normal"}

    def test_spec_functions_match_names(self):
        assert init.lecun_normal(scale=0.5) == {"name": "lecun_normal", "scale": 0.5}

    def test_unknown_name(self):
        with pytest.raises(ValueError, match=r"unknown initializer 'xavier'.*glorot_uniform"):
            check_initializer("xavier")

    def test_unknown_option_lists_valid_ones(self):
        with pytest.raises(ValueError, match="no option\\(s\\) stddev; it takes mean, scale"):
            check_initializer({"name": "normal", "stddev": 1.0})

    def test_orthogonal_takes_no_scale(self):
        with pytest.raises(ValueError, match="no option"):
            init.orthogonal(scale=2.0)

    @pytest.mark.parametrize("value", ["big", None, True, [1.0]])
    def test_non_numeric_option(self, value):
        with pytest.raises(TypeError, match="must be a number"):
            check_initializer({"name": "uniform", "scale": value})

    def test_bad_mode_and_distribution(self):
        with pytest.raises(ValueError, match="mode must be one of fan_in, fan_out, fan_avg"):
            init.variance_scaling(mode="fan_sum")
        with pytest.raises(ValueError, match="distribution must be one of"):
            init.variance_scaling(distribution="cauchy")

    @pytest.mark.parametrize("spec", [3, {"scale": 1.0}, {"name": 7}])
    def test_not_a_spec(self, spec):
        with pytest.raises(TypeError, match="initializer name or spec"):
            check_initializer(spec)

    def test_spec_function_errors_are_option_errors_naming_the_function(self):
        with pytest.raises(OptionError, match=r"ax\.initializers\.variance_scaling: .*mode"):
            init.variance_scaling(mode="fan_sum")
        with pytest.raises(OptionError, match=r"ax\.initializers\.uniform: .*must be a number"):
            init.uniform(scale="big")

    def test_positional_argument_only_for_full(self):
        with pytest.raises(TypeError, match="keyword options only"):
            init.uniform(0.1)

    def test_layer_option_error_is_option_error(self):
        x = ax.input("x", shape=(None, 3))
        with pytest.raises(OptionError, match=r"kernel_initializer.*unknown initializer 'nope'"):
            ax.dense(x, 2, kernel_initializer="nope")
