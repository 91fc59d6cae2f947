"""Dynamic batching: requests for one model queued, merged along the batch dimension, run off
the event loop, and split back.

A batch starts with the oldest queued request and takes every later one whose
non-batch shapes match, up to `max_batch_size` rows. With `max_queue_delay_ms`
0 it runs at once with whatever has queued (requests that arrive while a batch
runs form the next one); otherwise it waits up to that long for the batch to
fill. The queue is bounded: a full queue is a 503 with Retry-After rather than
unbounded memory. A request that waits or runs past its timeout gets a 504, and
is dropped from the queue if it had not started.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import InputError, RunError
from .errors import ProtocolError, ServeError, Timeout, Unavailable


class Servable(Protocol):
    """What the server needs of a model: axonrt's signature interface."""

    inputs: list[Any]
    outputs: list[Any]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class BatchObserver(Protocol):
    """Where a batcher reports its queue depth and batch sizes (the metrics)."""

    def queued(self, model: str, depth: int) -> None: ...

    def batch(self, model: str, rows: int) -> None: ...


@dataclass
class _Item:
    feeds: dict[str, np.ndarray]
    rows: int
    key: tuple[Any, ...]
    future: asyncio.Future[dict[str, np.ndarray]]
    enqueued: float = field(default_factory=time.monotonic)


def _expire(future: asyncio.Future[Any], name: str, timeout: float) -> None:
    if not future.done():
        future.set_exception(Timeout(f"model {name!r}: no result within {timeout:g} s"))


def batchable(model: Servable) -> bool:
    """Whether every input and output has a leading dynamic (batch) dimension."""
    sigs = [*model.inputs, *model.outputs]
    return bool(sigs) and all(
        s.shape is not None and len(s.shape) >= 1 and not isinstance(s.shape[0], int) for s in sigs
    )


class Batcher:
    """The queue and execution loop of one model version."""

    def __init__(
        self,
        model: Servable,
        name: str,
        *,
        max_batch_size: int,
        max_queue_delay_ms: float,
        max_queue_size: int,
        instances: int,
        observer: BatchObserver,
    ):
        self.model = model
        self.name = name
        self.batching = batchable(model) and max_batch_size > 1
        self.max_batch_size = max_batch_size if self.batching else 1
        self.delay = max_queue_delay_ms / 1000.0
        self.max_queue_size = max_queue_size
        self.observer = observer
        self._pending: collections.deque[_Item] = collections.deque()
        self._wake = asyncio.Event()
        self._stopping = False
        self._held = 0  # requests taken into a batch that is still filling
        self._executor = ThreadPoolExecutor(instances, thread_name_prefix=f"axonrt-{name}")
        self._loops = [
            asyncio.get_running_loop().create_task(self._loop()) for _ in range(instances)
        ]

    @property
    def depth(self) -> int:
        """Requests waiting: queued, or in a batch that is still filling (not yet running)."""
        return len(self._pending) + self._held

    async def submit(self, feeds: dict[str, np.ndarray], timeout: float) -> dict[str, np.ndarray]:
        """Queue validated feeds; the model's outputs for exactly these rows."""
        if self._stopping:
            raise Unavailable(f"model {self.name!r} is unloading", headers={"Retry-After": "1"})
        if len(self._pending) >= self.max_queue_size:
            raise Unavailable(
                f"model {self.name!r}: queue full ({self.max_queue_size} requests waiting); "
                "retry later",
                headers={"Retry-After": "1"},
            )
        first = next(iter(feeds.values()))
        rows = int(first.shape[0]) if self.batching else 1
        key = tuple(
            (k, v.shape[1:] if self.batching else v.shape) for k, v in sorted(feeds.items())
        )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        self._pending.append(_Item(feeds, rows, key, future))
        self.observer.queued(self.name, self.depth)
        self._wake.set()
        # a timer on the future itself (cheaper than wait_for's task per request); a request
        # that expires is skipped by the batcher if it has not started
        timer = loop.call_later(timeout, _expire, future, self.name, timeout)
        try:
            return await future
        finally:
            timer.cancel()

    async def _loop(self) -> None:
        while True:
            while not self._pending:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
            batch = await self._gather()
            self._held -= len(batch)
            self.observer.queued(self.name, self.depth)
            if batch:
                await self._execute(batch)

    async def _gather(self) -> list[_Item]:
        """The oldest live request plus compatible later ones, waiting up to the delay."""
        batch: list[_Item] = []
        rows = 0
        deadline = time.monotonic() + self.delay
        while True:
            kept: collections.deque[_Item] = collections.deque()
            before = len(batch)
            while self._pending:
                item = self._pending.popleft()
                if item.future.done():
                    continue
                fits = not batch or (
                    item.key == batch[0].key and rows + item.rows <= self.max_batch_size
                )
                if fits and (not batch or self.batching):
                    batch.append(item)
                    rows += item.rows
                else:
                    kept.append(item)
            self._pending.extendleft(reversed(kept))
            self._held += len(batch) - before
            remaining = deadline - time.monotonic()
            if not batch or rows >= self.max_batch_size or remaining <= 0 or self._stopping:
                return batch
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)

    async def _execute(self, batch: list[_Item]) -> None:
        rows = sum(item.rows for item in batch)
        self.observer.batch(self.name, rows)
        loop = asyncio.get_running_loop()
        try:
            parts = await loop.run_in_executor(self._executor, self._run, batch)
        except ServeError as exc:
            parts = [exc] * len(batch)
        except Exception as exc:  # a model bug must fail its requests, not the loop
            parts = [ServeError(f"model {self.name!r} failed: {type(exc).__name__}: {exc}")] * len(
                batch
            )
        for item, part in zip(batch, parts):
            if item.future.done():
                continue
            if isinstance(part, BaseException):
                item.future.set_exception(part)
            else:
                item.future.set_result(part)

    def _run(self, batch: list[_Item]) -> list[dict[str, np.ndarray]]:
        """Runs in the executor thread: concatenate, run, split."""
        if len(batch) == 1:
            feeds = batch[0].feeds
        else:
            feeds = {k: np.concatenate([it.feeds[k] for it in batch]) for k in batch[0].feeds}
        try:
            outputs = self.model.run(feeds)
        except InputError as exc:
            raise ProtocolError(str(exc)) from None
        except RunError as exc:
            raise ServeError(str(exc)) from None
        if len(batch) == 1:
            return [outputs]
        bounds = np.cumsum([it.rows for it in batch])[:-1]
        total = sum(it.rows for it in batch)
        for name, value in outputs.items():
            if value.ndim == 0 or value.shape[0] != total:
                raise ServeError(
                    f"model {self.name!r}: output {name!r} has shape {list(value.shape)}, "
                    f"which does not split into the batch's {total} rows"
                )
        split = {name: np.split(value, bounds) for name, value in outputs.items()}
        return [{name: split[name][i] for name in outputs} for i in range(len(batch))]

    async def stop(self) -> None:
        """Finish what is queued, then end the loops and the executor."""
        self._stopping = True
        self._wake.set()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._executor.shutdown(wait=True)


__all__ = ["BatchObserver", "Batcher", "Servable", "batchable"]
