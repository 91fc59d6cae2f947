"""The batcher with a stand-in model: merging, splitting, limits, queue bound, timeouts, draining.

The stand-in records every batch it runs and doubles its input, so results are
checked against a formula and batch sizes are observed directly, not by timing.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from axonrt import InputError, Signature
from axonrt.serve.batching import Batcher
from axonrt.serve.errors import ProtocolError, Timeout, Unavailable


class Doubler:
    """y = 2 x on x[batch, 2]; can be held at a gate to keep a batch running."""

    def __init__(self, batch_dim="batch"):
        self.inputs = [Signature("x", "float32", (batch_dim, 2))]
        self.outputs = [Signature("y", "float32", (batch_dim, 2))]
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def run(self, feeds):
        self.gate.wait(10)
        x = feeds["x"]
        if x.dtype != np.float32:
            raise InputError("input 'x': expected float32")
        self.batches.append(x.shape[0])
        return {"y": 2 * x}


class Observer:
    def __init__(self):
        self.depths, self.rows = [], []

    def queued(self, model, depth):
        self.depths.append(depth)

    def batch(self, model, rows):
        self.rows.append(rows)


def _batcher(model, **kw):
    options = dict(max_batch_size=8, max_queue_delay_ms=0, max_queue_size=100, instances=1)
    return Batcher(model, "m", observer=Observer(), **{**options, **kw})


def _rows(n, start=0.0):
    return {"x": (np.arange(n * 2, dtype=np.float32).reshape(n, 2) + start)}


def test_requests_queued_together_run_as_one_batch_and_split_back():
    async def main():
        model = Doubler()
        b = _batcher(model)
        feeds = [_rows(1, 0), _rows(2, 10), _rows(3, 20)]
        results = await asyncio.gather(*(b.submit(f, 10) for f in feeds))
        await b.stop()
        return model, feeds, results

    model, feeds, results = asyncio.run(main())
    assert model.batches == [6]
    for f, r in zip(feeds, results):
        np.testing.assert_array_equal(r["y"], 2 * f["x"])


def test_batches_never_exceed_max_batch_size_and_oversized_requests_run_alone():
    async def main():
        model = Doubler()
        b = _batcher(model, max_batch_size=4)
        feeds = [_rows(3), _rows(2), _rows(1), _rows(6)]
        results = await asyncio.gather(*(b.submit(f, 10) for f in feeds))
        await b.stop()
        return model, feeds, results

    model, feeds, results = asyncio.run(main())
    # 3 + 1 fill the first batch (2 more would pass 4), then 2, then 6 alone
    assert model.batches == [4, 2, 6]
    for f, r in zip(feeds, results):
        np.testing.assert_array_equal(r["y"], 2 * f["x"])


def test_batching_off_runs_each_request_alone():
    async def main():
        model = Doubler()
        b = _batcher(model, max_batch_size=1)
        await asyncio.gather(*(b.submit(_rows(2), 10) for _ in range(3)))
        await b.stop()
        return model

    assert asyncio.run(main()).batches == [2, 2, 2]


def test_a_model_without_a_dynamic_batch_dim_is_never_merged():
    async def main():
        model = Doubler(batch_dim=2)
        b = _batcher(model)
        await asyncio.gather(*(b.submit(_rows(2), 10) for _ in range(2)))
        await b.stop()
        return model, b

    model, b = asyncio.run(main())
    assert model.batches == [2, 2] and not b.batching


def test_a_delay_waits_for_the_batch_to_fill():
    async def main():
        model = Doubler()
        b = _batcher(model, max_batch_size=3, max_queue_delay_ms=5000)
        first = asyncio.ensure_future(b.submit(_rows(1), 10))
        await asyncio.sleep(0.05)
        assert not first.done() and b.depth == 1  # held for the delay, not run alone
        await asyncio.gather(first, b.submit(_rows(2), 10))
        await b.stop()
        return model

    assert asyncio.run(main()).batches == [3]


def test_a_full_queue_is_503_with_retry_after():
    async def main():
        model = Doubler()
        model.gate.clear()  # the first batch blocks in the model
        b = _batcher(model, max_queue_size=1)
        running = asyncio.ensure_future(b.submit(_rows(1), 10))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(b.submit(_rows(1), 10))
        await asyncio.sleep(0.05)
        with pytest.raises(Unavailable, match="queue full") as full:
            await b.submit(_rows(1), 10)
        model.gate.set()
        await asyncio.gather(running, queued)
        await b.stop()
        return full.value, model

    err, model = asyncio.run(main())
    assert err.status == 503 and err.headers["Retry-After"] == "1"
    assert model.batches == [1, 1]


def test_requests_time_out_with_504_and_are_dropped_from_the_queue():
    async def main():
        model = Doubler()
        model.gate.clear()
        b = _batcher(model)
        running = asyncio.ensure_future(b.submit(_rows(1), 10))
        await asyncio.sleep(0.05)
        with pytest.raises(Timeout, match="no result within") as timeout:
            await b.submit(_rows(5), 0.05)
        model.gate.set()
        await running
        await b.stop()
        return timeout.value, model

    err, model = asyncio.run(main())
    assert err.status == 504 and model.batches == [1]  # the timed-out 5 rows never ran


def test_model_errors_reach_every_request_of_the_batch_and_the_loop_survives():
    async def main():
        model = Doubler()
        b = _batcher(model)
        bad = {"x": np.zeros((1, 2), np.float64)}
        results = await asyncio.gather(b.submit(bad, 10), b.submit(bad, 10), return_exceptions=True)
        good = await b.submit(_rows(1), 10)
        await b.stop()
        return results, good

    results, good = asyncio.run(main())
    assert all(isinstance(r, ProtocolError) for r in results)
    np.testing.assert_array_equal(good["y"], 2 * _rows(1)["x"])


def test_stop_drains_queued_requests_then_refuses_new_ones():
    async def main():
        model = Doubler()
        model.gate.clear()
        b = _batcher(model, max_batch_size=1)
        pending = [asyncio.ensure_future(b.submit(_rows(1), 10)) for _ in range(3)]
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(b.stop())
        await asyncio.sleep(0.05)
        with pytest.raises(Unavailable, match="unloading"):
            await b.submit(_rows(1), 10)
        model.gate.set()
        await stopping
        return [p.result() for p in pending]

    assert len(asyncio.run(main())) == 3
