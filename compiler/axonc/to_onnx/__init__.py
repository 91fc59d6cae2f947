"""Lowering of the IR to ONNX: a graph builder, the per-node lowering loop and export.

Each op's `onnx` rule (in its family module) emits ONNX nodes through the
builder; this package owns naming, initializers, graph inputs/outputs and the
model's metadata.
"""
