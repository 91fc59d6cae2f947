"""The repository extension (index, load, unload without restart) and bearer-token auth.

One server for the module, started with a token, over a repository the tests
change while it runs.
"""

from __future__ import annotations

import json
import shutil
import signal

import numpy as np
import pytest
import tritonclient.http as tc
from tritonclient.utils import InferenceServerException

from tests.serve_helpers import ServerProcess, export_mlp, infer_json, mlp_reference, request

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def auth() -> dict[str, str]:
    """A fresh header dict (tritonclient adds its own headers to the dict it is given)."""
    return dict(AUTH)


X = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    params = export_mlp(root / "mlp")
    return root, params


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "server.log"
    proc = ServerProcess(repo[0], "--token", TOKEN, log=log)
    yield proc
    assert proc.stop() in (0, -signal.SIGTERM), proc.log()


@pytest.fixture(scope="module")
def client(server):
    c = tc.InferenceServerClient(server.url, connection_timeout=30)
    yield c
    c.close()


def test_health_is_open_everything_else_needs_the_token(server):
    assert request(server, "GET", "/v2/health/ready")[0] == 200
    for method, path, body in [
        ("GET", "/v2", None),
        ("GET", "/v2/models/mlp", None),
        ("POST", "/v2/models/mlp/infer", infer_json([X])),
        ("POST", "/v2/repository/index", b""),
        ("GET", "/metrics", None),
    ]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            status, got_headers, payload = request(server, method, path, body, headers)
            assert status == 401, (path, headers)
            assert "bearer token" in json.loads(payload)["error"]
            assert got_headers["www-authenticate"] == "Bearer"
        assert request(server, method, path, body, AUTH)[0] == 200, path


def test_tritonclient_passes_the_token_as_a_header(client, repo):
    x = np.array([[0.1, 0.2, 0.3, 0.4]], np.float32)
    inp = tc.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("mlp", [inp], headers=auth())
    np.testing.assert_allclose(result.as_numpy("output"), mlp_reference(repo[1], x), rtol=1e-5)
    with pytest.raises(InferenceServerException, match="bearer token"):
        client.infer("mlp", [inp])


def test_unload_and_load_without_restart(client):
    assert client.is_model_ready("mlp", headers=auth())
    client.unload_model("mlp", headers=auth())
    assert not client.is_model_ready("mlp", headers=auth())
    index = client.get_model_repository_index(headers=auth())
    assert {"name": "mlp", "state": "UNAVAILABLE", "reason": "unloaded"} in index
    with pytest.raises(InferenceServerException, match="not ready"):
        inp = tc.InferInput("x", [1, 4], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 4), np.float32))
        client.infer("mlp", [inp], headers=auth())
    client.load_model("mlp", headers=auth())
    assert client.is_model_ready("mlp", headers=auth())
    index = client.get_model_repository_index(headers=auth())
    assert {"name": "mlp", "version": "1", "state": "READY", "reason": ""} in index


def test_a_model_added_while_running_loads_and_a_broken_one_reports_why(server, client, repo):
    root, params = repo
    shutil.copytree(root / "mlp", root / "added")
    (root / "added" / "config.json").write_text('{"max_batch_size": 2}')
    (root / "bad").mkdir()
    (root / "bad" / "model.onnx").write_bytes(b"\x00garbage")
    (root / "badconfig").mkdir()
    shutil.copy(root / "mlp" / "model.onnx", root / "badconfig" / "model.onnx")
    (root / "badconfig" / "config.json").write_text('{"max_batch_size": 2, "warp": 9}')
    index = client.get_model_repository_index(headers=auth())
    assert {"name": "added", "state": "UNAVAILABLE", "reason": "not loaded"} in index
    client.load_model("added", headers=auth())
    status, _, body = request(server, "POST", "/v2/models/added/infer", infer_json([X]), AUTH)
    assert status == 200, body
    expected = mlp_reference(params, np.array([X["data"]], np.float64))
    np.testing.assert_allclose(json.loads(body)["outputs"][0]["data"], expected[0], rtol=1e-5)
    config = json.loads(request(server, "GET", "/v2/models/added/config", None, AUTH)[2])
    assert config["max_batch_size"] == 2 and config["batching"] is True
    for name, words in [("bad", "cannot load as an ONNX model"), ("badconfig", "unknown setting")]:
        with pytest.raises(InferenceServerException, match=words) as err:
            client.load_model(name, headers=auth())
        assert err.value.status() == "400"
        entry = next(
            e for e in client.get_model_repository_index(headers=auth()) if e["name"] == name
        )
        assert entry["state"] == "UNAVAILABLE" and words in entry["reason"]
    ready = client.get_model_repository_index(headers=auth(), query_params=None)
    assert all(e["state"] in ("READY", "UNAVAILABLE") for e in ready)
    assert client.is_model_ready("mlp", headers=auth())  # the others keep serving
    (root / "added" / "model.onnx").write_bytes(b"truncated")
    with pytest.raises(InferenceServerException, match=r"failed to reload.*keep serving"):
        client.load_model("added", headers=auth())
    status, _, body = request(server, "POST", "/v2/models/added/infer", infer_json([X]), AUTH)
    assert status == 200, body


def test_load_of_a_missing_or_escaping_name_is_404(server):
    for name in ("missing", "..", "..%2Fmlp", ".hidden"):
        path = f"/v2/repository/models/{name}/load"
        status, _, body = request(server, "POST", path, b"", AUTH)
        assert status == 404, (name, body)
    status, _, body = request(server, "POST", "/v2/repository/index", b'{"ready": true}', AUTH)
    assert status == 200 and all(e["state"] == "READY" for e in json.loads(body))
