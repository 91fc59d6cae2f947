"""Tests of the normalization family against real-Axon golden files and direct loop formulas."""

from __future__ import annotations

import numpy as np
import pytest

import axonc as ax
from axonc import initializers
from axonc.errors import OptionError, ShapeError, StateError
from axonc.interpreter import run
from axonc.ir import assign_names
from axonc.registry import get_op
from tests import golden


def specs(model: ax.Axon, shape: tuple, mode: str = "inference") -> list:
    node = model.node
    return get_op(node.op).params([ax.TensorType(shape)], dict(node.options), mode, node)


def rng_input(shape: tuple, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(1.5, 2.0, size=shape).astype(np.float32)


def rand_vec(c: int, seed: int, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(lo, hi, size=c).astype(np.float32)


def stat_params(c: int) -> dict:
    return {
        "gamma": rand_vec(c, 1, 0.5, 1.5),
        "beta": rand_vec(c, 2),
        "mean": rand_vec(c, 3),
        "var": rand_vec(c, 4, 0.5, 2.0),
    }


# ---------------------------------------------------------------------------
# Golden files (Axon 0.8.1)

GOLDEN_CASES = {
    "batch_norm_channels_first__inference": lambda x: x.batch_norm(channel_index=1),
    "batch_norm_momentum0.3_eps1e-3__inference": lambda x: x.batch_norm(momentum=0.3, epsilon=1e-3),
    "batch_norm_rank2__train": lambda x: x.batch_norm(),
    "batch_norm_rank4__train": lambda x: x.batch_norm(),
    "group_norm__inference": lambda x: x.group_norm(3),
    "group_norm__train": lambda x: x.group_norm(3),
    "group_norm_channels_first__inference": lambda x: x.group_norm(3, channel_index=1),
    "group_norm_channels_first__train": lambda x: x.group_norm(3, channel_index=1),
    "group_norm_rank2__inference": lambda x: x.group_norm(2),
    "group_norm_rank2__train": lambda x: x.group_norm(2),
    "instance_norm__inference": lambda x: x.instance_norm(),
    "instance_norm_channels_first__inference": lambda x: x.instance_norm(channel_index=1),
    "instance_norm_channels_first__train": lambda x: x.instance_norm(channel_index=1),
    "layer_norm_rank3__inference": lambda x: x.layer_norm(),
    "layer_norm_rank3__train": lambda x: x.layer_norm(),
    "rms_norm__train": lambda x: x.rms_norm(),
}


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_matches_axon_golden_file(case: str) -> None:
    data = golden.load(case)
    x_val = golden.inputs(data)["x"]
    model = GOLDEN_CASES[case](ax.input("x", (None, *x_val.shape[1:])))
    params = golden.tree(data["params"])
    out, state = run(model, {"x": x_val}, params, data["mode"])
    np.testing.assert_allclose(out, golden.tensor(data["outputs"]), rtol=1e-5, atol=1e-6)
    assert out.dtype == np.float32
    if data["mode"] == "train":
        golden.assert_tree_close(state, golden.tree(data["state"]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_param_structure_matches_golden_file(case: str) -> None:
    data = golden.load(case)
    x_val = golden.inputs(data)["x"]
    model = GOLDEN_CASES[case](ax.input("x", (None, *x_val.shape[1:])))
    ((layer, expected),) = golden.tree(data["params"]).items()
    got = specs(model, (None, *x_val.shape[1:]), data["mode"])
    assert {s.path[0]: s.shape for s in got} == {k: v.shape for k, v in expected.items()}
    state_names = set(data["state_param_names"].get(layer, []))
    assert {s.path[0] for s in got if s.kind == "state"} == state_names
    assert all(s.dtype == "f32" for s in got)


# ---------------------------------------------------------------------------
# Parameters, defaults and options


def test_batch_norm_params_and_axon_defaults() -> None:
    model = ax.input("x", (None, 4, 4, 3)).batch_norm()
    got = {s.path: s for s in specs(model, (None, 4, 4, 3))}
    assert list(got) == [("gamma",), ("beta",), ("mean",), ("var",)]
    assert got[("gamma",)].initializer["name"] == "glorot_uniform"  # Axon 0.8.1 default
    assert got[("beta",)].initializer["name"] == "zeros"
    assert (got[("mean",)].initializer, got[("mean",)].kind) == ("zeros", "state")
    assert (got[("var",)].initializer, got[("var",)].kind) == ("ones", "state")
    assert got[("gamma",)].kind == got[("beta",)].kind == "parameter"
    assert all(s.shape == (3,) for s in got.values())
    opts = model.node.options
    assert (opts["channel_index"], opts["epsilon"], opts["momentum"]) == (-1, 1e-5, 0.1)
    assert opts["use_running_stats"] is False


@pytest.mark.parametrize(
    ("build", "gamma_init", "paths"),
    [
        (lambda x: x.instance_norm(), "glorot_uniform", ["gamma", "beta", "mean", "var"]),
        (lambda x: x.layer_norm(), "glorot_uniform", ["gamma", "beta"]),
        (lambda x: x.group_norm(2), "ones", ["gamma", "beta"]),
        (lambda x: x.rms_norm(), "ones", ["gamma"]),
    ],
)
def test_other_norms_params_and_gamma_default(build, gamma_init: str, paths: list) -> None:
    model = build(ax.input("x", (None, 5, 4)))
    got = specs(model, (None, 5, 4))
    assert [s.path[0] for s in got] == paths
    assert got[0].initializer["name"] == gamma_init
    assert all(s.shape == (4,) for s in got)


def test_epsilon_defaults() -> None:
    x = ax.input("x", (None, 4))
    assert x.layer_norm().node.options["epsilon"] == 1e-5
    assert x.group_norm(2).node.options["epsilon"] == 1e-5
    assert x.batch_norm().node.options["epsilon"] == 1e-5
    assert x.rms_norm().node.options["epsilon"] == 1e-6
    assert x.rms_norm().node.options["shift"] == 0.0
    assert x.rms_norm().node.options["upcast"] == "normalization"


def test_custom_initializers_are_honoured() -> None:
    model = ax.input("x", (None, 6)).batch_norm(
        gamma_initializer="zeros", beta_initializer=initializers.normal(scale=0.5)
    )
    got = {s.path[0]: s.initializer for s in specs(model, (None, 6))}
    assert got["gamma"] == {"name": "zeros"}
    assert got["beta"] == {"name": "normal", "mean": 0.0, "scale": 0.5}


def test_channel_index_selects_param_size() -> None:
    model = ax.input("x", (None, 3, 7)).layer_norm(channel_index=1)
    assert {s.shape for s in specs(model, (None, 3, 7))} == {(3,)}


def test_names_and_method_form() -> None:
    x = ax.input("x", (None, 6))
    a = ax.batch_norm(x)
    b = x.batch_norm()
    assert a.node.options == b.node.options
    model = ax.layer_norm(ax.batch_norm(ax.batch_norm(x)), name="ln")
    names = set(assign_names(model).values())
    assert {"batch_norm_0", "batch_norm_1", "ln"} <= names


# ---------------------------------------------------------------------------
# Independent loop formulas


def loop_batch_norm_train(x, gamma, beta, axis, eps):
    out = np.empty(x.shape, dtype=np.float64)
    means, vars_ = [], []
    for c in range(x.shape[axis]):
        xc = np.take(x, c, axis=axis).astype(np.float64).ravel()
        mean = sum(xc) / len(xc)
        var = sum((v - mean) ** 2 for v in xc) / len(xc)
        means.append(mean)
        vars_.append(var)
        idx = [slice(None)] * x.ndim
        idx[axis] = c
        out[tuple(idx)] = (x[tuple(idx)] - mean) / np.sqrt(var + eps) * gamma[c] + beta[c]
    return out, np.array(means), np.array(vars_)


@pytest.mark.parametrize(
    ("shape", "channel_index"),
    [((5, 4), -1), ((3, 5, 4), -1), ((2, 3, 3, 4), -1), ((2, 4, 3, 3), 1), ((3, 4, 5), 1)],
)
def test_batch_norm_train_matches_loops_and_updates_running_stats(shape, channel_index) -> None:
    axis = channel_index % len(shape)
    c = shape[axis]
    model = ax.input("x", (None, *shape[1:])).batch_norm(channel_index=channel_index, momentum=0.3)
    x = rng_input(shape)
    p = stat_params(c)
    out, state = run(model, {"x": x}, {"batch_norm_0": p}, "train")
    expected, bmean, bvar = loop_batch_norm_train(x, p["gamma"], p["beta"], axis, 1e-5)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    new = state["batch_norm_0"]
    np.testing.assert_allclose(new["mean"], 0.3 * p["mean"] + 0.7 * bmean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new["var"], 0.3 * p["var"] + 0.7 * bvar, rtol=1e-5, atol=1e-6)
    assert new["mean"].shape == new["var"].shape == (c,)
    assert new["mean"].dtype == np.float32


@pytest.mark.parametrize(
    ("shape", "channel_index"), [((5, 4), -1), ((2, 3, 3, 4), -1), ((2, 4, 3, 3), 1)]
)
def test_batch_norm_inference_uses_running_stats(shape, channel_index) -> None:
    axis = channel_index % len(shape)
    c = shape[axis]
    model = ax.input("x", (None, *shape[1:])).batch_norm(channel_index=channel_index, epsilon=1e-3)
    x = rng_input(shape, 5)
    p = stat_params(c)
    out, state = run(model, {"x": x}, {"batch_norm_0": p}, "inference")
    assert state == {}
    for ci in range(c):
        idx = [slice(None)] * x.ndim
        idx[axis] = ci
        idx = tuple(idx)
        want = (x[idx] - p["mean"][ci]) / np.sqrt(p["var"][ci] + 1e-3) * p["gamma"][ci]
        np.testing.assert_allclose(out[idx], want + p["beta"][ci], rtol=1e-5, atol=1e-5)


def test_batch_norm_train_and_inference_differ() -> None:
    model = ax.input("x", (None, 4)).batch_norm()
    x = rng_input((6, 4))
    p = stat_params(4)
    train, _ = run(model, {"x": x}, {"batch_norm_0": p}, "train")
    infer, _ = run(model, {"x": x}, {"batch_norm_0": p}, "inference")
    assert not np.allclose(train, infer)
    # train mode output is normalised per channel: mean beta, std gamma (biased)
    np.testing.assert_allclose(train.mean(axis=0), p["beta"], atol=1e-5)


def test_use_running_stats_trains_with_frozen_statistics() -> None:
    x_in = ax.input("x", (None, 3, 4))
    frozen = x_in.batch_norm(use_running_stats=True)
    plain = x_in.batch_norm()
    x = rng_input((2, 3, 4))
    p = stat_params(4)
    train, state = run(frozen, {"x": x}, {"batch_norm_0": p}, "train")
    assert state == {}
    reference, _ = run(plain, {"x": x}, {"batch_norm_0": p}, "inference")
    np.testing.assert_array_equal(train, reference)
    assert "mean" in {s.path[0] for s in specs(frozen, (None, 3, 4), "train")}


def test_use_running_stats_rejects_non_bool() -> None:
    with pytest.raises(OptionError, match="use_running_stats"):
        ax.input("x", (None, 4)).batch_norm(use_running_stats="yes")


@pytest.mark.parametrize(("shape", "channel_index"), [((2, 5, 3), -1), ((2, 3, 4, 4), 1)])
def test_instance_norm_train_per_instance_stats_and_nc_state(shape, channel_index) -> None:
    axis = channel_index % len(shape)
    n, c = shape[0], shape[axis]
    model = ax.input("x", (None, *shape[1:])).instance_norm(channel_index=channel_index)
    x = rng_input(shape, 7)
    p = stat_params(c)
    out, state = run(model, {"x": x}, {"instance_norm_0": p}, "train")
    new_mean = np.empty((n, c))
    new_var = np.empty((n, c))
    for b in range(n):
        for ci in range(c):
            idx = [b, *([slice(None)] * (x.ndim - 1))]
            idx[axis] = ci
            idx = tuple(idx)
            v = x[idx].astype(np.float64)
            mean, var = v.mean(), ((v - v.mean()) ** 2).mean()
            want = (v - mean) / np.sqrt(var + 1e-5) * p["gamma"][ci] + p["beta"][ci]
            np.testing.assert_allclose(out[idx], want, rtol=1e-5, atol=1e-5)
            new_mean[b, ci] = 0.1 * p["mean"][ci] + 0.9 * mean
            new_var[b, ci] = 0.1 * p["var"][ci] + 0.9 * var
    # Axon quirk: the returned running statistics are {N, C}
    assert state["instance_norm_0"]["mean"].shape == (n, c)
    np.testing.assert_allclose(state["instance_norm_0"]["mean"], new_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["instance_norm_0"]["var"], new_var, rtol=1e-5, atol=1e-6)


def test_instance_norm_inference_uses_running_stats() -> None:
    model = ax.input("x", (None, 5, 3)).instance_norm()
    x = rng_input((2, 5, 3))
    p = stat_params(3)
    out, _ = run(model, {"x": x}, {"instance_norm_0": p}, "inference")
    want = (x - p["mean"]) / np.sqrt(p["var"] + 1e-5) * p["gamma"] + p["beta"]
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_instance_norm_nc_state_fed_back_is_a_state_error() -> None:
    model = ax.input("x", (None, 5, 3)).instance_norm()
    x = rng_input((2, 5, 3))
    p = stat_params(3)
    _, state = run(model, {"x": x}, {"instance_norm_0": p}, "train")
    p.update(state["instance_norm_0"])
    with pytest.raises(StateError, match="expected shape \\(3,\\)"):
        run(model, {"x": x}, {"instance_norm_0": p}, "inference")


@pytest.mark.parametrize(
    ("shape", "channel_index"), [((3, 6), -1), ((2, 5, 4), -1), ((2, 3, 4), 1)]
)
def test_layer_norm_matches_loop(shape, channel_index) -> None:
    axis = channel_index % len(shape)
    c = shape[axis]
    model = ax.input("x", (None, *shape[1:])).layer_norm(channel_index=channel_index)
    x = rng_input(shape, 9)
    gamma, beta = rand_vec(c, 10, 0.5, 1.5), rand_vec(c, 11)
    for mode in ("inference", "train"):
        out, state = run(model, {"x": x}, {"layer_norm_0": {"gamma": gamma, "beta": beta}}, mode)
        assert state == {}
        moved_x = np.moveaxis(x, axis, -1)
        moved_out = np.moveaxis(out, axis, -1)
        for idx in np.ndindex(moved_x.shape[:-1]):
            v = moved_x[idx].astype(np.float64)
            want = (v - v.mean()) / np.sqrt(v.var() + 1e-5) * gamma + beta
            np.testing.assert_allclose(moved_out[idx], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "groups", "channel_index"),
    [
        ((3, 6), 2, -1),
        ((2, 4, 4, 6), 3, -1),
        ((2, 6, 3, 3), 3, 1),
        ((2, 5, 4), 1, -1),
        ((2, 5, 4), 4, -1),
    ],
)
def test_group_norm_matches_loop(shape, groups, channel_index) -> None:
    axis = channel_index % len(shape)
    c = shape[axis]
    size = c // groups
    model = ax.input("x", (None, *shape[1:])).group_norm(groups, channel_index=channel_index)
    x = rng_input(shape, 12)
    gamma, beta = rand_vec(c, 13, 0.5, 1.5), rand_vec(c, 14)
    for mode in ("inference", "train"):
        out, state = run(model, {"x": x}, {"group_norm_0": {"gamma": gamma, "beta": beta}}, mode)
        assert state == {}
        for b in range(shape[0]):
            for g in range(groups):
                chans = list(range(g * size, (g + 1) * size))
                block = np.take(x[b], chans, axis=axis - 1).astype(np.float64)
                mean = block.sum() / block.size
                var = ((block - mean) ** 2).sum() / block.size
                got = np.take(out[b], chans, axis=axis - 1)
                bshape = [1] * block.ndim
                bshape[axis - 1] = size
                want = (block - mean) / np.sqrt(var + 1e-5)
                want = want * gamma[chans].reshape(bshape) + beta[chans].reshape(bshape)
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "channel_index", "shift"),
    [((3, 6), -1, 0.0), ((2, 3, 6), -1, 0.0), ((2, 4, 3), 1, 1.0)],
)
def test_rms_norm_matches_formula(shape, channel_index, shift) -> None:
    axis = channel_index % len(shape)
    c = shape[axis]
    model = ax.input("x", (None, *shape[1:])).rms_norm(channel_index=channel_index, shift=shift)
    x = rng_input(shape, 15)
    gamma = rand_vec(c, 16, 0.5, 1.5)
    for mode in ("inference", "train"):
        out, state = run(model, {"x": x}, {"rms_norm_0": {"gamma": gamma}}, mode)
        assert state == {}
        moved_x = np.moveaxis(x, axis, -1)
        moved_out = np.moveaxis(out, axis, -1)
        for idx in np.ndindex(moved_x.shape[:-1]):
            v = moved_x[idx].astype(np.float64)
            rms = np.sqrt(sum(t * t for t in v) / len(v) + 1e-6)
            np.testing.assert_allclose(moved_out[idx], v / rms * (shift + gamma), rtol=1e-5)


def test_rms_norm_upcast_all_is_accepted_and_agrees_for_f32() -> None:
    x_in = ax.input("x", (None, 6))
    x = rng_input((3, 6))
    gamma = rand_vec(6, 17)
    a, _ = run(x_in.rms_norm(upcast="all"), {"x": x}, {"rms_norm_0": {"gamma": gamma}})
    b, _ = run(x_in.rms_norm(), {"x": x}, {"rms_norm_0": {"gamma": gamma}})
    np.testing.assert_allclose(a, b, rtol=1e-6)


# ---------------------------------------------------------------------------
# Dynamic shapes, dtypes


@pytest.mark.parametrize(
    "build",
    [
        lambda x: x.batch_norm(),
        lambda x: x.instance_norm(),
        lambda x: x.layer_norm(),
        lambda x: x.group_norm(2),
        lambda x: x.rms_norm(),
    ],
)
def test_dynamic_batch_shape_inference_and_batches_1_and_3(build) -> None:
    from axonc.shape_inference import declared_type

    model = build(ax.input("x", (None, 3, 4)))
    assert declared_type(model, model.output) == ax.TensorType((None, 3, 4))
    params = {
        s.path[0]: np.full(s.shape, 0.5 if s.path[0] == "var" else 0.7, np.float32)
        for s in specs(model, (None, 3, 4), "train")
    }
    name = model.node.op + "_0"
    for batch in (1, 3):
        for mode in ("inference", "train"):
            out, _ = run(model, {"x": rng_input((batch, 3, 4))}, {name: params}, mode)
            assert out.shape == (batch, 3, 4)
            assert out.dtype == np.float32


def test_f64_input_keeps_its_dtype() -> None:
    model = ax.input("x", (None, 4), dtype="f64").layer_norm()
    p = {"gamma": np.ones(4, np.float32), "beta": np.zeros(4, np.float32)}
    out, _ = run(model, {"x": rng_input((2, 4)).astype(np.float64)}, {"layer_norm_0": p})
    assert out.dtype == np.float64


# ---------------------------------------------------------------------------
# Errors


def test_group_norm_groups_must_divide_channels() -> None:
    with pytest.raises(ShapeError, match="6 channels cannot be split into 4"):
        ax.input("x", (None, 6)).group_norm(4)


def test_group_norm_dynamic_channels_checked_at_run_time() -> None:
    model = ax.input("x", (None, None)).group_norm(4)
    p = {"gamma": np.ones(6, np.float32), "beta": np.zeros(6, np.float32)}
    with pytest.raises(ShapeError, match="num_groups must divide"):
        run(model, {"x": rng_input((2, 6))}, {"group_norm_0": p})


@pytest.mark.parametrize("groups", [0, -1, 2.0, "2"])
def test_group_norm_bad_num_groups(groups) -> None:
    with pytest.raises(OptionError, match="num_groups"):
        ax.input("x", (None, 6)).group_norm(groups)


@pytest.mark.parametrize(
    ("build", "option"),
    [
        (lambda x: x.batch_norm(momentum=1.5), "momentum"),
        (lambda x: x.batch_norm(epsilon=-1.0), "epsilon"),
        (lambda x: x.layer_norm(channel_index=1.0), "channel_index"),
        (lambda x: x.rms_norm(upcast="half"), "upcast"),
        (lambda x: x.layer_norm(gamma_initializer="nope"), "gamma_initializer"),
        (lambda x: x.layer_norm(momentum=0.1), "momentum"),
        (lambda x: x.rms_norm(beta_initializer="zeros"), "beta_initializer"),
    ],
)
def test_bad_options_raise_option_error(build, option: str) -> None:
    with pytest.raises(OptionError, match=option):
        build(ax.input("x", (None, 6)))


@pytest.mark.parametrize(
    "build",
    [
        lambda x: x.batch_norm(channel_index=3),
        lambda x: x.layer_norm(channel_index=-4),
        lambda x: x.group_norm(1, channel_index=5),
        lambda x: x.rms_norm(channel_index=3),
    ],
)
def test_channel_index_out_of_range_is_a_shape_error(build) -> None:
    with pytest.raises(ShapeError, match=r"channel_index .* out of range"):
        build(ax.input("x", (None, 4, 6)))


def test_instance_norm_needs_rank_3() -> None:
    with pytest.raises(ShapeError, match="rank >= 3"):
        ax.input("x", (None, 6)).instance_norm()


def test_integer_input_is_a_shape_error() -> None:
    with pytest.raises(ShapeError, match="floating-point"):
        ax.input("x", (None, 6), dtype="s32").batch_norm()


def test_dynamic_channel_dim_cannot_create_params() -> None:
    model = ax.input("x", (None, None)).batch_norm()
    with pytest.raises(ShapeError, match="dynamic"):
        specs(model, (None, None))


def test_missing_or_misshaped_param_is_a_state_error() -> None:
    model = ax.input("x", (None, 4)).batch_norm()
    p = stat_params(4)
    del p["var"]
    with pytest.raises(StateError, match="var"):
        run(model, {"x": rng_input((2, 4))}, {"batch_norm_0": p})
    p = stat_params(4)
    p["gamma"] = np.ones(5, np.float32)
    with pytest.raises(StateError, match="gamma"):
        run(model, {"x": rng_input((2, 4))}, {"batch_norm_0": p})
