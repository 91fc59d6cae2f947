"""What the translated programs' tests observe: epoch losses, Nx.iota inputs."""

from __future__ import annotations

from typing import Any

import numpy as np


def record(losses: list[float], metric: str = "loss") -> Any:
    """A handler that appends the epoch's value of `metric` to `losses` (for epoch_completed)."""

    def handler(state: Any) -> tuple[str, Any]:
        losses.append(float(state.metrics[metric]))
        return "continue", state

    return handler


def iota(*shape: int) -> Any:
    """Nx.iota(shape, type: :f32): 0, 1, 2, ... laid out in `shape`."""
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
