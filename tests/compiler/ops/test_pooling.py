"""Pooling layers: shapes, options, errors and numerics.

Numerics are checked against an independent reference written with explicit loops
over output positions and window taps (bounds checks instead of padding), against
scipy.signal.correlate for blur_pool, and against every pooling golden file that
real Axon 0.8.1 produced (tests/fixtures/axon-golden).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.signal import correlate

import axonc as ax
from axonc.dtypes import TensorType
from axonc.errors import OptionError, ShapeError
from axonc.interpreter import run
from axonc.ir import assign_names
from axonc.registry import OPS
from axonc.shape_inference import declared_type
from tests import golden

POOLING_PREFIXES = ("adaptive_", "avg_pool", "max_pool", "lp_pool", "global_", "blur_pool")
POOL_OPS = [
    "max_pool",
    "avg_pool",
    "lp_pool",
    "adaptive_avg_pool",
    "adaptive_max_pool",
    "adaptive_lp_pool",
    "global_avg_pool",
    "global_max_pool",
    "global_lp_pool",
    "blur_pool",
]


def data(shape, seed=0, positive=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape)
    if positive:
        x = np.abs(x) + 0.1
    return x.astype(np.float32)


def forward(model, x, mode="inference"):
    out, state = run(model, {"x": x}, {}, mode)
    assert state == {}
    return out


# ---------------------------------------------------------------------------
# Independent reference: explicit loops over every output position and tap.


def ref_window_pool(x, kind, kernel, strides, dilations, pads, channels="last", norm=2):
    """Pool `x` by visiting each output position and each window tap by index.

    A tap whose input index falls outside the input is padding: it is skipped for
    max, contributes 0 to sums, and still counts in the avg divisor.
    """
    x = np.asarray(x, np.float64)
    if channels == "first":
        x = np.moveaxis(x, 1, -1)
    batch, *spatial, chans = x.shape
    outs = []
    for n, k, s, d, (lo, hi) in zip(spatial, kernel, strides, dilations, pads, strict=True):
        outs.append((n + lo + hi - ((k - 1) * d + 1)) // s + 1)
    y = np.zeros((batch, *outs, chans))
    for b in range(batch):
        for pos in itertools.product(*(range(o) for o in outs)):
            for c in range(chans):
                values = []
                for tap in itertools.product(*(range(k) for k in kernel)):
                    idx = [
                        p * s + t * d - lo
                        for p, t, s, d, (lo, _) in zip(
                            pos, tap, strides, dilations, pads, strict=True
                        )
                    ]
                    if all(0 <= i < n for i, n in zip(idx, spatial, strict=True)):
                        values.append(x[(b, *idx, c)])
                    else:
                        values.append(None)
                real = [v for v in values if v is not None]
                if kind == "max":
                    y[(b, *pos, c)] = max(real) if real else -np.inf
                elif kind == "avg":
                    y[(b, *pos, c)] = sum(real) / len(values)
                else:
                    total = sum(v**norm for v in real)
                    y[(b, *pos, c)] = total ** (1.0 / norm) if total >= 0 else np.nan
    if channels == "first":
        y = np.moveaxis(y, -1, 1)
    return y


def nx_same(kernel, dilations):
    """Nx's :same padding, written out: lo = floor(total/2), hi = the rest."""
    pads = []
    for k, d in zip(kernel, dilations, strict=True):
        total = (k - 1) * d
        pads.append((total // 2, total - total // 2))
    return pads


def ref_blur(x, channels):
    """Depthwise correlation with the outer product of [1, 2, 1] / 4, zero padded."""
    x = np.asarray(x, np.float64)
    if channels == "first":
        x = np.moveaxis(x, 1, -1)
    n_spatial = x.ndim - 2
    taps = np.array([1.0, 2.0, 1.0]) / 4.0
    kernel = taps
    for _ in range(n_spatial - 1):
        kernel = np.multiply.outer(kernel, taps)
    y = np.empty_like(x)
    for b in range(x.shape[0]):
        for c in range(x.shape[-1]):
            y[b, ..., c] = correlate(x[b, ..., c], kernel, mode="same")
    if channels == "first":
        y = np.moveaxis(y, -1, 1)
    return y


# ---------------------------------------------------------------------------
# Windowed pools vs the loop reference

WINDOW_CONFIGS = [
    # (id, input shape, options, kernel, strides, dilations, pads or "same", channels)
    ("1d_default", (2, 7, 3), {}, (1,), (1,), (1,), [(0, 0)], "last"),
    ("1d_k3_default_strides", (2, 9, 3), {"kernel_size": 3}, (3,), (3,), (1,), [(0, 0)], "last"),
    (
        "1d_same_s2",
        (2, 8, 2),
        {"kernel_size": 3, "strides": 2, "padding": "same"},
        (3,),
        (2,),
        (1,),
        "same",
        "last",
    ),
    (
        "1d_channels_first_dilated",
        (2, 3, 9),
        {"kernel_size": 2, "strides": 1, "dilations": 3, "channels": "first"},
        (2,),
        (1,),
        (3,),
        [(0, 0)],
        "first",
    ),
    ("2d_k2", (2, 6, 6, 2), {"kernel_size": 2}, (2, 2), (2, 2), (1, 1), [(0, 0)] * 2, "last"),
    (
        "2d_k3_s1_same",
        (1, 6, 5, 2),
        {"kernel_size": 3, "strides": 1, "padding": "same"},
        (3, 3),
        (1, 1),
        (1, 1),
        "same",
        "last",
    ),
    (
        "2d_even_kernel_same_s2",
        (2, 7, 6, 2),
        {"kernel_size": (2, 4), "strides": 2, "padding": "same"},
        (2, 4),
        (2, 2),
        (1, 1),
        "same",
        "last",
    ),
    (
        "2d_same_dilated",
        (1, 7, 7, 2),
        {"kernel_size": 2, "strides": 1, "padding": "same", "dilations": (2, 3)},
        (2, 2),
        (1, 1),
        (2, 3),
        "same",
        "last",
    ),
    (
        "2d_explicit_channels_first",
        (2, 3, 5, 6),
        {
            "kernel_size": (2, 3),
            "strides": (1, 2),
            "padding": [(1, 0), (2, 1)],
            "channels": "first",
        },
        (2, 3),
        (1, 2),
        (1, 1),
        [(1, 0), (2, 1)],
        "first",
    ),
    (
        "2d_explicit_negative_pad_crops",
        (1, 6, 6, 1),
        {"kernel_size": 2, "strides": 1, "padding": [(-1, 0), (0, -2)]},
        (2, 2),
        (1, 1),
        (1, 1),
        [(-1, 0), (0, -2)],
        "last",
    ),
    (
        "2d_strides_list",
        (1, 8, 7, 2),
        {"kernel_size": 3, "strides": [3, 2]},
        (3, 3),
        (3, 2),
        (1, 1),
        [(0, 0)] * 2,
        "last",
    ),
    (
        "3d_k2_channels_first",
        (2, 2, 4, 4, 5),
        {"kernel_size": 2, "channels": "first"},
        (2, 2, 2),
        (2, 2, 2),
        (1, 1, 1),
        [(0, 0)] * 3,
        "first",
    ),
    (
        "3d_same_mixed",
        (1, 4, 5, 4, 2),
        {"kernel_size": (2, 3, 2), "strides": (1, 2, 1), "padding": "same", "dilations": (1, 1, 2)},
        (2, 3, 2),
        (1, 2, 1),
        (1, 1, 2),
        "same",
        "last",
    ),
]


@pytest.mark.parametrize("kind", ["max", "avg", "lp"])
@pytest.mark.parametrize("cfg", WINDOW_CONFIGS, ids=[c[0] for c in WINDOW_CONFIGS])
def test_window_pool_matches_loop_reference(kind, cfg):
    _, shape, opts, kernel, strides, dilations, pads, channels = cfg
    if pads == "same":
        pads = nx_same(kernel, dilations)
    x = data(shape, seed=len(shape))
    layer = {"max": ax.max_pool, "avg": ax.avg_pool, "lp": ax.lp_pool}[kind]
    model = layer(ax.input("x", (None, *shape[1:])), **opts)
    got = forward(model, x)
    want = ref_window_pool(x, kind, kernel, strides, dilations, pads, channels)
    assert got.dtype == np.float32
    assert got.shape == want.shape
    assert declared_type(model, model.output).shape == (None, *want.shape[1:])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm", [1, 3, 1.5, 4])
def test_lp_pool_norms_match_reference(norm):
    x = data((2, 6, 5, 2), seed=3, positive=True)
    model = ax.lp_pool(ax.input("x", (None, 6, 5, 2)), kernel_size=2, strides=1, norm=norm)
    want = ref_window_pool(x, "lp", (2, 2), (1, 1), (1, 1), [(0, 0)] * 2, norm=norm)
    np.testing.assert_allclose(forward(model, x), want, rtol=1e-5, atol=1e-6)


def test_lp_pool_has_no_abs():
    # norm 1 without abs is a plain window sum, negative values included.
    x = np.array([[[-3.0], [1.0], [-0.5], [2.0]]], np.float32)
    model = ax.lp_pool(ax.input("x", (None, 4, 1)), kernel_size=2, norm=1)
    np.testing.assert_allclose(forward(model, x)[0, :, 0], [-2.0, 1.5])


def test_lp_pool_odd_norm_negative_sum_is_nan():
    x = np.array([[[-3.0], [1.0]]], np.float32)
    model = ax.lp_pool(ax.input("x", (None, 2, 1)), kernel_size=2, norm=3)
    assert np.isnan(forward(model, x)[0, 0, 0])


def test_avg_pool_counts_padded_zeros():
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
    model = ax.avg_pool(ax.input("x", (None, 3, 3, 1)), kernel_size=3, strides=1, padding="same")
    out = forward(model, x)[0, :, :, 0]
    # top-left window holds 1, 2, 4, 5 and five padded zeros: divisor 9, not 4
    assert out[0, 0] == pytest.approx((1 + 2 + 4 + 5) / 9)
    assert out[1, 1] == pytest.approx(45 / 9)


def test_max_pool_pads_with_negative_infinity():
    x = -np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
    model = ax.max_pool(ax.input("x", (None, 3, 3, 1)), kernel_size=3, strides=1, padding="same")
    out = forward(model, x)[0, :, :, 0]
    # a zero pad would win every border window; -inf padding keeps the real maxima
    np.testing.assert_array_equal(out, [[-1, -1, -2], [-1, -1, -2], [-4, -4, -5]])


def test_max_pool_keeps_integer_dtype_and_avg_pool_gives_f32():
    x = np.arange(16, dtype=np.int32).reshape(1, 4, 4, 1)
    inp = ax.input("x", (None, 4, 4, 1), dtype="s32")
    mx = ax.max_pool(inp, kernel_size=2)
    avg = ax.avg_pool(inp, kernel_size=2)
    assert declared_type(mx, mx.output).dtype == "s32"
    assert declared_type(avg, avg.output).dtype == "f32"
    out = forward(mx, x)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out[0, :, :, 0], [[5, 7], [13, 15]])
    out = forward(avg, x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])


def test_window_pool_defaults():
    model = ax.max_pool(ax.input("x", (None, 5, 4, 2)))
    opts = dict(model.node.options)
    assert opts == {
        "kernel_size": 1,
        "strides": None,
        "padding": "valid",
        "dilations": 1,
        "channels": "last",
    }
    x = data((2, 5, 4, 2))
    np.testing.assert_array_equal(forward(model, x), x)  # a 1-wide window is the identity
    lp = ax.lp_pool(ax.input("x", (None, 5, 4, 2)))
    assert lp.node.options["norm"] == 2


def test_strides_default_to_kernel_size():
    x = data((1, 6, 6, 1))
    default = forward(ax.avg_pool(ax.input("x", (None, 6, 6, 1)), kernel_size=3), x)
    explicit = forward(ax.avg_pool(ax.input("x", (None, 6, 6, 1)), kernel_size=3, strides=3), x)
    assert default.shape == (1, 2, 2, 1)
    np.testing.assert_array_equal(default, explicit)


def test_same_padding_ignores_stride():
    # Nx's rule: in 6, k 3, s 2 pads (1, 1) (TF would pad (0, 1)).
    x = data((1, 6, 1), seed=7)
    model = ax.max_pool(ax.input("x", (None, 6, 1)), kernel_size=3, strides=2, padding="same")
    want = ref_window_pool(x, "max", (3,), (2,), (1,), [(1, 1)])
    np.testing.assert_allclose(forward(model, x), want)


@pytest.mark.parametrize("op", ["max_pool", "avg_pool", "lp_pool"])
def test_window_pool_dynamic_dims_stay_none(op):
    model = getattr(ax, op)(ax.input("x", (None, None, 9, 2)), kernel_size=2, padding="same")
    assert declared_type(model, model.output).shape == (None, None, 5, 2)
    model = getattr(ax, op)(ax.input("x", (None, 2, None, 9)), kernel_size=3, channels="first")
    assert declared_type(model, model.output).shape == (None, 2, None, 3)
    x = data((3, 2, 7, 9))
    assert forward(model, x).shape == (3, 2, 2, 3)


# ---------------------------------------------------------------------------
# Adaptive pools


def adaptive_geometry(sizes, out):
    strides = [n // o for n, o in zip(sizes, out, strict=True)]
    windows = [n - (o - 1) * s for n, o, s in zip(sizes, out, strides, strict=True)]
    return windows, strides


ADAPTIVE_CONFIGS = [
    ("1d_3", (2, 8, 3), 3, "last"),
    ("2d_4x4", (1, 6, 6, 2), (4, 4), "last"),
    ("2d_5x3", (2, 7, 6, 2), (5, 3), "last"),
    ("2d_channels_first", (2, 3, 7, 5), [2, 4], "first"),
    ("3d", (1, 4, 5, 6, 2), 2, "last"),
    ("3d_channels_first", (1, 2, 5, 4, 3), (1, 4, 3), "first"),
]


@pytest.mark.parametrize("kind", ["max", "avg", "lp"])
@pytest.mark.parametrize("cfg", ADAPTIVE_CONFIGS, ids=[c[0] for c in ADAPTIVE_CONFIGS])
def test_adaptive_pool_matches_loop_reference(kind, cfg):
    _, shape, output_size, channels = cfg
    spatial = shape[2:] if channels == "first" else shape[1:-1]
    out = (output_size,) * len(spatial) if isinstance(output_size, int) else tuple(output_size)
    windows, strides = adaptive_geometry(spatial, out)
    x = data(shape, seed=11)
    layer = getattr(ax, f"adaptive_{kind}_pool")
    model = layer(ax.input("x", (None, *shape[1:])), output_size=output_size, channels=channels)
    got = forward(model, x)
    want = ref_window_pool(
        x, kind, windows, strides, [1] * len(spatial), [(0, 0)] * len(spatial), channels
    )
    assert got.shape == want.shape
    assert declared_type(model, model.output).shape == (None, *want.shape[1:])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_adaptive_pool_is_not_pytorch_bins():
    # 6 -> 4: stride 1, window 3 (PyTorch would use bins [0,2) [1,3) [3,5) [4,6)).
    x = np.arange(6, dtype=np.float32).reshape(1, 6, 1)
    model = ax.adaptive_avg_pool(ax.input("x", (None, 6, 1)), output_size=4)
    np.testing.assert_allclose(forward(model, x)[0, :, 0], [1.0, 2.0, 3.0, 4.0])


def test_adaptive_pool_default_output_size_is_input_size():
    model = ax.adaptive_max_pool(ax.input("x", (None, 5, 4, 2)))
    assert model.node.options["output_size"] is None
    assert declared_type(model, model.output).shape == (None, 5, 4, 2)
    x = data((2, 5, 4, 2))
    np.testing.assert_array_equal(forward(model, x), x)
    assert ax.adaptive_lp_pool(ax.input("x", (None, 5, 4, 2))).node.options["norm"] == 2


def test_adaptive_lp_pool_norm_option():
    x = data((1, 6, 6, 2), seed=5, positive=True)
    model = ax.adaptive_lp_pool(ax.input("x", (None, 6, 6, 2)), output_size=2, norm=3)
    want = ref_window_pool(x, "lp", (3, 3), (3, 3), (1, 1), [(0, 0)] * 2, norm=3)
    np.testing.assert_allclose(forward(model, x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["adaptive_avg_pool", "adaptive_max_pool", "adaptive_lp_pool"])
def test_adaptive_pool_needs_known_spatial_dims(op):
    with pytest.raises(ShapeError, match="known spatial dims"):
        getattr(ax, op)(ax.input("x", (None, None, 6, 2)), output_size=2)
    # the batch dim may be dynamic
    model = getattr(ax, op)(ax.input("x", (None, 6, 6, 2)), output_size=3)
    assert declared_type(model, model.output).shape == (None, 3, 3, 2)


def test_adaptive_pool_cannot_grow():
    with pytest.raises(ShapeError, match="larger than spatial dim 1 of size 4"):
        ax.adaptive_avg_pool(ax.input("x", (None, 6, 4, 2)), output_size=(3, 5))


# ---------------------------------------------------------------------------
# Global pools


GLOBAL_REDUCE = {
    "global_avg_pool": lambda x, axes: np.mean(x, axis=axes),
    "global_max_pool": lambda x, axes: np.max(x, axis=axes),
    "global_lp_pool": lambda x, axes: np.sqrt(np.sum(x * x, axis=axes)),
}


@pytest.mark.parametrize("op", list(GLOBAL_REDUCE))
@pytest.mark.parametrize(
    "shape,channels,axes",
    [
        ((2, 7, 3), "last", (1,)),
        ((2, 5, 4, 3), "last", (1, 2)),
        ((2, 3, 5, 4), "first", (2, 3)),
        ((2, 3, 4, 5, 2), "last", (1, 2, 3)),
        ((2, 2, 3, 4, 5), "first", (2, 3, 4)),
    ],
)
@pytest.mark.parametrize("keep_axes", [False, True])
def test_global_pool(op, shape, channels, axes, keep_axes):
    x = data(shape, seed=2)
    model = getattr(ax, op)(
        ax.input("x", (None, *shape[1:])), channels=channels, keep_axes=keep_axes
    )
    want = GLOBAL_REDUCE[op](x.astype(np.float64), axes)
    if keep_axes:
        want = np.expand_dims(want, axes)
    got = forward(model, x)
    assert got.dtype == np.float32
    assert declared_type(model, model.output).shape == (None, *want.shape[1:])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_global_pool_defaults_and_dynamic_dims():
    model = ax.global_avg_pool(ax.input("x", (None, None, None, 4)))
    assert dict(model.node.options) == {"keep_axes": False, "channels": "last"}
    assert declared_type(model, model.output).shape == (None, 4)
    keep = ax.global_max_pool(
        ax.input("x", (None, 4, None, None)), channels="first", keep_axes=True
    )
    assert declared_type(keep, keep.output).shape == (None, 4, 1, 1)
    assert ax.global_lp_pool(ax.input("x", (None, 3, 4))).node.options["norm"] == 2


def test_global_lp_pool_norm_option():
    x = data((2, 4, 4, 3), seed=9, positive=True)
    model = ax.global_lp_pool(ax.input("x", (None, 4, 4, 3)), norm=3)
    want = np.cbrt(np.sum(x.astype(np.float64) ** 3, axis=(1, 2)))
    np.testing.assert_allclose(forward(model, x), want, rtol=1e-5)


# ---------------------------------------------------------------------------
# Blur pool


@pytest.mark.parametrize(
    "shape,channels",
    [
        ((2, 6, 6, 2), "last"),
        ((2, 2, 6, 6), "first"),
        ((1, 5, 7, 3), "last"),  # 3 channels: Axon 0.8.1 fails with a feature-group error
        ((2, 9, 3), "last"),
        ((1, 2, 9), "first"),
        ((1, 4, 5, 3, 2), "last"),
        ((1, 2, 3, 4, 5), "first"),
    ],
)
def test_blur_pool_matches_scipy(shape, channels):
    x = data(shape, seed=4)
    model = ax.blur_pool(ax.input("x", (None, *shape[1:])), channels=channels)
    got = forward(model, x)
    assert declared_type(model, model.output).shape == (None, *shape[1:])
    np.testing.assert_allclose(got, ref_blur(x, channels), rtol=1e-5, atol=1e-6)


def test_blur_pool_channels_last_equals_channels_first_transposed():
    x = data((2, 3, 6, 5), seed=8)
    first = forward(ax.blur_pool(ax.input("x", (None, 3, 6, 5)), channels="first"), x)
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    last = forward(ax.blur_pool(ax.input("x", (None, 6, 5, 3))), xl)
    np.testing.assert_allclose(np.moveaxis(last, -1, 1), first, rtol=1e-6, atol=1e-7)


def test_blur_pool_interior_weights():
    x = np.zeros((1, 5, 5, 1), np.float32)
    x[0, 2, 2, 0] = 16.0  # an impulse spreads as the filter itself
    out = forward(ax.blur_pool(ax.input("x", (None, 5, 5, 1))), x)[0, 1:4, 1:4, 0]
    np.testing.assert_allclose(out, [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


def test_blur_pool_rejects_unsupported_rank():
    with pytest.raises(ShapeError, match="1 to 3 spatial dims"):
        ax.blur_pool(ax.input("x", (None, 8)))
    with pytest.raises(ShapeError, match="1 to 3 spatial dims"):
        ax.blur_pool(ax.input("x", (None, 2, 2, 2, 2, 2)))


# ---------------------------------------------------------------------------
# Golden files from real Axon 0.8.1

# case -> (the Elixir layer call in the file's elixir_code, the same layer in axonc)
GOLDEN_CASES = {
    "adaptive_avg_pool1d_3": (
        "Axon.adaptive_avg_pool(output_size: 3)",
        lambda x: ax.adaptive_avg_pool(x, output_size=3),
    ),
    "adaptive_avg_pool2d_4x4": (
        "Axon.adaptive_avg_pool(output_size: {4, 4})",
        lambda x: ax.adaptive_avg_pool(x, output_size=(4, 4)),
    ),
    "adaptive_avg_pool2d_5x3": (
        "Axon.adaptive_avg_pool(output_size: {5, 3})",
        lambda x: ax.adaptive_avg_pool(x, output_size=(5, 3)),
    ),
    "adaptive_avg_pool2d_channels_first": (
        "Axon.adaptive_avg_pool(output_size: {4, 4}, channels: :first)",
        lambda x: ax.adaptive_avg_pool(x, output_size=(4, 4), channels="first"),
    ),
    "adaptive_lp_pool2d_2x2": (
        "Axon.adaptive_lp_pool(output_size: {2, 2})",
        lambda x: ax.adaptive_lp_pool(x, output_size=(2, 2)),
    ),
    "adaptive_max_pool2d_2x2": (
        "Axon.adaptive_max_pool(output_size: {2, 2})",
        lambda x: ax.adaptive_max_pool(x, output_size=(2, 2)),
    ),
    "adaptive_max_pool2d_4x4": (
        "Axon.adaptive_max_pool(output_size: {4, 4})",
        lambda x: ax.adaptive_max_pool(x, output_size=(4, 4)),
    ),
    "avg_pool1d_k2_s1": (
        "Axon.avg_pool(kernel_size: 2, strides: 1)",
        lambda x: ax.avg_pool(x, kernel_size=2, strides=1),
    ),
    "avg_pool2d_k2": ("Axon.avg_pool(kernel_size: 2)", lambda x: ax.avg_pool(x, kernel_size=2)),
    "avg_pool2d_k3_s1_same": (
        "Axon.avg_pool(kernel_size: 3, strides: 1, padding: :same)",
        lambda x: ax.avg_pool(x, kernel_size=3, strides=1, padding="same"),
    ),
    "avg_pool2d_k3_s2_valid": (
        "Axon.avg_pool(kernel_size: 3, strides: 2)",
        lambda x: ax.avg_pool(x, kernel_size=3, strides=2),
    ),
    "blur_pool2d_channels_first": (
        "Axon.blur_pool(channels: :first)",
        lambda x: ax.blur_pool(x, channels="first"),
    ),
    "global_avg_pool2d": ("Axon.global_avg_pool()", lambda x: ax.global_avg_pool(x)),
    "global_avg_pool2d_channels_first": (
        "Axon.global_avg_pool(channels: :first)",
        lambda x: ax.global_avg_pool(x, channels="first"),
    ),
    "global_lp_pool2d": ("Axon.global_lp_pool()", lambda x: ax.global_lp_pool(x)),
    "global_max_pool2d": ("Axon.global_max_pool()", lambda x: ax.global_max_pool(x)),
    "global_max_pool2d_keep_axes": (
        "Axon.global_max_pool(keep_axes: true)",
        lambda x: ax.global_max_pool(x, keep_axes=True),
    ),
    "lp_pool2d_k3_s1_same": (
        "Axon.lp_pool(kernel_size: 3, strides: 1, padding: :same)",
        lambda x: ax.lp_pool(x, kernel_size=3, strides=1, padding="same"),
    ),
    "max_pool2d_channels_first": (
        "Axon.max_pool(kernel_size: 2, channels: :first)",
        lambda x: ax.max_pool(x, kernel_size=2, channels="first"),
    ),
    "max_pool2d_dilations2": (
        "Axon.max_pool(kernel_size: 2, strides: 1, dilations: 2)",
        lambda x: ax.max_pool(x, kernel_size=2, strides=1, dilations=2),
    ),
    "max_pool2d_k2": ("Axon.max_pool(kernel_size: 2)", lambda x: ax.max_pool(x, kernel_size=2)),
    "max_pool2d_k3_s1_same": (
        "Axon.max_pool(kernel_size: 3, strides: 1, padding: :same)",
        lambda x: ax.max_pool(x, kernel_size=3, strides=1, padding="same"),
    ),
}


def test_golden_cases_cover_every_pooling_file():
    assert golden.case_names(POOLING_PREFIXES) == sorted(GOLDEN_CASES)


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_golden_pooling(case):
    data = golden.load(case)
    call, build = GOLDEN_CASES[case]
    assert call in data["elixir_code"]
    assert data["params"] == {}
    x = golden.inputs(data)["x"]
    model = build(ax.input("x", (None, *x.shape[1:])))
    want = golden.tensor(data["outputs"])
    op = call.split("(")[0].removeprefix("Axon.")
    assert assign_names(model)[model.output] == f"{op}_0"
    for mode in ("inference", "train"):
        golden.assert_tree_close(forward(model, x, mode), want, rtol=1e-5, atol=1e-6)


def test_golden_blur_pool_channels_last_is_the_transposed_channels_first():
    data = golden.load("blur_pool2d_channels_first")
    x = np.ascontiguousarray(np.moveaxis(golden.inputs(data)["x"], 1, -1))
    want = np.moveaxis(golden.tensor(data["outputs"]), 1, -1)
    model = ax.blur_pool(ax.input("x", (None, *x.shape[1:])))
    np.testing.assert_allclose(forward(model, x), want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# Registry facts: no parameters, mode-independent, names, method style


@pytest.mark.parametrize("op", POOL_OPS)
def test_pool_has_no_params_and_registered_family(op):
    spec = OPS[op]
    assert spec.family == "pooling"
    assert spec.doc
    model = getattr(ax, op)(ax.input("x", (None, 6, 6, 2)))
    t = TensorType((None, 6, 6, 2))
    for mode in ("inference", "train"):
        assert spec.params([t], dict(model.node.options), mode, model.node) == []
    assert assign_names(model)[model.output] == f"{op}_0"
    method = getattr(ax.input("x", (None, 6, 6, 2)), op)(name="pool")
    assert method.node.op == op and method.node.name == "pool"


@pytest.mark.parametrize("op", POOL_OPS)
def test_pool_declares_cases(op):
    assert len(OPS[op].cases) >= 4
    names = [c.name for c in OPS[op].cases]
    assert len(names) == len(set(names))


def test_inference_and_train_agree():
    x = data((2, 6, 6, 2))
    for op in POOL_OPS:
        model = getattr(ax, op)(ax.input("x", (None, 6, 6, 2)))
        np.testing.assert_array_equal(forward(model, x, "inference"), forward(model, x, "train"))


# ---------------------------------------------------------------------------
# Bad options and shapes


X2D = (None, 6, 6, 2)


@pytest.mark.parametrize(
    "op,opts,match",
    [
        ("max_pool", {"kernel_size": 0}, "'kernel_size'.*>= 1"),
        ("max_pool", {"kernel_size": "2"}, "'kernel_size'.*integer"),
        ("avg_pool", {"kernel_size": ()}, "'kernel_size'.*non-empty"),
        ("avg_pool", {"strides": -1}, "'strides'.*>= 1"),
        ("avg_pool", {"strides": 1.5}, "'strides'.*integer"),
        ("lp_pool", {"padding": "full"}, "'padding'.*'valid', 'same'"),
        ("max_pool", {"padding": [(1,), (1, 1)]}, "'padding'.*pairs"),
        ("max_pool", {"dilations": 0}, "'dilations'.*>= 1"),
        ("max_pool", {"channels": "middle"}, "'channels'.*'first', 'last'"),
        ("lp_pool", {"norm": 0}, "'norm'.*positive"),
        ("lp_pool", {"norm": -2}, "'norm'.*positive"),
        ("lp_pool", {"norm": "2"}, "'norm'.*positive number"),
        ("lp_pool", {"norm": True}, "'norm'.*positive number"),
        ("lp_pool", {"norm": float("inf")}, "'norm'.*finite"),
        ("max_pool", {"kernel": 2}, "unknown option.*kernel.*valid options are"),
        ("max_pool", {"norm": 2}, "unknown option.*norm"),
        ("adaptive_avg_pool", {"output_size": 0}, "'output_size'.*>= 1"),
        ("adaptive_max_pool", {"output_size": "4"}, "'output_size'.*integer"),
        ("adaptive_lp_pool", {"norm": -1}, "'norm'.*positive"),
        ("adaptive_avg_pool", {"kernel_size": 2}, "unknown option.*kernel_size"),
        ("global_avg_pool", {"keep_axes": 1}, "'keep_axes'.*true or false"),
        ("global_lp_pool", {"norm": 0.0}, "'norm'.*positive"),
        ("global_max_pool", {"channels": "last2"}, "'channels'"),
        ("blur_pool", {"channels": 1}, "'channels'"),
        ("blur_pool", {"strides": 2}, "unknown option.*strides.*valid options are channels"),
    ],
)
def test_bad_option_raises_option_error(op, opts, match):
    with pytest.raises(OptionError, match=match):
        getattr(ax, op)(ax.input("x", X2D), **opts)


@pytest.mark.parametrize(
    "op,opts,match",
    [
        ("max_pool", {"kernel_size": (2, 2, 2)}, "kernel_size has 3 entries but the input has 2"),
        (
            "avg_pool",
            {"kernel_size": 2, "strides": (1,)},
            "strides has 1 entries but the input has 2",
        ),
        ("lp_pool", {"dilations": (1, 1, 1)}, "dilations has 3 entries"),
        ("max_pool", {"padding": [(1, 1)]}, "padding has 1 pairs but the input has 2"),
        ("adaptive_avg_pool", {"output_size": (2, 2, 2)}, "output_size has 3 entries"),
    ],
)
def test_per_dim_option_of_the_wrong_length(op, opts, match):
    with pytest.raises(OptionError, match=match):
        getattr(ax, op)(ax.input("x", X2D), **opts)


def test_per_dim_option_checked_at_run_time_without_declared_shape():
    model = ax.max_pool(ax.input("x"), kernel_size=(2, 2, 2))
    with pytest.raises(OptionError, match="kernel_size has 3 entries"):
        forward(model, data((1, 4, 4, 1)))


@pytest.mark.parametrize("op", POOL_OPS[:9])
def test_rank_two_input_is_a_shape_error(op):
    with pytest.raises(ShapeError, match=r"rank >= 3.*\(None, 6\)"):
        getattr(ax, op)(ax.input("x", (None, 6)))


def test_window_larger_than_input_is_a_shape_error():
    with pytest.raises(ShapeError, match="larger than spatial dim 1 of size 3"):
        ax.max_pool(ax.input("x", (None, 6, 3, 2)), kernel_size=4)
    with pytest.raises(ShapeError, match="kernel 2, dilation 4"):
        ax.avg_pool(ax.input("x", (None, 4, 2)), kernel_size=2, dilations=4)
    # same padding can make a window fit
    model = ax.max_pool(ax.input("x", (None, 6, 3, 2)), kernel_size=4, strides=1, padding="same")
    assert declared_type(model, model.output).shape == (None, 6, 3, 2)


def test_window_larger_than_input_at_run_time():
    model = ax.max_pool(ax.input("x"), kernel_size=4)
    with pytest.raises(ShapeError, match="larger than the padded input"):
        forward(model, data((1, 6, 3, 2)))


def test_error_names_the_layer():
    with pytest.raises(OptionError, match=r"max_pool layer 'pool1'.*'strides'"):
        ax.max_pool(ax.input("x", X2D), strides=0, name="pool1")


def test_options_survive_save_and_load():
    from axonc.serialize import from_bytes, to_bytes

    x = ax.input("x", (None, 2, 7, 6))
    model = ax.lp_pool(
        x,
        kernel_size=(2, 3),
        strides=[1, 2],
        padding=[(1, 0), (0, 1)],
        dilations=(1, 2),
        channels="first",
        norm=1.5,
    )
    model = ax.adaptive_max_pool(model, output_size=(3, 2), channels="first")
    model = ax.global_avg_pool(model, channels="first", keep_axes=True)
    model = ax.blur_pool(model, channels="first")
    loaded, _ = from_bytes(to_bytes(model))
    xv = data((2, 2, 7, 6), positive=True)
    np.testing.assert_array_equal(forward(loaded, xv), forward(model, xv))
