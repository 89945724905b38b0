"""Connections to upstream targets: the HTTP/1.1 client protocol and keep-alive pools.

Connections to https:// targets use the upstream's `ClientTls`. The pin
check runs once the handshake is done, before a connection enters the
pool, so a kept-alive connection has always passed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections import deque
from typing import Protocol, cast

import httptools

from ringwall.config.model import Upstream
from ringwall.http.problem import reason_phrase
from ringwall.proxy.balancer import Balancer, TargetState
from ringwall.server.health import HealthChecker
from ringwall.server.write_batch import write_batch
from ringwall.tls.client_context import ClientTls, PinMismatch, build_client_tls, describe_tls_error

log = logging.getLogger("ringwall.upstream")


class ResponseSink(Protocol):
    """The receiver of what an upstream connection parses from a response."""

    def response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None: ...

    def response_body(self, data: bytes) -> None: ...

    def response_complete(self, keep_alive: bool) -> bool:
        """Take the end of the response; return True if the connection may be reused."""

    def upstream_failed(self, error: str, received_any: bool, timed_out: bool = False) -> None: ...

    def upstream_upgraded(self, leftover: bytes) -> None: ...

    def upstream_eof(self) -> bool:
        """Take the upstream's end of a tunnel; return True to keep receiving the client's side."""

    def upstream_write_ready(self) -> None: ...

    def upstream_write_paused(self) -> None: ...

    def flush(self) -> None:
        """Write what the callbacks above produced to the client."""


class ConnectFailed(Exception):
    """A connection to a target could not be opened; `timed_out` is True for a timeout."""

    def __init__(self, target: str, reason: str, *, timed_out: bool) -> None:
        super().__init__(f"cannot connect to {target}: {reason}")
        self.timed_out = timed_out


class UpstreamConnection(asyncio.Protocol):
    """One TCP connection to a target, used by one request at a time."""

    def __init__(self, pool: TargetPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self._batch = write_batch(pool.loop)
        self.sink: ResponseSink | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.head_request = False
        self.received_any = False
        self.closed = False
        self.reused = False
        self.write_paused_since = 0.0
        self.read_deadline = 0.0
        self.idle_since = 0.0
        self.tunnel = False
        self._switching = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._final_head = False
        self._final_status = 0
        self._final_headers: list[tuple[bytes, bytes]] = []

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        sink, self.sink = self.sink, None
        if sink is not None:
            until_eof = self._final_head and _delimited_by_close(
                self._final_status, self._final_headers, self.head_request
            )
            if self.tunnel or until_eof:
                # A tunnel ends, or a body delimited by the end of the connection is complete.
                sink.response_complete(False)
            else:
                sink.upstream_failed(_closed_reason(exc), self.received_any)
            sink.flush()

    def eof_received(self) -> bool | None:
        # On a tunnel the client may still send after the upstream ends its side.
        if self.tunnel and self.sink is not None and self.sink.upstream_eof():
            return True
        return None  # the transport closes, and connection_lost ends the exchange

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if self.tunnel:
            if sink is not None:
                sink.response_body(data)
                sink.flush()
            return
        if sink is None or self.parser is None:
            # Bytes on an idle connection: the stream is out of step; drop it.
            self.close()
            return
        self.received_any = True
        self.read_deadline = self.loop.time() + self.pool.read_timeout
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self.sink is not None:  # None when the sink refused the switch
                offset = upgrade.args[0] if upgrade.args else len(data)
                self.tunnel = True
                self.read_deadline = 0.0
                sink.upstream_upgraded(data[offset:])
        except httptools.HttpParserError as exc:
            self.sink = None
            self.close()
            sink.upstream_failed(f"invalid response from upstream: {exc}", True)
        sink.flush()

    def pause_writing(self) -> None:
        self.write_paused_since = self.loop.time()
        if self.sink is not None:
            self.sink.upstream_write_paused()

    def resume_writing(self) -> None:
        self.write_paused_since = 0.0
        if self.sink is not None:
            self.sink.upstream_write_ready()

    # -- httptools callbacks --

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._final_head:
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None and self.sink is not None
        status = self.parser.get_status_code()
        headers, self._headers = self._headers, []
        self._switching = status == 101
        if status >= 200 or self._switching:
            self._final_head = True
            self._final_status = status
            self._final_headers = headers
        self.sink.response_head(status, reason_phrase(status), headers)
        if self.head_request and status >= 200 and self.sink is not None:
            # A response to HEAD has no body whatever its Content-Length is.
            # httptools has no setting for that, so the exchange ends here and
            # the parser is replaced before the next request.
            self._complete(self.parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.response_body(body)

    def on_message_complete(self) -> None:
        if not self._final_head or self.parser is None or self._switching:
            return  # a 1xx interim response, or a 101 whose tunnel starts after the parser stops
        if self.head_request:
            return  # already completed at the end of the head
        self._complete(self.parser.should_keep_alive())

    # -- used by the forwarder --

    def start(self, sink: ResponseSink, head_request: bool) -> None:
        self.sink = sink
        self.head_request = head_request
        if self.parser is None:
            self.parser = httptools.HttpResponseParser(self)
        self.received_any = False
        self._final_head = False
        self._switching = False
        self._headers = []
        self.read_deadline = self.loop.time() + self.pool.read_timeout

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self._batch.write(self.transport, data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self._batch.send_now(self.transport)
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.sink = None
        if self.transport is not None:
            self.transport.abort()

    def detach(self) -> None:
        """Stop reporting to the current sink, for a request that ended early."""
        self.sink = None

    def _complete(self, keep_alive: bool) -> None:
        sink, self.sink = self.sink, None
        if self.head_request:
            # The parser still expects the body that a HEAD response never has.
            self.parser = None
        self.read_deadline = 0.0
        reusable = sink.response_complete(keep_alive) if sink is not None else False
        self.pool.release(self, reusable)


def _closed_reason(exc: Exception | None) -> str:
    # A TLS alert after the handshake, such as a TLS 1.3 server's rejection
    # of the gateway's client certificate, arrives as the connection's end.
    if isinstance(exc, ssl.SSLError):
        return f"the upstream closed the connection: {describe_tls_error(exc)}"
    return "the upstream closed the connection"


def _delimited_by_close(status: int, headers: list[tuple[bytes, bytes]], head: bool) -> bool:
    """Return True if a response body runs until the upstream closes the connection."""
    if head or status in (204, 304) or status < 200:
        return False
    return all(name.lower() not in (b"content-length", b"transfer-encoding") for name, _ in headers)


class TargetPool:
    """Idle keep-alive connections to one target, and the count of those in use."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        state: TargetState,
        upstream: Upstream,
        tls: ClientTls | None = None,
    ) -> None:
        self.loop = loop
        self.state = state
        self.tls = tls
        self.address = state.target.authority
        self.connect_timeout = upstream.timeouts.connect
        self.read_timeout = upstream.timeouts.read
        self.write_timeout = upstream.timeouts.write
        self.max_idle = upstream.pool.max_idle
        self.idle_timeout = upstream.pool.idle_timeout
        self.idle: deque[UpstreamConnection] = deque()
        self.busy: set[UpstreamConnection] = set()
        self.closed = False

    def take_idle(self) -> UpstreamConnection | None:
        """Return an open idle connection, most recently used first, or None."""
        while self.idle:
            connection = self.idle.pop()
            if (
                connection.closed
                or connection.transport is None
                or connection.transport.is_closing()
            ):
                continue
            connection.reused = True
            self.busy.add(connection)
            return connection
        return None

    async def acquire(self) -> UpstreamConnection:
        connection = self.take_idle()
        if connection is not None:
            return connection
        connection = await self._connect()
        self.busy.add(connection)
        return connection

    async def _connect(self) -> UpstreamConnection:
        target = self.state.target
        tls = self.tls
        try:
            async with asyncio.timeout(self.connect_timeout):
                if tls is None:
                    _, protocol = await self.loop.create_connection(
                        lambda: UpstreamConnection(self), target.host, target.port
                    )
                    return protocol
                transport, protocol = await self.loop.create_connection(
                    lambda: UpstreamConnection(self),
                    target.host,
                    target.port,
                    ssl=tls.context,
                    server_hostname=tls.server_hostname(target.host),
                )
        except TimeoutError:
            raise ConnectFailed(self.address, "timed out", timed_out=True) from None
        except ssl.SSLError as exc:
            raise ConnectFailed(self.address, describe_tls_error(exc), timed_out=False) from None
        except OSError as exc:
            raise ConnectFailed(self.address, exc.strerror or str(exc), timed_out=False) from None
        # NOTE: a TLS 1.3 server checks the client certificate after this
        # point, so its rejection ends the first exchange instead, and passive
        # health does not count it as a connect failure.
        try:
            tls.check_pins(transport.get_extra_info("ssl_object"))
        except PinMismatch as exc:
            protocol.abort()
            raise ConnectFailed(self.address, str(exc), timed_out=False) from None
        return protocol

    def release(self, connection: UpstreamConnection, keep_alive: bool) -> None:
        self.busy.discard(connection)
        reusable = (
            keep_alive
            and not self.closed
            and not connection.closed
            and len(self.idle) < self.max_idle
            and connection.transport is not None
            and not connection.transport.is_closing()
        )
        if reusable:
            connection.idle_since = self.loop.time()
            connection.reused = False
            self.idle.append(connection)
        else:
            connection.close()

    def forget(self, connection: UpstreamConnection) -> None:
        self.busy.discard(connection)
        with contextlib.suppress(ValueError):
            self.idle.remove(connection)

    def sweep(self, now: float) -> None:
        """Close idle connections past the idle timeout and busy ones past a deadline."""
        while self.idle and now - self.idle[0].idle_since > self.idle_timeout:
            self.idle.popleft().close()
        for connection in list(self.busy):
            if connection.read_deadline and now > connection.read_deadline:
                self._time_out(connection, "timed out reading the response from the upstream")
            elif (
                connection.write_paused_since
                and now - connection.write_paused_since > self.write_timeout
            ):
                self._time_out(connection, "timed out writing the request to the upstream")

    def _time_out(self, connection: UpstreamConnection, message: str) -> None:
        sink = connection.sink
        connection.abort()
        self.busy.discard(connection)
        if sink is not None:
            sink.upstream_failed(message, connection.received_any, True)
            sink.flush()

    def close(self) -> None:
        """Close idle connections now and busy ones as soon as they are released."""
        self.closed = True
        while self.idle:
            self.idle.pop().close()


class UpstreamRuntime:
    """Balancer and per-target pools of one configured upstream, inside one worker."""

    def __init__(self, name: str, upstream: Upstream, loop: asyncio.AbstractEventLoop) -> None:
        self.name = name
        self.config = upstream
        self.balancer = Balancer(upstream, loop.time)
        # One context for every connection of this upstream, health probes included.
        self.tls = build_client_tls(upstream.tls) if upstream.https else None
        self.pools = tuple(
            TargetPool(loop, state, upstream, self.tls) for state in self.balancer.states
        )
        self.health: HealthChecker | None = None
        if upstream.health_check is not None:
            self.health = HealthChecker(
                name, self.balancer.states, upstream.health_check, loop, self.tls
            )

    def sweep(self, now: float) -> None:
        for pool in self.pools:
            pool.sweep(now)

    def close(self) -> None:
        if self.health is not None:
            self.health.close()
        for pool in self.pools:
            pool.close()
