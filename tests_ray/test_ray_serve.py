"""axonrt's Ray Serve deployment on a local single-node Ray (run in an environment with ray).

Not part of the main suite (ray is an optional extra that pins its own packages):

    python -m venv /tmp/venv-ray && /tmp/venv-ray/bin/pip install -e ".[ray]" pytest
    RAY_USAGE_STATS_ENABLED=0 /tmp/venv-ray/bin/python -m pytest tests_ray -q

The model is written here with onnx.helper: y = relu(x W + b), so expected values are a
numpy formula.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading

import numpy as np
import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import onnx
import ray
from onnx import TensorProto, helper, numpy_helper
from ray import serve

from axonrt.serve.ray_serve import deployment

W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10 - 0.5
B = np.array([0.1, -0.2, 0.3], np.float32)


def _model(path):
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("Add", ["h", "B"], ["z"]),
            helper.make_node("Relu", ["z"], ["y"]),
        ],
        "lin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save_model(model, path)


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "lin.onnx"
    _model(path)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    p = _port()
    serve.start(http_options={"host": "127.0.0.1", "port": p})
    app = deployment(
        path,
        autoscaling_config={"min_replicas": 1, "max_replicas": 2},
        max_batch_size=8,
        batch_wait_timeout_s=0.2,
    )
    serve.run(app, route_prefix="/", name="lin")
    yield p
    serve.shutdown()
    ray.shutdown()


def _post(port, path, body, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", path, body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()


def _expected(x):
    return np.maximum(x @ W + B, 0)


def test_metadata_and_json_infer(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/v2/models/lin")
    meta = json.loads(conn.getresponse().read())
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    x = np.array([[1, 2, 3, 4], [-1, 0, 1, 2]], np.float32)
    body = json.dumps(
        {
            "id": "a",
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [2, 4], "data": x.ravel().tolist()}
            ],
        }
    )
    status, _, payload = _post(port, "/v2/models/lin/infer", body)
    assert status == 200, payload
    out = json.loads(payload)
    assert out["id"] == "a"
    np.testing.assert_allclose(
        np.reshape(out["outputs"][0]["data"], (2, 3)), _expected(x), rtol=1e-6
    )


def test_binary_infer_and_concurrent_requests_each_get_their_rows(port):
    xs = [np.full((1, 4), i, np.float32) for i in range(6)]
    results = {}

    def send(i):
        head = json.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "datatype": "FP32",
                        "shape": [1, 4],
                        "parameters": {"binary_data_size": 16},
                    }
                ],
                "parameters": {"binary_data_output": True},
            }
        ).encode()
        results[i] = _post(
            port,
            "/v2/models/lin/infer",
            head + xs[i].tobytes(),
            {"Inference-Header-Content-Length": str(len(head))},
        )

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i, (status, headers, payload) in results.items():
        assert status == 200, payload
        n = int(headers["inference-header-content-length"])
        got = np.frombuffer(payload[n:], np.float32).reshape(1, 3)
        np.testing.assert_allclose(got, _expected(xs[i]), rtol=1e-6)


def test_bad_requests_get_400_naming_the_input(port):
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    )
    status, _, payload = _post(port, "/v2/models/lin/infer", body)
    assert status == 400 and "input 'x'" in json.loads(payload)["error"]
    status, _, payload = _post(port, "/v2/models/lin/infer", b"{")
    assert status == 400 and "not valid JSON" in json.loads(payload)["error"]
