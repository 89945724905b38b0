"""A request body streamed from the client connection to the upstream, with backpressure."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from ringwall.errors import PayloadTooLarge, Rejection

# Above this many buffered bytes the client connection stops reading until
# the upstream side has taken some.
HIGH_WATER = 256 * 1024


class RequestBody:
    """Chunks received from the client and not yet sent upstream.

    The client connection calls `feed` and `finish`; the forwarder calls
    `read`. `limit` is counted on decoded bytes as they arrive, so a chunked
    body is refused at the first byte past the limit.
    """

    __slots__ = (
        "_chunks",
        "_on_wait",
        "_pause",
        "_resume",
        "_waiter",
        "buffered",
        "collecting",
        "complete",
        "error",
        "limit",
        "paused",
        "received",
    )

    def __init__(self, limit: int, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self.limit = limit
        self.received = 0
        self.buffered = 0
        self.complete = False
        self.error: Rejection | None = None
        self.paused = False
        # While collecting, the whole body is held, so reading is never paused.
        self.collecting = False
        self._chunks: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._pause = pause
        self._resume = resume
        # Called once, the first time a reader needs bytes that have not
        # arrived: it sends `100 Continue` to a client that waits for it.
        self._on_wait: Callable[[], None] | None = None

    def on_first_wait(self, callback: Callable[[], None]) -> None:
        """Call `callback` once, when a reader first waits for bytes that have not arrived."""
        self._on_wait = callback

    def mark_needed(self) -> None:
        """Tell the body that a reader needs it: run the `on_first_wait` callback if still due."""
        callback = self._on_wait
        if callback is not None:
            self._on_wait = None
            if self.received == 0 and not self.complete:
                callback()

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > self.limit:
            raise PayloadTooLarge(
                "limits", f"the request body exceeds the limit of {self.limit} bytes", close=True
            )
        self._chunks.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self.paused and not self.collecting:
            self.paused = True
            self._pause()
        self._wake()

    def finish(self) -> None:
        self.complete = True
        self._wake()

    def fail(self, error: Rejection) -> None:
        self.error = error
        self._wake()

    async def read(self) -> bytes | None:
        """Return the next chunk, or None once the body is complete."""
        while not self._chunks:
            if self.error is not None:
                raise self.error
            if self.complete:
                return None
            self.mark_needed()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._chunks.popleft()
        self.buffered -= len(data)
        if self.paused and self.buffered <= HIGH_WATER // 2:
            self.paused = False
            self._resume()
        return data

    async def wait_buffered(self, threshold: int) -> None:
        """Wait until the body is complete or at least `threshold` bytes are buffered."""
        while not self.complete and self.buffered < threshold:
            if self.error is not None:
                raise self.error
            self.mark_needed()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.error is not None:
            raise self.error

    async def collect(self) -> bytes:
        """Wait for the whole body and return it; it stays queued, as one chunk, for `read`.

        The body is bounded by `limit`, so holding it whole is bounded too.
        """
        self.collecting = True
        if self.paused:
            self.paused = False
            self._resume()
        # More than the limit is never buffered, so this waits for the whole body.
        await self.wait_buffered(self.limit + 1)
        return self.whole()

    def whole(self) -> bytes:
        """Return the complete body, which stays queued as one chunk for `read`.

        Call it only when `complete` is True and `error` is None, or after
        `collect` has waited for that.
        """
        chunks = self._chunks
        if len(chunks) == 1:
            return chunks[0]
        data = b"".join(chunks)
        chunks.clear()
        if data:
            chunks.append(data)
        return data

    def replace(self, data: bytes) -> None:
        """Replace the complete body with `data`, such as the body decompressed.

        `received` becomes the length of `data`, because the forwarder sends
        a complete body with that Content-Length. Call it only when
        `complete` is True and `error` is None.
        """
        self._chunks.clear()
        if data:
            self._chunks.append(data)
        self.buffered = self.received = len(data)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
