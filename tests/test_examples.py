"""The runnable examples run: the README's main job and the quickstart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["quickstart.py", "train_digits.py"])
def test_example_runs(script, tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert any(tmp_path.iterdir()), "the example wrote nothing to its output directory"
