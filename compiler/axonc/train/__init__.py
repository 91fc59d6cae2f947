"""Compiled training: one graph holding forward, loss, backward and the optimizer update."""

from .step import TrainState, TrainStep, compile_step

__all__ = ["TrainState", "TrainStep", "compile_step"]
