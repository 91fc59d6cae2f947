"""Compiled training: one graph holding forward, loss, backward and the optimizer update."""

from .ort_training import MissingOrtTrainingError, export_ort_training
from .step import TrainState, TrainStep, compile_step

__all__ = [
    "MissingOrtTrainingError",
    "TrainState",
    "TrainStep",
    "compile_step",
    "export_ort_training",
]
