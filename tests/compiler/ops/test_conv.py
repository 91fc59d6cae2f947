"""Convolution layers: parameters, shapes, numerics (explicit loops, scipy, real-Axon goldens)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.signal

import axonc as ax
from axonc.dtypes import TensorType
from axonc.errors import OptionError, ShapeError
from axonc.interpreter import run
from axonc.ir import assign_names
from axonc.registry import get_op
from axonc.shape_inference import declared_type
from tests import golden

RNG = np.random.default_rng(0)


def _params(model):
    """ParamSpecs of the model's output layer, by path."""
    node = model.node
    in_types = [declared_type(model, i) for i in node.inputs]
    specs = get_op(node.op).params(in_types, dict(node.options), "inference", node)
    return {s.path: s for s in specs}


def _random_params(model):
    return {
        "/".join(path): RNG.standard_normal(spec.shape).astype(np.float32)
        for path, spec in _params(model).items()
    }


def _run(model, x, params):
    names = assign_names(model)
    out, _ = run(model, {"x": x}, {names[model.output]: params})
    return out


# --- independent references ----------------------------------------------------------


def loop_conv(x, w, strides, padding, in_dil, k_dil, groups):
    """Direct definition, channels first: out[n,o,p] = sum x_dp[n, c, p*s + k*d] w[o, c', k]."""
    n_sp = x.ndim - 2
    batch, cin = x.shape[:2]
    cout = w.shape[0]
    cg, og = cin // groups, cout // groups
    # Build the dilated+padded input element by element via a coordinate map.
    src_len = [(x.shape[2 + i] - 1) * in_dil[i] + 1 for i in range(n_sp)]
    padded_len = [src_len[i] + padding[i][0] + padding[i][1] for i in range(n_sp)]

    def value(nb, c, pos):
        idx = []
        for i in range(n_sp):
            q = pos[i] - padding[i][0]
            if q < 0 or q >= src_len[i] or q % in_dil[i]:
                return 0.0
            idx.append(q // in_dil[i])
        return float(x[(nb, c, *idx)])

    k_eff = [(w.shape[2 + i] - 1) * k_dil[i] + 1 for i in range(n_sp)]
    out_len = [(padded_len[i] - k_eff[i]) // strides[i] + 1 for i in range(n_sp)]
    y = np.zeros((batch, cout, *out_len))
    for nb, o in itertools.product(range(batch), range(cout)):
        g = o // og
        for p in itertools.product(*(range(L) for L in out_len)):
            acc = 0.0
            for cc in range(cg):
                for k in itertools.product(*(range(s) for s in w.shape[2:])):
                    pos = [p[i] * strides[i] + k[i] * k_dil[i] for i in range(n_sp)]
                    acc += value(nb, g * cg + cc, pos) * float(w[(o, cc, *k)])
            y[(nb, o, *p)] = acc
    return y


def scatter_conv_transpose(x, w, strides, lo_pads, out_len, k_dil):
    """Axon's conv_transpose written as a scatter: y[i*s + lo - k*d] += x[i] * w[k] (1-D/2-D)."""
    n_sp = x.ndim - 2
    batch, cin = x.shape[:2]
    cout = w.shape[0]
    y = np.zeros((batch, cout, *out_len))
    for nb, o, c in itertools.product(range(batch), range(cout), range(cin)):
        for i in itertools.product(*(range(s) for s in x.shape[2:])):
            for k in itertools.product(*(range(s) for s in w.shape[2:])):
                p = [i[a] * strides[a] + lo_pads[a] - k[a] * k_dil[a] for a in range(n_sp)]
                if all(0 <= p[a] < out_len[a] for a in range(n_sp)):
                    y[(nb, o, *p)] += x[(nb, c, *i)] * w[(o, c, *k)]
    return y


def _hwio_to_oihw(k):
    n = k.ndim - 2
    return np.transpose(k, (n + 1, n, *range(n)))


def _first(x):
    return np.moveaxis(x, -1, 1)


# --- parameters ------------------------------------------------------------------------


def test_conv_defaults_and_param_layout_channels_last():
    x = ax.input("x", (None, 6, 6, 2))
    m = ax.conv(x, 3)
    opts = m.node.options
    assert opts["kernel_size"] == 1 and opts["strides"] == 1 and opts["padding"] == "valid"
    assert opts["input_dilation"] == 1 and opts["kernel_dilation"] == 1
    assert opts["feature_group_size"] == 1 and opts["channels"] == "last" and opts["use_bias"]
    assert opts["kernel_initializer"]["name"] == "glorot_uniform"
    assert opts["bias_initializer"]["name"] == "zeros"
    specs = _params(m)
    assert specs[("kernel",)].shape == (1, 1, 2, 3)
    assert specs[("bias",)].shape == (3,)
    assert declared_type(m, m.output) == TensorType((None, 6, 6, 3))


@pytest.mark.parametrize(
    ("shape", "opts", "kernel", "out"),
    [
        ((None, 8, 3), {"kernel_size": 3}, (3, 3, 4), (None, 6, 4)),
        ((None, 3, 8), {"kernel_size": 3, "channels": "first"}, (4, 3, 3), (None, 4, 6)),
        (
            (None, 5, 5, 4),
            {"kernel_size": 3, "feature_group_size": 2},
            (3, 3, 2, 4),
            (None, 3, 3, 4),
        ),
        (
            (None, 4, 5, 5),
            {"kernel_size": (3, 2), "feature_group_size": 4, "channels": "first"},
            (4, 1, 3, 2),
            (None, 4, 3, 4),
        ),
        ((None, 4, 4, 4, 2), {"kernel_size": (2, 3, 1)}, (2, 3, 1, 2, 4), (None, 3, 2, 4, 4)),
        (
            (None, 2, 4, 4, 4),
            {"kernel_size": 2, "channels": "first"},
            (4, 2, 2, 2, 2),
            (None, 4, 3, 3, 3),
        ),
    ],
)
def test_conv_kernel_shapes(shape, opts, kernel, out):
    m = ax.conv(ax.input("x", shape), 4, **opts)
    assert _params(m)[("kernel",)].shape == kernel
    assert _params(m)[("bias",)].shape == (4,)
    assert declared_type(m, m.output).shape == out


def test_use_bias_false_drops_bias_everywhere():
    x = ax.input("x", (None, 6, 6, 2))
    assert set(_params(ax.conv(x, 3, use_bias=False))) == {("kernel",)}
    assert set(_params(ax.conv_transpose(x, 3, use_bias=False))) == {("kernel",)}
    assert set(_params(ax.depthwise_conv(x, 2, use_bias=False))) == {("kernel",)}
    sep = _params(ax.separable_conv2d(x, 2, use_bias=False))
    assert set(sep) == {("kernel_1",), ("kernel_2",)}


def test_custom_initializers_are_recorded():
    x = ax.input("x", (None, 6, 6, 2))
    m = ax.conv(x, 3, kernel_initializer="he_normal", bias_initializer="ones")
    assert _params(m)[("kernel",)].initializer["name"] == "he_normal"
    assert _params(m)[("bias",)].initializer["name"] == "ones"
    sep = _params(
        ax.separable_conv3d(ax.input("x", (None, 4, 4, 4, 2)), 1, kernel_initializer="ones")
    )
    assert all(s.initializer["name"] in ("ones", "zeros") for s in sep.values())


def test_conv_transpose_kernel_layout_like_conv():
    m = ax.conv_transpose(ax.input("x", (None, 4, 4, 2)), 3, kernel_size=3)
    assert _params(m)[("kernel",)].shape == (3, 3, 2, 3)
    m = ax.conv_transpose(ax.input("x", (None, 2, 4, 4)), 3, kernel_size=3, channels="first")
    assert _params(m)[("kernel",)].shape == (3, 2, 3, 3)
    assert "input_dilation" not in m.node.options
    assert "feature_group_size" not in m.node.options


def test_depthwise_kernel_shapes():
    m = ax.depthwise_conv(ax.input("x", (None, 6, 6, 3)), 2, kernel_size=3)
    assert _params(m)[("kernel",)].shape == (3, 3, 1, 6)
    assert _params(m)[("bias",)].shape == (6,)
    m = ax.depthwise_conv(ax.input("x", (None, 3, 6, 6)), 2, kernel_size=3, channels="first")
    assert _params(m)[("kernel",)].shape == (6, 1, 3, 3)
    assert declared_type(m, m.output).shape == (None, 6, 4, 4)


def test_separable_param_shapes():
    m = ax.separable_conv2d(ax.input("x", (None, 6, 6, 2)), 3, kernel_size=(3, 2))
    specs = _params(m)
    assert [p for p in specs] == [("kernel_1",), ("bias_1",), ("kernel_2",), ("bias_2",)]
    assert specs[("kernel_1",)].shape == (3, 1, 1, 6)
    assert specs[("kernel_2",)].shape == (1, 2, 1, 6)
    assert specs[("bias_2",)].shape == (6,)
    assert declared_type(m, m.output).shape == (None, 4, 5, 6)
    m = ax.separable_conv2d(ax.input("x", (None, 2, 6, 6)), 3, kernel_size=3, channels="first")
    assert _params(m)[("kernel_1",)].shape == (6, 1, 3, 1)
    assert _params(m)[("kernel_2",)].shape == (6, 1, 1, 3)
    m3 = ax.separable_conv3d(ax.input("x", (None, 5, 5, 5, 2)), 2, kernel_size=3)
    specs3 = _params(m3)
    assert specs3[("kernel_1",)].shape == (3, 1, 1, 1, 4)
    assert specs3[("kernel_2",)].shape == (1, 3, 1, 1, 4)
    assert specs3[("kernel_3",)].shape == (1, 1, 3, 1, 4)
    assert set(specs3) >= {("bias_1",), ("bias_2",), ("bias_3",)}
    assert declared_type(m3, m3.output).shape == (None, 3, 3, 3, 4)


def test_activation_adds_separate_node_and_dynamic_batch():
    m = ax.conv(ax.input("x", (None, 5, 3)), 2, kernel_size=2, activation="relu")
    names = assign_names(m)
    assert names[m.output] == "relu_0"
    assert names[m.node.inputs[0]] == "conv_0"
    kernel = RNG.standard_normal((2, 3, 2)).astype(np.float32)
    params = {"conv_0": {"kernel": kernel, "bias": np.zeros(2, np.float32)}}
    for batch in (1, 3):
        xv = RNG.standard_normal((batch, 5, 3)).astype(np.float32)
        out, _ = run(m, {"x": xv}, params)
        assert out.shape == (batch, 4, 2) and out.dtype == np.float32
        pre = np.einsum("btc,co->bto", xv[:, :-1], kernel[0]) + np.einsum(
            "btc,co->bto", xv[:, 1:], kernel[1]
        )
        np.testing.assert_allclose(out, np.maximum(pre, 0), rtol=1e-5, atol=1e-6)


def test_dynamic_spatial_dims_stay_dynamic():
    m = ax.conv(ax.input("x", (None, None, 7, 2)), 3, kernel_size=3, strides=2)
    assert declared_type(m, m.output).shape == (None, None, 3, 3)
    m = ax.conv_transpose(ax.input("x", (None, None, 3)), 2, kernel_size=3, strides=2)
    assert declared_type(m, m.output).shape == (None, None, 2)


# --- numerics vs explicit loops / scipy ------------------------------------------------

CONV_CASES = [
    # (input shape (channels last), units, opts)
    ((2, 7, 3), 4, {"kernel_size": 3}),
    ((2, 8, 2), 2, {"kernel_size": 3, "strides": 2, "padding": "same"}),
    ((1, 6, 2), 2, {"kernel_size": 2, "input_dilation": 2, "kernel_dilation": 2}),
    ((1, 6, 6, 2), 3, {"kernel_size": (3, 2), "padding": [(1, 0), (2, 1)]}),
    ((1, 6, 6, 2), 3, {"kernel_size": 3, "padding": [(-1, 2), (0, -1)], "strides": (2, 1)}),
    ((2, 5, 5, 4), 6, {"kernel_size": 3, "feature_group_size": 2, "padding": "same"}),
    ((1, 6, 5, 4), 4, {"kernel_size": 2, "feature_group_size": 4, "kernel_dilation": (2, 1)}),
    ((1, 6, 6, 2), 3, {"kernel_size": 2, "padding": "same", "strides": 2}),
    ((1, 4, 5, 4, 2), 2, {"kernel_size": (2, 3, 2), "strides": (1, 2, 1)}),
    ((1, 4, 4, 4, 2), 2, {"kernel_size": 3, "padding": "same", "input_dilation": (1, 2, 1)}),
]


def _same_pads(kernel, kdil):
    return [((k - 1) * d // 2, (k - 1) * d - (k - 1) * d // 2) for k, d in zip(kernel, kdil)]


def _tuple(v, n):
    return tuple(v) if isinstance(v, tuple) else (v,) * n


@pytest.mark.parametrize("channels", ["last", "first"])
@pytest.mark.parametrize(("shape", "units", "opts"), CONV_CASES)
def test_conv_matches_explicit_loops(shape, units, opts, channels):
    n = len(shape) - 2
    x_last = RNG.standard_normal(shape).astype(np.float32)
    x = x_last if channels == "last" else _first(x_last)
    m = ax.conv(ax.input("x", (None, *x.shape[1:])), units, channels=channels, **opts)
    params = _random_params(m)
    y = _run(m, x, params)
    kernel = params["kernel"] if channels == "first" else _hwio_to_oihw(params["kernel"])
    ks = _tuple(opts.get("kernel_size", 1), n)
    kd = _tuple(opts.get("kernel_dilation", 1), n)
    pad = opts.get("padding", "valid")
    pads = (
        {"valid": [(0, 0)] * n, "same": _same_pads(ks, kd)}.get(pad, pad)
        if isinstance(pad, str)
        else pad
    )
    ref = loop_conv(
        _first(x_last).astype(np.float64),
        kernel.astype(np.float64),
        _tuple(opts.get("strides", 1), n),
        pads,
        _tuple(opts.get("input_dilation", 1), n),
        kd,
        opts.get("feature_group_size", 1),
    ) + params["bias"].reshape((1, -1) + (1,) * n)
    if channels == "last":
        ref = np.moveaxis(ref, 1, -1)
    assert (
        y.shape == ref.shape == declared_type(m, m.output).shape[1:] and True
    ) or y.shape == ref.shape
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_conv2d_valid_matches_scipy_correlate():
    x = RNG.standard_normal((2, 7, 6, 3)).astype(np.float32)
    m = ax.conv(ax.input("x", (None, 7, 6, 3)), 2, kernel_size=(3, 2), use_bias=False)
    params = _random_params(m)
    y = _run(m, x, params)
    k = params["kernel"].astype(np.float64)  # (3, 2, 3, 2) HWIO
    for b in range(2):
        for o in range(2):
            ref = sum(
                scipy.signal.correlate(
                    x[b, :, :, c].astype(np.float64), k[:, :, c, o], mode="valid"
                )
                for c in range(3)
            )
            np.testing.assert_allclose(y[b, :, :, o], ref, rtol=1e-5, atol=1e-5)


def test_conv3d_valid_matches_scipy_correlate():
    x = RNG.standard_normal((1, 2, 5, 4, 4)).astype(np.float32)  # channels first
    m = ax.conv(ax.input("x", (None, 2, 5, 4, 4)), 3, kernel_size=(2, 3, 2), channels="first")
    params = _random_params(m)
    y = _run(m, x, params)
    k = params["kernel"].astype(np.float64)  # OIDHW
    for o in range(3):
        ref = sum(
            scipy.signal.correlate(x[0, c].astype(np.float64), k[o, c], mode="valid")
            for c in range(2)
        )
        np.testing.assert_allclose(y[0, o], ref + params["bias"][o], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "opts"),
    [
        ((2, 5, 3), {"kernel_size": 3, "strides": 2}),
        ((2, 5, 3), {"kernel_size": 3, "strides": 2, "padding": "same"}),
        ((1, 3, 2), {"kernel_size": 2, "strides": 3}),
        ((1, 4, 2), {"kernel_size": 4, "strides": 2, "padding": "same"}),
        ((1, 4, 2), {"kernel_size": 2, "strides": 2, "kernel_dilation": 2}),
        ((1, 4, 2), {"kernel_size": 3, "strides": 2, "padding": [(1, 1)]}),
        ((1, 4, 3, 2), {"kernel_size": (3, 2), "strides": (2, 1)}),
        ((1, 3, 3, 2), {"kernel_size": 3, "strides": 2, "padding": "same"}),
    ],
)
@pytest.mark.parametrize("channels", ["last", "first"])
def test_conv_transpose_matches_scatter_definition(shape, opts, channels):
    """Axon's formulas: valid -> lo = k_eff-1, output in*s + max(k_eff-s, 0); same -> in*s."""
    n = len(shape) - 2
    x_last = RNG.standard_normal(shape).astype(np.float32)
    x = x_last if channels == "last" else _first(x_last)
    m = ax.conv_transpose(ax.input("x", (None, *x.shape[1:])), 2, channels=channels, **opts)
    params = _random_params(m)
    y = _run(m, x, params)
    kernel = params["kernel"] if channels == "first" else _hwio_to_oihw(params["kernel"])
    ks = _tuple(opts["kernel_size"], n)
    st = _tuple(opts["strides"], n)
    kd = _tuple(opts.get("kernel_dilation", 1), n)
    pad = opts.get("padding", "valid")
    lo, out_len = [], []
    for i in range(n):
        k_eff = (ks[i] - 1) * kd[i] + 1
        size = shape[1 + i]
        if pad == "valid":
            lo.append(k_eff - 1)
            out_len.append(size * st[i] + max(k_eff - st[i], 0))
        elif pad == "same":
            total = k_eff + st[i] - 2
            lo.append(k_eff - 1 if st[i] > k_eff - 1 else -(-total // 2))
            out_len.append(size * st[i])
        else:
            lo.append(pad[i][0])
            out_len.append((size - 1) * st[i] + 1 + pad[i][0] + pad[i][1] - k_eff + 1)
    ref = scatter_conv_transpose(
        _first(x_last).astype(np.float64), kernel.astype(np.float64), st, lo, out_len, kd
    )
    ref = ref + params["bias"].reshape((1, -1) + (1,) * n)
    if channels == "last":
        ref = np.moveaxis(ref, 1, -1)
    assert y.shape == ref.shape
    assert declared_type(m, m.output).shape == (None, *y.shape[1:])
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels", ["last", "first"])
@pytest.mark.parametrize(
    ("shape", "mult", "opts"),
    [
        ((2, 7, 3), 2, {"kernel_size": 3}),
        ((1, 6, 6, 3), 2, {"kernel_size": 3, "strides": 2, "padding": "same"}),
        ((1, 6, 5, 2), 1, {"kernel_size": 2, "kernel_dilation": 2, "input_dilation": (1, 2)}),
        ((1, 3, 4, 3, 2), 3, {"kernel_size": (2, 1, 2)}),
    ],
)
def test_depthwise_channel_order_c_times_mult_plus_m(shape, mult, opts, channels):
    x_last = RNG.standard_normal(shape).astype(np.float32)
    x = x_last if channels == "last" else _first(x_last)
    m = ax.depthwise_conv(ax.input("x", (None, *x.shape[1:])), mult, channels=channels, **opts)
    params = _random_params(m)
    y = _run(m, x, params)
    y_first = y if channels == "first" else _first(y)
    kernel = (
        params["kernel"] if channels == "first" else _hwio_to_oihw(params["kernel"])
    )  # (C*m, 1, k...)
    n = len(shape) - 2
    ks = _tuple(opts["kernel_size"], n)
    kd = _tuple(opts.get("kernel_dilation", 1), n)
    pad = opts.get("padding", "valid")
    pads = _same_pads(ks, kd) if pad == "same" else [(0, 0)] * n
    xf = _first(x_last).astype(np.float64)
    for c in range(shape[-1]):
        for j in range(mult):
            o = c * mult + j
            ref = loop_conv(
                xf[:, c : c + 1],
                kernel[o : o + 1].astype(np.float64),
                _tuple(opts.get("strides", 1), n),
                pads,
                _tuple(opts.get("input_dilation", 1), n),
                kd,
                1,
            )[:, 0]
            np.testing.assert_allclose(y_first[:, o], ref + params["bias"][o], rtol=1e-5, atol=1e-5)


def _depthwise_pass(xf, k_oihw, bias, strides, pads, in_dil, k_dil):
    c = xf.shape[1]
    return loop_conv(xf, k_oihw, strides, pads, in_dil, k_dil, c) + bias.reshape(
        (1, -1) + (1,) * (xf.ndim - 2)
    )


@pytest.mark.parametrize("channels", ["last", "first"])
@pytest.mark.parametrize(
    ("shape", "mult", "opts"),
    [
        ((1, 6, 6, 2), 2, {"kernel_size": 3}),
        ((2, 7, 6, 2), 1, {"kernel_size": (3, 2), "strides": 2, "padding": "same"}),
        ((1, 6, 6, 2), 2, {"kernel_size": 2, "padding": [(1, 0), (0, 1)], "kernel_dilation": 2}),
    ],
)
def test_separable_conv2d_is_two_spatial_depthwise_passes(shape, mult, opts, channels):
    x_last = RNG.standard_normal(shape).astype(np.float32)
    x = x_last if channels == "last" else _first(x_last)
    m = ax.separable_conv2d(ax.input("x", (None, *x.shape[1:])), mult, channels=channels, **opts)
    params = _random_params(m)
    y = _run(m, x, params)
    ks = _tuple(opts["kernel_size"], 2)
    kd = _tuple(opts.get("kernel_dilation", 1), 2)
    st = _tuple(opts.get("strides", 1), 2)
    pad = opts.get("padding", "valid")
    h = _first(x_last).astype(np.float64)
    for i, kern in enumerate([(ks[0], 1), (1, ks[1])], start=1):
        pads = (
            {"valid": [(0, 0)] * 2, "same": _same_pads(kern, kd)}[pad]
            if isinstance(pad, str)
            else pad
        )
        k = params[f"kernel_{i}"]
        k = k if channels == "first" else _hwio_to_oihw(k)
        assert k.shape[2:] == kern
        h = _depthwise_pass(h, k.astype(np.float64), params[f"bias_{i}"], st, pads, (1, 1), kd)
    ref = h if channels == "first" else np.moveaxis(h, 1, -1)
    assert (
        y.shape
        == ref.shape
        == tuple(d for d in (y.shape[0], *declared_type(m, m.output).shape[1:]))
    )
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels", ["last", "first"])
def test_separable_conv3d_is_three_spatial_depthwise_passes(channels):
    shape = (1, 5, 4, 4, 2)
    x_last = RNG.standard_normal(shape).astype(np.float32)
    x = x_last if channels == "last" else _first(x_last)
    m = ax.separable_conv3d(
        ax.input("x", (None, *x.shape[1:])),
        2,
        kernel_size=(3, 2, 2),
        padding="same",
        channels=channels,
    )
    params = _random_params(m)
    y = _run(m, x, params)
    h = _first(x_last).astype(np.float64)
    kernels = [(3, 1, 1), (1, 2, 1), (1, 1, 2)]
    for i, kern in enumerate(kernels, start=1):
        k = params[f"kernel_{i}"]
        k = k if channels == "first" else _hwio_to_oihw(k)
        assert k.shape == (4, 1, *kern)
        h = _depthwise_pass(
            h,
            k.astype(np.float64),
            params[f"bias_{i}"],
            (1, 1, 1),
            _same_pads(kern, (1, 1, 1)),
            (1, 1, 1),
            (1, 1, 1),
        )
    ref = h if channels == "first" else np.moveaxis(h, 1, -1)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_float64_input_stays_float64():
    m = ax.conv(ax.input("x", (None, 5, 2), dtype="f64"), 2, kernel_size=2)
    assert declared_type(m, m.output).dtype == "f64"
    y = _run(m, RNG.standard_normal((1, 5, 2)), _random_params(m))
    assert y.dtype == np.float64


# --- golden files (real Axon 0.8.1) ----------------------------------------------------

GOLDEN = {
    "conv1d_input_dilation2": lambda x: ax.conv(x, 4, kernel_size=3, input_dilation=2),
    "conv1d_kernel_dilation2": lambda x: ax.conv(x, 4, kernel_size=3, kernel_dilation=2),
    "conv1d_strides2": lambda x: ax.conv(x, 4, kernel_size=3, strides=2),
    "conv1d_valid": lambda x: ax.conv(x, 4, kernel_size=3),
    "conv2d_explicit_padding": lambda x: ax.conv(
        x, 3, kernel_size=(3, 2), padding=[(1, 0), (2, 1)]
    ),
    "conv2d_feature_group2": lambda x: ax.conv(x, 4, kernel_size=3, feature_group_size=2),
    "conv2d_same_even_kernel": lambda x: ax.conv(x, 3, kernel_size=2, padding="same"),
    "conv2d_strides2": lambda x: ax.conv(x, 3, kernel_size=3, strides=2),
    "conv2d_strides2_same": lambda x: ax.conv(x, 3, kernel_size=3, strides=2, padding="same"),
    "conv2d_strides_2x1": lambda x: ax.conv(x, 3, kernel_size=3, strides=[2, 1]),
    "conv2d_valid": lambda x: ax.conv(x, 3, kernel_size=(3, 3)),
    "conv_transpose1d_same_strides2": lambda x: ax.conv_transpose(
        x, 4, kernel_size=3, strides=2, padding="same"
    ),
    "conv_transpose1d_valid_strides2": lambda x: ax.conv_transpose(x, 4, kernel_size=3, strides=2),
    "conv_transpose2d_channels_first": lambda x: ax.conv_transpose(
        x, 3, kernel_size=3, strides=2, channels="first"
    ),
    "conv_transpose2d_explicit_padding": lambda x: ax.conv_transpose(
        x, 3, kernel_size=3, strides=2, padding=[(1, 1), (0, 2)]
    ),
    "conv_transpose2d_k2_s2_valid": lambda x: ax.conv_transpose(x, 3, kernel_size=2, strides=2),
    "conv_transpose2d_valid": lambda x: ax.conv_transpose(x, 3, kernel_size=3),
    "conv_transpose2d_valid_strides2": lambda x: ax.conv_transpose(x, 3, kernel_size=3, strides=2),
    "depthwise_conv2d_channels_first": lambda x: ax.depthwise_conv(
        x, 2, kernel_size=3, channels="first"
    ),
}


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_golden(case):
    data = golden.load(case)
    xs = golden.inputs(data)
    m = GOLDEN[case](ax.input("x", (None, *xs["x"].shape[1:])))
    params = golden.tree(data["params"])
    specs = _params(m)
    (layer,) = params
    assert assign_names(m)[m.output] == layer
    assert {p[0]: s.shape for p, s in specs.items()} == {
        k: v.shape for k, v in params[layer].items()
    }
    out, _ = run(m, xs, params)
    golden.assert_tree_close(out, golden.tree(data["outputs"]), rtol=1e-5, atol=1e-6)


def test_golden_cases_cover_every_conv_file():
    prefixes = ("conv1d", "conv2d", "conv3d", "conv_transpose", "depthwise", "separable")
    assert golden.case_names(prefixes) == sorted(GOLDEN)


# --- errors -----------------------------------------------------------------------------


def test_padding_pairs_count_mismatch():
    with pytest.raises(OptionError, match="padding has 1 pairs but the input has 2 spatial dims"):
        ax.conv(ax.input("x", (None, 6, 6, 2)), 3, kernel_size=3, padding=[(1, 1)])
    with pytest.raises(OptionError, match="padding has 2 pairs"):
        ax.conv_transpose(ax.input("x", (None, 6, 2)), 3, padding=[(1, 1), (0, 0)])


def test_per_dim_option_length_mismatch():
    with pytest.raises(OptionError, match="kernel_size has 3 entries but the input has 2"):
        ax.conv(ax.input("x", (None, 6, 6, 2)), 3, kernel_size=(3, 3, 3))
    with pytest.raises(OptionError, match="strides has 2 entries but the input has 1"):
        ax.depthwise_conv(ax.input("x", (None, 6, 2)), 1, strides=(1, 2))


def test_bad_option_values():
    x = ax.input("x", (None, 6, 6, 2))
    with pytest.raises(OptionError, match="padding"):
        ax.conv(x, 3, padding="full")
    with pytest.raises(OptionError, match="channels"):
        ax.conv(x, 3, channels="middle")
    with pytest.raises(OptionError, match="kernel_size"):
        ax.conv(x, 3, kernel_size=0)
    with pytest.raises(OptionError, match="units"):
        ax.conv(x, 0)
    with pytest.raises(OptionError, match="unknown option"):
        ax.conv_transpose(x, 3, input_dilation=2)
    with pytest.raises(OptionError, match="unknown option"):
        ax.depthwise_conv(x, 2, feature_group_size=2)


def test_feature_groups_must_divide_channels_and_units():
    with pytest.raises(ShapeError, match="3 channels are not divisible by feature_group_size 2"):
        ax.conv(ax.input("x", (None, 5, 5, 3)), 4, feature_group_size=2)
    with pytest.raises(OptionError, match="units 3 must be divisible by feature_group_size 2"):
        ax.conv(ax.input("x", (None, 5, 5, 4)), 3, feature_group_size=2)


def test_rank_and_size_errors():
    with pytest.raises(ShapeError, match="rank 3, 4 or 5"):
        ax.conv(ax.input("x", (None, 4)), 2)
    with pytest.raises(ShapeError, match="rank-4 input"):
        ax.separable_conv2d(ax.input("x", (None, 6, 2)), 1)
    with pytest.raises(ShapeError, match="rank-5 input"):
        ax.separable_conv3d(ax.input("x", (None, 6, 6, 2)), 1)
    with pytest.raises(ShapeError, match="fewer than the dilated kernel size 5"):
        ax.conv(ax.input("x", (None, 4, 2)), 2, kernel_size=3, kernel_dilation=2)
    with pytest.raises(ShapeError, match="channel dim"):
        ax.conv(ax.input("x", (None, 4, None)), 2)


def test_too_small_dynamic_input_fails_at_run_time():
    m = ax.conv(ax.input("x", (None, None, 2)), 2, kernel_size=3)
    params = _random_params(m)
    with pytest.raises(ShapeError, match=r"output would be empty|fewer than the dilated kernel"):
        _run(m, np.zeros((1, 2, 2), np.float32), params)
