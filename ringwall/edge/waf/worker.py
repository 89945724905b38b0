"""The WAF's inspection thread, which hands verdicts to the event loop in batches.

A worker process runs its inspections on one thread of their own, so the
event loop keeps serving routes without the WAF while a request is
inspected. The thread runs at the lowest CPU priority (`lower_priority`),
so the event loop preempts it whenever a socket is ready.

Every switch between the two threads costs CPU. Measured with `bench/run.py`
(benign GET, CRS 3.3.4 at paranoia level 1, 50 connections, proxy pinned to
one CPU of a 2-vCPU Xeon VM), with each verdict delivered on its own:

- the worker needed about 900 µs of CPU per request, against 580 µs with
  the inspection on the event loop's thread and 385 µs for the engine alone
  in a tight loop;
- the event loop woke about 4.5 times per request: for the request, for
  its verdict, for the upstream's response and for GIL hand-offs;
- a context switch alone costs about 1 µs there, so most of the difference
  is each side running on caches that the other side just filled.

While more requests wait in the queue, the thread therefore keeps finished
verdicts and delivers them together. The event loop then forwards a batch
of requests at once, and their responses also arrive close together, so in
that measurement it woke about 0.1 times per request. A verdict waits at
most about `max_hold` seconds, and only while other requests are queued. An
idle queue gets its verdicts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ringwall.edge.waf.engine import WafEngine, WafRequest, WafVerdict

log = logging.getLogger("ringwall.waf")

# The maximum time, in seconds, that a finished verdict waits for the others
# of its batch. In the measurement above the CPU per request was about 515 µs
# with 10 ms, 495 µs with 20 ms and 490 µs with 50 ms. A request waits this
# long only while other requests queue for the WAF, and so already wait for
# their inspections.
MAX_HOLD_S = 0.02
# Verdicts set per event-loop iteration. Resuming a request after its verdict
# costs about 30-40 µs of the event loop's time (benign GET), so 4 keep the
# loop's pauses between socket polls near 150 µs.
SETTLE_PER_ITERATION = 4


def lower_priority() -> None:
    """Give the WAF thread the lowest CPU priority: the worker's event loop goes first.

    Under Linux's SCHED_IDLE the thread still gets a small share of a busy
    CPU, so inspections slow down under load but never stop, while routes
    without the WAF keep their latency. Where SCHED_IDLE is unavailable,
    the highest nice value.
    """
    thread = threading.get_native_id()
    try:
        os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, thread, 19)


@dataclass(frozen=True, slots=True)
class _Job:
    engine: WafEngine
    request: WafRequest
    future: asyncio.Future[WafVerdict]


# A finished job: its future and the verdict, or the exception the engine raised.
_Outcome = tuple[asyncio.Future[WafVerdict], WafVerdict | Exception]


class InspectionWorker:
    """One thread that runs `WafEngine.inspect` for the requests of one event loop.

    `WafEngine.inspect` runs one transaction at a time per process, as
    libmodsecurity 3.0.9 requires, so a second worker (the old runtime's,
    during a reload) waits for this one. Start it after fork(): threads do
    not survive fork().
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_hold: float = MAX_HOLD_S,
        clock: Callable[[], float] = time.monotonic,
        on_start: Callable[[], None] = lower_priority,
    ) -> None:
        self.loop = loop
        self.max_hold = max_hold
        self._clock = clock
        self._on_start = on_start
        # Jobs in arrival order. None stops the thread.
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ringwall-waf", daemon=True)
        self._thread.start()

    def submit(self, engine: WafEngine, request: WafRequest) -> asyncio.Future[WafVerdict]:
        """Queue one inspection. The future gets the verdict or the engine's exception.

        Call it on the event loop's thread. A future cancelled before its turn
        is skipped, so a client that went away costs no inspection. Raises
        RuntimeError when the thread is not running, so the request fails
        instead of waiting forever.
        """
        if not self._thread.is_alive():
            raise RuntimeError("the WAF inspection thread is not running")
        future: asyncio.Future[WafVerdict] = self.loop.create_future()
        self._jobs.put(_Job(engine, request, future))
        return future

    def close(self) -> None:
        """Stop the thread after the jobs already queued, and wait for it."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()

    def _run(self) -> None:
        self._on_start()
        batch: list[_Outcome] = []
        held_since = 0.0
        while True:
            job = self._jobs.get()
            if job is None:
                self._deliver(batch)
                return
            # This only reads the future's state, which the event loop's thread
            # changes under the GIL. A cancellation missed here costs one
            # inspection whose verdict is then dropped.
            if job.future.cancelled():
                continue

            started = self._clock()
            outcome: WafVerdict | Exception
            try:
                outcome = job.engine.inspect(job.request)
            except Exception as error:
                outcome = error
            finished = self._clock()

            if not batch:
                held_since = finished
            batch.append((job.future, outcome))
            # Deliver now when nothing is queued, or when one more inspection as
            # long as this one would keep the first verdict waiting past max_hold.
            if self._jobs.empty() or (finished - held_since) + (finished - started) > self.max_hold:
                self._deliver(batch)
                batch = []

    def _deliver(self, batch: list[_Outcome]) -> None:
        if not batch:
            return
        try:
            self.loop.call_soon_threadsafe(_settle, self.loop, batch, 0)
        except RuntimeError:
            # The event loop is closed, so nothing waits for these verdicts.
            log.warning(
                "dropped the WAF verdicts of %d requests: the event loop is closed", len(batch)
            )


def _settle(loop: asyncio.AbstractEventLoop, batch: list[_Outcome], start: int) -> None:
    # Each verdict set here resumes its request in the next loop iteration.
    # Setting a few per iteration lets the loop poll its sockets between
    # them, so a request on a route without the WAF waits for at most a few
    # requests of the batch, not for all of them.
    end = start + SETTLE_PER_ITERATION
    for future, outcome in batch[start:end]:
        if future.cancelled():
            continue
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    if end < len(batch):
        loop.call_soon(_settle, loop, batch, end)
