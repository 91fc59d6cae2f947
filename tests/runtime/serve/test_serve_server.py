"""`axonrt serve` as a subprocess on loopback, queried by Triton's own client and by raw HTTP.

One server for the module, over a repository holding: mlp (an axonc-exported
MLP), nested (two versions of a model with nested outputs), echo (one input per
datatype), batched and delayed (mlp copies with batching configs), broken (not
a model). Expected values come from numpy formulas over the exported parameters.
"""

from __future__ import annotations

import gzip
import json
import shutil
import signal

import numpy as np
import pytest
import tritonclient.http as tc
from tritonclient.utils import InferenceServerException

from tests.serve_helpers import (
    DATATYPES,
    ServerProcess,
    echo_model,
    export_mlp,
    export_nested,
    infer_json,
    metric,
    mlp_reference,
    request,
    write_config,
)

MAX_BODY = 65536


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    params = export_mlp(root / "mlp")
    nested = export_nested(root / "nested" / "1" / "model.onnx")
    (root / "nested" / "2").mkdir()
    shutil.copy(root / "nested" / "1" / "model.onnx", root / "nested" / "2" / "model.onnx")
    echo_model(root / "echo")
    for name, config in {
        "batched": {"max_batch_size": 4, "max_queue_delay_ms": 20000},
        "delayed": {"max_batch_size": 8, "max_queue_delay_ms": 20000},
    }.items():
        shutil.copytree(root / "mlp", root / name)
        write_config(root / name, **config)
    (root / "broken").mkdir()
    (root / "broken" / "model.onnx").write_bytes(b"not an onnx model")
    return root, params, nested


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "server.log"
    proc = ServerProcess(repo[0], "--max-body-bytes", str(MAX_BODY), log=log)
    yield proc
    assert proc.stop() in (0, -signal.SIGTERM), proc.log()
    assert "Application shutdown complete" in proc.log()


@pytest.fixture(scope="module")
def client(server):
    c = tc.InferenceServerClient(server.url, concurrency=4, connection_timeout=30)
    yield c
    c.close()


def _healthy(server, params):
    """The server still answers health and a correct inference."""
    assert request(server, "GET", "/v2/health/live")[0] == 200
    assert request(server, "GET", "/v2/health/ready")[0] == 200
    x = [[0.5, -1.0, 2.0, 0.25]]
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": x[0]}
    status, _, body = request(server, "POST", "/v2/models/mlp/infer", infer_json([tensor]))
    assert status == 200, body
    out = json.loads(body)["outputs"][0]
    np.testing.assert_allclose(out["data"], mlp_reference(params, np.array(x))[0], rtol=1e-5)


# ---- health and metadata through tritonclient --------------------------------------------------


def test_health_and_server_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "axonrt" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_has_datatypes_and_dynamic_dims(client):
    meta = client.get_model_metadata("mlp")
    assert meta["name"] == "mlp" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}]
    echo = client.get_model_metadata("echo")
    assert [(t["name"], t["datatype"]) for t in echo["inputs"]] == [
        (f"in_{dt}", dt) for dt in DATATYPES
    ]


def test_nested_outputs_are_named_by_their_path_in_the_container(client):
    meta = client.get_model_metadata("nested")
    assert meta["versions"] == ["1", "2"]
    assert [o["name"] for o in meta["outputs"]] == ["first", "rest/0", "rest/1/0"]


def test_model_readiness_broken_model_not_ready_others_serve(client, server, repo):
    assert client.is_model_ready("mlp") and client.is_model_ready("nested", "1")
    assert not client.is_model_ready("broken")
    status, _, body = request(server, "GET", "/v2/models/broken/ready")
    assert status == 400 and "not ready" in json.loads(body)["error"]
    status, _, body = request(server, "POST", "/v2/models/broken/infer", infer_json([]))
    assert status == 503 and "not ready" in json.loads(body)["error"]
    _healthy(server, repo[1])


# ---- inference ------------------------------------------------------------------------------


@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True])
def test_infer_json_and_binary_matches_the_formula(client, repo, binary_in, binary_out):
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    inp = tc.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary_in)
    out = tc.InferRequestedOutput("output", binary_data=binary_out)
    result = client.infer("mlp", [inp], outputs=[out], request_id="req-7")
    assert result.get_response()["id"] == "req-7"
    got = result.as_numpy("output")
    assert got.dtype == np.float32 and got.shape == (5, 3)
    np.testing.assert_allclose(got, mlp_reference(repo[1], x), rtol=1e-5, atol=1e-7)


def test_every_datatype_round_trips_as_json_and_binary(client):
    rng = np.random.default_rng(1)
    inputs, expected = [], {}
    for i, (dt, (_, np_dtype)) in enumerate(DATATYPES.items()):
        if np_dtype is np.bool_:
            value = rng.random((3, 2)) > 0.5
        else:
            value = (rng.random((3, 2)) * 100).astype(np_dtype)
        inp = tc.InferInput(f"in_{dt}", [3, 2], dt)
        inp.set_data_from_numpy(value, binary_data=bool(i % 2))
        inputs.append(inp)
        expected[f"out_{dt}"] = value
    outputs = [tc.InferRequestedOutput(n, binary_data=bool(j % 2)) for j, n in enumerate(expected)]
    result = client.infer("echo", inputs, outputs=outputs)
    for name, value in expected.items():
        got = result.as_numpy(name)
        assert got.dtype == value.dtype, name
        np.testing.assert_array_equal(got, value)


def test_versions_and_requested_outputs_of_a_nested_model(client, repo):
    params = repo[2]
    x = np.array([[1.0, 0.5, -0.5, 2.0]], np.float32)
    y = np.array([[0.3, -0.7]], np.float32)
    inputs = [tc.InferInput("x", [1, 4], "FP32"), tc.InferInput("y", [1, 2], "FP32")]
    inputs[0].set_data_from_numpy(x)
    inputs[1].set_data_from_numpy(y)
    a = x @ params["a"]["kernel"] + params["a"]["bias"]
    b = np.tanh(y @ params["b"]["kernel"] + params["b"]["bias"])
    for version in ("1", "2"):
        result = client.infer(
            "nested", inputs, model_version=version, outputs=[tc.InferRequestedOutput("rest/1/0")]
        )
        assert result.get_response()["model_version"] == version
        assert [o["name"] for o in result.get_response()["outputs"]] == ["rest/1/0"]
        np.testing.assert_allclose(result.as_numpy("rest/1/0"), 1 / (1 + np.exp(-a)), rtol=1e-5)
    everything = client.infer("nested", inputs)
    np.testing.assert_allclose(everything.as_numpy("first"), a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(everything.as_numpy("rest/0"), b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_are_inflated(client, repo, algorithm):
    x = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    inp = tc.InferInput("x", [3, 4], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("mlp", [inp], request_compression_algorithm=algorithm)
    np.testing.assert_allclose(result.as_numpy("output"), mlp_reference(repo[1], x), rtol=1e-5)


def test_a_compression_bomb_is_413_and_garbage_is_400(server, repo):
    bomb = gzip.compress(b" " * (MAX_BODY * 4))
    assert len(bomb) < MAX_BODY
    status, _, body = request(
        server, "POST", "/v2/models/mlp/infer", bomb, {"Content-Encoding": "gzip"}
    )
    assert status == 413 and "decompressed" in json.loads(body)["error"]
    for encoding, payload, words in [
        ("gzip", b"not gzip", "corrupt"),
        ("gzip", gzip.compress(infer_json([X]))[:-12], "truncated"),
        ("br", b"x", "not supported"),
    ]:
        headers = {"Content-Encoding": encoding}
        status, _, body = request(server, "POST", "/v2/models/mlp/infer", payload, headers)
        assert status == 400 and words in json.loads(body)["error"], body
    _healthy(server, repo[1])


def test_binary_data_output_parameter_returns_every_output_binary(server):
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
    body = infer_json([tensor], parameters={"binary_data_output": True})
    status, headers, payload = request(server, "POST", "/v2/models/mlp/infer", body)
    assert status == 200
    n = int(headers["inference-header-content-length"])
    head = json.loads(payload[:n])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 12 == len(payload) - n


def test_concurrent_requests_are_merged_into_one_batch(client, server, repo):
    """Four one-row requests to a model batching up to 4 rows with a long delay: one batch."""
    before = request(server, "GET", "/metrics")[2].decode()
    xs = [np.full((1, 4), i, np.float32) for i in range(4)]

    pending = []
    for x in xs:  # tritonclient's own concurrency: 4 requests in flight at once
        inp = tc.InferInput("x", [1, 4], "FP32")
        inp.set_data_from_numpy(x)
        pending.append(client.async_infer("batched", [inp]))
    results = [p.get_result(timeout=60).as_numpy("output") for p in pending]
    after = request(server, "GET", "/metrics")[2].decode()
    count = metric(after, "axonrt_batch_size_count", model="batched")
    rows = metric(after, "axonrt_batch_size_sum", model="batched")
    assert count - metric(before, "axonrt_batch_size_count", model="batched") == 1
    assert rows - metric(before, "axonrt_batch_size_sum", model="batched") == 4
    for x, r in zip(xs, results):  # each caller got its own row back
        np.testing.assert_allclose(r, mlp_reference(repo[1], x), rtol=1e-5, atol=1e-7)


def test_a_request_timeout_parameter_gives_504(server, repo):
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
    body = infer_json([tensor], parameters={"timeout": 100000})  # µs, Triton's unit
    status, _, payload = request(server, "POST", "/v2/models/delayed/infer", body)
    assert status == 504 and "no result within 0.1 s" in json.loads(payload)["error"]
    _healthy(server, repo[1])


# ---- malformed requests: each its 4xx, and the server stays healthy -----------------------------


def _binary_body(x: np.ndarray, declared: int | None = None) -> tuple[bytes, int]:
    size = x.nbytes if declared is None else declared
    tensor = {
        "name": "x",
        "datatype": "FP32",
        "shape": list(x.shape),
        "parameters": {"binary_data_size": size},
    }
    head = json.dumps({"inputs": [tensor]}).encode()
    return head + x.tobytes(), len(head)


X = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
BIN, BIN_HEAD = _binary_body(np.ones((2, 4), np.float32))

MALFORMED = {
    "bad json": ("/v2/models/mlp/infer", b'{"inputs": [', {}, 400, "not valid JSON"),
    "wrong shape": (
        "/v2/models/mlp/infer",
        infer_json([{**X, "shape": [2, 2]}]),
        {},
        400,
        "input 'x': expected shape [-1, 4]",
    ),
    "wrong rank": (
        "/v2/models/mlp/infer",
        infer_json([{**X, "shape": [4]}]),
        {},
        400,
        "input 'x'",
    ),
    "wrong datatype": (
        "/v2/models/mlp/infer",
        infer_json([{**X, "datatype": "INT32"}]),
        {},
        400,
        "input 'x': expected datatype FP32, got INT32",
    ),
    "unknown input": (
        "/v2/models/mlp/infer",
        infer_json([{**X, "name": "z"}]),
        {},
        400,
        "unknown input 'z'",
    ),
    "unknown output": (
        "/v2/models/mlp/infer",
        infer_json([X], outputs=[{"name": "nope"}]),
        {},
        400,
        "unknown output 'nope'",
    ),
    "unknown model": ("/v2/models/nope/infer", infer_json([X]), {}, 404, "unknown model 'nope'"),
    "unknown version": (
        "/v2/models/mlp/versions/9/infer",
        infer_json([X]),
        {},
        404,
        "no version '9'",
    ),
    "path traversal": ("/v2/models/..%2F..%2Fetc/infer", infer_json([X]), {}, 404, ""),
    "dot dot name": ("/v2/models/../infer", infer_json([X]), {}, 404, ""),
    "oversized body": (
        "/v2/models/mlp/infer",
        b" " * (MAX_BODY + 1),
        {},
        413,
        "exceeds the limit",
    ),
    "truncated binary": (
        "/v2/models/mlp/infer",
        BIN[:-5],
        {"Inference-Header-Content-Length": str(BIN_HEAD)},
        400,
        "truncated",
    ),
    "header length past the body": (
        "/v2/models/mlp/infer",
        BIN,
        {"Inference-Header-Content-Length": str(len(BIN) + 10)},
        400,
        "Inference-Header-Content-Length",
    ),
    "header length not a number": (
        "/v2/models/mlp/infer",
        BIN,
        {"Inference-Header-Content-Length": "-x"},
        400,
        "must be an integer",
    ),
    "unknown route": ("/v2/nothing", b"", {}, 404, "Not Found"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_requests_get_their_4xx_and_the_server_stays_healthy(server, repo, case):
    path, body, headers, status, words = MALFORMED[case]
    got, _, payload = request(server, "POST", path, body, headers)
    assert got == status, payload
    error = json.loads(payload)["error"]
    assert isinstance(error, str) and words in error
    _healthy(server, repo[1])


def test_tritonclient_sees_the_error_message(client):
    inp = tc.InferInput("x", [1, 2], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 2), np.float32))
    with pytest.raises(InferenceServerException, match="input 'x': expected shape") as err:
        client.infer("mlp", [inp])
    assert err.value.status() == "400"


# ---- metrics and logs ---------------------------------------------------------------------------


def test_metrics_count_requests_failures_latency_and_queue(server, client):
    inp = tc.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 4), np.float32))
    client.infer("mlp", [inp])
    request(server, "POST", "/v2/models/mlp/infer", b"{")
    text = request(server, "GET", "/metrics")[2].decode()
    assert metric(text, "axonrt_requests_total", model="mlp", code="200") >= 1
    assert metric(text, "axonrt_requests_total", model="mlp", code="400") >= 1
    assert metric(text, "axonrt_failures_total", model="mlp", reason="bad_request") >= 1
    assert metric(text, "axonrt_request_duration_seconds_count", model="mlp") >= 2
    assert "axonrt_queue_depth" in text and 'axonrt_batch_size_bucket{le="1.0",model="mlp"}' in text


def test_access_log_is_one_json_object_per_request(server, client):
    client.is_server_live()
    lines = [line for line in server.log().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    assert records and all({"time", "method", "path", "status", "ms"} <= set(r) for r in records)
    assert any(r["path"] == "/v2/health/live" and r["status"] == 200 for r in records)
    assert any(r.get("request_id") == "req-7" for r in records)
