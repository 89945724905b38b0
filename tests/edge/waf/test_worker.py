"""The WAF inspection thread and its batched delivery of verdicts."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ringwall.edge.waf.engine import WafRequest, WafVerdict
from ringwall.edge.waf.worker import SETTLE_PER_ITERATION, InspectionWorker, _settle

PASS = WafVerdict(blocked=False, status=200, rules=(), anomaly_score=0)


def request(uri: bytes) -> WafRequest:
    return WafRequest("192.0.2.10", 50000, "127.0.0.1", 8080, "GET", uri)


class GatedEngine:
    """Returns PASS for each request once `gate` is set, and raises for /error."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.inspected: list[bytes] = []

    def inspect(self, request: WafRequest) -> WafVerdict:
        self.gate.wait(timeout=10)
        self.inspected.append(request.uri)
        if request.uri == b"/error":
            raise MemoryError("msc_new_transaction_with_id failed")
        return PASS


class RecordingLoop:
    """Stands in for the event loop: records each batch instead of running it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.batches: list[list[tuple[asyncio.Future[WafVerdict], object]]] = []
        self.delivered = threading.Event()

    def create_future(self) -> asyncio.Future[WafVerdict]:
        return self.loop.create_future()

    def call_soon_threadsafe(
        self, callback: Callable[..., None], loop: Any, batch: Any, start: int
    ) -> None:
        assert start == 0
        self.batches.append(batch)
        self.delivered.set()


@pytest.fixture
def holder_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def ticking_clock(step: float) -> Callable[[], float]:
    """Return a clock that advances by `step` seconds on every read."""
    ticks = iter(range(1_000_000))
    return lambda: next(ticks) * step


def start(loop: Any, **options: Any) -> InspectionWorker:
    return InspectionWorker(loop, on_start=lambda: None, **options)


def test_verdict_reaches_future() -> None:
    async def main() -> WafVerdict:
        worker = start(asyncio.get_running_loop())
        engine = GatedEngine()
        engine.gate.set()
        try:
            return await worker.submit(engine, request(b"/"))  # type: ignore[arg-type]
        finally:
            worker.close()

    assert asyncio.run(main()) is PASS


def test_engine_exception_reaches_future() -> None:
    async def main() -> None:
        worker = start(asyncio.get_running_loop())
        engine = GatedEngine()
        engine.gate.set()
        try:
            with pytest.raises(MemoryError, match="msc_new_transaction_with_id"):
                await worker.submit(engine, request(b"/error"))  # type: ignore[arg-type]
        finally:
            worker.close()

    asyncio.run(main())


def test_queued_verdicts_delivered_together(holder_loop: asyncio.AbstractEventLoop) -> None:
    loop = RecordingLoop(holder_loop)
    worker = start(loop, max_hold=60.0)
    engine = GatedEngine()
    futures = [worker.submit(engine, request(b"/%d" % i)) for i in range(3)]  # type: ignore[arg-type]
    engine.gate.set()
    assert loop.delivered.wait(timeout=10)
    worker.close()
    [batch] = loop.batches
    assert [future for future, _ in batch] == futures
    assert [outcome for _, outcome in batch] == [PASS, PASS, PASS]


def test_idle_queue_delivers_at_once(holder_loop: asyncio.AbstractEventLoop) -> None:
    loop = RecordingLoop(holder_loop)
    worker = start(loop, max_hold=60.0)
    engine = GatedEngine()
    engine.gate.set()
    for uri in (b"/1", b"/2"):
        loop.delivered.clear()
        worker.submit(engine, request(uri))  # type: ignore[arg-type]
        assert loop.delivered.wait(timeout=10)
    worker.close()
    assert [len(batch) for batch in loop.batches] == [1, 1]


def test_max_hold_splits_batches(holder_loop: asyncio.AbstractEventLoop) -> None:
    # The clock advances 1 s per read, so each inspection takes 1 s. After the
    # first, one more inspection would keep its verdict waiting 1 s, within
    # max_hold. After the second, it has waited 2 s, so the batch goes.
    loop = RecordingLoop(holder_loop)
    worker = start(loop, max_hold=1.5, clock=ticking_clock(1.0))
    engine = GatedEngine()
    for i in range(5):
        worker.submit(engine, request(b"/%d" % i))  # type: ignore[arg-type]
    engine.gate.set()
    worker.close()
    assert [len(batch) for batch in loop.batches] == [2, 2, 1]


def test_cancelled_request_not_inspected(holder_loop: asyncio.AbstractEventLoop) -> None:
    loop = RecordingLoop(holder_loop)
    worker = start(loop, max_hold=60.0)
    engine = GatedEngine()
    first = worker.submit(engine, request(b"/first"))  # type: ignore[arg-type]
    cancelled = worker.submit(engine, request(b"/cancelled"))  # type: ignore[arg-type]
    cancelled.cancel()
    engine.gate.set()
    worker.close()
    assert engine.inspected == [b"/first"]
    assert [future for batch in loop.batches for future, _ in batch] == [first]


def test_close_finishes_queued_jobs(holder_loop: asyncio.AbstractEventLoop) -> None:
    loop = RecordingLoop(holder_loop)
    worker = start(loop, max_hold=60.0)
    engine = GatedEngine()
    for i in range(3):
        worker.submit(engine, request(b"/%d" % i))  # type: ignore[arg-type]
    engine.gate.set()
    worker.close()
    assert engine.inspected == [b"/0", b"/1", b"/2"]
    assert sum(len(batch) for batch in loop.batches) == 3
    worker.close()


def test_thread_runs_on_start_hook() -> None:
    started: list[str] = []
    worker = InspectionWorker(
        asyncio.new_event_loop(), on_start=lambda: started.append(threading.current_thread().name)
    )
    worker.close()
    worker.loop.close()
    assert started == ["ringwall-waf"]


def test_closed_loop_drops_verdicts(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    worker = start(loop)
    engine = GatedEngine()
    worker.submit(engine, request(b"/"))  # type: ignore[arg-type]
    loop.close()
    with caplog.at_level(logging.WARNING, logger="ringwall.waf"):
        engine.gate.set()
        worker.close()
    assert "dropped the WAF verdicts of 1 requests" in caplog.text


def test_submit_after_close_raises(holder_loop: asyncio.AbstractEventLoop) -> None:
    worker = start(RecordingLoop(holder_loop))
    worker.close()
    with pytest.raises(RuntimeError, match="inspection thread is not running"):
        worker.submit(GatedEngine(), request(b"/"))  # type: ignore[arg-type]


class CallSoonRecorder:
    """Records call_soon calls instead of running them in a later iteration."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def call_soon(self, callback: Callable[..., None], *arguments: Any) -> None:
        self.calls.append((callback, *arguments))

    def run_next(self) -> None:
        callback, *arguments = self.calls.pop(0)
        callback(*arguments)


def test_settle_spreads_batch_over_iterations(holder_loop: asyncio.AbstractEventLoop) -> None:
    count = 2 * SETTLE_PER_ITERATION + 1
    futures = [holder_loop.create_future() for _ in range(count)]
    error = MemoryError("out of memory")
    batch: list[tuple[asyncio.Future[WafVerdict], WafVerdict | Exception]] = [
        (future, error if index == 3 else PASS) for index, future in enumerate(futures)
    ]
    futures[1].cancel()
    loop = CallSoonRecorder()
    _settle(loop, batch, 0)  # type: ignore[arg-type]
    assert [future.done() for future in futures].count(True) == SETTLE_PER_ITERATION
    assert loop.calls == [(_settle, loop, batch, SETTLE_PER_ITERATION)]
    loop.run_next()
    assert [future.done() for future in futures].count(True) == 2 * SETTLE_PER_ITERATION
    loop.run_next()
    assert all(future.done() for future in futures)
    assert loop.calls == []
    assert futures[1].cancelled()
    assert futures[3].exception() is error
    assert futures[0].result() is PASS
