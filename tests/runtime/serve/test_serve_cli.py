"""The `axonrt` command line: export-triton (checked with Triton's own config protobuf),
serving one file with several workers, draining at shutdown, and `axonc serve`.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient
from google.protobuf import text_format
from onnx import TensorProto, helper

from axonrt.cli import main
from tests.onnx_models import save_model
from tests.serve_helpers import (
    ServerProcess,
    export_mlp,
    export_nested,
    infer_json,
    metric,
    mlp_reference,
    request,
)


def _model_config_pb2():
    """Triton's ModelConfig protobuf module, loaded from tritonclient's files by path
    (its grpc package refuses to import without the grpc extra; the message needs only protobuf).
    """
    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlp")
    params = export_mlp(folder)
    return folder / "model.onnx", params


def test_export_triton_writes_a_config_triton_parses(mlp, tmp_path, capsys):
    pb2 = _model_config_pb2()
    assert (
        main(
            [
                "export-triton",
                str(mlp[0]),
                "-o",
                str(tmp_path),
                "--name",
                "mlp",
                "--max-batch-size",
                "32",
                "--max-queue-delay-ms",
                "2",
            ]
        )
        == 0
    )
    assert "config.pbtxt" in capsys.readouterr().out
    text = (tmp_path / "mlp" / "config.pbtxt").read_text()
    config = text_format.Parse(text, pb2.ModelConfig())
    assert config.name == "mlp" and config.backend == "onnxruntime"
    assert config.max_batch_size == 32
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    (inp,) = config.input
    assert inp.name == "x" and inp.data_type == pb2.TYPE_FP32 and list(inp.dims) == [4]
    (out,) = config.output
    assert out.name == "output" and list(out.dims) == [3]
    assert (tmp_path / "mlp" / "1" / "model.onnx").read_bytes() == mlp[0].read_bytes()


def test_export_triton_without_a_batch_dim_lists_full_shapes_and_no_batcher(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["b"])],
        "fixed",
        [helper.make_tensor_value_info("a", TensorProto.INT64, [2, "k"])],
        [helper.make_tensor_value_info("b", TensorProto.INT64, [2, "k"])],
    )
    path = save_model(tmp_path, graph, {}, "fixed.onnx")
    assert main(["export-triton", str(path), "-o", str(tmp_path / "repo")]) == 0
    pb2 = _model_config_pb2()
    config = text_format.Parse(
        (tmp_path / "repo" / "fixed" / "config.pbtxt").read_text(), pb2.ModelConfig()
    )
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [2, -1] and config.input[0].data_type == pb2.TYPE_INT64


def test_export_triton_keeps_every_output_of_a_multi_output_model(tmp_path):
    export_nested(tmp_path / "nested.onnx")
    assert main(["export-triton", str(tmp_path / "nested.onnx"), "-o", str(tmp_path / "r")]) == 0
    config = text_format.Parse(
        (tmp_path / "r" / "nested" / "config.pbtxt").read_text(), _model_config_pb2().ModelConfig()
    )
    assert [i.name for i in config.input] == ["x", "y"]
    assert len(config.output) == 3


@pytest.mark.parametrize(
    "argv, words",
    [
        (["serve", "/nonexistent/model.onnx"], "no such file or directory"),
        (["export-triton", "/nonexistent.onnx", "-o", "x"], "no such file"),
        (["export-triton", "{model}", "-o", "{tmp}", "--name", "../up"], "model name"),
    ],
)
def test_user_errors_are_one_line_and_exit_1(argv, words, mlp, tmp_path, capsys):
    argv = [a.format(model=mlp[0], tmp=tmp_path) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_two_workers_share_the_port_and_metrics_add_up(mlp, tmp_path):
    server = ServerProcess(mlp[0], "--workers", "2", log=tmp_path / "log")
    try:
        deadline = time.monotonic() + 90
        while server.log().count("Application startup complete") < 2:  # both workers up
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        x = [0.1, 0.2, 0.3, 0.4]
        tensor = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": x}
        for _ in range(6):
            status, _, body = request(
                server, "POST", "/v2/models/model/infer", infer_json([tensor])
            )
            assert status == 200, body
            got = json.loads(body)["outputs"][0]["data"]
            np.testing.assert_allclose(got, mlp_reference(mlp[1], np.array([x]))[0], rtol=1e-5)
        text = request(server, "GET", "/metrics")[2].decode()
        assert metric(text, "axonrt_requests_total", model="model", code="200") == 6
        pids = {
            line.split("[")[1].split("]")[0]
            for line in server.log().splitlines()
            if "Started server process" in line
        }
        assert len(pids) == 2
    finally:
        server.stop()


def test_shutdown_drains_requests_in_flight(mlp, tmp_path):
    server = ServerProcess(
        mlp[0], "--max-queue-delay-ms", "4000", "--max-batch-size", "8", log=tmp_path / "log"
    )
    result = {}

    def send():
        tensor = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
        result["response"] = request(server, "POST", "/v2/models/model/infer", infer_json([tensor]))

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the request waits in the batcher
        text = request(server, "GET", "/metrics")[2].decode()
        if metric(text, "axonrt_queue_depth", model="model") == 1:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the request never reached the queue")
    server.proc.send_signal(signal.SIGTERM)
    sender.join(60)
    code = server.stop()
    assert result["response"][0] == 200, result
    assert code in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log()


def test_axonc_serve_forwards_to_axonrt(mlp):
    out = subprocess.run(
        [sys.executable, "-m", "axonc.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "--max-queue-delay-ms" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "axonc.cli", "serve", "/nonexistent.onnx"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "no such file or directory" in out.stderr
