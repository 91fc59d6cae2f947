"""Shape layers: flatten, reshape, transpose, pad, resize against numpy, formulas and real Axon."""

from __future__ import annotations

import math

import numpy as np
import pytest

import axonc as ax
from axonc.errors import OptionError, ShapeError
from axonc.interpreter import run
from axonc.shape_inference import infer_types, output_types
from tests import golden

RTOL, ATOL = 1e-5, 1e-6


def out_type(model: ax.Axon) -> ax.TensorType:
    return output_types(model, infer_types(model))


def forward(model: ax.Axon, **inputs: np.ndarray) -> np.ndarray:
    out, state = run(model, inputs, {})
    assert state == {}
    return out


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------------------
# flatten


def test_flatten_matches_axon_golden():
    inputs, expected = golden.io("flatten")
    x = ax.input("x", (None, 3, 4))
    np.testing.assert_allclose(forward(ax.flatten(x), **inputs), expected, RTOL, ATOL)


def test_flatten_keeps_batch_and_multiplies_the_rest():
    x = ax.input("x", (None, 2, 3, 4))
    model = x.flatten()
    assert out_type(model) == ax.TensorType((None, 24))
    data = rand(3, 2, 3, 4)
    out = forward(model, x=data)
    assert out.shape == (3, 24)
    assert out[1, 3 * 4 + 2] == data[1, 1, 0, 2]  # row-major order


def test_flatten_dynamic_inner_dim_stays_dynamic():
    assert out_type(ax.flatten(ax.input("x", (2, None, 3)))) == ax.TensorType((2, None))


def test_flatten_default_name():
    from axonc.ir import assign_names

    model = ax.flatten(ax.input("x", (None, 2, 2)))
    assert assign_names(model)[model.output] == "flatten_0"


# ---------------------------------------------------------------------------
# reshape


def test_reshape_matches_axon_golden():
    inputs, expected = golden.io("reshape")
    x = ax.input("x", (None, 12))
    model = ax.reshape(x, ("batch", 3, 4))
    assert out_type(model) == ax.TensorType((None, 3, 4))
    np.testing.assert_allclose(forward(model, **inputs), expected, RTOL, ATOL)


def test_reshape_batch_and_auto():
    x = ax.input("x", (None, 3, 4))
    model = x.reshape(("batch", "auto", 2))
    assert out_type(model) == ax.TensorType((None, 6, 2))
    data = rand(5, 3, 4)
    np.testing.assert_array_equal(forward(model, x=data), data.reshape(5, 6, 2))


def test_reshape_batch_in_a_later_position():
    x = ax.input("x", (None, 6))
    model = ax.reshape(x, (2, 3, "batch"))
    assert out_type(model) == ax.TensorType((2, 3, None))
    data = rand(4, 6)
    np.testing.assert_array_equal(forward(model, x=data), data.reshape(2, 3, 4))


def test_reshape_static_shape_resolves_auto():
    x = ax.input("x", (2, 3, 4))
    assert out_type(ax.reshape(x, ("auto", 4))) == ax.TensorType((6, 4))


def test_reshape_without_batch_on_dynamic_input_is_checked_at_run_time():
    x = ax.input("x", (None, 4))
    model = ax.reshape(x, (6, "auto"))
    assert out_type(model) == ax.TensorType((6, None))
    assert forward(model, x=rand(3, 4)).shape == (6, 2)
    with pytest.raises(ShapeError, match="not a multiple of 6"):
        forward(model, x=rand(1, 4))


def test_reshape_incompatible_sizes_raise_shape_error():
    x = ax.input("x", (None, 12))
    with pytest.raises(ShapeError, match=r"12 elements into \{5\}.*must match"):
        ax.reshape(x, ("batch", 5))
    with pytest.raises(ShapeError, match="not a multiple of 5"):
        ax.reshape(x, ("batch", "auto", 5))
    with pytest.raises(ShapeError, match="sizes must match"):
        ax.reshape(ax.input("y", (2, 3)), (4, 2))


@pytest.mark.parametrize(
    "bad", [("batch", "auto", "auto"), ("batch", -1), ("batch", 2.5), 12, ("batch", "rest")]
)
def test_reshape_bad_shape_option_raises_option_error(bad):
    with pytest.raises(OptionError, match="new_shape"):
        ax.reshape(ax.input("x", (None, 12)), bad)


# ---------------------------------------------------------------------------
# transpose


def test_transpose_matches_axon_golden():
    inputs, expected = golden.io("transpose_perm")
    x = ax.input("x", (None, 3, 4))
    model = ax.transpose(x, [0, 2, 1])
    np.testing.assert_allclose(forward(model, **inputs), expected, RTOL, ATOL)


def test_transpose_without_permutation_reverses_every_axis_including_batch():
    x = ax.input("x", (None, 3, 4))
    model = x.transpose()
    assert out_type(model) == ax.TensorType((4, 3, None))
    data = rand(2, 3, 4)
    out = forward(model, x=data)
    assert out.shape == (4, 3, 2)
    for i, j, k in np.ndindex(2, 3, 4):
        assert out[k, j, i] == data[i, j, k]


def test_transpose_rank4_and_negative_axes():
    x = ax.input("x", (None, 2, 3, 4))
    data = rand(2, 2, 3, 4)
    out = forward(ax.transpose(x, [0, -1, 1, 2]), x=data)
    np.testing.assert_array_equal(out, np.moveaxis(data, 3, 1))


@pytest.mark.parametrize("perm", [[0, 1], [0, 1, 1], [0, 1, 3], [2, 1, 0, 3]])
def test_transpose_bad_permutation_raises_shape_error(perm):
    with pytest.raises(ShapeError, match="expected a permutation of the 3 axes"):
        ax.transpose(ax.input("x", (None, 3, 4)), perm)


def test_transpose_non_integer_permutation_raises_option_error():
    with pytest.raises(OptionError, match="permutation"):
        ax.transpose(ax.input("x", (None, 3, 4)), [0, "a", 1])


# ---------------------------------------------------------------------------
# pad


def _pad_reference(x: np.ndarray, pads: list[tuple[int, int]], value: float) -> np.ndarray:
    """Place x into a filled array, element by element (non-negative pads only)."""
    out_shape = tuple(n + lo + hi for n, (lo, hi) in zip(x.shape, pads, strict=True))
    out = np.full(out_shape, value, dtype=x.dtype)
    for idx in np.ndindex(*x.shape):
        out[tuple(i + lo for i, (lo, _) in zip(idx, pads, strict=True))] = x[idx]
    return out


def test_pad_channels_last_pads_spatial_dims_only():
    x = ax.input("x", (None, 3, 4, 2))
    model = ax.pad(x, [(1, 2), (0, 1)])
    assert out_type(model) == ax.TensorType((None, 6, 5, 2))
    data = rand(2, 3, 4, 2)
    expected = _pad_reference(data, [(0, 0), (1, 2), (0, 1), (0, 0)], 0.0)
    np.testing.assert_array_equal(forward(model, x=data), expected)


def test_pad_channels_first_with_value():
    x = ax.input("x", (None, 2, 3, 4))
    model = x.pad([(2, 1), (1, 1)], 1.5, channels="first")
    assert out_type(model) == ax.TensorType((None, 2, 6, 6))
    data = rand(3, 2, 3, 4)
    expected = _pad_reference(data, [(0, 0), (0, 0), (2, 1), (1, 1)], 1.5)
    np.testing.assert_array_equal(forward(model, x=data), expected)


def test_pad_default_value_is_zero_and_1d():
    x = ax.input("x", (None, 3, 1))
    out = forward(ax.pad(x, [(1, 1)]), x=np.ones((1, 3, 1), np.float32))
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 1, 1, 0])


def test_pad_negative_crops():
    x = ax.input("x", (None, 5, 3))
    model = ax.pad(x, [(-1, 2)], -7.0)
    assert out_type(model) == ax.TensorType((None, 6, 3))
    data = rand(2, 5, 3)
    out = forward(model, x=data)
    np.testing.assert_array_equal(out[:, :4], data[:, 1:])
    np.testing.assert_array_equal(out[:, 4:], np.full((2, 2, 3), -7.0, np.float32))


def test_pad_value_is_cast_to_integer_input():
    x = ax.input("x", (None, 2, 1), dtype="s32")
    out = forward(ax.pad(x, [(0, 1)], 3.0), x=np.array([[[1], [2]]], np.int32))
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out[0, :, 0], [1, 2, 3])


def test_pad_config_length_must_match_spatial_dims():
    with pytest.raises(
        ShapeError, match=r"1 \(lo, hi\) pairs; expected one per spatial dim.*\(2\)"
    ):
        ax.pad(ax.input("x", (None, 3, 4, 2)), [(1, 1)])


def test_pad_cropping_below_zero_raises_shape_error():
    with pytest.raises(ShapeError, match="below zero"):
        ax.pad(ax.input("x", (None, 3, 2)), [(-2, -2)])


@pytest.mark.parametrize("config", [[(1, 2, 3)], [1, 2], "same", [(1.0, 2)]])
def test_pad_bad_config_raises_option_error(config):
    with pytest.raises(OptionError, match="config"):
        ax.pad(ax.input("x", (None, 3, 2)), config)


def test_pad_bad_channels_raises_option_error():
    with pytest.raises(OptionError, match="channels"):
        ax.pad(ax.input("x", (None, 3, 2)), [(1, 1)], channels="middle")


# ---------------------------------------------------------------------------
# resize: real Axon


RESIZE_GOLDEN = {
    "resize_nearest_up": ((5, 5), {}),
    "resize_nearest_up2x": ((6, 6), {"method": "nearest"}),
    "resize_nearest_down": ((4, 4), {"method": "nearest"}),
    "resize_bilinear_up": ((6, 6), {"method": "bilinear"}),
    "resize_bilinear_up_nonint": ((5, 7), {"method": "bilinear"}),
    "resize_bilinear_down_antialias": ((4, 4), {"method": "bilinear"}),
    "resize_bilinear_down_no_antialias": ((4, 4), {"method": "bilinear", "antialias": False}),
    "resize_bicubic_up": ((6, 6), {"method": "bicubic"}),
}


@pytest.mark.parametrize("case", sorted(RESIZE_GOLDEN))
def test_resize_matches_axon_golden(case):
    inputs, expected = golden.io(case)
    size, opts = RESIZE_GOLDEN[case]
    x = ax.input("x", (None, *inputs["x"].shape[1:]))
    model = ax.resize(x, size, **opts)
    assert out_type(model) == ax.TensorType((None, *size, 2))
    out = forward(model, **inputs)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, RTOL, ATOL)


# ---------------------------------------------------------------------------
# resize: written-out formulas


def test_resize_nearest_is_floor_of_half_pixel_centre():
    x = ax.input("x", (None, 7, 3, 2))
    data = rand(2, 7, 3, 2)
    out = forward(ax.resize(x, (4, 8)), x=data)
    for i, j in np.ndindex(4, 8):
        si = math.floor((i + 0.5) * 7 / 4)
        sj = math.floor((j + 0.5) * 3 / 8)
        np.testing.assert_array_equal(out[:, i, j], data[:, si, sj])


def test_resize_nearest_keeps_integer_dtype():
    x = ax.input("x", (None, 2, 2, 1), dtype="s32")
    out = forward(ax.resize(x, (4, 4)), x=np.arange(4, dtype=np.int32).reshape(1, 2, 2, 1))
    assert out.dtype == np.int32
    np.testing.assert_array_equal(
        out[0, :, :, 0], [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    )


def _bilinear_clamped(v: np.ndarray, out: int) -> np.ndarray:
    """Half-pixel bilinear along axis 1, source coordinate clamped to the edges (1 axis)."""
    n = v.shape[1]
    res = []
    for j in range(out):
        src = min(max((j + 0.5) * n / out - 0.5, 0.0), n - 1.0)
        i0 = math.floor(src)
        i1 = min(i0 + 1, n - 1)
        lam = src - i0
        res.append((1 - lam) * v[:, i0] + lam * v[:, i1])
    return np.stack(res, axis=1)


@pytest.mark.parametrize("size", [(7, 5), (3, 2), (4, 9)])
def test_resize_bilinear_without_antialias_is_clamped_half_pixel_interpolation(size):
    x = ax.input("x", (None, 5, 4, 3))
    data = rand(2, 5, 4, 3).astype(np.float64)
    out = forward(ax.resize(x, size, method="bilinear", antialias=False), x=data.astype(np.float32))
    rows = _bilinear_clamped(data, size[0])
    expected = np.swapaxes(_bilinear_clamped(np.swapaxes(rows, 1, 2), size[1]), 1, 2)
    np.testing.assert_allclose(out, expected, RTOL, ATOL)


def test_resize_bilinear_upsampling_ignores_antialias():
    x = ax.input("x", (None, 3, 4, 2))
    data = rand(1, 3, 4, 2)
    a = forward(ax.resize(x, (5, 7), method="bilinear"), x=data)
    b = forward(ax.resize(x, (5, 7), method="bilinear", antialias=False), x=data)
    np.testing.assert_array_equal(a, b)


def test_resize_bilinear_antialias_downsample_by_hand():
    # 4 -> 2: scale 2, triangle widened to radius 2. Output 0 is centred at 0.5:
    # weights 1 - |0.5 - i| / 2 = (0.75, 0.75, 0.25, 0), normalised by 1.75.
    x = ax.input("x", (None, 4, 1))
    data = np.arange(4, dtype=np.float32).reshape(1, 4, 1)
    out = forward(ax.resize(x, (2,), method="bilinear"), x=data)
    expected = [(0 * 0.75 + 1 * 0.75 + 2 * 0.25) / 1.75, (1 * 0.25 + 2 * 0.75 + 3 * 0.75) / 1.75]
    np.testing.assert_allclose(out[0, :, 0], expected, RTOL, ATOL)
    no_aa = forward(ax.resize(x, (2,), method="bilinear", antialias=False), x=data)
    np.testing.assert_allclose(no_aa[0, :, 0], [0.5, 2.5], RTOL, ATOL)


def _keys_cubic(t: float) -> float:
    t = abs(t)
    if t < 1:
        return 1.5 * t**3 - 2.5 * t**2 + 1
    if t < 2:
        return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
    return 0.0


def _lanczos(a: int):
    def k(t: float) -> float:
        t = abs(t)
        if t > a:
            return 0.0
        if t <= 1e-3:
            return 1.0
        return a * math.sin(math.pi * t) * math.sin(math.pi * t / a) / (math.pi * t) ** 2

    return k


def _resample_1d(v: np.ndarray, out: int, kernel, antialias: bool) -> np.ndarray:
    """Per output sample: kernel at the (widened) distances to each input, renormalised."""
    n = len(v)
    scale = max(1.0, n / out) if antialias else 1.0
    res = np.zeros(out)
    for j in range(out):
        centre = (j + 0.5) * n / out - 0.5
        ws = [kernel((centre - i) / scale) for i in range(n)]
        total = sum(ws)
        res[j] = sum(w * v[i] for i, w in enumerate(ws) if abs(w) > 1000 * 2.0**-23) / total
    return res


@pytest.mark.parametrize(
    ("method", "kernel"),
    [("bicubic", _keys_cubic), ("lanczos3", _lanczos(3)), ("lanczos5", _lanczos(5))],
)
@pytest.mark.parametrize(("n", "out"), [(5, 9), (9, 4), (6, 6)])
def test_resize_kernel_methods_match_written_out_resampling(method, kernel, n, out):
    x = ax.input("x", (None, n, 1))
    data = rand(1, n, 1, seed=n + out).astype(np.float64)
    got = forward(ax.resize(x, (out,), method=method), x=data.astype(np.float32))
    expected = _resample_1d(data[0, :, 0], out, kernel, antialias=True)
    np.testing.assert_allclose(got[0, :, 0], expected, RTOL, ATOL)


def test_resize_same_size_is_identity_for_every_method():
    x = ax.input("x", (None, 4, 5, 2))
    data = rand(2, 4, 5, 2)
    for method in ("nearest", "bilinear", "bicubic", "lanczos3", "lanczos5"):
        np.testing.assert_array_equal(forward(ax.resize(x, (4, 5), method=method), x=data), data)


def test_resize_channels_first_equals_transposed_channels_last():
    data = rand(2, 3, 6, 5)
    first = ax.resize(ax.input("x", (None, 3, 6, 5)), (4, 8), method="bicubic", channels="first")
    last = ax.resize(ax.input("x", (None, 6, 5, 3)), (4, 8), method="bicubic")
    assert out_type(first) == ax.TensorType((None, 3, 4, 8))
    a = forward(first, x=data)
    b = forward(last, x=np.transpose(data, (0, 2, 3, 1)))
    np.testing.assert_allclose(a, np.transpose(b, (0, 3, 1, 2)), RTOL, ATOL)


def test_resize_int_size_applies_to_every_spatial_dim():
    assert out_type(ax.resize(ax.input("x", (None, 3, 5, 1)), 4)) == ax.TensorType((None, 4, 4, 1))


def test_resize_dynamic_spatial_dim_gets_the_static_output_size():
    model = ax.resize(ax.input("x", (None, None, 5, 1)), (4, 4), method="bilinear")
    assert out_type(model) == ax.TensorType((None, 4, 4, 1))
    assert forward(model, x=rand(1, 7, 5, 1)).shape == (1, 4, 4, 1)


def test_resize_rank_too_low_raises_shape_error():
    with pytest.raises(ShapeError, match="rank >= 3"):
        ax.resize(ax.input("x", (None, 4)), (2,))


def test_resize_shape_length_must_match_spatial_dims():
    with pytest.raises(ShapeError, match=r"has 3 entries; expected one per spatial dim.*\(2\)"):
        ax.resize(ax.input("x", (None, 4, 4, 2)), (2, 2, 2))


@pytest.mark.parametrize(
    "opts",
    [{"method": "area"}, {"antialias": 1}, {"channels": "middle"}],
)
def test_resize_bad_options_raise_option_error(opts):
    with pytest.raises(OptionError, match=next(iter(opts))):
        ax.resize(ax.input("x", (None, 4, 4, 2)), (2, 2), **opts)


def test_resize_bad_size_raises_option_error():
    with pytest.raises(OptionError, match="resize_shape"):
        ax.resize(ax.input("x", (None, 4, 4, 2)), (0, 2))
