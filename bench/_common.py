"""Shared by the benchmarks: the machine description, percentiles, and an interleaved timer."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

import numpy as np

THREADS = 2  # the benchmark machines have 2 cores; both runtimes get both


def cpu_model() -> str:
    """lscpu's model name (or platform.processor() where lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    """What the README records next to every result."""
    os_name = platform.platform()
    if os.path.exists("/etc/os-release"):
        with open("/etc/os-release") as f:
            fields = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        pretty = fields.get("PRETTY_NAME", "").strip('"')
        os_name = f"{pretty} (Linux {platform.release()})"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "os": os_name,
        "python": platform.python_version(),
        **{
            name: _version(name)
            for name in ("numpy", "onnx", "onnxruntime", "torch", "networkx", "axonc")
        },
    }


def print_machine() -> None:
    for key, value in machine().items():
        print(f"{key:>12}: {value}")


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    """(p10, median, p90) of the samples."""
    p10, p50, p90 = np.percentile(np.asarray(samples, dtype=np.float64), [10, 50, 90])
    return float(p10), float(p50), float(p90)


def calls_per_round(fn: Callable[[], Any], target_seconds: float) -> int:
    """How many back-to-back calls of `fn` take about `target_seconds` (at least 1)."""
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < target_seconds / 4:
        fn()
        n += 1
    per_call = (time.perf_counter() - start) / n
    return max(1, round(target_seconds / per_call))


def interleaved(
    fns: dict[str, Callable[[], Any]],
    *,
    rounds: int,
    round_seconds: float,
    warmup_seconds: float,
    before: dict[str, Callable[[], Any]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each function, one sample per round, the functions taking turns.

    Each function is warmed up, then given a call count that fills about
    `round_seconds`; every round runs each function's block of calls once, the order
    rotating between rounds, so drift in the machine's speed (frequency, neighbours)
    hits every function alike instead of whichever happened to run last.
    `before[name]`, where given, runs untimed before each of that function's blocks
    (the train bench resets its weights there, so every round does the same work).
    """
    before = before or {}
    counts = {}
    for name, fn in fns.items():
        calls_per_round(fn, warmup_seconds)
        counts[name] = calls_per_round(fn, round_seconds)
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, n = fns[name], counts[name]
            if name in before:
                before[name]()
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - start) / n)
    return samples


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """The median wall time of `repeats` calls of `fn`, and all of them."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), times


class BackgroundLoad:
    """How busy the machine was with OTHER processes while the block ran, in cores.

    /proc/stat's busy time of all CPUs minus this process's own CPU time (every
    thread), over the wall time: 0.0 on a quiet machine, 1.0 when another process
    kept one core busy throughout. None where /proc/stat is missing.
    """

    def __enter__(self) -> BackgroundLoad:
        self.cores: float | None = None
        self._start = (_busy_seconds(), time.process_time(), time.perf_counter())
        return self

    def __exit__(self, *exc: object) -> None:
        busy0, own0, wall0 = self._start
        busy1 = _busy_seconds()
        if busy0 is None or busy1 is None:
            return
        own = time.process_time() - own0
        wall = time.perf_counter() - wall0
        self.cores = max(0.0, (busy1 - busy0 - own) / wall)


def _busy_seconds() -> float | None:
    """Seconds all CPUs spent not idle since boot (user+nice+system+irq+softirq+steal)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_quiet(threshold: float = 0.2, timeout: float = 120.0) -> float | None:
    """Wait (up to `timeout` s) for a second in which other processes use < `threshold` cores.

    Returns the last second's background load. The benchmarks share their machine with
    whatever else runs; starting a measurement while another job holds a core would
    charge it to whichever variant happened to run then.
    """
    deadline = time.perf_counter() + timeout
    while True:
        with BackgroundLoad() as load:
            time.sleep(1.0)
        if load.cores is None or load.cores < threshold or time.perf_counter() > deadline:
            return load.cores
