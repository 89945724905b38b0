"""Forward one request to its upstream and relay the response to the client.

The forwarder is the upstream connection's `ResponseSink`: response bytes
are written to the client from the upstream protocol's callbacks, so a
response costs no coroutine switch per chunk. The coroutine only waits for
a connection, for the request body and for the end of the response.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import TYPE_CHECKING, Protocol

from ringwall.edge.cors import RESPONSE_FIELD_NAMES
from ringwall.errors import BadGateway, GatewayTimeout, Rejection, ServiceUnavailable
from ringwall.http.headers import encode_head, filter_response_headers
from ringwall.limits.limiter import RATELIMIT_FIELDS
from ringwall.proxy.balancer import TargetState
from ringwall.server.upstream import ConnectFailed, UpstreamConnection, UpstreamRuntime

if TYPE_CHECKING:
    from ringwall.exchange import Exchange

log = logging.getLogger("ringwall.proxy")

LAYER = "proxy"

# Methods that RFC 9110 defines as idempotent: a retry cannot repeat a side effect.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

# A request body up to this size (or the route's limit, if smaller) is read
# whole before a target is contacted. It then goes upstream with a
# Content-Length, a body over the route's limit is rejected before the
# upstream receives any of it, and a slow client does not hold an upstream
# connection. Larger bodies stream.
PREBUFFER_BYTES = 64 * 1024

_NO_BODY_STATUS = frozenset({204, 304})


class ForwardClient(Protocol):
    """The client side of a forwarded exchange: an HTTP/1.1 connection or one HTTP/2 stream."""

    loop: asyncio.AbstractEventLoop

    @property
    def closing(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    def start_tunnel(self, upstream: UpstreamConnection, leftover_from_upstream: bytes) -> None: ...

    def forward_in_task(self, exchange: Exchange) -> None: ...

    def forward_finished(self, exchange: Exchange, failure: Rejection | None) -> None: ...


class Outcome(enum.Enum):
    DONE = "done"
    RETRY = "retry"  # a kept-alive connection closed before any response byte
    ABORTED = "aborted"  # the response was cut off after its head was sent


class Forwarder:
    """Send one exchange upstream and relay the response; one instance per request."""

    __slots__ = (
        "_chunked_response",
        "_close_delimited",
        "_done",
        "_failure",
        "_output",
        "_picked",
        "_state",
        "_write_waiter",
        "body_complete",
        "client",
        "connection",
        "exchange",
        "fast",
        "head_sent",
        "upstream",
        "upstream_chunked",
    )

    def __init__(
        self, client: ForwardClient, exchange: Exchange, upstream: UpstreamRuntime
    ) -> None:
        self.client = client
        self.exchange = exchange
        self.upstream = upstream
        self.connection: UpstreamConnection | None = None
        self.head_sent = False
        self.body_complete = not exchange.has_body
        self._done: asyncio.Future[Outcome] | None = None
        self._failure: Rejection | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._chunked_response = False
        self._close_delimited = False
        self.upstream_chunked = exchange.chunked
        # Response bytes produced while the upstream's data is parsed, written
        # to the client in one call by `flush` (one syscall instead of one per part).
        self._output: list[bytes] = []
        # Fast mode: no coroutine; the response callbacks finish the exchange.
        self.fast = False
        self._state: TargetState | None = None
        # The target `try_start` picked but found no idle connection for.
        self._picked: TargetState | None = None

    def try_start(self) -> bool:
        """Send the request on an idle kept-alive connection, without a coroutine.

        The request must have no body, or a complete one of at most
        PREBUFFER_BYTES, which is sent with the head in one write. Returns
        False when that does not hold or no idle connection is ready, and the
        caller then calls `run`.
        """
        exchange = self.exchange
        body = exchange.body
        if body is not None and (
            not body.complete or body.error is not None or body.received > PREBUFFER_BYTES
        ):
            return False
        state = self.upstream.balancer.pick()
        if state is None:
            return False
        pool = self.upstream.pools[state.index]
        connection = pool.take_idle()
        if connection is None:
            # `run` connects to this target, so the request goes where the balancer chose.
            self._picked = state
            return False
        exchange.upstream_address = pool.address
        self.fast = True
        self._state = state
        state.active += 1
        self.connection = connection
        connection.start(self, exchange.method == "HEAD")
        runtime = exchange.runtime
        if body is None:
            connection.write(
                runtime.upstream_request_head(exchange, pool.address, exchange.content_length)
            )
            return True
        # A complete body goes with a Content-Length, also when the client
        # sent it chunked, as `run` does.
        self.body_complete = True
        data = body.whole()
        connection.write(runtime.upstream_request_head(exchange, pool.address, len(data)) + data)
        return True

    async def run(self) -> None:
        """Forward the request, retrying idempotent requests that never reached a target."""
        exchange = self.exchange
        balancer = self.upstream.balancer
        retries = self.upstream.config.retries
        idempotent = exchange.method in IDEMPOTENT and not exchange.has_body
        tried: set[int] = set()
        attempts = 0
        last_error: Rejection | None = None
        body = exchange.body
        if body is not None:
            await body.wait_buffered(min(PREBUFFER_BYTES, body.limit))
            if body.complete:
                self.upstream_chunked = False
        while True:
            state = self._picked if self._picked is not None else balancer.pick(tried)
            self._picked = None
            if state is None:
                raise last_error or ServiceUnavailable(
                    LAYER,
                    f"no healthy target in upstream {self.upstream.name!r}",
                    headers=(("Retry-After", "5"),),
                )
            pool = self.upstream.pools[state.index]
            exchange.upstream_address = pool.address
            try:
                connection = await pool.acquire()
            except ConnectFailed as exc:
                skipped = balancer.report_failure(state)
                log.warning(
                    "connect to upstream target failed",
                    extra={
                        "request_id": exchange.request_id,
                        "upstream": self.upstream.name,
                        "target": pool.address,
                        "error": str(exc),
                        "target_skipped": skipped,
                    },
                )
                last_error = (GatewayTimeout if exc.timed_out else BadGateway)(
                    LAYER, f"cannot connect to upstream {self.upstream.name!r}"
                )
                tried.add(state.index)
                if idempotent and attempts < retries:
                    attempts += 1
                    continue
                raise last_error from None
            balancer.report_success(state)
            state.active += 1
            try:
                outcome = await self._exchange_once(connection)
            finally:
                state.active -= 1
            if outcome is Outcome.RETRY and idempotent and attempts < retries:
                attempts += 1
                continue
            if outcome is Outcome.RETRY:
                raise BadGateway(LAYER, "the upstream closed the connection without a response")
            if outcome is Outcome.ABORTED:
                exchange.close = True
            return

    async def _exchange_once(self, connection: UpstreamConnection) -> Outcome:
        exchange = self.exchange
        loop = self.client.loop
        self.connection = connection
        self._done = loop.create_future()
        self._failure = None
        connection.start(self, exchange.method == "HEAD")
        chunked = self.upstream_chunked
        body = exchange.body
        length = exchange.content_length
        if body is not None and not chunked:
            length = body.received if body.complete else exchange.content_length
        connection.write(
            exchange.runtime.upstream_request_head(exchange, connection.pool.address, length)
        )
        if body is not None:
            # The read timeout covers the wait for the response, not the upload;
            # a slow upload is bounded by the write timeout and the client deadlines.
            connection.read_deadline = 0.0
            await self._send_body(connection, chunked)
            if connection.sink is self and not connection.received_any:
                connection.read_deadline = self.client.loop.time() + connection.pool.read_timeout
        try:
            outcome = await self._done
        finally:
            self.connection = None
        if self._failure is not None:
            raise self._failure
        return outcome

    async def _send_body(self, connection: UpstreamConnection, chunked: bool) -> None:
        body = self.exchange.body
        assert body is not None and self._done is not None
        try:
            while not self._done.done():
                chunk = await body.read()
                if chunk is None:
                    if chunked:
                        connection.write(b"0\r\n\r\n")
                    self.body_complete = True
                    return
                if chunked:
                    connection.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                else:
                    connection.write(chunk)
                if connection.write_paused_since and not self._done.done():
                    self._write_waiter = self.client.loop.create_future()
                    await asyncio.wait(
                        (self._write_waiter, self._done), return_when=asyncio.FIRST_COMPLETED
                    )
        except Rejection:
            # The client's body broke a limit or a deadline: the upstream must
            # never see a complete request, so the connection is dropped.
            connection.abort()
            raise

    # -- ResponseSink --

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        exchange = self.exchange
        if status == 101:
            if exchange.upgrade is None:
                self._fail(
                    BadGateway(LAYER, "the upstream switched protocols without a request to")
                )
                return
            self._write_head(status, reason, headers, upgrade=True)
            return
        if status < 200:
            if exchange.version == "1.1" and status != 100:
                # Interim responses such as 103 Early Hints; 100 Continue is the
                # gateway's own to send, so the upstream's is dropped.
                kept, _ = filter_response_headers(headers)
                self._output.append(self._head_bytes(status, reason, kept))
            return
        if exchange.upgrade is not None:
            exchange.close = True  # the client may already be sending the new protocol
        self._write_head(status, reason, headers, upgrade=False)

    def response_body(self, data: bytes) -> None:
        self.exchange.bytes_out += len(data)
        if self._chunked_response:
            self._output.append(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self._output.append(data)

    def response_complete(self, keep_alive: bool) -> bool:
        if self._chunked_response:
            self._output.append(b"0\r\n\r\n")
        if self._close_delimited:
            self.exchange.close = True
        if not self.body_complete:
            # The upstream responded before reading the whole body; neither
            # connection is in a known state for another request.
            self.exchange.close = True
            keep_alive = False
        self._settle(Outcome.DONE)
        return keep_alive

    def upstream_failed(self, error: str, received_any: bool, timed_out: bool = False) -> None:
        connection = self.connection
        if not self.head_sent:
            if (
                not received_any
                and not timed_out
                and connection is not None
                and connection.reused
                and self.body_complete
            ):
                self._settle(Outcome.RETRY)
                return
            rejection_type = GatewayTimeout if timed_out else BadGateway
            log.warning(
                "upstream request failed",
                extra={"request_id": self.exchange.request_id, "error": error},
            )
            self._fail(rejection_type(LAYER, _public_reason(timed_out)))
            return
        log.warning(
            "upstream response cut off",
            extra={"request_id": self.exchange.request_id, "error": error},
        )
        self._settle(Outcome.ABORTED)

    def flush(self) -> None:
        output = self._output
        if output:
            self.client.write(output[0] if len(output) == 1 else b"".join(output))
            output.clear()

    def upstream_upgraded(self, leftover: bytes) -> None:
        connection = self.connection
        assert connection is not None
        self.flush()
        self.client.start_tunnel(connection, leftover)
        self._settle(Outcome.DONE)

    def upstream_eof(self) -> bool:
        return False  # not a tunnel yet: the upstream's end closes the connection

    def upstream_write_paused(self) -> None:
        pass  # the body sender checks the connection's pause state itself

    def upstream_write_ready(self) -> None:
        waiter = self._write_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- called by the client connection --

    def client_gone(self) -> None:
        connection = self.connection
        if connection is not None:
            connection.abort()
        self._settle(Outcome.ABORTED)

    def pause_upstream_reading(self) -> None:
        connection = self.connection
        if connection is not None and connection.transport is not None:
            connection.transport.pause_reading()

    def resume_upstream_reading(self) -> None:
        connection = self.connection
        if connection is not None and connection.transport is not None:
            connection.transport.resume_reading()

    # -- helpers --

    def _write_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], *, upgrade: bool
    ) -> None:
        exchange = self.exchange
        added = exchange.response_headers
        kept, has_length = self._response_fields(status, headers)
        body_allowed = exchange.method != "HEAD" and status not in _NO_BODY_STATUS and not upgrade
        if body_allowed and not has_length:
            if exchange.version == "1.1":
                self._chunked_response = True
                kept.append((b"Transfer-Encoding", b"chunked"))
            else:
                self._close_delimited = True
                exchange.close = True
        if upgrade:
            assert exchange.upgrade is not None
            kept.append((b"Connection", b"Upgrade"))
            kept.append((b"Upgrade", exchange.upgrade))
        elif exchange.close or not exchange.keep_alive or self.client.closing:
            exchange.close = True
            kept.append((b"Connection", b"close"))
        elif exchange.version == "1.0":
            kept.append((b"Connection", b"keep-alive"))
        kept.append((exchange.runtime.request_id_header, exchange.request_id.encode("ascii")))
        if added:
            # The gateway's RateLimit and CORS fields replace the upstream's.
            kept.extend(added)
        self.head_sent = True
        self._output.append(self._head_bytes(status, reason, kept))

    def _response_fields(
        self, status: int, headers: list[tuple[bytes, bytes]]
    ) -> tuple[list[tuple[bytes, bytes]], bool]:
        """Record `status` and select the upstream's response fields to send.

        Hop-by-hop fields, the upstream's request id and the fields the
        layers add themselves are dropped, and the route's security headers
        are applied. Returns the fields and whether a Content-Length is among them.
        """
        exchange = self.exchange
        exchange.status = status
        runtime = exchange.runtime
        kept, has_length = filter_response_headers(
            headers,
            runtime.request_id_lower,
            drop=GATEWAY_FIELDS if exchange.response_headers else _NOTHING,
        )
        route = exchange.route
        if route is not None:
            by_route = (
                runtime.security_headers_https
                if exchange.tls is not None
                else runtime.security_headers
            )
            kept = by_route[route.name].apply(status, kept)
        if status == 204 and has_length:
            kept = [(n, v) for n, v in kept if n.lower() != b"content-length"]
        return kept, has_length

    @staticmethod
    def _head_bytes(status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
        return encode_head(b"HTTP/1.1 %d %b" % (status, reason), headers)

    def _fail(self, rejection: Rejection) -> None:
        if self._failure is None:
            self._failure = rejection
        if self.connection is not None:
            self.connection.abort()
        self._settle(Outcome.DONE)

    def _settle(self, outcome: Outcome) -> None:
        if self.fast:
            self._settle_fast(outcome)
            return
        done = self._done
        if done is not None and not done.done():
            done.set_result(outcome)
        self.upstream_write_ready()

    def _settle_fast(self, outcome: Outcome) -> None:
        self.fast = False
        if self._state is not None:
            self._state.active -= 1
        self.connection = None
        self.flush()
        exchange = self.exchange
        if outcome is Outcome.RETRY and exchange.method in IDEMPOTENT and not exchange.has_body:
            # The kept-alive connection was closed by the upstream: the full
            # path opens a new one and applies the retry rules.
            self.client.forward_in_task(exchange)
            return
        failure = self._failure
        if outcome is Outcome.RETRY and failure is None:
            # The upstream may have acted on the request, so, as in `run`,
            # it is not sent again.
            failure = BadGateway(LAYER, "the upstream closed the connection without a response")
        if outcome is not Outcome.DONE:
            exchange.close = True
        self.client.forward_finished(exchange, failure)


_NOTHING: frozenset[bytes] = frozenset()
# Fields the layers may add to a response; the upstream's copies are dropped then.
GATEWAY_FIELDS = RATELIMIT_FIELDS | RESPONSE_FIELD_NAMES


def _public_reason(timed_out: bool) -> str:
    if timed_out:
        return "the upstream did not respond in time"
    return "the upstream failed to return a valid response"
