"""Tests of the recurrent family: lstm, gru, conv_lstm and mask.

Numbers are checked against real Axon 0.8.1 (the golden files) and against
independent numpy recurrences written differently from the implementation:
one fused matmul over concatenated gates (lstm, gru) and one fused
scipy-correlate convolution over the concatenated [x, h] channels (conv_lstm).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.signal import correlate

import axonc as ax
from axonc.dtypes import TensorType, to_numpy_dtype
from axonc.errors import OptionError, ShapeError
from axonc.initializers import check_initializer, initialize
from axonc.interpreter import run
from axonc.ir import Axon, assign_names, tree_leaves
from axonc.registry import OPS
from axonc.shape_inference import declared_type, infer_types
from tests import golden

RNG = np.random.default_rng(1234)

# ---------------------------------------------------------------------------
# helpers


def _leaves(out: Any) -> list[np.ndarray]:
    return [np.asarray(a) for a in tree_leaves(out)]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _node(handle: Axon, op: str):
    (node,) = [n for n in handle.nodes.values() if n.op == op]
    return node


def _specs(handle: Axon, op: str, types: list[TensorType]) -> dict[tuple, Any]:
    node = _node(handle, op)
    return {s.path: s for s in OPS[op].params(types, dict(node.options), "inference", node)}


def _lstm_params(f: int, u: int, bias: bool = True) -> dict[str, Any]:
    p = {
        "input_kernel": {k: RNG.normal(size=(f, u)) for k in ("wii", "wif", "wig", "wio")},
        "hidden_kernel": {k: RNG.normal(size=(u, u)) for k in ("whi", "whf", "whg", "who")},
    }
    if bias:
        p["bias"] = {k: RNG.normal(size=(u,)) for k in ("bi", "bf", "bg", "bo")}
    return p


def _gru_params(f: int, u: int, bias: bool = True) -> dict[str, Any]:
    p = {
        "input_kernel": {k: RNG.normal(size=(f, u)) for k in ("wir", "wiz", "win")},
        "hidden_kernel": {k: RNG.normal(size=(u, u)) for k in ("whr", "whz", "whn")},
    }
    if bias:
        p["bias"] = {k: RNG.normal(size=(u,)) for k in ("br", "bz", "bin", "bhn")}
    return p


def _f32(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _f32(v) for k, v in tree.items()}
    return np.asarray(tree, dtype=np.float32)


# Independent references --------------------------------------------------------


def ref_lstm(x, p, c, h, keep=None, act=np.tanh, gate=_sigmoid):
    """Fused-gate LSTM: one (F, 4U) and one (U, 4U) matmul per step, gates i|f|g|o."""
    ik, hk = p["input_kernel"], p["hidden_kernel"]
    w = np.concatenate([ik["wii"], ik["wif"], ik["wig"], ik["wio"]], axis=1)
    r = np.concatenate([hk["whi"], hk["whf"], hk["whg"], hk["who"]], axis=1)
    u = r.shape[0]
    b = np.concatenate([p["bias"][k] for k in ("bi", "bf", "bg", "bo")]) if "bias" in p else 0.0
    x = x.astype(np.float64)
    keep = np.zeros(x.shape[:2], bool) if keep is None else keep
    zs = np.einsum("btf,fg->btg", x, w) + b  # all input projections at once
    outs = []
    for t in range(x.shape[1]):
        z = zs[:, t] + h @ r
        i, f, g, o = (
            gate(z[:, :u]),
            gate(z[:, u : 2 * u]),
            act(z[:, 2 * u : 3 * u]),
            gate(z[:, 3 * u :]),
        )
        c_new = f * c + i * g
        h_new = o * act(c_new)
        m = keep[:, t : t + 1]
        c, h = m * c + (1 - m) * c_new, m * h + (1 - m) * h_new
        outs.append(h)
    return np.stack(outs, axis=1), c, h


def ref_gru(x, p, h, keep=None):
    """Fused-gate GRU (r|z|n), linear-before-reset: n = tanh(xWn + bin + r*(hWhn + bhn))."""
    ik, hk = p["input_kernel"], p["hidden_kernel"]
    w = np.concatenate([ik["wir"], ik["wiz"], ik["win"]], axis=1)
    r_ = np.concatenate([hk["whr"], hk["whz"], hk["whn"]], axis=1)
    u = r_.shape[0]
    bias = p.get("bias", {k: np.zeros(u) for k in ("br", "bz", "bin", "bhn")})
    bx = np.concatenate([bias["br"], bias["bz"], bias["bin"]])
    bh = np.concatenate([np.zeros(2 * u), bias["bhn"]])
    keep = np.zeros(x.shape[:2], bool) if keep is None else keep
    outs = []
    for t in range(x.shape[1]):
        gx = x[:, t].astype(np.float64) @ w + bx
        gh = h @ r_ + bh
        r = _sigmoid(gx[:, :u] + gh[:, :u])
        z = _sigmoid(gx[:, u : 2 * u] + gh[:, u : 2 * u])
        n = np.tanh(gx[:, 2 * u :] + r * gh[:, 2 * u :])
        h_new = n + z * (h - n)
        h = np.where(keep[:, t : t + 1], h, h_new)
        outs.append(h)
    return np.stack(outs, axis=1), h


def ref_conv_lstm(x, wi, wh, bias, c, h, k):
    """ConvLSTM with one fused 'same' correlation of concat([x_t, h]) per step (2-D, stride 1).

    Nx 'same' padding: lo = (k-1)//2, hi = k-1-lo. States are (B, 1, U, H, W).
    """
    u = wh.shape[1]
    w = np.concatenate([wi, wh], axis=1)  # (4U, C+U, k, k)
    lo, hi = (k - 1) // 2, k - 1 - ((k - 1) // 2)
    c, h = c[:, 0].astype(np.float64), h[:, 0].astype(np.float64)
    outs = []
    for t in range(x.shape[1]):
        inp = np.concatenate([x[:, t].astype(np.float64), h], axis=1)
        inp = np.pad(inp, [(0, 0), (0, 0), (lo, hi), (lo, hi)])
        gates = np.stack(
            [
                np.stack([correlate(inp[b], w[o], mode="valid")[0] for o in range(4 * u)])
                for b in range(inp.shape[0])
            ]
        ) + bias.reshape(1, -1, 1, 1)
        i, g, f, o = np.split(gates, 4, axis=1)
        c = _sigmoid(f + 1) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        outs.append(h)
    return np.stack(outs, axis=1), c[:, None], h[:, None]


# ---------------------------------------------------------------------------
# golden files (real Axon 0.8.1)


def _inputs(shapes: dict[str, tuple]) -> dict[str, Axon]:
    return {k: ax.input(k, v) for k, v in shapes.items()}


GOLDEN_MODELS = {
    "lstm_dynamic": lambda: ax.lstm(
        ax.input("x", (None, 5, 3)), 4, recurrent_initializer="zeros", unroll="dynamic"
    ),
    "lstm_initial_state": lambda: ax.lstm(
        ax.input("x", (None, 5, 3)), (ax.input("c0", (None, 4)), ax.input("h0", (None, 4))), 4
    ),
    "lstm_no_bias": lambda: ax.lstm(
        ax.input("x", (None, 5, 3)), 4, recurrent_initializer="zeros", use_bias=False
    ),
    "gru_dynamic": lambda: ax.gru(
        ax.input("x", (None, 5, 3)), 4, recurrent_initializer="zeros", unroll="dynamic"
    ),
    "conv_lstm_dynamic": lambda: ax.conv_lstm(
        ax.input("x", (None, 3, 2, 4, 4)),
        2,
        kernel_size=3,
        recurrent_initializer="zeros",
        unroll="dynamic",
    ),
    "conv_lstm_initial_state": lambda: ax.conv_lstm(
        ax.input("x", (None, 3, 2, 4, 4)),
        (ax.input("c0", (None, 1, 2, 4, 4)), ax.input("h0", (None, 1, 2, 4, 4))),
        2,
        kernel_size=3,
    ),
}


@pytest.mark.parametrize("case", sorted(GOLDEN_MODELS))
def test_matches_axon_golden(case: str) -> None:
    data = golden.load(case)
    model = ax.container(GOLDEN_MODELS[case]())
    out, state = run(model, golden.inputs(data), golden.tree(data["params"]))
    expected = golden.tree(data["outputs"])
    got, want = _leaves(out), _leaves(expected)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    assert state == {}


def test_gru_with_mask_matches_axon_golden() -> None:
    data = golden.load("gru_with_mask")
    tokens = ax.input("tokens", (None, 6), dtype="s64")
    emb = ax.embedding(tokens, 5, 3)
    seq, (h,) = ax.gru(emb, 4, recurrent_initializer="zeros", mask=ax.mask(tokens, 0))
    model = ax.container((seq, (h,)))
    out, _ = run(model, golden.inputs(data), golden.tree(data["params"]))
    for g, w in zip(_leaves(out), _leaves(golden.tree(data["outputs"])), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_gru_with_mask_golden_from_gathered_embedding() -> None:
    """The same golden case with the embedding done by a plain numpy gather (gru + mask only)."""
    data = golden.load("gru_with_mask")
    params = golden.tree(data["params"])
    tokens = golden.inputs(data)["tokens"]
    emb_value = params["embedding_0"]["kernel"][tokens]
    emb = ax.input("emb", (None, 6, 3))
    tok = ax.input("tokens", (None, 6), dtype="s64")
    seq, (h,) = ax.gru(emb, 4, recurrent_initializer="zeros", mask=ax.mask(tok, 0))
    out, _ = run(ax.container((seq, (h,))), {"emb": emb_value, "tokens": tokens}, params)
    assert (tokens == 0).any() and not (tokens == 0).all()  # the mask really masks something
    for g, w in zip(_leaves(out), _leaves(golden.tree(data["outputs"])), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# independent numpy recurrences


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("unroll", ["dynamic", "static"])
def test_lstm_matches_fused_reference_with_state_and_mask(use_bias: bool, unroll: str) -> None:
    b, t, f, u = 3, 6, 5, 4
    x = RNG.normal(size=(b, t, f)).astype(np.float32)
    c0 = RNG.normal(size=(b, u)).astype(np.float32)
    h0 = RNG.normal(size=(b, u)).astype(np.float32)
    m = (RNG.uniform(size=(b, t)) < 0.4).astype(np.int32)
    m[0, 0] = 1
    p = _f32(_lstm_params(f, u, use_bias))
    xi, ci, hi, mi = (
        ax.input("x", (None, t, f)),
        ax.input("c0", (None, u)),
        ax.input("h0", (None, u)),
        ax.input("m", (None, t), dtype="s32"),
    )
    seq, (c, h) = ax.lstm(xi, (ci, hi), u, mask=mi, use_bias=use_bias, unroll=unroll)
    out, _ = run(ax.container((seq, (c, h))), {"x": x, "c0": c0, "h0": h0, "m": m}, {"lstm_0": p})
    p64 = {k: {kk: vv.astype(np.float64) for kk, vv in v.items()} for k, v in p.items()}
    want = ref_lstm(x, p64, c0.astype(np.float64), h0.astype(np.float64), m.astype(bool))
    got = _leaves(out)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_lstm_custom_activation_and_gate() -> None:
    b, t, f, u = 2, 4, 3, 3
    x = RNG.normal(size=(b, t, f)).astype(np.float32)
    p = _lstm_params(f, u)
    xi = ax.input("x", (None, t, f))
    seq, (c, h) = ax.lstm(
        xi, u, activation="relu", gate="hard_sigmoid", recurrent_initializer="zeros"
    )
    out, _ = run(ax.container((seq, (c, h))), {"x": x}, {"lstm_0": p})
    want = ref_lstm(
        x,
        p,
        np.zeros((b, u)),
        np.zeros((b, u)),
        act=lambda z: np.maximum(z, 0),
        gate=lambda z: np.clip(0.2 * z + 0.2, 0, 1),
    )
    for g, w in zip(_leaves(out), want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("use_bias", [True, False])
def test_gru_matches_fused_reference_with_state_and_mask(use_bias: bool) -> None:
    b, t, f, u = 3, 7, 2, 5
    x = RNG.normal(size=(b, t, f)).astype(np.float32)
    h0 = RNG.normal(size=(b, u)).astype(np.float32)
    m = RNG.uniform(size=(b, t)) < 0.3
    p = _gru_params(f, u, use_bias)
    xi, hi, mi = (
        ax.input("x", (None, t, f)),
        ax.input("h0", (None, u)),
        ax.input("m", (None, t), dtype="pred"),
    )
    seq, (h,) = ax.gru(xi, (hi,), u, mask=mi, use_bias=use_bias)
    out, _ = run(ax.container((seq, (h,))), {"x": x, "h0": h0, "m": m}, {"gru_0": p})
    want = ref_gru(x, p, h0.astype(np.float64), m)
    for g, w in zip(_leaves(out), want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [1, 3])
def test_conv_lstm_matches_fused_correlate_reference(k: int) -> None:
    b, t, ch, u, hh, ww = 2, 3, 3, 2, 5, 4
    x = RNG.normal(size=(b, t, ch, hh, ww)).astype(np.float32)
    c0 = RNG.normal(size=(b, 1, u, hh, ww)).astype(np.float32)
    h0 = RNG.normal(size=(b, 1, u, hh, ww)).astype(np.float32)
    wi = RNG.normal(size=(4 * u, ch, k, k))
    wh = RNG.normal(size=(4 * u, u, k, k))
    bias = RNG.normal(size=(4 * u,))
    xi = ax.input("x", (None, t, ch, hh, ww))
    ci, hi = ax.input("c0", (None, 1, u, hh, ww)), ax.input("h0", (None, 1, u, hh, ww))
    seq, (c, h) = ax.conv_lstm(xi, (ci, hi), u, kernel_size=k)
    params = {"conv_lstm_0": {"input_kernel": wi, "hidden_kernel": wh, "bias": bias}}
    out, _ = run(ax.container((seq, (c, h))), {"x": x, "c0": c0, "h0": h0}, params)
    want = ref_conv_lstm(x, wi, wh, bias, c0, h0, k)
    for g, w in zip(_leaves(out), want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_conv_lstm_without_bias_equals_zero_bias() -> None:
    x = RNG.normal(size=(2, 2, 2, 3, 3)).astype(np.float32)
    wi, wh = RNG.normal(size=(8, 2, 3, 3)), RNG.normal(size=(8, 2, 3, 3))
    xi = ax.input("x", (None, 2, 2, 3, 3))
    seq, _ = ax.conv_lstm(xi, 2, kernel_size=3, use_bias=False, recurrent_initializer="zeros")
    out, _ = run(seq, {"x": x}, {"conv_lstm_0": {"input_kernel": wi, "hidden_kernel": wh}})
    z = np.zeros((2, 1, 2, 3, 3))
    want, _, _ = ref_conv_lstm(x, wi, wh, np.zeros(8), z, z, 3)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_conv_lstm_1d_valid_padding_and_rectangular_kernel() -> None:
    # rank-4 input = one spatial dim; k=1 'valid' keeps the size
    x = RNG.normal(size=(2, 3, 2, 5)).astype(np.float32)
    xi = ax.input("x", (None, 3, 2, 5))
    seq, (c, _) = ax.conv_lstm(xi, 3, padding="valid", recurrent_initializer="zeros")
    wi, wh, bias = RNG.normal(size=(12, 2, 1)), RNG.normal(size=(12, 3, 1)), RNG.normal(size=(12,))
    out, _ = run(
        ax.container((seq, c)),
        {"x": x},
        {"conv_lstm_0": {"input_kernel": wi, "hidden_kernel": wh, "bias": bias}},
    )
    # a 1x1 conv is a per-position dense layer: check against an LSTM-style loop
    cc = hcur = np.zeros((2, 3, 5))
    for t in range(3):
        gates = (
            np.einsum("bcl,oc->bol", x[:, t], wi[..., 0])
            + np.einsum("bul,ou->bol", hcur, wh[..., 0])
            + bias[None, :, None]
        )
        i, g, f, o = gates[:, 0:3], gates[:, 3:6], gates[:, 6:9], gates[:, 9:12]
        cc = _sigmoid(f + 1) * cc + _sigmoid(i) * np.tanh(g)
        hcur = _sigmoid(o) * np.tanh(cc)
    np.testing.assert_allclose(out[0][:, -1], hcur, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1][:, 0], cc, rtol=1e-5, atol=1e-6)
    # kernel (3, 1) on a 2-D input: params and output shapes
    x2 = ax.input("x2", (None, 2, 2, 4, 4))
    seq2, _ = ax.conv_lstm(x2, 2, kernel_size=(3, 1))
    specs = _specs(seq2, "conv_lstm", [TensorType((None, 2, 2, 4, 4))])
    assert specs[("input_kernel",)].shape == (8, 2, 3, 1)
    assert declared_type(seq2, seq2.output) == TensorType((None, 2, 2, 4, 4))


# ---------------------------------------------------------------------------
# masking semantics


def test_masked_steps_keep_previous_state_and_repeat_output() -> None:
    b, t, f, u = 2, 5, 3, 4
    x = RNG.normal(size=(b, t, f)).astype(np.float32)
    m = np.array([[0, 1, 1, 0, 1], [1, 1, 1, 1, 1]], dtype=np.int32)
    c0 = RNG.normal(size=(b, u)).astype(np.float32)
    h0 = RNG.normal(size=(b, u)).astype(np.float32)
    xi, ci, hi, mi = (
        ax.input("x", (None, t, f)),
        ax.input("c0", (None, u)),
        ax.input("h0", (None, u)),
        ax.input("m", (None, t), dtype="s32"),
    )
    seq, (c, h) = ax.lstm(xi, (ci, hi), u, mask=mi)
    (s, (cv, hv)), _ = run(
        ax.container((seq, (c, h))),
        {"x": x, "c0": c0, "h0": h0, "m": m},
        {"lstm_0": _lstm_params(f, u)},
    )
    np.testing.assert_array_equal(s[0, 1], s[0, 0])
    np.testing.assert_array_equal(s[0, 2], s[0, 0])
    assert not np.allclose(s[0, 3], s[0, 2])
    np.testing.assert_array_equal(s[0, 4], s[0, 3])
    np.testing.assert_array_equal(hv[0], s[0, 3])
    # fully masked row: output repeats h0, final state is the initial state
    np.testing.assert_array_equal(s[1], np.broadcast_to(h0[1], (t, u)))
    np.testing.assert_array_equal(cv[1], c0[1])
    np.testing.assert_array_equal(hv[1], h0[1])


def test_scalar_mask_applies_to_every_step() -> None:
    x = RNG.normal(size=(2, 3, 2)).astype(np.float32)
    xi = ax.input("x", (None, 3, 2))
    seq, _ = ax.gru(xi, 3, recurrent_initializer="zeros", mask=ax.constant(1))
    out, _ = run(seq, {"x": x}, {"gru_0": _gru_params(2, 3)})
    np.testing.assert_array_equal(out, np.zeros((2, 3, 3), np.float32))


def test_mask_layer_values_dtype_and_shape() -> None:
    tok = ax.input("tok", (None, 4), dtype="s32")
    m = ax.mask(tok, 2)
    assert declared_type(m, m.output) == TensorType((None, 4), "u8")
    assert _node(m, "mask").kind == "mask" and assign_names(m)[m.output] == "mask_0"
    out, _ = run(m, {"tok": np.array([[2, 0, 2, 1]], np.int32)}, {})
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[1, 0, 1, 0]])
    # float input is cast to s64 first (truncation), as Axon's Nx.as_type does
    xf = ax.input("xf", (None, 3))
    out, _ = run(xf.mask(0), {"xf": np.array([[0.7, -0.4, 1.2]], np.float32)}, {})
    np.testing.assert_array_equal(out, [[1, 1, 0]])
    with pytest.raises(OptionError, match="eos_token"):
        ax.mask(tok, 1.5)


# ---------------------------------------------------------------------------
# initial state


def test_default_initial_state_is_drawn_from_recurrent_initializer_with_seed() -> None:
    b, t, f, u = 3, 4, 2, 5
    x = RNG.normal(size=(b, t, f)).astype(np.float32)
    p = {"lstm_0": _lstm_params(f, u)}
    xi = ax.input("x", (None, t, f))
    rand = ax.container(ax.lstm(xi, u, seed=11))
    drawn = initialize(check_initializer("glorot_uniform"), (b, u), "f32", 11)
    assert np.abs(drawn).max() > 0
    ci, hi = ax.input("c0", (None, u)), ax.input("h0", (None, u))
    explicit = ax.container(ax.lstm(xi, (ci, hi), u))
    got, _ = run(rand, {"x": x}, p)
    want, _ = run(explicit, {"x": x, "c0": drawn, "h0": drawn}, p)
    for g, w in zip(_leaves(got), _leaves(want), strict=True):
        np.testing.assert_array_equal(g, w)
    other, _ = run(ax.container(ax.lstm(xi, u, seed=12)), {"x": x}, p)
    assert not np.allclose(_leaves(other)[0], _leaves(got)[0])


def test_zeros_recurrent_initializer_equals_explicit_zero_state() -> None:
    x = RNG.normal(size=(2, 3, 2)).astype(np.float32)
    p = {"gru_0": _gru_params(2, 4)}
    xi = ax.input("x", (None, 3, 2))
    got, _ = run(ax.container(ax.gru(xi, 4, recurrent_initializer="zeros")), {"x": x}, p)
    want = ref_gru(x, p["gru_0"], np.zeros((2, 4)))
    for g, w in zip(_leaves(got), want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_conv_lstm_random_state_has_state_shape() -> None:
    x = RNG.normal(size=(2, 2, 1, 3, 3)).astype(np.float32)
    xi = ax.input("x", (None, 2, 1, 3, 3))
    seq, (c, h) = ax.conv_lstm(xi, 2, seed=3)
    params = {
        "conv_lstm_0": {
            "input_kernel": np.zeros((8, 1, 1, 1)),
            "hidden_kernel": np.zeros((8, 2, 1, 1)),
            "bias": np.zeros(8),
        }
    }
    out, _ = run(ax.container((seq, (c, h))), {"x": x}, params)
    drawn = initialize(check_initializer("glorot_uniform"), (2, 1, 2, 3, 3), "f32", 3)
    # zero weights: every gate is 0, so c1 = sigmoid(1) * c0 + 0.5 * tanh(0) = sigmoid(1) * c0
    np.testing.assert_allclose(out[1][0], _sigmoid(1.0) ** 2 * drawn, rtol=1e-6)


# ---------------------------------------------------------------------------
# structure, params, shapes


def test_output_structure_is_python_tuples_of_graphs() -> None:
    x = ax.input("x", (None, 5, 3))
    out = ax.lstm(x, 4)
    assert isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], tuple)
    seq, (c, h) = out
    assert all(isinstance(g, Axon) and g.node.op == "elem" for g in (seq, c, h))
    assert {seq.node.inputs, c.node.inputs, h.node.inputs} == {(_node(seq, "lstm").id,)}
    assert [g.node.options["path"] for g in (seq, c, h)] == [(0,), (1, 0), (1, 1)]
    gout = ax.gru(x, 4)
    assert isinstance(gout[1], tuple) and len(gout[1]) == 1
    cout = ax.conv_lstm(ax.input("v", (None, 2, 1, 3, 3)), 2)
    assert isinstance(cout[1], tuple) and len(cout[1]) == 2
    # one op node with a container type, and Axon's layer names
    assert declared_type(seq, _node(seq, "lstm").id) == (
        TensorType((None, 5, 4)),
        (TensorType((None, 4)), TensorType((None, 4))),
    )
    names = assign_names(ax.container(out))
    assert names[_node(seq, "lstm").id] == "lstm_0"
    assert x.lstm(4)[0].node.op == "elem"  # method style


def test_lstm_params_structure_and_initializers() -> None:
    x = ax.input("x", (None, 5, 3))
    seq, _ = ax.lstm(x, 4, kernel_initializer="he_normal", bias_initializer="ones")
    specs = _specs(seq, "lstm", [TensorType((None, 5, 3))])
    assert set(specs) == {
        *(("input_kernel", k) for k in ("wii", "wif", "wig", "wio")),
        *(("hidden_kernel", k) for k in ("whi", "whf", "whg", "who")),
        *(("bias", k) for k in ("bi", "bf", "bg", "bo")),
    }
    for path, s in specs.items():
        want = {"input_kernel": (3, 4), "hidden_kernel": (4, 4), "bias": (4,)}[path[0]]
        assert s.shape == want and s.dtype == "f32" and s.kind == "parameter"
        init = "ones" if path[0] == "bias" else "he_normal"
        assert s.initializer["name"] == init
    default, _ = ax.lstm(x, 4, use_bias=False)
    d = _specs(default, "lstm", [TensorType((None, 5, 3))])
    assert len(d) == 8 and all(s.initializer["name"] == "glorot_uniform" for s in d.values())


def test_gru_params_structure() -> None:
    x = ax.input("x", (None, 5, 3))
    seq, _ = ax.gru(x, 4)
    specs = _specs(seq, "gru", [TensorType((None, 5, 3))])
    assert {p for p in specs if p[0] == "input_kernel"} == {
        ("input_kernel", k) for k in ("wir", "wiz", "win")
    }
    assert {p for p in specs if p[0] == "hidden_kernel"} == {
        ("hidden_kernel", k) for k in ("whr", "whz", "whn")
    }
    assert {p for p in specs if p[0] == "bias"} == {("bias", k) for k in ("br", "bz", "bin", "bhn")}
    assert specs[("input_kernel", "wir")].shape == (3, 4)
    assert specs[("hidden_kernel", "whn")].shape == (4, 4)
    assert (
        specs[("bias", "bhn")].shape == (4,)
        and specs[("bias", "bhn")].initializer["name"] == "zeros"
    )
    nb, _ = ax.gru(x, 4, use_bias=False)
    assert all(p[0] != "bias" for p in _specs(nb, "gru", [TensorType((None, 5, 3))]))


def test_conv_lstm_params_structure() -> None:
    x = ax.input("x", (None, 3, 2, 4, 4))
    seq, _ = ax.conv_lstm(x, 5, kernel_size=3)
    specs = _specs(seq, "conv_lstm", [TensorType((None, 3, 2, 4, 4))])
    assert {p: s.shape for p, s in specs.items()} == {
        ("input_kernel",): (20, 2, 3, 3),
        ("hidden_kernel",): (20, 5, 3, 3),
        ("bias",): (20,),
    }
    assert specs[("input_kernel",)].initializer["name"] == "glorot_uniform"
    nb, _ = ax.conv_lstm(x, 5, use_bias=False)
    assert set(_specs(nb, "conv_lstm", [TensorType((None, 3, 2, 4, 4))])) == {
        ("input_kernel",),
        ("hidden_kernel",),
    }


def test_defaults() -> None:
    x = ax.input("x", (None, 5, 3))
    opts = dict(_node(ax.lstm(x, 4)[0], "lstm").options)
    assert opts["activation"] == "tanh" and opts["gate"] == "sigmoid"
    assert opts["unroll"] == "dynamic" and opts["use_bias"] is True
    assert opts["kernel_initializer"]["name"] == "glorot_uniform"
    assert opts["bias_initializer"]["name"] == "zeros"
    assert opts["recurrent_initializer"]["name"] == "glorot_uniform"  # Axon 0.8's default
    copts = dict(_node(ax.conv_lstm(ax.input("v", (None, 2, 1, 3, 3)), 2)[0], "conv_lstm").options)
    assert (copts["padding"], copts["kernel_size"], copts["strides"]) == ("same", 1, 1)


def test_shape_inference_dynamic_batch_and_time() -> None:
    x = ax.input("x", (None, None, 3))
    seq, (c, h) = ax.lstm(x, 4)
    model = ax.container((seq, (c, h)))
    types = infer_types(model)
    assert types[seq.output] == TensorType((None, None, 4))
    assert types[c.output] == types[h.output] == TensorType((None, 4))
    concrete = infer_types(model, {"x": TensorType((2, 7, 3))})
    assert concrete[seq.output] == TensorType((2, 7, 4))
    # the same model runs on different batch and time lengths
    p = {"lstm_0": _lstm_params(3, 4)}
    for b, t in ((1, 2), (3, 6)):
        out, _ = run(model, {"x": RNG.normal(size=(b, t, 3)).astype(np.float32)}, p)
        assert [a.shape for a in _leaves(out)] == [(b, t, 4), (b, 4), (b, 4)]
    g = ax.gru(x, 2)[0]
    assert declared_type(g, g.output) == TensorType((None, None, 2))
    v = ax.input("v", (None, None, 2, 4, 4))
    cs, (cc, _) = ax.conv_lstm(v, 3, kernel_size=3)
    assert declared_type(cs, cs.output) == TensorType((None, None, 3, 4, 4))
    assert declared_type(cc, cc.output) == TensorType((None, 1, 3, 4, 4))
    # a known batch in the initial state fills the output's batch dim
    s2, _ = ax.lstm(x, (ax.input("c0", (2, 4)), ax.input("h0", (2, 4))), 4)
    assert declared_type(s2, s2.output) == TensorType((2, None, 4))


def test_f64_input_gives_f64_output() -> None:
    x = ax.input("x", (None, 2, 3), dtype="f64")
    seq, _ = ax.gru(x, 2, recurrent_initializer="zeros")
    assert declared_type(seq, seq.output).dtype == "f64"
    out, _ = run(seq, {"x": np.ones((1, 2, 3))}, {"gru_0": _gru_params(3, 2)})
    assert out.dtype == np.float64


def test_static_and_dynamic_unroll_give_identical_numbers() -> None:
    x = RNG.normal(size=(2, 4, 3)).astype(np.float32)
    xi = ax.input("x", (None, 4, 3))
    pl, pg = {"lstm_0": _lstm_params(3, 4)}, {"gru_0": _gru_params(3, 4)}
    for fn, p in ((ax.lstm, pl), (ax.gru, pg)):
        a, _ = run(ax.container(fn(xi, 4, unroll="static")), {"x": x}, p)
        b, _ = run(ax.container(fn(xi, 4, unroll="dynamic")), {"x": x}, p)
        for u, v in zip(_leaves(a), _leaves(b), strict=True):
            np.testing.assert_array_equal(u, v)


def test_train_mode_equals_inference_and_reports_no_state() -> None:
    x = RNG.normal(size=(2, 4, 3)).astype(np.float32)
    model = ax.container(ax.lstm(ax.input("x", (None, 4, 3)), 4))
    p = {"lstm_0": _lstm_params(3, 4)}
    a, sa = run(model, {"x": x}, p, "inference")
    b, sb = run(model, {"x": x}, p, "train")
    for u, v in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)
    assert sa == sb == {}


def test_declared_cases_run_with_params_from_their_specs() -> None:
    """Every declared case: param specs feed forward, and outputs match inferred shapes."""
    from axonc.ir import tree_map

    for op in ("lstm", "gru", "conv_lstm", "mask"):
        for case in OPS[op].cases:
            handles = [
                ax.input(f"in{i}", t.shape, dtype=t.dtype) for i, t in enumerate(case.inputs)
            ]
            model = case.build(*handles)
            names = assign_names(model)
            for batch in (1, 3):
                feed_types = {
                    f"in{i}": TensorType((batch, *t.shape[1:]), t.dtype)
                    for i, t in enumerate(case.inputs)
                }
                types = infer_types(model, feed_types)
                params: dict[str, Any] = {}
                for nid, node in model.nodes.items():
                    if node.op != op:
                        continue
                    layer: dict[str, Any] = {}
                    in_types = [types[i] for i in node.inputs]
                    for s in OPS[op].params(in_types, dict(node.options), "inference", node):
                        d = layer
                        for k in s.path[:-1]:
                            d = d.setdefault(k, {})
                        d[s.path[-1]] = RNG.normal(size=s.shape).astype(np.float32)
                    params[names[nid]] = layer
                feed = {}
                for i, t in enumerate(feed_types.values()):
                    if i in case.int_inputs:
                        feed[f"in{i}"] = RNG.integers(0, case.int_inputs[i], t.shape).astype(
                            to_numpy_dtype(t.dtype)
                        )
                    else:
                        feed[f"in{i}"] = RNG.normal(size=t.shape).astype(np.float32)
                out, _ = run(model, feed, params)
                want = tree_map(lambda nid, types=types: types[nid], model.output)
                for arr, t in zip(_leaves(out), tree_leaves(want), strict=True):
                    assert arr.shape == t.shape, (op, case.name)
                    assert np.dtype(arr.dtype).name == {"f32": "float32", "u8": "uint8"}[t.dtype]


# ---------------------------------------------------------------------------
# errors


def test_rank2_input_to_lstm_is_a_shape_error() -> None:
    x = ax.input("x", (None, 3))
    with pytest.raises(ShapeError, match=r"rank-3 input \(batch, time, features\)"):
        ax.lstm(x, 4)
    with pytest.raises(ShapeError, match="rank-3"):
        ax.gru(x, 4)


def test_hidden_state_of_wrong_shape_is_a_shape_error() -> None:
    x = ax.input("x", (None, 5, 3))
    with pytest.raises(ShapeError, match=r"initial c state must have shape \(\?, 4\)"):
        ax.lstm(x, (ax.input("c0", (None, 5)), ax.input("h0", (None, 4))), 4)
    with pytest.raises(ShapeError, match="initial h state"):
        ax.lstm(x, (ax.input("c0", (None, 4)), ax.input("h0", (None, 1, 4))), 4)
    with pytest.raises(ShapeError, match="initial h state"):
        ax.gru(x, (ax.input("h0", (None, 3)),), 4)
    with pytest.raises(ShapeError, match=r"initial h state must have shape \(3, 4\)"):
        ax.lstm(x, (ax.input("c0", (3, 4)), ax.input("h0", (2, 4))), 4)  # batches disagree
    v = ax.input("v", (None, 2, 1, 4, 4))
    with pytest.raises(ShapeError, match=r"\(\?, 1, 2, 4, 4\)"):
        ax.conv_lstm(v, (ax.input("c1", (None, 2, 4, 4)), ax.input("h1", (None, 1, 2, 4, 4))), 2)


def test_bad_mask_and_conv_lstm_shapes_are_shape_errors() -> None:
    x = ax.input("x", (None, 5, 3))
    with pytest.raises(ShapeError, match="mask must have shape"):
        ax.lstm(x, 4, mask=ax.input("m", (None, 4), dtype="s32"))
    with pytest.raises(ShapeError, match="rank >= 4"):
        ax.conv_lstm(x, 2)
    v = ax.input("v", (None, 2, 1, 6, 6))
    with pytest.raises(ShapeError, match="keep the spatial size"):
        ax.conv_lstm(v, 2, kernel_size=3, strides=2)
    with pytest.raises(ShapeError, match="keep the spatial size"):
        ax.conv_lstm(v, 2, kernel_size=3, padding="valid")
    with pytest.raises(ShapeError, match="kernel_size has 3 entries"):
        ax.conv_lstm(v, 2, kernel_size=(3, 3, 3))


def test_bad_options_are_option_errors() -> None:
    x = ax.input("x", (None, 5, 3))
    with pytest.raises(OptionError, match="unroll"):
        ax.lstm(x, 4, unroll="fast")
    with pytest.raises(OptionError, match="activation"):
        ax.gru(x, 4, activation="nope")
    with pytest.raises(OptionError, match="units"):
        ax.lstm(x, 0)
    with pytest.raises(OptionError, match="unknown option"):
        ax.lstm(x, 4, dropout=0.5)
    with pytest.raises(OptionError, match=r"hidden_state must be a tuple \(c, h\)"):
        ax.lstm(x, (ax.input("h0", (None, 4)),), 4)
    with pytest.raises(OptionError, match="recurrent_initializer"):
        ax.lstm(
            x,
            (ax.input("c0", (None, 4)), ax.input("h0", (None, 4))),
            4,
            recurrent_initializer="zeros",
        )
    with pytest.raises(OptionError, match="masking is not supported"):
        ax.conv_lstm(ax.input("v", (None, 2, 1, 3, 3)), 2, mask=ax.constant(0))
    with pytest.raises(OptionError, match="padding"):
        ax.conv_lstm(ax.input("w", (None, 2, 1, 3, 3)), 2, padding="full")
    with pytest.raises(OptionError, match="recurrent_initializer"):
        ax.gru(x, 4, recurrent_initializer="nonsense")
    with pytest.raises(OptionError, match="mask_input"):
        ax.gru(x, 4, mask_input=True)
