"""`ax.Loop` (Axon.Loop): training and evaluation loops with metrics, events, handlers,
checkpoints and exact resuming. See loop.py and spec/loop.md."""

from .loop import Loop, eval_step, make_filter, train_step
from .state import EVENTS, STATUSES, State, deserialize_state, serialize_state

__all__ = [
    "EVENTS",
    "STATUSES",
    "Loop",
    "State",
    "deserialize_state",
    "eval_step",
    "make_filter",
    "serialize_state",
    "train_step",
]
