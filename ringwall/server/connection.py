"""One client connection: HTTP/1.x parsing, framing rules, ordering and deadlines.

The httptools (llhttp) parser already rejects the ambiguous framings that
request smuggling relies on: Content-Length together with
Transfer-Encoding, duplicate or malformed Content-Length, a
Transfer-Encoding other than a final `chunked`, obs-fold, bare CR and
invalid header names or values. This module adds the rules llhttp leaves to
the server (HTTP version, request-target form, Host, size limits) and turns
every parser error into a 400 problem response on a closed connection.

Pipelined requests get their responses strictly in order: a request waits in
`queue` until the one before it has its whole response written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from ringwall.errors import (
    BadRequest,
    HeaderFieldsTooLarge,
    LocalResponse,
    MethodNotAllowed,
    Rejection,
    RequestTimeout,
    UriTooLong,
    VersionNotSupported,
)
from ringwall.exchange import Exchange
from ringwall.http.headers import RequestHeaders
from ringwall.http.problem import problem_response, reason_phrase
from ringwall.http.target import split_target
from ringwall.runtime import valid_request_id
from ringwall.server.admission import Admission, connection_admission, reject_connection
from ringwall.server.body import RequestBody
from ringwall.server.dispatch import BAN_RECHECK, LAYER, ExchangeDriver, ExpectationFailed
from ringwall.server.dispatch import peer_ip as _peer_ip
from ringwall.server.forward import PREBUFFER_BYTES, Forwarder
from ringwall.server.h2_connection import H2Connection
from ringwall.server.write_batch import write_batch

if TYPE_CHECKING:
    from ringwall.server.upstream import UpstreamConnection
    from ringwall.server.worker import Worker
    from ringwall.tls.handshake import HandshakeInfo

log = logging.getLogger("ringwall.server")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_METHOD_NAMES = {
    name.encode("ascii"): name
    for name in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")
}
# Once this many requests are waiting behind the active one, stop reading.
_MAX_QUEUED = 8


class ClientConnection(ExchangeDriver, asyncio.Protocol):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.loop = worker.loop
        self.transport: asyncio.Transport | None = None
        self._batch = write_batch(worker.loop)
        self.peer_ip = ""
        self.parser = httptools.HttpRequestParser(self)
        self.current: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self.active: Exchange | None = None
        # The active exchange while its layers wait for the rest of the read
        # that contains its body (see `_defer_start`), else None.
        self.deferred: Exchange | None = None
        self.forwarder: Forwarder | None = None
        self.tunnel: UpstreamConnection | None = None
        self.requests = 0
        self.closing = False
        self.parse_failed = False
        self.client_done = False
        # Which sides of a tunnel have ended with a FIN.
        self.tunnel_client_done = False
        self.tunnel_upstream_done = False
        self.read_paused = False
        # Deadlines in loop time; 0 means not set. The worker's sweeper checks them.
        self.head_deadline = 0.0
        self.idle_deadline = 0.0
        self.body_started = 0.0
        self.body_progress = 0.0
        self.write_paused_since = 0.0
        self._header_bytes = 0
        self._trailer_count = 0
        self._limits = worker.runtime.limits
        self._headers: list[tuple[bytes, bytes]] = []
        self._upgrade_leftover = b""
        # The admission that counted this connection, to count it closed again.
        self._admission: Admission | None = None
        # Loop time after which a keep-alive client's ban is looked up again.
        self._ban_recheck = 0.0
        # The TLS handshake of an HTTPS connection, given to each of its exchanges.
        self.handshake: HandshakeInfo | None = None

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer_ip = _peer_ip(peer)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and self.worker.tls is not None:
            self.handshake = self.worker.tls.handshake_info(ssl_object)
            if self.handshake is None:
                self.transport.abort()
                return
            if self.handshake.alpn == "h2":
                # H2Connection registers itself and checks bans and limits itself.
                protocol = H2Connection(self.worker, self.handshake)
                self.transport.set_protocol(protocol)
                protocol.connection_made(self.transport)
                return
        self.worker.connections.add(self)
        # A new connection gets the head deadline for its first request.
        self.idle_deadline = self.loop.time() + self.worker.runtime.timeouts.head
        admission = connection_admission(transport, self.worker.runtime, self.peer_ip)
        self._admission = admission
        if admission.rejection is not None:
            self._refuse_connection(admission.rejection)
        elif not admission.trusted:
            self._ban_recheck = self.loop.time() + BAN_RECHECK

    def _refuse_connection(self, rejection: Rejection) -> None:
        """Send `rejection` before reading anything, and close the connection."""
        _, response = reject_connection(self.worker, self.peer_ip, rejection, self.handshake)
        self.write(response)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.worker.connections.discard(self)
        if self._admission is not None:
            self._admission.release()
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
        lost = ConnectionResetError("the client closed the connection")
        for exchange in (self.current, *self.queue):
            if exchange is not None and exchange.body is not None:
                exchange.body.fail(_client_gone(lost))
        if self.forwarder is not None:
            self.forwarder.client_gone()
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            self.idle_deadline = self.loop.time() + self.worker.runtime.timeouts.tunnel_idle
            return
        if self.parse_failed or self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            self._upgrade_leftover = data[offset:]
            self._stop_parsing()
            if self.active is None and not self.queue:
                # The request already got a response without a tunnel (a rejection):
                # nothing after it can be parsed, so the connection ends here.
                self.close()
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            if isinstance(cause, Rejection):
                self._parse_error(cause)
            else:
                log.error("request parser callback failed", exc_info=cause)
                self._parse_error(BadRequest(LAYER, "the request could not be parsed", close=True))
        except httptools.HttpParserError as error:
            self._parse_error(BadRequest(LAYER, _parser_reason(error), close=True), data)
        deferred = self.deferred
        if deferred is not None:
            # The read ended before the body did: check the head now, as
            # for any request whose body is still arriving.
            self.deferred = None
            self._start(deferred)

    def eof_received(self) -> bool | None:
        """Handle a client that closed its sending side (a half-close)."""
        if self.transport is not None:
            # The transport closes after this returns None.
            self._batch.send_now(self.transport)
        if self.tunnel is not None:
            if self.tunnel_upstream_done:
                return None  # both sides ended: connection_lost closes the upstream
            tunnel = self.tunnel.transport
            if tunnel is not None and tunnel.can_write_eof():
                self._batch.send_now(tunnel)
                tunnel.write_eof()
            self.tunnel_client_done = True
            return True
        if self.current is None and (self.active is not None or self.queue):
            # Complete requests still get their responses, then the connection closes.
            self.client_done = True
            return True
        return None  # idle, or in the middle of a request that can no longer complete

    def pause_writing(self) -> None:
        self.write_paused_since = self.loop.time()
        if self.forwarder is not None:
            self.forwarder.pause_upstream_reading()
        if self.tunnel is not None and self.tunnel.transport is not None:
            self.tunnel.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused_since = 0.0
        if self.forwarder is not None:
            self.forwarder.resume_upstream_reading()
        if self.tunnel is not None and self.tunnel.transport is not None:
            self.tunnel.transport.resume_reading()

    # -- httptools callbacks --

    def on_message_begin(self) -> None:
        runtime = self.worker.runtime
        now = self.loop.time()
        exchange = Exchange(runtime, self.peer_ip, now, time.time())
        if self.handshake is not None:
            exchange.tls = self.handshake
        self.current = exchange
        self._limits = runtime.limits
        self._headers = exchange.headers
        self._header_bytes = 0
        self._trailer_count = 0
        self.idle_deadline = 0.0
        self.head_deadline = now + runtime.timeouts.head

    def on_url(self, url: bytes) -> None:
        exchange = self.current
        assert exchange is not None
        exchange.target += url
        if len(exchange.target) > exchange.runtime.limits.max_request_target_bytes:
            raise UriTooLong(LAYER, "the request-target is longer than the limit", close=True)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._limits.max_header_bytes:
            raise HeaderFieldsTooLarge(LAYER, "the request header section is too large", close=True)
        if self.head_deadline == 0.0:
            # A trailer field of a chunked body: counted against both limits, never forwarded.
            self._trailer_count += 1
            if self._trailer_count > self._limits.max_header_count:
                raise HeaderFieldsTooLarge(
                    LAYER, "the request has too many trailer fields", close=True
                )
            return
        headers = self._headers
        headers.append((name, value))
        if len(headers) > self._limits.max_header_count:
            raise HeaderFieldsTooLarge(LAYER, "the request has too many header fields", close=True)

    def on_headers_complete(self) -> None:
        exchange = self.current
        assert exchange is not None
        self.head_deadline = 0.0
        self.requests += 1
        parser = self.parser
        method = parser.get_method()
        exchange.method = _METHOD_NAMES.get(method) or method.decode("ascii")
        exchange.version = parser.get_http_version()
        exchange.keep_alive = parser.should_keep_alive()
        if self.requests >= exchange.runtime.limits.max_requests_per_connection:
            exchange.keep_alive = False
        try:
            self._read_head(exchange)
        except Rejection as rejection:
            exchange.rejection = rejection
        if exchange.has_body:
            self.body_started = self.body_progress = self.loop.time()
            exchange.body = RequestBody(
                exchange.runtime.max_body_bytes, self._pause_reading, self._resume_reading
            )
            if exchange.expect_continue and exchange.version == "1.1":
                # The client waits for this before it sends the body it
                # announced, so send it when a layer or the forwarder reads it.
                exchange.body.on_first_wait(self._send_continue)
        if self.active is None and not self.queue and not self.closing:
            if self._defer_start(exchange):
                return
            self._start(exchange)
            return
        self.queue.append(exchange)
        if self.active is None:
            self._start_next()
        elif len(self.queue) >= _MAX_QUEUED:
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        exchange = self.current
        assert exchange is not None and exchange.body is not None
        exchange.bytes_in += len(body)
        self.body_progress = self.loop.time()
        if exchange.rejection is None:
            exchange.body.feed(body)

    def on_message_complete(self) -> None:
        exchange = self.current
        if exchange is None:
            return
        self.current = None
        self.body_started = 0.0
        if exchange.body is not None:
            exchange.body.finish()
        if not exchange.keep_alive or exchange.close:
            self._stop_parsing()
        if exchange is self.deferred:
            self.deferred = None
            self._start(exchange)

    # -- request processing --

    def _read_head(self, exchange: Exchange) -> None:
        """Apply the framing and target rules llhttp leaves to the server."""
        if exchange.version not in ("1.1", "1.0"):
            raise VersionNotSupported(LAYER, "only HTTP/1.0 and HTTP/1.1 are supported", close=True)
        found = self._read_fields(exchange)
        exchange.chunked = found.chunked
        exchange.has_body = found.chunked or bool(found.content_length)

        self._check_framing(exchange, found)
        self._check_fields(exchange, found)

        hosts = found.hosts
        if hosts:
            if len(hosts) > 1:
                raise BadRequest(LAYER, "more than one Host header", close=True)
            self._set_host(exchange, hosts[0])
        elif exchange.version == "1.1":
            raise BadRequest(LAYER, "the Host header is missing", close=True)
        exchange.path, exchange.query = split_target(exchange.target)

    def _check_framing(self, exchange: Exchange, found: RequestHeaders) -> None:
        """Reject expectations, methods and upgrades the gateway does not handle."""
        if found.expect is not None:
            if found.expect.lower() != b"100-continue":
                raise ExpectationFailed(LAYER, "only 'Expect: 100-continue' is supported")
            exchange.expect_continue = True
        if found.chunked and exchange.version == "1.0":
            raise BadRequest(LAYER, "Transfer-Encoding is not allowed in HTTP/1.0", close=True)
        if exchange.method == "CONNECT":
            raise MethodNotAllowed(
                LAYER, "CONNECT is not supported: this is not a forward proxy", close=True
            )
        if found.upgrade is not None and self.parser.should_upgrade():
            # llhttp stops parsing after an upgrade request whatever the outcome,
            # so the connection ends after this exchange unless a tunnel starts.
            exchange.close = True
            if exchange.version == "1.1":  # RFC 9110 section 7.8: ignore it in HTTP/1.0
                exchange.upgrade = found.upgrade
            if found.chunked or found.content_length:
                raise BadRequest(
                    LAYER, "a request that upgrades the connection must not have a body", close=True
                )

    def _send_continue(self) -> None:
        self.write(_CONTINUE)

    def _defer_start(self, exchange: Exchange) -> bool:
        """Hold `exchange` as active until its body is complete or this read ends.

        A client usually sends a small body in the same write as the head, so
        the body is complete when the parser reaches the end of this read.
        Layers that check the body (JSON validation, the WAF) then run
        without waiting for it, and a rejected request leaves the connection
        usable because its body was read. The wait never outlasts the current
        `data_received` call. Only a declared length within the body limit
        qualifies, so that feeding the body cannot fail before the layers
        have run. The forwarder reads a body of up to PREBUFFER_BYTES whole
        anyway. A larger body streams, so its layers run as soon as the head
        is complete.
        """
        body = exchange.body
        length = exchange.content_length
        if (
            body is None
            or length is None
            or length > PREBUFFER_BYTES
            or length > body.limit
            or exchange.chunked
            or exchange.expect_continue
            or exchange.rejection is not None
        ):
            return False
        self.active = exchange
        self.deferred = exchange
        return True

    def _start_next(self) -> None:
        """Start the queued exchanges in order until one needs to wait for I/O."""
        while self.queue and self.active is None and not self.closing:
            self._start(self.queue.popleft())
        # Reading paused when the queue filled up. The request still being
        # received may now be active, and it cannot finish unless reading resumes.
        if self.read_paused and len(self.queue) < _MAX_QUEUED and not self.closing:
            current = self.current
            if current is None or current.body is None or not current.body.paused:
                self._resume_reading()

    def _reject(self, exchange: Exchange, rejection: Rejection) -> None:
        if not self._note_rejection(exchange, rejection):
            exchange.close = True  # the response already started: it can only be cut off
            return
        body = exchange.body
        unread_body = body is not None and not body.complete
        if rejection.close or unread_body or exchange.upgrade is not None:
            exchange.close = True
        close = exchange.close or not exchange.keep_alive or self.closing
        exchange.close = close
        response = problem_response(
            rejection,
            exchange.request_id,
            exchange.runtime.config.server.request_id_header,
            head_only=exchange.method == "HEAD",
            close=close,
            extra_headers=exchange.response_headers,
        )
        exchange.bytes_out += len(response)
        self.write(response)

    def _respond_locally(self, exchange: Exchange, local: LocalResponse) -> None:
        """Send a response the gateway makes itself, such as its JWK set."""
        exchange.status = local.status
        if exchange.has_body:
            exchange.close = True  # the body was not read
        close = exchange.close or not exchange.keep_alive or self.closing
        exchange.close = close
        lines = [
            f"HTTP/1.1 {local.status} {reason_phrase(local.status).decode('ascii')}",
            *(f"{name}: {value}" for name, value in local.headers),
            *(
                f"{name.decode('latin-1')}: {value.decode('latin-1')}"
                for name, value in exchange.response_headers
            ),
        ]
        if local.status not in (204, 304):
            lines.append(f"Content-Length: {len(local.body)}")
        lines.append(f"{exchange.runtime.config.server.request_id_header}: {exchange.request_id}")
        if close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        response = head if exchange.method == "HEAD" else head + local.body
        exchange.bytes_out += len(response)
        self.write(response)

    def _finish(self, exchange: Exchange) -> None:
        self.active = None
        self.worker.access_log.record(exchange)
        if exchange.close or not exchange.keep_alive or (self.parse_failed and not self.queue):
            self.close()
            return
        if self.client_done and not self.queue:
            self.close()  # the client half-closed: nothing more can arrive
            return
        if self.queue:
            self.loop.call_soon(self._start_next)
            return
        self.idle_deadline = self.loop.time() + exchange.runtime.timeouts.idle
        self._resume_reading()

    def _parse_error(self, rejection: Rejection, data: bytes = b"") -> None:
        """Reject a request that broke the framing rules, after those queued before it.

        `data` contains the bytes that failed to parse. A request whose line
        could not be parsed is described from them, for the WAF's record.
        """
        self._stop_parsing()
        exchange = self.current
        self.current = None
        if exchange is None:
            exchange = Exchange(self.worker.runtime, self.peer_ip, self.loop.time(), time.time())
        if not exchange.target and data:
            _describe_unparsed(exchange, data)
            runtime = exchange.runtime
            if not exchange.request_id and runtime.client_addresses.is_trusted(self.peer_ip):
                # A trusted proxy's request id, so its logs and the WAF record match.
                for name, value in exchange.headers:
                    if name.lower() == runtime.request_id_lower and valid_request_id(value):
                        exchange.request_id = value.decode("ascii")
        if not exchange.method:
            with contextlib.suppress(httptools.HttpParserError):
                method = self.parser.get_method()
                exchange.method = _METHOD_NAMES.get(method) or method.decode("ascii", "replace")
        exchange.close = True
        if exchange.body is not None:
            exchange.body.fail(rejection)
        if exchange is self.deferred:
            # Its layers have not run, so it is rejected like a queued request.
            self.deferred = None
            self.active = None
        if exchange is self.active:
            return  # its forwarder reads the failed body and reports the rejection
        exchange.rejection = rejection
        if exchange not in self.queue:
            self.queue.append(exchange)
        if self.active is None:
            self._start_next()

    # -- tunnels (WebSocket and other upgrades) --

    def start_tunnel(self, upstream: UpstreamConnection, leftover_from_upstream: bytes) -> None:
        """Relay raw bytes both ways from now on; the HTTP exchange is over."""
        self.tunnel = upstream
        self.idle_deadline = self.loop.time() + self.worker.runtime.timeouts.tunnel_idle
        upstream.sink = _TunnelSink(self)
        if self.active is not None:
            self.worker.access_log.record(self.active)
            self.active = None
        if self._upgrade_leftover:
            upstream.write(self._upgrade_leftover)
            self._upgrade_leftover = b""
        if leftover_from_upstream:
            self.write(leftover_from_upstream)
        self._resume_reading()

    # -- transport helpers --

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._batch.write(self.transport, data)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self._batch.send_now(self.transport)
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def _stop_parsing(self) -> None:
        self.parse_failed = True
        self._pause_reading()

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if not self.read_paused or self.transport is None:
            return
        if not self.parse_failed or self.tunnel is not None:
            self.read_paused = False
            self.transport.resume_reading()

    # -- deadlines, checked by the worker's sweeper --

    def check_deadlines(self, now: float) -> None:
        timeouts = self.worker.runtime.timeouts
        if self.head_deadline and now > self.head_deadline:
            self._time_out("the request head was not received in time")
        elif self.idle_deadline and now > self.idle_deadline:
            self.close()
        elif self.body_started and not self.read_paused:
            if now - self.body_progress > timeouts.body_idle:
                self._time_out("no part of the request body arrived within the body idle timeout")
            elif timeouts.min_body_rate:
                self._check_body_rate(now, timeouts.min_body_rate, timeouts.body_rate_grace)
        if self.write_paused_since and now - self.write_paused_since > timeouts.write:
            log.info(
                "closing a client that does not read its response", extra={"peer": self.peer_ip}
            )
            self.abort()

    def _check_body_rate(self, now: float, min_rate: int, grace: float) -> None:
        exchange = self.current
        elapsed = now - self.body_started
        if exchange is None or elapsed <= grace:
            return
        if exchange.bytes_in / elapsed < min_rate:
            self._time_out("the request body is arriving slower than the minimum rate")

    def _time_out(self, reason: str) -> None:
        self.head_deadline = 0.0
        self.body_started = 0.0
        if self.current is None:
            self.abort()  # nothing is being received, so there is no request to respond to
            return
        self._parse_error(RequestTimeout(LAYER, reason, close=True))

    def idle(self) -> bool:
        return self.active is None and not self.queue and self.current is None


class _TunnelSink:
    """Relays bytes from the upstream side of a tunnel to the client."""

    def __init__(self, client: ClientConnection) -> None:
        self.client = client

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        pass

    def response_body(self, data: bytes) -> None:
        client = self.client
        client.write(data)
        client.idle_deadline = client.loop.time() + client.worker.runtime.timeouts.tunnel_idle

    def response_complete(self, keep_alive: bool) -> bool:
        self.client.close()
        return False

    def upstream_failed(self, error: str, received_any: bool, timed_out: bool = False) -> None:
        self.client.close()

    def upstream_upgraded(self, leftover: bytes) -> None:
        pass

    def upstream_eof(self) -> bool:
        """Pass the upstream's FIN to the client, unless the client's side has ended or cannot."""
        client = self.client
        transport = client.transport
        if client.tunnel_client_done or transport is None or not transport.can_write_eof():
            return False  # the upstream closes, and the client with it
        client._batch.send_now(transport)
        transport.write_eof()
        client.tunnel_upstream_done = True
        return True

    def flush(self) -> None:
        pass

    def upstream_write_ready(self) -> None:
        if self.client.transport is not None:
            self.client.transport.resume_reading()

    def upstream_write_paused(self) -> None:
        if self.client.transport is not None:
            self.client.transport.pause_reading()


def _client_gone(error: Exception) -> Rejection:
    return BadRequest(LAYER, f"client connection lost: {error}", close=True)


def _parser_reason(error: Exception) -> str:
    message = str(error) or "malformed request"
    # llhttp's messages are fixed strings, never request bytes, so they are safe to return.
    return f"malformed request: {message[:120]}"


def _describe_unparsed(exchange: Exchange, data: bytes) -> None:
    """Fill the request line and header fields of `exchange` from bytes llhttp refused.

    Only the WAF reads them, to record what the refused request carried.
    """
    head = data.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")[:_MAX_UNPARSED_LINES]
    parts = lines[0].split(b" ")
    if len(parts) == 3 and parts[2].startswith(b"HTTP/"):
        exchange.method = parts[0].decode("latin-1")
        exchange.target = parts[1]
        exchange.version = parts[2][5:].decode("latin-1")
    elif parts:
        exchange.method = parts[0].decode("latin-1")
        exchange.target = b" ".join(parts[1:])
    headers = []
    for line in lines[1:]:
        name, separator, value = line.partition(b":")
        if separator:
            headers.append((name.strip(), value.strip()))
    exchange.headers = headers


# A refused head is described from at most this many lines.
_MAX_UNPARSED_LINES = 101
