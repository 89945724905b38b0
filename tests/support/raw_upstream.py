"""A scripted upstream server that records the raw bytes it receives.

Framing tests use it behind the gateway to see exactly what the gateway forwards.
h11 finds where each request ends, so keep-alive and pipelined requests get one
scripted response each, but the recorded bytes are the unparsed input.
"""

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import h11

from tests.support.loop_thread import running_loop

DEFAULT_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
_READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class RecordedRequest:
    """A request as h11 parsed it, with its full body and the index of its connection."""

    request: h11.Request
    body: bytes
    connection_index: int


ResponseSource = bytes | Callable[[RecordedRequest], bytes]


@dataclass
class _ConnectionState:
    index: int
    parser: h11.Connection = field(default_factory=lambda: h11.Connection(h11.SERVER))
    request: h11.Request | None = None
    body: bytearray = field(default_factory=bytearray)

    def reset_parser(self) -> None:
        """Start a fresh parser that begins with the bytes after the last request."""
        leftover, closed = self.parser.trailing_data
        self.parser = h11.Connection(h11.SERVER)
        if leftover:
            # Only non-empty data: h11 treats receive_data(b"") as end of stream.
            self.parser.receive_data(leftover)
        if closed:
            self.parser.receive_data(b"")
        self.request = None
        self.body = bytearray()


class RawUpstream:
    """TCP server on 127.0.0.1 that records raw input and sends scripted responses.

    Each complete request gets the next response from `queue_responses()`, or else
    `response`, written verbatim. `response` may also be a function of the recorded
    request. The connection is closed after a response when `close_after_response`
    is set or the request asked for it (`Connection: close`, HTTP/1.0). A request
    that h11 rejects is listed in `errors`, and its connection is closed without
    a response.
    """

    def __init__(self, response: ResponseSource = DEFAULT_RESPONSE) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.response = response
        self.close_after_response = False
        self._queued_responses: deque[bytes] = deque()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._connections: list[bytearray] = []
        self._requests: list[RecordedRequest] = []
        self._errors: list[str] = []
        self._server: asyncio.Server | None = None
        self._callback_tasks: set[asyncio.Task[Any]] = set()
        self._connection_tasks: set[asyncio.Task[None]] = set()

    @property
    def connections(self) -> list[bytes]:
        """The raw bytes received on each connection, in accept order."""
        with self._lock:
            return [bytes(data) for data in self._connections]

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every complete request, in the order they ended."""
        with self._lock:
            return list(self._requests)

    @property
    def errors(self) -> list[str]:
        """h11 error messages for input that was not a valid request."""
        with self._lock:
            return list(self._errors)

    def queue_responses(self, *responses: bytes) -> None:
        """Send these responses, in order, before falling back to `response`."""
        with self._lock:
            self._queued_responses.extend(responses)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least `count` requests are complete and return them all."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(
                    f"raw upstream received {len(self._requests)} of {count} requests "
                    f"within {timeout} s"
                )
            return list(self._requests)

    async def start(self) -> None:
        """Listen on 127.0.0.1 with a free port, stored in `port`."""
        self._server = await asyncio.start_server(self._handle_client, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every open connection."""
        server = self._server
        if server is None:
            return
        self._server = None
        server.close()
        for task in self._connection_tasks:
            task.cancel()
        if self._callback_tasks:
            await asyncio.wait(list(self._callback_tasks))
        await server.wait_closed()

    async def _handle_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Python 3.11's asyncio.streams logs "Exception in callback" when the task that
        # runs this callback is cancelled, so stop() cancels an inner task instead.
        callback_task = asyncio.current_task()
        assert callback_task is not None
        connection_task = asyncio.create_task(self._serve_client(reader, writer))
        self._callback_tasks.add(callback_task)
        self._connection_tasks.add(connection_task)
        try:
            await asyncio.wait([connection_task])
        finally:
            self._callback_tasks.discard(callback_task)
            self._connection_tasks.discard(connection_task)

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with self._changed:
            state = _ConnectionState(index=len(self._connections))
            self._connections.append(bytearray())
            self._changed.notify_all()
        try:
            await self._serve(state, reader, writer)
        finally:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(
        self, state: _ConnectionState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                data = await reader.read(_READ_SIZE)
            except ConnectionError:
                return
            with self._changed:
                self._connections[state.index] += data
                self._changed.notify_all()
            state.parser.receive_data(data)
            try:
                keep_open = await self._answer_complete_requests(state, writer)
            except h11.RemoteProtocolError as error:
                self._record_error(f"connection {state.index}: {error}")
                return
            if not keep_open or not data:
                return

    async def _answer_complete_requests(
        self, state: _ConnectionState, writer: asyncio.StreamWriter
    ) -> bool:
        """Respond to every request that is complete in the parser; return False to close."""
        while True:
            event = state.parser.next_event()
            if event is h11.NEED_DATA:
                return True
            if isinstance(event, h11.Request):
                state.request = event
            elif isinstance(event, h11.Data):
                state.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                if not await self._respond(state, writer):
                    return False
                state.reset_parser()
            else:
                return False

    async def _respond(self, state: _ConnectionState, writer: asyncio.StreamWriter) -> bool:
        """Record the finished request and write its response; return False to close."""
        assert state.request is not None
        recorded = RecordedRequest(state.request, bytes(state.body), state.index)
        with self._changed:
            self._requests.append(recorded)
            self._changed.notify_all()
            response = self._next_response(recorded)
        writer.write(response)
        try:
            await writer.drain()
        except ConnectionError:
            return False
        return not self.close_after_response and state.parser.their_state is not h11.MUST_CLOSE

    def _next_response(self, recorded: RecordedRequest) -> bytes:
        """Pick the response for `recorded`. The caller must hold the lock."""
        if self._queued_responses:
            return self._queued_responses.popleft()
        if isinstance(self.response, bytes):
            return self.response
        return self.response(recorded)

    def _record_error(self, message: str) -> None:
        with self._changed:
            self._errors.append(message)
            self._changed.notify_all()


@contextmanager
def running_raw_upstream(response: ResponseSource = DEFAULT_RESPONSE) -> Iterator[RawUpstream]:
    """Yield a started RawUpstream hosted on a background event loop; stop it on exit."""
    with running_loop("raw-upstream") as loop_thread:
        upstream = RawUpstream(response)
        loop_thread.run(upstream.start())
        try:
            yield upstream
        finally:
            loop_thread.run(upstream.stop())
