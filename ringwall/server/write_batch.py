"""Writes held until the event loop has handled every event of one poll.

A write to a peer that sleeps in epoll wakes it. In a perf profile of a
worker on the benchmark VM, that wakeup of the other CPU was the largest
single kernel cost of a proxied request. Writing each message at once
wakes the client or the upstream for nearly every write, since a peer
handles one message and sleeps before the next arrives. Holding the writes
made while the loop handles one poll's events, and sending them together
afterwards, lets one wakeup serve several writes.

The cost is latency: a held write waits while the loop handles the rest of
the poll, at most MAX_HOLD plus the handling of one more request. On the
benchmark machine this cut the kernel time of a keep-alive request from
19 to 21 µs to 12.5 to 16 µs (docs/benchmarks.md, "Writes sent per poll").

Bytes keep their order only if every write of a connection goes through
the same batch, and a connection that closes or half-closes first sends
its held bytes with `send_now`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable

log = logging.getLogger("ringwall.server")

# Held writes go out early once the first has waited this long, in seconds,
# so that CPU-heavy requests (a WAF route's, say) do not delay the others'
# responses. Past this, the peers have likely gone back to sleep (an estimate).
MAX_HOLD = 0.0005
# Larger writes go out at once, after the transport's held bytes, so that
# only writes under 64 KiB wait here.
HOLD_LIMIT = 65536

_BATCHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WriteBatch] = (
    weakref.WeakKeyDictionary()
)


class WriteBatch:
    """The writes held for one event loop, per transport in order."""

    __slots__ = ("_clock", "_held", "_loop", "_scheduled", "_since")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, clock: Callable[[], float] = time.monotonic
    ) -> None:
        # Weak, so that the batch does not keep its loop in `_BATCHES` forever.
        self._loop = weakref.ref(loop)
        self._clock = clock
        self._held: dict[asyncio.WriteTransport, list[bytes]] = {}
        self._scheduled = False
        # When the oldest held write arrived.
        self._since = 0.0

    def write(self, transport: asyncio.WriteTransport, data: bytes) -> None:
        held = self._held.get(transport)
        if held is None:
            if len(data) >= HOLD_LIMIT:
                transport.write(data)
                return
            if not self._scheduled:
                self._scheduled = True
                self._since = self._clock()
                loop = self._loop()
                assert loop is not None  # a transport writes only while its loop exists
                # call_soon runs after the callbacks of the current poll's events.
                loop.call_soon(self._poll_ended)
            else:
                now = self._clock()
                if now - self._since > MAX_HOLD:
                    self.flush()
                    self._since = now
            self._held[transport] = [data]
        else:
            held.append(data)
            if len(data) >= HOLD_LIMIT:
                self.send_now(transport)

    def send_now(self, transport: asyncio.WriteTransport) -> None:
        """Write the held bytes of `transport`, before it closes or half-closes."""
        held = self._held.pop(transport, None)
        if held and not transport.is_closing():
            transport.write(held[0] if len(held) == 1 else b"".join(held))

    def _poll_ended(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        """Write everything held."""
        held, self._held = self._held, {}
        for transport, chunks in held.items():
            if transport.is_closing():
                continue  # aborted or lost, so the bytes cannot be sent
            try:
                transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            except Exception:
                # One connection's failure must not cost the others their writes.
                log.exception("a held write failed")


def write_batch(loop: asyncio.AbstractEventLoop) -> WriteBatch:
    """Return the batch of `loop`, made on first use."""
    batch = _BATCHES.get(loop)
    if batch is None:
        batch = _BATCHES[loop] = WriteBatch(loop)
    return batch
