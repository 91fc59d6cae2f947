"""The terminal progress bar of a running loop (tqdm): epoch, batches, metrics, rate.

On by default when stderr is a terminal, off otherwise (`run(progress=False)` turns it
off, `progress=True` forces it). It is driven by the loop itself, not as a handler, so
it never changes handler order or event counts.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import numpy as np

from .state import State


def format_value(value: Any) -> str:
    """A metric value for display: 4 significant decimals for floats, ints as they are."""
    arr = np.asarray(value)
    if arr.size != 1:
        return np.array2string(arr, precision=4, threshold=6)
    item = arr.item()
    return f"{item:.4f}" if isinstance(item, float) else str(item)


def format_metrics(metrics: dict[str, Any]) -> str:
    """ "loss: 0.1234 accuracy: 0.9000" in the loop's metric order."""
    return " ".join(f"{name}: {format_value(v)}" for name, v in metrics.items())


class ProgressBar:
    """One tqdm bar per epoch, written to `stream`."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self._bar: Any = None

    @staticmethod
    def wanted(progress: bool | None, stream: TextIO | None = None) -> bool:
        """Whether to show a bar: `progress` if given, else whether the stream is a TTY."""
        if progress is not None:
            return bool(progress)
        stream = stream or sys.stderr
        return bool(getattr(stream, "isatty", lambda: False)())

    def epoch_started(self, state: State, total: int | None) -> None:
        from tqdm import tqdm

        self.close()
        self._bar = tqdm(
            total=total,
            initial=state.iteration,
            desc=f"Epoch {state.epoch + 1}/{state.max_epoch}",
            unit="batch",
            file=self.stream,
            dynamic_ncols=True,
            leave=True,
        )

    def iteration_completed(self, state: State) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(format_metrics(state.metrics), refresh=False)

    def epoch_ended(self, state: State) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(format_metrics(state.metrics), refresh=True)
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
