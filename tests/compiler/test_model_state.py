"""ModelState: Axon.ModelState's API on nested dicts of numpy arrays."""

from __future__ import annotations

import numpy as np
import pytest

from axonc.errors import StateError
from axonc.model_state import ModelState


def _arr(*shape, start=0.0):
    size = int(np.prod(shape)) if shape else 1
    return (np.arange(size, dtype=np.float32) + start).reshape(shape)


def _data():
    """Three dense layers, a batch norm (2 state leaves) and an LSTM gate map."""
    return {
        "dense_0": {"kernel": _arr(2, 3), "bias": _arr(3)},
        "dense_1": {"kernel": _arr(3, 3, start=10), "bias": _arr(3, start=20)},
        "dense_3": {"kernel": _arr(3, 1, start=30), "bias": _arr(1)},
        "batch_norm_0": {
            "gamma": _arr(3),
            "beta": _arr(3),
            "mean": _arr(3, start=5),
            "var": _arr(3, start=1),
        },
        "lstm_0": {"input_kernel": {"wii": _arr(3, 2), "wif": _arr(3, 2)}},
    }


def _state():
    return ModelState(_data(), state={"batch_norm_0": ["mean", "var"]})


def _paths_of(tree, prefix=()):
    out = set()
    for k, v in tree.items():
        if isinstance(v, dict):
            out |= _paths_of(v, (*prefix, k))
        else:
            out.add((*prefix, k))
    return out


ALL = _paths_of(_data())
STATE = {("batch_norm_0", "mean"), ("batch_norm_0", "var")}


class TestConstruction:
    def test_new_makes_every_leaf_a_parameter(self):
        s = ModelState.new(_data())
        assert s.parameters == ALL
        assert s.state == frozenset()
        assert s.frozen == frozenset()
        assert _paths_of(s.trainable_parameters()) == ALL

    def test_new_passes_a_model_state_through(self):
        s = _state()
        assert ModelState.new(s) is s

    def test_empty(self):
        s = ModelState.empty()
        assert s.data == {}
        assert s.trainable_parameters() == {}
        assert s.flatten() == {}

    def test_state_in_axon_nested_form_or_as_paths(self):
        nested = ModelState(_data(), state={"batch_norm_0": ["mean", "var"]})
        tuples = ModelState(_data(), state=[("batch_norm_0", "mean"), ["batch_norm_0", "var"]])
        strings = ModelState(_data(), state=["batch_norm_0/mean", "batch_norm_0/var"])
        for s in (nested, tuples, strings):
            assert s.state == STATE
            assert s.parameters == ALL - STATE

    def test_explicit_parameters_and_state(self):
        s = ModelState(_data(), parameters=ALL - STATE, state=STATE)
        assert s.parameters == ALL - STATE and s.state == STATE

    def test_deep_paths_in_nested_form(self):
        s = ModelState(_data(), state={"lstm_0": {"input_kernel": ["wii"]}})
        assert s.state == {("lstm_0", "input_kernel", "wii")}

    def test_leaf_in_neither_is_an_error(self):
        with pytest.raises(StateError, match="'batch_norm_0/var' is neither a parameter nor state"):
            ModelState(_data(), parameters=ALL - STATE, state={("batch_norm_0", "mean")})

    def test_leaf_in_both_is_an_error(self):
        with pytest.raises(StateError, match="'batch_norm_0/mean' is listed as both"):
            ModelState(_data(), parameters=ALL, state={("batch_norm_0", "mean")})

    def test_unknown_state_path_is_an_error(self):
        with pytest.raises(StateError, match="state path 'batch_norm_9/mean' is not in"):
            ModelState(_data(), state={"batch_norm_9": ["mean"]})

    def test_unknown_frozen_path_is_an_error(self):
        with pytest.raises(StateError, match="frozen path 'dense_0/gamma'"):
            ModelState(_data(), frozen=[("dense_0", "gamma")])

    def test_non_numeric_leaf_is_an_error(self):
        with pytest.raises(StateError, match="'kernel' must be a numeric tensor"):
            ModelState({"dense_0": {"kernel": "weights"}})

    def test_non_string_key_is_an_error(self):
        with pytest.raises(StateError, match="non-empty strings"):
            ModelState({"dense_0": {0: _arr(2)}})

    def test_arrays_are_not_copied(self):
        data = _data()
        s = ModelState.new(data)
        assert s.data["dense_0"]["kernel"] is data["dense_0"]["kernel"]
        assert s.get(("lstm_0", "input_kernel", "wii")) is data["lstm_0"]["input_kernel"]["wii"]

    def test_from_nested_converts_array_likes(self):
        s = ModelState.from_nested(
            {"dense_0": {"kernel": [[1, 2], [3, 4]], "bias": [0.5, 0.5]}, "bn": {"mean": 0.0}},
            state={"bn": ["mean"]},
            dtype="float32",
        )
        kernel = s.get("dense_0/kernel")
        assert kernel.dtype == np.float32 and kernel.shape == (2, 2)
        np.testing.assert_array_equal(kernel, [[1, 2], [3, 4]])
        assert s.state == {("bn", "mean")}
        assert s.get(("bn", "mean")).shape == ()


class TestFreeze:
    def test_default_mask_freezes_everything(self):
        s = _state().freeze()
        assert s.trainable_parameters() == {}
        assert s.trainable_state() == {}
        assert _paths_of(s.frozen_parameters()) == ALL - STATE
        assert _paths_of(s.frozen_state()) == STATE

    def test_mask_by_path_as_in_axon_docs(self):
        def mask(path):
            assert isinstance(path, list) and all(isinstance(p, str) for p in path)
            layer = path[0]
            return layer.startswith("dense_") and path[1] == "kernel" and int(layer[6:]) < 3

        s = _state().freeze(mask)
        assert s.frozen == {("dense_0", "kernel"), ("dense_1", "kernel")}
        frozen = s.frozen_parameters()
        assert set(frozen) == {"dense_0", "dense_1"}
        assert set(frozen["dense_0"]) == {"kernel"}
        trainable = s.trainable_parameters()
        assert set(trainable["dense_0"]) == {"bias"}
        assert set(trainable["dense_3"]) == {"kernel", "bias"}

    def test_mask_sees_deep_paths(self):
        seen = []
        _state().freeze(lambda p: seen.append(p) or False)
        assert ["lstm_0", "input_kernel", "wii"] in seen
        assert len(seen) == len(ALL)

    def test_freezing_state_splits_state(self):
        s = _state().freeze(lambda p: p == ["batch_norm_0", "mean"])
        frozen_state = s.frozen_state()
        assert _paths_of(frozen_state) == {("batch_norm_0", "mean")}
        np.testing.assert_array_equal(frozen_state["batch_norm_0"]["mean"], _arr(3, start=5))
        assert set(s.trainable_state()["batch_norm_0"]) == {"var"}
        assert s.frozen_parameters() == {}

    def test_freezes_accumulate(self):
        s = _state().freeze(lambda p: p[0] == "dense_0").freeze(lambda p: p[0] == "dense_1")
        assert {p[0] for p in s.frozen} == {"dense_0", "dense_1"}

    def test_unfreeze_by_mask(self):
        s = _state().freeze().unfreeze(lambda p: p[0] == "lstm_0")
        trainable = s.trainable_parameters()
        assert set(trainable) == {"lstm_0"}
        assert set(trainable["lstm_0"]["input_kernel"]) == {"wii", "wif"}

    def test_unfreeze_default_unfreezes_everything(self):
        s = _state().freeze().unfreeze()
        assert s.frozen == frozenset()
        assert _paths_of(s.trainable_parameters()) == ALL - STATE

    def test_frozen_values_are_the_data(self):
        s = _state().freeze()
        assert s.frozen_parameters()["dense_1"]["bias"] is s.get("dense_1/bias")

    def test_mask_must_be_callable(self):
        with pytest.raises(StateError, match="mask must be a function"):
            _state().freeze(["dense_0"])


class TestMerge:
    def test_default_takes_the_right_hand_leaf(self):
        new_kernel = np.full((2, 3), 7.0, np.float32)
        merged = _state().merge(ModelState.new({"dense_0": {"kernel": new_kernel}}))
        assert merged.get("dense_0/kernel") is new_kernel
        np.testing.assert_array_equal(merged.get("dense_0/bias"), _arr(3))

    def test_keeps_left_structure_and_metadata(self):
        lhs = _state().freeze(lambda p: p[0] == "dense_3")
        rhs = ModelState.new(
            {"extra_0": {"kernel": _arr(2)}, "dense_0": {"bias": _arr(3, start=1)}}
        )
        merged = lhs.merge(rhs)
        assert _paths_of(merged.data) == ALL
        assert merged.state == lhs.state and merged.frozen == lhs.frozen
        np.testing.assert_array_equal(merged.get("dense_0/bias"), _arr(3, start=1))

    def test_fun_gets_path_and_both_leaves(self):
        calls = []

        def average(path, lhs, rhs):
            calls.append(path)
            return (lhs + rhs) / 2

        rhs = {"dense_1": {"kernel": np.zeros((3, 3), np.float32)}, "lstm_0": _data()["lstm_0"]}
        merged = _state().merge(rhs, average)
        assert sorted(calls) == [
            ["dense_1", "kernel"],
            ["lstm_0", "input_kernel", "wif"],
            ["lstm_0", "input_kernel", "wii"],
        ]
        np.testing.assert_array_equal(merged.get("dense_1/kernel"), _arr(3, 3, start=10) / 2)
        np.testing.assert_array_equal(merged.get("dense_1/bias"), _arr(3, start=20))

    def test_tensor_against_map_is_an_error(self):
        with pytest.raises(StateError, match="cannot merge at 'dense_0/kernel'"):
            _state().merge({"dense_0": {"kernel": {"sub": _arr(2)}}})

    def test_left_ties_survive(self):
        s = ModelState.new({"a": {"k": _arr(2, 3)}, "b": {"k": _arr(3, 2)}}).tie(
            "b/k", "a/k", "transpose"
        )
        merged = s.merge({"a": {"k": _arr(2, 3, start=1)}})
        np.testing.assert_array_equal(merged.get("b/k"), _arr(2, 3, start=1).T)


def _tied():
    data = {
        "embedding_0": {"kernel": _arr(5, 3)},
        "dense_0": {"kernel": np.zeros((3, 5), np.float32), "bias": _arr(5)},
    }
    return ModelState.new(data).tie(["dense_0", "kernel"], ["embedding_0", "kernel"], "transpose")


class TestTie:
    def test_transpose_is_visible_in_data_get_and_flatten(self):
        s = _tied()
        embedding = _arr(5, 3)
        np.testing.assert_array_equal(s.data["dense_0"]["kernel"], embedding.T)
        np.testing.assert_array_equal(s.get(("dense_0", "kernel")), embedding.T)
        flat = s.flatten()
        assert list(flat) == ["dense_0/bias", "dense_0/kernel", "embedding_0/kernel"]
        np.testing.assert_array_equal(flat["dense_0/kernel"], embedding.T)

    def test_destination_shares_the_source_memory(self):
        s = _tied()
        assert np.shares_memory(s.get("dense_0/kernel"), s.get("embedding_0/kernel"))

    def test_identity_is_the_default_transform(self):
        s = ModelState.new({"a": {"k": _arr(2, 2)}, "b": {"k": _arr(2, 2, start=9)}}).tie(
            "b/k", "a/k"
        )
        assert s.ties == {("b", "k"): (("a", "k"), "identity")}
        np.testing.assert_array_equal(s.get("b/k"), _arr(2, 2))

    def test_ties_are_stored_as_data(self):
        assert dict(_tied().ties) == {
            ("dense_0", "kernel"): (("embedding_0", "kernel"), "transpose")
        }

    def test_tied_destination_is_neither_trainable_nor_frozen(self):
        s = _tied()
        assert set(s.trainable_parameters()["dense_0"]) == {"bias"}
        frozen = s.freeze()
        assert set(frozen.frozen_parameters()["dense_0"]) == {"bias"}
        assert ("dense_0", "kernel") not in frozen.frozen

    def test_tying_a_frozen_destination_drops_it_from_frozen(self):
        s = (
            ModelState.new(_tied().data)
            .freeze()
            .tie("dense_0/kernel", "embedding_0/kernel", "transpose")
        )
        assert ("dense_0", "kernel") not in s.frozen
        assert ("embedding_0", "kernel") in s.frozen

    def test_updating_the_source_moves_the_destination(self):
        new = np.ones((5, 3), np.float32)
        s = _tied().update({"embedding_0": {"kernel": new}})
        np.testing.assert_array_equal(s.get("dense_0/kernel"), new.T)

    def test_updating_the_destination_is_an_error(self):
        with pytest.raises(StateError, match="'dense_0/kernel' is tied to 'embedding_0/kernel'"):
            _tied().update({"dense_0": {"kernel": np.ones((3, 5), np.float32)}})

    def test_missing_source_is_an_error_naming_the_path(self):
        s = ModelState.new({"dense_0": {"kernel": _arr(2, 2)}})
        with pytest.raises(StateError, match="'embedding_0/kernel'"):
            s.tie("dense_0/kernel", "embedding_0/kernel")

    def test_source_that_is_a_map_is_an_error(self):
        with pytest.raises(StateError, match="map of tensors"):
            _state().tie("dense_0/kernel", "lstm_0/input_kernel")

    def test_shape_mismatch_is_an_error(self):
        s = ModelState.new({"a": {"k": _arr(2, 3)}, "b": {"k": _arr(2, 3)}})
        with pytest.raises(StateError, match=r"shape \(2, 3\).*'transpose'.*\(3, 2\)"):
            s.tie("b/k", "a/k", "transpose")

    def test_unknown_transform_is_an_error(self):
        with pytest.raises(StateError, match=r"unknown tie transform 'negate'.*transpose"):
            _state().tie("dense_1/bias", "dense_0/bias", "negate")

    def test_tie_to_itself_is_an_error(self):
        with pytest.raises(StateError, match="to itself"):
            _state().tie("dense_0/bias", "dense_0/bias")

    def test_chained_ties_are_errors(self):
        s = _state().tie("dense_1/bias", "dense_0/bias")
        with pytest.raises(StateError, match="itself tied to 'dense_0/bias'"):
            s.tie("batch_norm_0/beta", "dense_1/bias")
        with pytest.raises(StateError, match="'dense_1/bias' is already tied to it"):
            s.tie("dense_0/bias", "batch_norm_0/gamma")

    def test_destination_may_be_new(self):
        s = ModelState.new({"a": {"k": _arr(2, 3)}}).tie("head/k", "a/k", "transpose")
        np.testing.assert_array_equal(s.data["head"]["k"], _arr(2, 3).T)

    def test_flatten_without_tied_and_unflatten_round_trip(self):
        s = _tied()
        stored = s.flatten(include_tied=False)
        assert list(stored) == ["dense_0/bias", "embedding_0/kernel"]
        back = ModelState.unflatten(stored, parameters=s.parameters, ties=s.ties)
        np.testing.assert_array_equal(back.get("dense_0/kernel"), _arr(5, 3).T)
        assert back.ties == s.ties
        # the resolved destination in a full flatten is ignored on the way back
        again = ModelState.unflatten(s.flatten(), parameters=s.parameters, ties=s.ties)
        assert set(again.flatten()) == set(s.flatten())

    def test_repr_counts_stored_tensors_once(self):
        text = repr(_tied())
        # embedding 15 floats + bias 5 floats, 4 bytes each; the tied kernel has no storage
        assert "Parameters: 20 (80 B)" in text
        assert "Tied: 1" in text


class TestUpdate:
    def test_replaces_given_parameters(self):
        new_bias = np.full(3, 9.0, np.float32)
        s = _state().update({"dense_1": {"bias": new_bias}})
        assert s.get("dense_1/bias") is new_bias
        np.testing.assert_array_equal(s.get("dense_1/kernel"), _arr(3, 3, start=10))

    def test_updates_deep_leaves(self):
        wii = np.ones((3, 2), np.float32)
        s = _state().update({"lstm_0": {"input_kernel": {"wii": wii}}})
        assert s.get("lstm_0/input_kernel/wii") is wii
        np.testing.assert_array_equal(s.get("lstm_0/input_kernel/wif"), _arr(3, 2))

    def test_updates_trainable_state_but_not_frozen_state(self):
        base = _state().freeze(lambda p: p == ["batch_norm_0", "var"])
        new_mean, new_var = np.zeros(3, np.float32), np.zeros(3, np.float32)
        s = base.update({}, {"batch_norm_0": {"mean": new_mean, "var": new_var}})
        assert s.get("batch_norm_0/mean") is new_mean
        np.testing.assert_array_equal(s.get("batch_norm_0/var"), _arr(3, start=1))

    def test_writes_frozen_parameters_as_axon_does(self):
        s = _state().freeze().update({"dense_0": {"bias": np.zeros(3, np.float32)}})
        np.testing.assert_array_equal(s.get("dense_0/bias"), np.zeros(3))

    def test_unknown_path_is_an_error(self):
        with pytest.raises(StateError, match="no parameter or state at path 'dense_7/bias'"):
            _state().update({"dense_7": {"bias": np.zeros(3)}})
        with pytest.raises(StateError, match="'dense_0/gamma'"):
            _state().update({}, {"dense_0": {"gamma": np.zeros(3)}})

    def test_replacing_a_map_by_a_tensor_is_an_error(self):
        with pytest.raises(StateError, match="'lstm_0/input_kernel' is a map"):
            _state().update({"lstm_0": {"input_kernel": np.zeros(3)}})

    def test_keeps_metadata(self):
        base = _state().freeze(lambda p: p[0] == "dense_0")
        s = base.update({"dense_1": {"bias": np.zeros(3, np.float32)}})
        assert (s.parameters, s.state, s.frozen) == (base.parameters, base.state, base.frozen)


class TestImmutability:
    def test_methods_leave_the_original_unchanged(self):
        s = _state()
        before = {k: v.copy() for k, v in s.flatten().items()}
        s.freeze()
        s.update({"dense_0": {"bias": np.zeros(3, np.float32)}})
        s.merge({"dense_1": {"kernel": np.zeros((3, 3), np.float32)}})
        s.tie("dense_1/bias", "dense_0/bias")
        assert s.frozen == frozenset() and s.ties == {}
        after = s.flatten()
        assert list(after) == list(before)
        for key, value in before.items():
            np.testing.assert_array_equal(after[key], value)

    def test_attributes_cannot_be_set(self):
        s = _state()
        with pytest.raises(AttributeError, match="immutable"):
            s.frozen = frozenset()

    def test_data_is_a_fresh_dict(self):
        s = _state()
        s.data["dense_0"]["kernel"] = None
        s.data.clear()
        assert s.get("dense_0/kernel").shape == (2, 3)

    def test_ties_are_read_only(self):
        with pytest.raises(TypeError):
            _tied().ties[("x",)] = (("y",), "identity")

    def test_input_dict_changes_do_not_leak_in(self):
        data = _data()
        s = ModelState.new(data)
        data["dense_0"]["kernel"] = np.zeros(1)
        del data["dense_1"]
        assert s.get("dense_0/kernel").shape == (2, 3)
        assert "dense_1" in s.data

    def test_unchanged_subtrees_share_arrays_after_update(self):
        s = _state()
        t = s.update({"dense_0": {"bias": np.zeros(3, np.float32)}})
        assert t.get("dense_1/kernel") is s.get("dense_1/kernel")


class TestFlatten:
    def test_keys_are_slash_joined_paths_in_sorted_order(self):
        flat = _state().flatten()
        assert list(flat) == sorted("/".join(p) for p in ALL)
        assert flat["lstm_0/input_kernel/wii"].shape == (3, 2)

    def test_round_trip_with_metadata(self):
        s = _state().freeze(lambda p: p[0] == "dense_1")
        back = ModelState.unflatten(s.flatten(), state=s.state, frozen=s.frozen)
        assert _paths_of(back.data) == ALL
        assert (back.parameters, back.state, back.frozen) == (s.parameters, s.state, s.frozen)
        for key, value in s.flatten().items():
            assert back.flatten()[key] is value

    def test_blocks_nest_deeper(self):
        data = {"block_0": {"dense_0": {"kernel": _arr(2, 2)}}}
        flat = ModelState.new(data).flatten()
        assert list(flat) == ["block_0/dense_0/kernel"]
        assert (
            ModelState.unflatten(flat).data["block_0"]["dense_0"]["kernel"]
            is flat["block_0/dense_0/kernel"]
        )

    def test_key_containing_separator_cannot_be_flattened(self):
        with pytest.raises(StateError, match="key 'a/b' contains '/'"):
            ModelState.new({"a/b": {"kernel": _arr(2)}}).flatten()

    def test_unflatten_conflicting_paths_is_an_error(self):
        with pytest.raises(StateError, match="'dense_0/kernel'"):
            ModelState.unflatten({"dense_0/kernel": _arr(2), "dense_0/kernel/x": _arr(2)})


class TestRepr:
    def test_counts_and_bytes_like_axon_inspect(self):
        s = ModelState(
            {
                "dense_0": {
                    "kernel": np.zeros((3, 4), np.float32),
                    "bias": np.zeros(4, np.float32),
                },
                "batch_norm_0": {"mean": np.zeros(4, np.float64), "var": np.zeros(4, np.float64)},
            },
            state={"batch_norm_0": ["mean", "var"]},
        )
        # 12 + 4 floats of 4 bytes; 8 doubles of 8 bytes
        assert repr(s) == (
            "ModelState<\n"
            "  Parameters: 24 (128 B)\n"
            "  Trainable Parameters: 16 (64 B)\n"
            "  Trainable State: 8 (64 B)\n"
            ">"
        )

    def test_frozen_parameters_leave_the_trainable_count(self):
        s = ModelState.new({"d": {"k": np.zeros((10, 10), np.float32)}}).freeze()
        assert "Parameters: 100 (400 B)" in repr(s)
        assert "Trainable Parameters: 0 (0 B)" in repr(s)

    @pytest.mark.parametrize(
        ("n_floats", "text"),
        [(249, "996 B"), (250, "1.00 KB"), (375, "1.50 KB"), (500_000, "2.00 MB")],
    )
    def test_human_sizes(self, n_floats, text):
        s = ModelState.new({"d": {"k": np.zeros(n_floats, np.float32)}})
        assert f"Parameters: {n_floats} ({text})" in repr(s)
