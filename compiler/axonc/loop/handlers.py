"""The handler functions behind Loop.log / validate / checkpoint / early_stop /
reduce_lr_on_plateau / monitor, and the metric-history file.

A handler takes the loop State and returns (status, state); these build them.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..errors import OptionError
from .progress import format_metrics
from .state import State, serialize_state

Handler = Callable[[State], tuple[str, State]]


def check_mode(mode: Any, who: str, *, allow_fn: bool = True) -> Any:
    if mode in ("min", "max") or (allow_fn and callable(mode)):
        return mode
    extra = " or a function value -> improved?" if allow_fn else ""
    raise OptionError(f"{who}: mode must be 'min' or 'max'{extra}, got {mode!r}")


def _number(value: Any, who: str, metric: str) -> float:
    arr = np.asarray(value)
    if arr.size != 1:
        raise OptionError(f"{who}: metric {metric!r} is not a scalar (shape {arr.shape})")
    return float(arr.item())


def _improved(mode: Any, value: float, best: float | None) -> bool:
    if callable(mode):
        return bool(mode(value))
    if best is None:
        return True
    return value < best if mode == "min" else value > best


# ---- log -------------------------------------------------------------------------------------


def supervised_message(state: State, with_epoch: bool = True) -> str:
    """Axon's trainer log line: epoch, batch and every metric."""
    head = f"Epoch: {state.epoch}, " if with_epoch else ""
    return f"{head}Batch: {state.iteration}, {format_metrics(state.metrics)}\n"


def log_device(device: Any) -> TextIO | str | None:
    """Axon's IO device: None / "stdio" (stdout), "stderr", or a file object."""
    if device is None or device == "stdio":
        return None
    if device == "stderr" or hasattr(device, "write"):
        return device
    raise OptionError(
        f"log: device must be 'stdio', 'stderr' or an open file (anything with write), "
        f"got {device!r}"
    )


def log_handler(message_fn: Callable[[State], str], device: TextIO | str | None) -> Handler:
    """Writes message_fn(state) to `device`: stdout or stderr as they are at the time of
    writing (None / "stderr"), or a file object."""

    def log(state: State) -> tuple[str, State]:
        out = sys.stdout if device is None else sys.stderr if isinstance(device, str) else device
        out.write(message_fn(state))
        out.flush()
        return "continue", state

    return log


# ---- validate --------------------------------------------------------------------------------


def validation_handler(evaluator: Any, data: Any) -> Handler:
    """Runs `evaluator` on `data` with the training model state; adds validation_* metrics."""

    def validate(state: State) -> tuple[str, State]:
        step_state = state.step_state
        if not isinstance(step_state, Mapping) or "model_state" not in step_state:
            raise OptionError(
                "validate needs a supervised training loop: the step state has no 'model_state' "
                "(build the loop with Loop.trainer)"
            )
        results = evaluator.run(data, step_state["model_state"], progress=False)
        last = results[max(results)]
        metrics = {**state.metrics, **{f"validation_{k}": v for k, v in last.items()}}
        return "continue", state.replace(metrics=metrics)

    return validate


# ---- checkpoint ------------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so a crash leaves either the old file or the new one, never half.

    The bytes go to a temporary file in the same directory, are flushed to disk, and the
    file is renamed over `path` (os.replace is atomic on POSIX and Windows).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def checkpoint_file(file_pattern: str | Callable[[State], str], state: State) -> str:
    if callable(file_pattern):
        return str(file_pattern(state))
    return file_pattern.format(epoch=state.epoch, iteration=state.iteration)


def checkpoint_handler(
    path: str | os.PathLike[str],
    file_pattern: str | Callable[[State], str],
    criteria: str | None,
    mode: str,
    serialize_step_state: Callable[[Any], Any] | None,
) -> Handler:
    """Serializes the state to path/file_pattern; with `criteria`, only when it is the best."""
    key = f"checkpoint/{criteria}"

    def checkpoint(state: State) -> tuple[str, State]:
        if criteria is not None:
            value = _number(state.metrics[criteria], "checkpoint", criteria)
            meta = state.handler_metadata.get(key, {})
            if not _improved(mode, value, meta.get("best")):
                return "continue", state
            state = state.replace(handler_metadata={**state.handler_metadata, key: {"best": value}})
        target = Path(path) / checkpoint_file(file_pattern, state)
        write_atomic(target, serialize_state(state, serialize_step_state=serialize_step_state))
        return "continue", state

    return checkpoint


# ---- monitors --------------------------------------------------------------------------------


def monitor_handler(metric: str, fn: Handler, name: str, mode: Any, patience: int) -> Handler:
    """Axon's monitor: run `fn` once `metric` has not improved for more than `patience` events.

    The best value and the count of events since it improved live in
    handler_metadata[name]; after `fn` fires the current value becomes the new reference.
    """

    def monitor(state: State) -> tuple[str, State]:
        value = _number(state.metrics[metric], name, metric)
        meta = state.handler_metadata.get(name, {"best": None, "since_last_improvement": 0})
        status = "continue"
        if _improved(mode, value, meta["best"]):
            meta = {"best": value, "since_last_improvement": 0}
        elif meta["since_last_improvement"] < patience:
            meta = {**meta, "since_last_improvement": meta["since_last_improvement"] + 1}
        else:
            status, state = fn(state)
            meta = {"best": value, "since_last_improvement": 0}
        return status, state.replace(handler_metadata={**state.handler_metadata, name: meta})

    return monitor


def halt_loop(state: State) -> tuple[str, State]:
    return "halt_loop", state


def reduce_lr(factor: float) -> Handler:
    """Multiplies the trainer's learning-rate scale by `factor` (the next steps use it)."""

    def reduce(state: State) -> tuple[str, State]:
        step_state = state.step_state
        if not isinstance(step_state, Mapping) or "learning_rate_scale" not in step_state:
            raise OptionError(
                "reduce_lr_on_plateau needs a supervised training loop: the step state has no "
                "'learning_rate_scale' (build the loop with Loop.trainer)"
            )
        scale = float(step_state["learning_rate_scale"]) * factor
        return "continue", state.replace(step_state={**step_state, "learning_rate_scale": scale})

    return reduce


# ---- history ---------------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        return str(value)
    out = arr.tolist()
    if isinstance(out, float) and not np.isfinite(out):
        return None
    return out


def history_record(epoch: int, metrics: Mapping[str, Any], seconds: float | None) -> str:
    """One JSON line: {"epoch", "seconds", "metrics": {name: value}}."""
    record = {
        "epoch": epoch,
        "seconds": seconds,
        "metrics": {str(k): _json_value(v) for k, v in metrics.items()},
    }
    return json.dumps(record) + "\n"


def write_history(path: Path, history: Mapping[int, Mapping[str, Any]], times: Mapping) -> None:
    """The whole history file (one line per finished epoch), written atomically."""
    text = "".join(history_record(e, history[e], times.get(e)) for e in sorted(history))
    write_atomic(path, text.encode())


def append_history(path: Path, epoch: int, metrics: Mapping[str, Any], seconds: float) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(history_record(epoch, metrics, seconds))
