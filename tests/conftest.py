"""Shared test fixtures: onnxruntime telemetry off, golden-file loading."""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
