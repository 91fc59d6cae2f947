"""The onnxruntime-training engine's suite: run in its own environment (spec/ort_training.md);
telemetry off, the op registry loaded as in the main suite."""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from axonc.registry import load_ops

load_ops()
