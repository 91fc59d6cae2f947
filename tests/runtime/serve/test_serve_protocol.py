"""The V2 body codec on its own: JSON and binary tensors, every malformed shape of a request."""

from __future__ import annotations

import json

import numpy as np
import pytest

from axonrt.serve.errors import ProtocolError
from axonrt.serve.protocol import DATATYPES, Limits, encode_response, parse_infer

LIMITS = Limits(max_tensor_bytes=1 << 20)


def _binary(
    tensors: list[tuple[str, np.ndarray]], datatypes: list[str], **doc
) -> tuple[bytes, str]:
    header = {
        "inputs": [
            {
                "name": n,
                "datatype": dt,
                "shape": list(a.shape),
                "parameters": {"binary_data_size": a.nbytes},
            }
            for (n, a), dt in zip(tensors, datatypes)
        ],
        **doc,
    }
    head = json.dumps(header).encode()
    return head + b"".join(a.tobytes() for _, a in tensors), str(len(head))


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_every_datatype_decodes_from_json_and_binary_alike(datatype):
    dtype = DATATYPES[datatype]
    values = [True, False, True, True, False, True] if dtype.kind == "b" else [0, 1, 2, 3, 4, 5]
    expected = np.array(values, dtype=dtype).reshape(2, 3)
    doc = {"inputs": [{"name": "t", "datatype": datatype, "shape": [2, 3], "data": values}]}
    from_json = parse_infer(json.dumps(doc).encode(), None, LIMITS).inputs["t"]
    body, length = _binary([("t", expected)], [datatype])
    from_binary = parse_infer(body, length, LIMITS).inputs["t"]
    for got in (from_json, from_binary):
        assert got.dtype == dtype and got.shape == (2, 3)
        np.testing.assert_array_equal(got, expected)


def test_nested_json_data_is_accepted_row_major():
    doc = {
        "inputs": [{"name": "t", "datatype": "INT32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]
    }
    got = parse_infer(json.dumps(doc).encode(), None, LIMITS).inputs["t"]
    assert got.tolist() == [[1, 2], [3, 4]]


def test_id_parameters_and_requested_outputs_are_kept():
    doc = {
        "id": "r1",
        "parameters": {"binary_data_output": True, "custom": 3},
        "inputs": [{"name": "t", "datatype": "FP32", "shape": [1], "data": [1.5]}],
        "outputs": [{"name": "a", "parameters": {"binary_data": False}}, {"name": "b"}],
    }
    req = parse_infer(json.dumps(doc).encode(), None, LIMITS)
    assert req.request_id == "r1" and req.parameters["custom"] == 3 and req.binary_default
    assert req.outputs == [("a", False), ("b", None)]


def _one(**tensor) -> bytes:
    base = {"name": "t", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}
    return json.dumps({"inputs": [{**base, **tensor}]}).encode()


@pytest.mark.parametrize(
    "body, words",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"[" * 100000, "not valid JSON"),
        (b'{"inputs": []}', "non-empty array"),
        (_one(datatype="FP8"), "'datatype' must be one of"),
        (_one(shape=[3]), "needs 3 values, 'data' has 2"),
        (_one(shape=[-1]), "non-negative integers"),
        (_one(data="12"), "'data' must be an array"),
        (_one(datatype="INT32", data=[1.5, 2]), "non-integers"),
        (_one(datatype="UINT8", data=[1, 300]), "outside UINT8's range"),
        (_one(datatype="BOOL", data=[1, 0]), "true/false"),
        (_one(data=["a", "b"]), "must be numbers"),
        (_one(name=""), "non-empty string"),
        (_one(shape=[1 << 30], data=[]), "exceeds the tensor size limit"),
    ],
)
def test_malformed_json_requests_raise_protocol_errors_naming_the_problem(body, words):
    with pytest.raises(ProtocolError, match=words):
        parse_infer(body, None, LIMITS)


def test_binary_framing_errors():
    x = np.arange(4, dtype=np.float32)
    body, length = _binary([("x", x)], ["FP32"])
    with pytest.raises(ProtocolError, match="body has"):
        parse_infer(body, str(len(body) + 1), LIMITS)
    with pytest.raises(ProtocolError, match="must be an integer"):
        parse_infer(body, "ten", LIMITS)
    with pytest.raises(ProtocolError, match="truncated"):
        parse_infer(body[:-3], length, LIMITS)
    with pytest.raises(ProtocolError, match="after the last binary input"):
        parse_infer(body + b"xx", length, LIMITS)
    bad = body.replace(b'"binary_data_size": 16', b'"binary_data_size": 12')
    with pytest.raises(ProtocolError, match="binary_data_size is 12"):
        parse_infer(bad, str(int(length) + 0), LIMITS)


def test_json_and_binary_inputs_mix_in_one_request():
    x = np.arange(3, dtype=np.int64)
    head = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1], "data": [0.5]},
            {
                "name": "b",
                "datatype": "INT64",
                "shape": [3],
                "parameters": {"binary_data_size": 24},
            },
        ]
    }
    raw = json.dumps(head).encode()
    req = parse_infer(raw + x.tobytes(), str(len(raw)), LIMITS)
    assert req.inputs["a"].tolist() == [0.5] and req.inputs["b"].tolist() == [0, 1, 2]


def test_responses_encode_json_and_binary_outputs():
    a = np.array([[1.5, 2.5]], np.float32)
    b = np.array([7, 8, 9], np.int16)
    body, length = encode_response("m", "1", "r", [("a", a, False), ("b", b, True)])
    head = json.loads(body[:length])
    assert head["id"] == "r" and head["model_name"] == "m" and head["model_version"] == "1"
    assert head["outputs"][0] == {
        "name": "a",
        "datatype": "FP32",
        "shape": [1, 2],
        "data": [1.5, 2.5],
    }
    assert head["outputs"][1]["parameters"] == {"binary_data_size": 6}
    assert np.frombuffer(body[length:], "<i2").tolist() == [7, 8, 9]
    plain, none = encode_response("m", "1", None, [("a", a, False)])
    assert none is None and "id" not in json.loads(plain)
