"""Lowering of the IR to TFLite: a flatbuffer builder, the per-node lowering loop and export.

Each op's `tflite` rule (in its family module) emits TFLite operators through
the builder; this package owns tensors, buffers, operator codes, the
signature and the model's metadata. The flatbuffer is written directly with
the schema's generated object API that LiteRT's Python package ships.
"""
