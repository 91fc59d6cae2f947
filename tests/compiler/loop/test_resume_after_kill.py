"""A training process SIGKILLed after a checkpoint resumes, in a new process, to the
same final parameters as an uninterrupted run with the same seeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from tests.compiler.loop import resume_job

ROOT = Path(__file__).resolve().parents[3]
JOB = "tests.compiler.loop.resume_job"


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def test_killed_run_resumes_to_the_same_parameters(tmp_path):
    # the child imports the same axonc as this process (a checkout or an installed copy)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    child = subprocess.Popen(
        [sys.executable, "-m", JOB, "train", str(tmp_path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        first = tmp_path / "checkpoint_1_5.ckpt"
        wait_for(lambda: first.exists() or child.poll() is not None, 120, first.name)
        assert child.poll() is None, f"the job ended before it was killed: {child.stderr.read()}"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    epochs_saved = sorted(p.name for p in tmp_path.glob("checkpoint_*.ckpt"))
    assert "checkpoint_5_5.ckpt" not in epochs_saved  # killed before the end
    resumed = subprocess.run(
        [sys.executable, "-m", JOB, "resume", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert resumed.returncode == 0, resumed.stderr
    got = load_file(str(tmp_path / "final.safetensors"))
    expected = resume_job.straight().flatten()
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
