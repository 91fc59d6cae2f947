"""What the translated programs' tests observe: epoch losses, held-out errors."""

from __future__ import annotations

import re
from typing import Any

import numpy as np


def record(losses: list[float], metric: str = "loss") -> Any:
    """A handler that appends the epoch's value of `metric` to `losses` (for epoch_completed)."""

    def handler(state: Any) -> tuple[str, Any]:
        losses.append(float(state.metrics[metric]))
        return "continue", state

    return handler


def mse(y_true: Any, y_pred: Any) -> float:
    """Mean squared error in float64, computed independently of axonc."""
    return float(np.mean((np.asarray(y_true, np.float64) - np.asarray(y_pred, np.float64)) ** 2))


def sin_batches(seed: int, shape: tuple[int, ...] = (8, 1)) -> Any:
    """Axon's guide data: xs ~ N(0, 1) of `shape`, ys = sin(xs), forever."""
    rng = np.random.default_rng(seed)
    while True:
        xs = rng.standard_normal(shape).astype(np.float32)
        yield xs, np.sin(xs)


def graph_labels(mermaid: str) -> list[str]:
    """The node labels of a Mermaid flowchart such as Axon.Display.as_graph draws."""
    return re.findall(r'\[/?"([^"]*)"/?\]', mermaid)


def graph_edges(mermaid: str) -> int:
    """How many edges a Mermaid flowchart draws."""
    return mermaid.count("-->")


def iota(*shape: int) -> Any:
    """Nx.iota(shape, type: :f32): 0, 1, 2, ... laid out in `shape`."""
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
