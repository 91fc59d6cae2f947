"""The model file (spec/format.md): exact round trips, the JSON Schema, hostile files.

Round trips cover every declared case of every registered op: the loaded graph
must have the same structure, options (types included), names, subgraphs and
tensors (bit for bit, same dtype), and must compute the same outputs bit for
bit in every mode. Hostile files must raise FormatError -- and nothing else --
with a message that names the problem.
"""

from __future__ import annotations

import copy
import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import safetensors.numpy

import axonc as ax
from axonc import serialize
from axonc.dtypes import TensorType, to_numpy_dtype
from axonc.errors import FormatError
from axonc.interpreter import run
from axonc.ir import Axon, Node, assign_names, topo_order
from axonc.model_state import ModelState
from axonc.parameters import collect_specs
from axonc.registry import OPS
from axonc.shape_inference import infer_types
from tests import op_cases

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "spec" / "axon-file.schema.json").read_text()
)

CASES = [
    pytest.param(op, case, id=f"{op.name}-{case.name}") for op in OPS.values() for case in op.cases
]


# ---------------------------------------------------------------------------
# helpers


def _random_state(model: Axon, templates: dict[str, TensorType], seed: int) -> ModelState:
    """Random values for every parameter and state leaf of the train-mode specs."""
    rng = np.random.default_rng(seed)
    names = assign_names(model)
    types = infer_types(model, templates, names)
    data: dict[str, Any] = {}
    kinds: dict[str, list] = {"parameter": [], "state": []}
    for path, spec in collect_specs(model, types, "train", names).items():
        dtype = to_numpy_dtype(spec.dtype)
        if dtype.kind == "f":
            value = rng.uniform(0.5, 1.5, size=spec.shape).astype(dtype)
        else:
            value = rng.integers(0, 3, size=spec.shape).astype(dtype)
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        kinds[spec.kind].append(path)
    return ModelState(data, parameters=kinds["parameter"], state=kinds["state"])


def _canon_value(v: Any, blocks: dict[int, int]) -> Any:
    """A comparable form of an option value that keeps every type distinction."""
    if isinstance(v, tuple):
        return ("tuple", [_canon_value(x, blocks) for x in v])
    if isinstance(v, list):
        return ("list", [_canon_value(x, blocks) for x in v])
    if isinstance(v, dict):
        return ("dict", sorted((k, _canon_value(x, blocks)) for k, x in v.items()))
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, np.generic):
        return ("scalar", v.dtype.str, v.tobytes())
    if isinstance(v, float):
        return ("float", repr(v))
    return (type(v).__name__, v)


def _canon(model: Axon, blocks: dict[int, int] | None = None) -> Any:
    """The graph as nested data with node ids replaced by graph-order positions.

    Block ids are identities too: they are numbered by first appearance.
    """
    blocks = {} if blocks is None else blocks
    order = topo_order(model.nodes, model.output)
    pos = {nid: i for i, nid in enumerate(order)}
    nodes = []
    for nid in order:
        node = model.nodes[nid]
        opts = dict(node.options)
        if node.op == "block":
            opts["block_id"] = blocks.setdefault(opts["block_id"], len(blocks))
        nodes.append(
            (
                node.op,
                [pos[i] for i in node.inputs],
                sorted((k, _canon_value(v, blocks)) for k, v in opts.items()),
                node.name,
                node.op_name,
                node.frozen,
                sorted((r, _canon(b, blocks)) for r, b in node.subgraphs.items()),
            )
        )
    return nodes, _canon_output(model.output, pos)


def _canon_output(out: Any, pos: dict[int, int]) -> Any:
    if isinstance(out, tuple):
        return ("tuple", [_canon_output(x, pos) for x in out])
    if isinstance(out, list):
        return ("list", [_canon_output(x, pos) for x in out])
    if isinstance(out, dict):
        return ("dict", sorted((k, _canon_output(x, pos)) for k, x in out.items()))
    return None if out is None else ("node", pos[out])


def _assert_same_tree(a: Any, b: Any) -> None:
    """Same container structure and bit-identical arrays of the same dtype."""
    assert type(a) is type(b)
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same_tree(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same_tree(a[k], b[k])
    else:
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()


def _assert_same_state(a: ModelState, b: ModelState) -> None:
    assert a.paths() == b.paths()
    for path in a.paths():
        _assert_same_tree(a.get(path), b.get(path))
    assert a.parameters == b.parameters
    assert a.state == b.state
    assert a.frozen == b.frozen
    assert dict(a.ties) == dict(b.ties)


def _document(data: bytes) -> dict[str, Any]:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    return json.loads(header["__metadata__"]["axonc.model"])


def _tensors(data: bytes) -> dict[str, np.ndarray]:
    return safetensors.numpy.load(data)


def _file(
    document: Any,
    tensors: dict[str, np.ndarray] | None = None,
    *,
    fmt: str = "axon-model",
    version: str = "1",
) -> bytes:
    """A model file with a hand-written document (a dict, or raw JSON text)."""
    text = document if isinstance(document, str) else json.dumps(document)
    meta = {"axonc.format": fmt, "axonc.version": version, "axonc.model": text}
    return safetensors.numpy.save(tensors or {}, metadata=meta)


def _raw(header: Any, data: bytes = b"") -> bytes:
    """A file with a hand-written safetensors header (a dict, or raw bytes)."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _node(nid, op, inputs=(), options=None, name=None, subgraphs=None):
    return {
        "id": nid,
        "op": op,
        "inputs": list(inputs),
        "options": options or {},
        "name": name,
        "op_name": None,
        "frozen": False,
        "subgraphs": subgraphs or {},
    }


def _input(nid=0, name="x", shape=(None, 3)):
    opts = {
        "name": name,
        "shape": {"tuple": list(shape)},
        "dtype": "f32",
        "optional": False,
    }
    return _node(nid, "input", (), opts, name=name)


def _doc(nodes, output, leaves=(), ties=()):
    return {
        "graph": {"nodes": nodes, "output": output},
        "state": {"leaves": list(leaves), "ties": list(ties)},
    }


def _load_error(data: bytes) -> str:
    with pytest.raises(FormatError) as info:
        serialize.from_bytes(data)
    return str(info.value)


def _dense_file() -> tuple[bytes, Axon, ModelState]:
    model = ax.input("x", (None, 3)).dense(2, activation="relu")
    state = _random_state(model, {"x": TensorType((1, 3))}, seed=0)
    return serialize.to_bytes(model, state), model, state


# ---------------------------------------------------------------------------
# round trips


def test_every_registered_op_with_cases_is_swept():
    swept = {op.name for op in OPS.values() if op.cases}
    assert {"dense", "relu", "softmax", "constant"} <= swept


@pytest.mark.parametrize(("op", "case"), CASES)
def test_round_trip_is_exact_for_every_case(op, case):
    model = op_cases.model(case)
    state = _random_state(model, op_cases.templates(case, 2), seed=7)
    data = serialize.to_bytes(model, state)
    loaded, loaded_state = serialize.from_bytes(data)

    assert _canon(loaded) == _canon(model)
    assert assign_names(loaded) == {
        new: assign_names(model)[old]
        for old, new in zip(
            topo_order(model.nodes, model.output), topo_order(loaded.nodes, loaded.output)
        )
    }
    assert isinstance(loaded_state, ModelState)
    _assert_same_state(state, loaded_state)
    jsonschema.validate(_document(data), SCHEMA)

    feeds = op_cases.feeds(case, batch=2, seed=3)
    for mode in case.modes:
        expected = run(model, feeds, state.data, mode)
        got = run(loaded, feeds, loaded_state.data, mode)
        _assert_same_tree(expected, got)


def test_loaded_nodes_get_fresh_ids():
    data, model, _ = _dense_file()
    first, _ = serialize.from_bytes(data)
    second, _ = serialize.from_bytes(data)
    assert not set(first.nodes) & set(model.nodes)
    assert not set(first.nodes) & set(second.nodes)
    assert _canon(first) == _canon(second) == _canon(model)


def test_loaded_blocks_get_fresh_block_ids_shared_by_their_calls():
    shared = ax.block(lambda h: h.dense(4).relu())
    x = ax.input("x", (None, 3))
    model = ax.add(shared(x), shared(x))
    loaded, _ = serialize.from_bytes(serialize.to_bytes(model, None))
    old = {n.options["block_id"] for n in model.nodes.values() if n.op == "block"}
    new = {n.options["block_id"] for n in loaded.nodes.values() if n.op == "block"}
    assert len(old) == len(new) == 1
    assert old != new
    assert sorted(assign_names(loaded).values()) == sorted(assign_names(model).values())


def test_nested_subgraphs_round_trip():
    inner_block = ax.block(lambda h: h.dense(2))
    outer_block = ax.block(lambda h: inner_block(h).relu())
    scoped = ax.namespace(ax.input("a", (None, 3)).dense(4).relu(), "outer")
    model = outer_block(scoped.layer_norm())
    state = _random_state(model, {"a": TensorType((1, 3))}, seed=1)
    loaded, loaded_state = serialize.from_bytes(serialize.to_bytes(model, state))
    assert _canon(loaded) == _canon(model)
    block_node = next(n for n in loaded.nodes.values() if n.op == "block")
    assert any(n.op == "block" for n in block_node.subgraphs["body"].nodes.values())
    assert any(n.op == "namespace" for n in loaded.nodes.values())
    x = {"a": np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)}
    _assert_same_tree(run(model, x, state.data), run(loaded, x, loaded_state.data))


def test_option_values_keep_their_types_and_exact_floats():
    x = ax.input("x", (None, 3))
    model = ax.container(
        {
            "a": x.leaky_relu(alpha=0.1),
            "b": x.leaky_relu(alpha=math.inf),
            "c": x.celu(alpha=1e-300),
            "d": [x.hard_sigmoid(beta=-0.0), ax.constant(np.array([1, 2], dtype=np.int64))],
            "e": (ax.constant(np.array([[True], [False]])), ax.constant(np.float16([1.5, -2]))),
        }
    )
    loaded, _ = serialize.from_bytes(serialize.to_bytes(model, None))
    assert _canon(loaded) == _canon(model)
    opts = [dict(n.options) for n in loaded.nodes.values()]
    alphas = sorted(o["alpha"] for o in opts if "alpha" in o and "beta" not in o)
    assert alphas == [1e-300, 0.1, math.inf]
    (beta,) = [o["beta"] for o in opts if "beta" in o]
    assert math.copysign(1.0, beta) == -1.0
    values = [o["value"] for o in opts if "value" in o]
    assert sorted(v.dtype.str for v in values) == sorted(["<i8", "|b1", "<f2"])
    (shape,) = [o["shape"] for o in opts if o.get("name") == "x"]
    assert shape == (None, 3) and isinstance(shape, tuple)


def test_every_kind_of_option_value_round_trips_exactly():
    values = [
        None,
        True,
        0,
        -(2**70),
        1.0,
        -0.0,
        5e-324,
        math.inf,
        -math.inf,
        "relu",
        (),
        [],
        {},
        (1, [2.5, {"a": (None, "b")}], ()),
        np.float32(1.1),
        np.float16(-2.5),
        np.int8(-128),
        np.uint64(2**64 - 1),
        np.bool_(True),
        np.arange(6, dtype=np.int16).reshape(2, 3),
    ]
    tensors: dict[str, np.ndarray] = {}
    encoded = json.loads(json.dumps(serialize._Encoder(tensors).value(values, "test", 0)))
    jsonschema.validate(encoded, {"$defs": SCHEMA["$defs"], "$ref": "#/$defs/value"})
    stored = safetensors.numpy.load(safetensors.numpy.save(tensors))
    decoded = serialize._Decoder(stored, set()).value(encoded, "test")
    assert _canon_value(decoded, {}) == _canon_value(values, {})


def test_model_state_kinds_frozen_masks_and_ties_round_trip():
    model = ax.input("x", (None, 3)).dense(3).batch_norm().dense(3, name="out")
    state = _random_state(model, {"x": TensorType((1, 3))}, seed=2)
    state = state.freeze(lambda p: p[0] == "dense_0").tie(
        ("out", "kernel"), ("dense_0", "kernel"), "transpose"
    )
    data = serialize.to_bytes(model, state)
    _, loaded = serialize.from_bytes(data)
    _assert_same_state(state, loaded)
    assert ("out", "kernel") in loaded.ties
    assert ("batch_norm_0", "mean") in loaded.state
    assert "out/kernel" not in _tensors(data)  # a tie stores no tensor of its own
    jsonschema.validate(_document(data), SCHEMA)


def test_nested_dict_state_is_saved_as_parameters():
    model = ax.input("x", (None, 3)).dense(2)
    kernel = np.arange(6, dtype=np.float32).reshape(3, 2)
    _, loaded = serialize.from_bytes(
        serialize.to_bytes(model, {"dense_0": {"kernel": kernel, "bias": np.zeros(2, "f4")}})
    )
    assert loaded.parameters == {("dense_0", "kernel"), ("dense_0", "bias")}
    assert loaded.state == frozenset()
    _assert_same_tree(loaded.get(("dense_0", "kernel")), kernel)


def test_non_contiguous_and_big_endian_tensors_are_stored_by_value():
    model = ax.input("x", (None, 3)).dense(2)
    kernel = np.arange(6, dtype=np.float32).reshape(2, 3).T  # a transposed view
    bias = np.array([1.25, -3.5], dtype=">f4")
    _, loaded = serialize.from_bytes(
        serialize.to_bytes(model, {"dense_0": {"kernel": kernel, "bias": bias}})
    )
    np.testing.assert_array_equal(loaded.get(("dense_0", "kernel")), kernel)
    np.testing.assert_array_equal(loaded.get(("dense_0", "bias")), [1.25, -3.5])
    assert loaded.get(("dense_0", "bias")).dtype == np.float32


def test_frozen_layers_and_tensor_names_are_recorded():
    model = ax.freeze(ax.input("x", (None, 3)).dense(2))
    state = _random_state(model, {"x": TensorType((1, 3))}, seed=0)
    data = serialize.to_bytes(model, state)
    loaded, _ = serialize.from_bytes(data)
    assert [n.frozen for n in loaded.nodes.values() if n.op == "dense"] == [True]
    assert set(_tensors(data)) == {"dense_0/kernel", "dense_0/bias"}


def test_save_and_load_a_path(tmp_path):
    data, model, state = _dense_file()
    path = tmp_path / "m.axon"
    serialize.save(model, state, path)
    assert path.read_bytes() == data
    loaded, loaded_state = serialize.load(str(path))
    assert _canon(loaded) == _canon(model)
    _assert_same_state(state, loaded_state)
    assert os.listdir(tmp_path) == ["m.axon"]


def test_a_failed_save_leaves_the_old_file_and_no_temporary(tmp_path):
    data, model, state = _dense_file()
    path = tmp_path / "m.axon"
    path.write_bytes(data)
    dense = model.nodes[model.node.inputs[0]]
    bad_dense = Node(dense.id, dense.op, dense.inputs, {**dense.options, "units": object()})
    unsaveable = Axon(model.output, {**model.nodes, dense.id: bad_dense})
    with pytest.raises(FormatError, match=r"'units'.*object cannot be stored"):
        serialize.save(unsaveable, state, path)
    assert path.read_bytes() == data
    assert os.listdir(tmp_path) == ["m.axon"]


def test_load_reports_a_short_file_by_path(tmp_path):
    path = tmp_path / "short.axon"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(FormatError, match=r"short\.axon.*truncated"):
        serialize.load(path)


def test_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schema_rejects_what_the_loader_rejects():
    data, _, _ = _dense_file()
    doc = _document(data)
    bare_list = copy.deepcopy(doc)
    bare_list["graph"]["nodes"][0]["options"]["shape"] = [None, 3]
    extra_key = copy.deepcopy(doc)
    extra_key["graph"]["nodes"][0]["code"] = "import os"
    for bad in (bare_list, extra_key):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA)
        with pytest.raises(FormatError):
            serialize.from_bytes(_file(bad, _tensors(data)))


# ---------------------------------------------------------------------------
# hostile files: the container


@pytest.mark.parametrize("cut", [0, 3, 7, 8, 20, -200, -9, -1])
def test_truncated_files_are_format_errors(cut):
    data, _, _ = _dense_file()
    message = _load_error(data[:cut] if cut else b"")
    assert "truncated" in message


@pytest.mark.parametrize("seed", range(8))
def test_random_garbage_is_a_format_error(seed):
    rng = np.random.default_rng(seed)
    garbage = rng.integers(0, 256, size=int(rng.integers(8, 4096)), dtype=np.uint8).tobytes()
    assert _load_error(garbage)


def test_random_header_lengths_over_small_garbage_are_format_errors():
    rng = np.random.default_rng(0)
    for n in (2, 50, 300):
        body = b"{" + rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
        assert _load_error(struct.pack("<Q", len(body)) + body)


def test_a_plain_safetensors_file_is_not_a_model_file():
    message = _load_error(safetensors.numpy.save({"w": np.zeros(2, "f4")}))
    assert "not an axonc model file" in message and "axon-model" in message


def test_a_wrong_format_name_is_rejected():
    data, _, _ = _dense_file()
    message = _load_error(_file(_document(data), _tensors(data), fmt="onnx"))
    assert "'onnx'" in message and "expected 'axon-model'" in message


def test_a_newer_version_is_rejected_naming_the_versions_read():
    data, _, _ = _dense_file()
    message = _load_error(_file(_document(data), _tensors(data), version="2"))
    assert "unsupported model file version '2'" in message and "1" in message


def test_a_missing_model_document_is_rejected():
    meta = {"axonc.format": "axon-model", "axonc.version": "1"}
    assert "axonc.model" in _load_error(safetensors.numpy.save({}, metadata=meta))


def test_a_huge_header_length_is_rejected_before_reading():
    message = _load_error(struct.pack("<Q", 2**60) + b"{}")
    assert "more than the limit" in message


def test_a_header_that_is_not_a_json_object_is_rejected():
    assert "expected a safetensors header" in _load_error(_raw(b"[1, 2]"))
    assert "not valid UTF-8" in _load_error(_raw(b'{"\xff\xfe": 1}'))
    assert "not valid JSON" in _load_error(_raw(b"{not json"))


def test_a_json_nesting_bomb_is_rejected():
    bomb = "[" * 100_000 + "]" * 100_000
    assert "nested too deeply" in _load_error(_file(bomb))
    deep = "[" * 300 + "]" * 300  # under the parser's limit, over the format's
    assert "nested too deeply" in _load_error(_file(deep))
    assert "nested too deeply" in _load_error(_raw(('{"a":' + bomb + "}").encode()))


def test_duplicate_json_keys_and_nan_literals_are_rejected():
    data, _, _ = _dense_file()
    text = json.dumps(_document(data))
    assert "duplicate key 'graph'" in _load_error(_file('{"graph": 1, ' + text[1:], _tensors(data)))
    nan_doc = text.replace('"units": 2', '"units": NaN')
    assert "NaN is not valid JSON" in _load_error(_file(nan_doc, _tensors(data)))


def test_a_tensor_whose_size_disagrees_with_its_bytes_is_rejected():
    header = {
        "__metadata__": {"axonc.format": "axon-model", "axonc.version": "1", "axonc.model": "{}"},
        "w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]},
    }
    message = _load_error(_raw(header, b"\0" * 8))
    assert "'w'" in message and "needs 12 bytes" in message and "span 8" in message


def test_a_tensor_with_a_huge_declared_shape_is_rejected_without_allocating():
    header = {
        "__metadata__": {"axonc.format": "axon-model", "axonc.version": "1", "axonc.model": "{}"},
        "w": {"dtype": "F64", "shape": [2**40, 2**40], "data_offsets": [0, 8]},
    }
    assert "needs" in _load_error(_raw(header, b"\0" * 8))


def test_tensor_entries_of_the_wrong_type_are_rejected():
    meta = {"axonc.format": "axon-model", "axonc.version": "1", "axonc.model": "{}"}
    cases = {
        "dtype 'BF16' is not supported": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]},
        "shape must be a list": {"dtype": "F32", "shape": "3", "data_offsets": [0, 12]},
        "data_offsets must be": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]},
        "missing key(s) 'shape'": {"dtype": "F32", "data_offsets": [0, 4]},
    }
    for expected, entry in cases.items():
        header = {"__metadata__": meta, "w": entry}
        assert expected in _load_error(_raw(header, b"\0" * 12))


def test_overlapping_or_gapped_tensor_data_is_rejected():
    meta = {"axonc.format": "axon-model", "axonc.version": "1", "axonc.model": "{}"}
    overlap = {
        "__metadata__": meta,
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
    }
    assert "contiguous" in _load_error(_raw(overlap, b"\0" * 8))
    padded = {"__metadata__": meta, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    assert "padded" in _load_error(_raw(padded, b"\0" * 12))


# ---------------------------------------------------------------------------
# hostile files: the model document


def test_a_cycle_is_rejected():
    doc = _doc([_input(), _node(1, "relu", [2]), _node(2, "relu", [1])], 2)
    assert "cycle" in _load_error(_file(doc))


def test_a_dangling_input_reference_is_rejected():
    doc = _doc([_input(), _node(1, "relu", [7])], 1)
    message = _load_error(_file(doc))
    assert "refers to node 7" in message and "not in the graph" in message
    doc = _doc([_input()], 9)
    assert "output: refers to node 9" in _load_error(_file(doc))


def test_all_unknown_ops_are_named_in_one_error():
    inner = {"nodes": [_node(0, "zorp")], "output": 0}
    doc = _doc(
        [_input(), _node(1, "frobnicate", [0]), _node(2, "relu", [1], subgraphs={"body": inner})],
        2,
    )
    message = _load_error(_file(doc))
    assert "2 unknown op(s)" in message
    assert "'frobnicate'" in message and "'zorp'" in message


def test_a_bad_option_value_is_rejected_naming_the_option():
    doc = _doc([_input(), _node(1, "leaky_relu", [0], {"alpha": "steep"})], 1)
    message = _load_error(_file(doc))
    assert "'alpha'" in message and "expected a number" in message
    doc = _doc([_input(), _node(1, "relu", [0], {"alpha": 1.0})], 1)
    assert "unknown option(s) alpha" in _load_error(_file(doc))


def test_a_non_finite_option_where_an_integer_is_expected_is_rejected():
    doc = _doc([_input(), _node(1, "softmax", [0], {"axis": {"float": "inf"}})], 1)
    message = _load_error(_file(doc))
    assert "'axis'" in message and "expected an integer, got inf" in message
    doc = _doc([_input(), _node(1, "softmax", [0], {"axis": {"float": "huge"}})], 1)
    assert "expected 'inf' or '-inf'" in _load_error(_file(doc))


def test_nan_is_never_an_option_value():
    doc = _doc([_input(), _node(1, "leaky_relu", [0], {"alpha": {"float": "nan"}})], 1)
    assert "NaN is not a valid option value" in _load_error(_file(doc))
    model = ax.input("x", (None, 3)).leaky_relu(alpha=math.nan)
    with pytest.raises(FormatError, match=r"'alpha'.*NaN"):
        serialize.to_bytes(model, None)


def test_bad_shapes_are_rejected_by_shape_inference():
    doc = _doc([_input(), _node(1, "softmax", [0], {"axis": 5})], 1)
    assert "axis 5 is out of range" in _load_error(_file(doc))
    bad_input = _input(shape=(None, -3))
    assert "non-negative" in _load_error(_file(_doc([bad_input], 0)))


def test_a_wrong_number_of_inputs_is_rejected():
    doc = _doc([_input(), _node(1, "relu", [0, 0])], 1)
    assert "expected 1 input(s), got 2" in _load_error(_file(doc))


def test_layers_sharing_a_name_load_as_they_do_in_axon():
    doc = _doc(
        [
            _input(),
            _node(1, "relu", [0], name="same"),
            _node(2, "tanh", [1], name="same"),
        ],
        2,
    )
    model, _ = serialize.from_bytes(_file(doc))
    assert sorted(assign_names(model).values()) == ["same", "same", "x"]


def test_duplicate_node_ids_and_unreachable_nodes_are_rejected():
    doc = _doc([_input(), _node(0, "relu", [0])], 0)
    assert "node id 0 is used by two nodes" in _load_error(_file(doc))
    doc = _doc([_input(), _node(1, "relu", [0]), _node(2, "tanh", [0])], 1)
    assert "not reachable from the output" in _load_error(_file(doc))


def test_wrong_json_types_are_rejected_naming_the_field():
    cases = {
        "expected an array of node ids": ("inputs", "0"),
        "expected a non-empty string or null": ("name", 5),
        "expected true or false": ("frozen", "no"),
        "expected an object of options": ("options", []),
        "expected an object of subgraphs": ("subgraphs", None),
    }
    for expected, (key, value) in cases.items():
        node = _node(1, "relu", [0])
        node[key] = value
        message = _load_error(_file(_doc([_input(), node], 1)))
        assert expected in message and key in message
    assert "expected a graph object" in _load_error(_file({"graph": [], "state": {}}))
    assert "must be a JSON object" in _load_error(_file("[]"))
    assert "missing key(s) 'state'" in _load_error(_file({"graph": {}}))


def test_tagged_values_must_be_well_formed():
    def with_shape(shape):
        node = _input()
        node["options"]["shape"] = shape
        return _load_error(_file(_doc([node], 0)))

    assert "bare JSON arrays are not values" in with_shape([None, 3])
    assert "expected one of" in with_shape({"tuple": [1], "list": [2]})
    assert "expected an array" in with_shape({"tuple": 3})
    bad_scalar = {"scalar": {"dtype": "s8", "value": 1000}}
    assert "is not a s8 value" in with_shape({"tuple": [bad_scalar]})


def test_a_missing_tensor_is_rejected():
    data, _, _ = _dense_file()
    tensors = _tensors(data)
    del tensors["dense_0/kernel"]
    message = _load_error(_file(_document(data), tensors))
    assert "no tensor named 'dense_0/kernel'" in message and "missing tensor" in message
    const = _doc([_node(0, "constant", (), {"value": {"tensor": "const/0"}})], 0)
    assert "no tensor named 'const/0'" in _load_error(_file(const))


def test_unreferenced_and_doubly_referenced_tensors_are_rejected():
    data, _, _ = _dense_file()
    extra = {**_tensors(data), "stowaway": np.zeros(3, "f4")}
    assert "'stowaway'" in _load_error(_file(_document(data), extra))
    doc = _document(data)
    doc["state"]["leaves"][1]["tensor"] = doc["state"]["leaves"][0]["tensor"]
    assert "referenced twice" in _load_error(_file(doc, _tensors(data)))


def test_bad_state_manifests_are_rejected():
    data, _, _ = _dense_file()
    tensors = _tensors(data)

    def with_leaf(**changes):
        doc = _document(data)
        doc["state"]["leaves"][0].update(changes)
        return _load_error(_file(doc, tensors))

    assert "expected 'parameter', 'state'" in with_leaf(kind="weights")
    assert "non-empty array of non-empty strings" in with_leaf(path=[])
    assert "expected true or false" in with_leaf(frozen=1)
    doc = _document(data)
    doc["state"]["ties"] = [
        {
            "target": ["dense_0", "bias"],
            "source": ["dense_0", "bias"],
            "transform": "identity",
            "kind": None,
        }
    ]
    assert "to itself" in _load_error(_file(doc, tensors))
    doc["state"]["ties"][0].update(target=["x", "w"], transform="rot13")
    assert "unknown tie transform 'rot13'" in _load_error(_file(doc, tensors))


def test_subgraph_errors_name_where_they_are():
    body = {"nodes": [_node(0, "relu", [3])], "output": 0}
    doc = _doc([_input(), _node(1, "namespace", [0], name="ns", subgraphs={"body": body})], 1)
    message = _load_error(_file(doc))
    assert "subgraphs['body']" in message and "refers to node 3" in message


def _locations(tree: Any, path: tuple = ()):
    yield path
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _locations(v, (*path, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _locations(v, (*path, i))


def _replaced(tree: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    out = copy.deepcopy(tree)
    node = out
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return out


def test_every_field_replaced_by_every_json_type_gives_a_format_error_or_a_model():
    """No KeyError/TypeError/IndexError leaks, wherever the wrong JSON type appears."""
    x = ax.input("x", (None, 3))
    shared = ax.block(lambda h: h.dense(3).relu())
    y = ax.add(shared(x), shared(x))
    model = ax.container((y.softmax(), {"k": ax.constant(np.ones(2, "f4"))}))
    state = _random_state(model, {"x": TensorType((1, 3))}, seed=0)
    data = serialize.to_bytes(model, state)
    doc, tensors = _document(data), _tensors(data)
    replacements = [None, True, -1, 10**6, 1.5, "x", [], {}, [0], {"tuple": [0]}]
    outcomes = {"ok": 0, "error": 0}
    for path in _locations(doc):
        for value in replacements:
            try:
                serialize.from_bytes(_file(_replaced(doc, path, value), tensors))
                outcomes["ok"] += 1
            except FormatError as exc:
                assert str(exc)
                outcomes["error"] += 1
    assert outcomes["error"] > 500


def test_flipped_header_bytes_give_format_errors_or_a_model():
    data, _, _ = _dense_file()
    (n,) = struct.unpack("<Q", data[:8])
    rng = np.random.default_rng(0)
    for pos in rng.integers(8, 8 + n, size=300):
        mutated = bytearray(data)
        mutated[pos] = int(rng.integers(0, 256))
        try:
            serialize.from_bytes(bytes(mutated))
        except FormatError as exc:
            assert str(exc)
