"""Shared test fixtures: onnxruntime telemetry off, golden-file loading."""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from axonc.registry import load_ops

load_ops()  # test modules enumerate the registry (OPS) when they are imported
