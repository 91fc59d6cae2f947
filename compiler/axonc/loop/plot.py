"""Learning curves from a loop's metric history (Loop.history): `axonc plot`.

One panel per metric, training and validation_<metric> on the same axes, against the
epoch. matplotlib is an optional dependency (`pip install 'axonc[plot]'`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import FormatError


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """The records of a history file, checked: each line {"epoch": int, "metrics": {...}}."""
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise FormatError(f"{path}:{n}: not a JSON line ({exc})") from None
            if (
                not isinstance(record, dict)
                or not isinstance(record.get("epoch"), int)
                or not isinstance(record.get("metrics"), dict)
            ):
                raise FormatError(
                    f'{path}:{n}: expected a record {{"epoch": int, "metrics": {{...}}}} '
                    "as Loop.history writes"
                )
            records.append(record)
    if not records:
        raise FormatError(f"{path}: the history has no records")
    return records


def _scalar(value: Any) -> float:
    return (
        float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else math.nan
    )


def curves(records: list[dict[str, Any]]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{metric: {"train" | "validation": [(epoch, value)]}} for the scalar metrics."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for record in records:
        for name, value in record["metrics"].items():
            value = _scalar(value)
            if math.isnan(value):
                continue
            split = "validation" if name.startswith("validation_") else "train"
            base = name.removeprefix("validation_")
            out.setdefault(base, {}).setdefault(split, []).append((record["epoch"], value))
    return out


def plot_history(path: str | Path, output: str | Path, metrics: tuple[str, ...] = ()) -> list[str]:
    """Draw the curves of `path` into the image `output`; returns the metrics drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    data = curves(read_history(path))
    unknown = [m for m in metrics if m not in data]
    if unknown:
        raise FormatError(
            f"{path}: no metric {unknown[0]!r} in the history; it has {', '.join(sorted(data))}"
        )
    names = list(metrics) or sorted(data, key=lambda m: (m != "loss", m))
    if not names:
        raise FormatError(f"{path}: the history has no scalar metrics to plot")
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for split, points in sorted(data[name].items(), key=lambda kv: kv[0] != "train"):
            epochs = [e + 1 for e, _ in points]
            ax.plot(epochs, [v for _, v in points], marker="o", markersize=3, label=split)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return names
