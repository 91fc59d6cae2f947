"""Serving benchmark: `axonrt serve` vs Triton (through nvidia-pytriton) on loopback.

The model is the MLP 784-512-512-10 (relu, softmax), built with axonc and exported to
ONNX once; every server runs that file on onnxruntime. Each cell is a bounded load
test: N concurrent keep-alive clients send one-row binary KServe V2 requests for a
fixed duration, then stop. The load generator runs in its own process (raw asyncio
sockets, requests prebuilt) and reports its own CPU time, so one can see it is not the
bottleneck. Servers run one after another within a round and rounds rotate the
order; the tables give the median over rounds.

    python bench/serve.py                       # axonrt variants only
    python bench/serve.py --triton-python VENV/bin/python   # + the pytriton peer

The pytriton peer needs its own environment (`pip install nvidia-pytriton onnxruntime
numpy` in a separate venv): it pins its own numpy/protobuf and must not go into the
project's. pytriton 0.7.0's Python backend stub failed with pyenv's CPython 3.11.7
(RLock._recursion_count missing in multiprocessing's resource tracker) and worked in a
venv made from Debian's /usr/bin/python3 (3.11.2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_machine

ROOT = Path(__file__).resolve().parents[1]


def build_mlp(path: Path) -> None:
    """The MLP 784-512-512-10 as ONNX (axonc, seeded initializers)."""
    import axonc as ax
    from axonc.to_onnx.export import export_onnx

    x = ax.input("x", shape=(None, 784))
    model = x.dense(512, activation="relu").dense(512, activation="relu").dense(10).softmax()
    init, _ = ax.build(model)
    export_onnx(model, init(ax.template((1, 784)), {}), path)


def request_bytes(port: int, model: str) -> bytes:
    """One HTTP/1.1 keep-alive request: one row, binary input, binary output."""
    x = np.random.default_rng(0).random((1, 784), dtype=np.float32)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1, 784],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    body = head + x.tobytes()
    lines = [
        f"POST /v2/models/{model}/infer HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Content-Length: {len(body)}",
        f"Inference-Header-Content-Length: {len(head)}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


# ---- the load generator (its own process) --------------------------------------------------


async def _client(port: int, req: bytes, stop_at: float, lat: list[float], errs: list[int]):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            if status == 200:
                lat.append(time.perf_counter() - start)
            else:
                errs.append(status)
    except (OSError, asyncio.IncompleteReadError):
        errs.append(-1)
    finally:
        writer.close()


def _loadgen(port: int, req: bytes, concurrency: int, seconds: float, out: mp.Queue) -> None:
    async def main():
        lat: list[float] = []
        errs: list[int] = []
        start = time.perf_counter()
        stop_at = start + seconds
        await asyncio.gather(*(_client(port, req, stop_at, lat, errs) for _ in range(concurrency)))
        return lat, errs, time.perf_counter() - start

    lat, errs, wall = asyncio.run(main())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.put((lat, errs, wall, usage.ru_utime + usage.ru_stime))


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of a process group."""
    total = 0
    pids = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout
    for pid in pids.split():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def load(port: int, req: bytes, concurrency: int, seconds: float, server_pgid: int) -> dict:
    """Run one bounded load test in a child process; throughput, latency, failures, CPU."""
    before = group_cpu(server_pgid)
    q: mp.Queue = mp.Queue()
    p = mp.Process(target=_loadgen, args=(port, req, concurrency, seconds, q))
    p.start()
    lat, errs, wall, cpu = q.get(timeout=seconds + 120)
    server_cpu = group_cpu(server_pgid) - before
    p.join(30)
    lat_ms = np.asarray(lat) * 1000
    return {
        "rps": len(lat) / wall,
        "p50": float(np.percentile(lat_ms, 50)) if len(lat) else float("nan"),
        "p99": float(np.percentile(lat_ms, 99)) if len(lat) else float("nan"),
        "failed": len(errs),
        "gen_cpu": cpu / wall,  # cores the load generator used
        "server_cpu": server_cpu / wall,  # cores the server's processes used
        "us_per_req": server_cpu / max(len(lat), 1) * 1e6,  # server CPU per answered request
    }


# ---- servers ----------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(port: int, path: str, proc: subprocess.Popen, seconds: float = 180) -> None:
    import http.client

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("server not ready in time")


def start_axonrt(model: Path, port: int, batching: bool, workers: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'compiler'}:{ROOT / 'runtime'}",
        "ORT_DISABLE_TELEMETRY": "1",
    }
    cmd = [
        sys.executable, "-m", "axonrt.cli", "serve", str(model), "--port", str(port),
        "--max-batch-size", "64" if batching else "1", "--max-queue-delay-ms", "0",
        "--workers", str(workers), "--no-access-log", "--log-level", "warning",
        "--max-queue-size", "4096",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    _wait_ready(port, "/v2/models/mlp/ready", proc)
    return proc


PYTRITON_SERVER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import onnxruntime as ort
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    path, port = sys.argv[1], int(sys.argv[2])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    @batch
    def infer(x):
        return {"output": session.run(["output"], {"x": x})[0]}

    config = TritonConfig(
        http_address="127.0.0.1", http_port=port, grpc_address="127.0.0.1",
        grpc_port=port + 1, metrics_address="127.0.0.1", metrics_port=port + 2,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name="mlp",
            infer_func=infer,
            inputs=[Tensor(name="x", dtype=np.float32, shape=(784,))],
            outputs=[Tensor(name="output", dtype=np.float32, shape=(10,))],
            config=ModelConfig(
                max_batch_size=64,
                batcher=DynamicBatcher(max_queue_delay_microseconds=0),
            ),
        )
        triton.serve()
    """
)


def start_pytriton(python: str, model: Path, port: int, workdir: Path) -> subprocess.Popen:
    script = workdir / "pytriton_server.py"
    script.write_text(PYTRITON_SERVER)
    proc = subprocess.Popen(
        [python, str(script), str(model), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "pytriton.log", "wb"),  # noqa: SIM115 - lives with the process
        start_new_session=True,
    )
    _wait_ready(port, "/v2/models/mlp/ready", proc, seconds=300)
    return proc


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (uvicorn workers, Triton's processes)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


# ---- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per cell")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--triton-python", help="python of a venv with nvidia-pytriton")
    parser.add_argument("--only", help="run only the variants whose name contains this")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    variants = {
        "axonrt, batching, 1 worker": ("axonrt", True, 1),
        "axonrt, no batching, 1 worker": ("axonrt", False, 1),
        "axonrt, batching, 2 workers": ("axonrt", True, 2),
        "axonrt, no batching, 2 workers": ("axonrt", False, 2),
    }
    if args.triton_python:
        variants["Triton (pytriton), batching"] = ("pytriton", True, 1)
    if args.only:
        variants = {k: v for k, v in variants.items() if args.only in k}
    print_machine()
    print(f"  loadavg: {os.getloadavg()}")
    results: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model = workdir / "mlp.onnx"
        build_mlp(model)
        names = list(variants)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                kind, batching, workers = variants[name]
                port = _free_port()
                if kind == "axonrt":
                    proc = start_axonrt(model, port, batching, workers)
                else:
                    proc = start_pytriton(args.triton_python, model, port, workdir)
                req = request_bytes(port, "mlp")
                try:
                    load(port, req, 4, 1.0, proc.pid)  # warm-up
                    for c in levels:
                        cell = load(port, req, c, args.seconds, proc.pid)
                        results.setdefault((name, c), []).append(cell)
                        print(f"round {r} {name} c={c}: {cell}", flush=True)
                finally:
                    stop(proc)
    print()
    print(
        "| server | concurrency | req/s | p50 ms | p99 ms | failed | server CPU (cores) | "
        "server CPU µs/request | load-gen CPU (cores) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        for c in levels:
            cells = results[(name, c)]
            med = {k: float(np.median([cell[k] for cell in cells])) for k in cells[0]}
            failed = sum(cell["failed"] for cell in cells)
            print(
                f"| {name} | {c} | {med['rps']:,.0f} | {med['p50']:.2f} | {med['p99']:.2f} | "
                f"{failed} | {med['server_cpu']:.2f} | {med['us_per_req']:,.0f} | "
                f"{med['gen_cpu']:.2f} |"
            )


if __name__ == "__main__":
    main()
