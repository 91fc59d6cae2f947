"""Helpers for the server tests: test models, a real `axonrt serve` subprocess, raw HTTP.

Every server binds 127.0.0.1 on a free port; every wait is bounded.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

import axonc as ax
from axonc.to_onnx.export import export_onnx
from tests.onnx_models import save_model

# V2 datatype -> (ONNX element type, numpy dtype), every datatype the server speaks.
DATATYPES = {
    "FP32": (TensorProto.FLOAT, np.float32),
    "FP16": (TensorProto.FLOAT16, np.float16),
    "FP64": (TensorProto.DOUBLE, np.float64),
    "INT64": (TensorProto.INT64, np.int64),
    "INT32": (TensorProto.INT32, np.int32),
    "INT16": (TensorProto.INT16, np.int16),
    "INT8": (TensorProto.INT8, np.int8),
    "UINT8": (TensorProto.UINT8, np.uint8),
    "BOOL": (TensorProto.BOOL, np.bool_),
}


def export_mlp(folder: Path) -> dict:
    """dense(8, relu) -> dense(3) -> softmax on x[?, 4], saved as folder/model.onnx; its params."""
    x = ax.input("x", shape=(None, 4))
    model = x.dense(8, activation="relu").dense(3).softmax()
    init, _ = ax.build(model)
    state = init(ax.template((1, 4)), {})
    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(model, state, folder / "model.onnx")
    return state.data


def mlp_reference(params: dict, x: np.ndarray) -> np.ndarray:
    """softmax(relu(x W0 + b0) W1 + b1) in float64."""
    h = np.maximum(x @ params["dense_0"]["kernel"] + params["dense_0"]["bias"], 0.0)
    z = h @ params["dense_1"]["kernel"] + params["dense_1"]["bias"]
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def export_nested(path: Path) -> dict:
    """Inputs x[?, 4], y[?, 2]; output {"first": a, "rest": (tanh(dense(y)), [sigmoid(a)])}."""
    x = ax.input("x", shape=(None, 4))
    y = ax.input("y", shape=(None, 2))
    a = x.dense(3, name="a")
    b = y.dense(2, activation="tanh", name="b")
    model = ax.container({"first": a, "rest": (b, [a.sigmoid()])})
    init, _ = ax.build(model)
    state = init({"x": ax.template((1, 4)), "y": ax.template((1, 2))}, {})
    path.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model, state, path)
    return state.data


def echo_model(folder: Path) -> Path:
    """One input per datatype, `in_<DT>` of shape [n, 2], echoed as `out_<DT>`."""
    nodes, ins, outs = [], [], []
    for name, (elem, _) in DATATYPES.items():
        nodes.append(helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]))
        ins.append(helper.make_tensor_value_info(f"in_{name}", elem, ["n", 2]))
        outs.append(helper.make_tensor_value_info(f"out_{name}", elem, ["n", 2]))
    folder.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(nodes, "echo", ins, outs)
    return save_model(folder, graph, {}, "model.onnx")


def write_config(folder: Path, **settings) -> None:
    """folder/config.json with `settings`."""
    (folder / "config.json").write_text(json.dumps(settings))


def free_port() -> int:
    """A port nothing listens on right now (the OS's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m axonrt.cli serve ...` on 127.0.0.1, ready when /v2/health/ready answers 200."""

    def __init__(self, source: Path, *args: str, log: Path, startup_s: float = 90.0):
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
        cmd = [sys.executable, "-m", "axonrt.cli", "serve", str(source), "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*cmd, *args], stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log()}")
            try:
                if request(self, "GET", "/v2/health/ready", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready within {startup_s} s: {self.log()}")

    def log(self) -> str:
        """Everything the server printed so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful), then SIGKILL if it does not exit in time; the exit code.

        uvicorn re-raises the signal after a graceful shutdown, so that exit is -SIGTERM.
        """
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


def request(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP request: (status, headers lower-cased, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read(),
        )
    finally:
        conn.close()


def infer_json(tensors: list[dict], **extra) -> bytes:
    """A JSON infer request body."""
    return json.dumps({"inputs": tensors, **extra}).encode()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, value = line.rsplit(" ", 1)
        sample, _, rest = key.partition("{")
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if sample == name and got == want:
            return float(value)
    return 0.0
