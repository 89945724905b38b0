"""One HTTP/2 client connection (RFC 9113), in which each stream is one exchange through the layers.

h2 parses the frames and keeps the connection and stream states, behind
`FrameGuard` and with the stream limit of `GuardedH2Connection` (see
`ringwall.server.h2_guard`). This module adds the rest of what a gateway
enforces:

- The request rules of RFC 9113 section 8 (`ringwall.http.h2_request`) are
  applied per stream, so a malformed request gets 400 on its stream and the
  connection stays usable.
- Streams that the client resets and streams refused over the limit count
  towards a limit per time window, and a client past it gets GOAWAY
  ENHANCE_YOUR_CALM (Rapid Reset, CVE-2023-44487). An exchange whose stream
  was reset still counts against SETTINGS_MAX_CONCURRENT_STREAMS until it
  finishes.
- Request bodies are flow controlled. A stream's window is given back only
  while its body buffers little, so the request bodies of one connection
  take at most `initial_window_size` plus `_HELD_BODY_BYTES` a stream. A
  body that a layer reads whole (JSON validation, the WAF) is the exception
  and is bounded by the body limit, as over HTTP/1.1.

Requests go upstream over HTTP/1.1 through `Forwarder`, whose response
callbacks write to the stream (`_StreamForwarder`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, cast

import h2.connection
import h2.errors
import h2.events
import h2.exceptions
from hyperframe.frame import GoAwayFrame

from ringwall.config.tls import Http2Config
from ringwall.errors import (
    BadRequest,
    LocalResponse,
    MethodNotAllowed,
    Rejection,
    RequestTimeout,
)
from ringwall.exchange import Exchange
from ringwall.http.h2_request import request_method, request_target, split_fields
from ringwall.http.problem import problem_body, problem_fields
from ringwall.http.target import split_target
from ringwall.server.admission import Admission, connection_admission
from ringwall.server.body import HIGH_WATER, RequestBody
from ringwall.server.dispatch import (
    BAN_RECHECK,
    LAYER,
    ExchangeDriver,
    ExpectationFailed,
    peer_ip,
)
from ringwall.server.forward import PREBUFFER_BYTES, ForwardClient, Forwarder
from ringwall.server.h2_guard import FrameGuard, FrameLimitError, GuardedH2Connection

if TYPE_CHECKING:
    from ringwall.server.upstream import UpstreamConnection, UpstreamRuntime
    from ringwall.server.worker import Worker
    from ringwall.tls.handshake import HandshakeInfo

log = logging.getLogger("ringwall.server")

ErrorCodes = h2.errors.ErrorCodes

# The initial connection window of RFC 9113 section 6.9.2, before any WINDOW_UPDATE.
_DEFAULT_WINDOW = 65_535

# A stream's body may buffer this many bytes whose window was given back.
# Past it, the window is given back only as the forwarder takes the body.
# `RequestBody` calls its resume callback at this level, so the callback
# always finds window to give back.
_HELD_BODY_BYTES = HIGH_WATER // 2
# Response bytes a stream buffers beyond its flow-control window before the
# upstream connection stops being read.
_SEND_HIGH_WATER = 256 * 1024


class H2Connection(asyncio.Protocol):
    """The server side of one HTTP/2 connection, negotiated by ALPN h2 or with prior knowledge."""

    def __init__(
        self,
        worker: Worker,
        handshake: HandshakeInfo | None,
        *,
        settings: Http2Config | None = None,
    ) -> None:
        """Set up the connection for `worker`. `handshake` is None on a connection without TLS.

        `settings` defaults to `server.tls.http2` of the running configuration,
        or to `Http2Config()` without `server.tls`.
        """
        self.worker = worker
        self.loop = worker.loop
        self.handshake = handshake
        if settings is None:
            tls = worker.runtime.config.server.tls
            settings = tls.http2 if tls is not None else Http2Config()
        self.settings = settings
        self.h2 = GuardedH2Connection(self.settings)
        self.guard = FrameGuard(
            self.h2.max_inbound_frame_size,
            self.settings.max_continuation_frames,
            # Huffman coding makes an octet at most 30 bits long (RFC 7541
            # appendix B) and every field adds 32 octets to the list size, so
            # the block of a list within the limit is shorter than this.
            4 * self.settings.max_header_list_size,
        )
        self.transport: asyncio.Transport | None = None
        self.peer_ip = ""
        self.streams: dict[int, _Stream] = {}
        self.tunnel: UpstreamConnection | None = None  # never set, as a tunnel needs HTTP/1.1
        self.requests = 0
        self.read_paused = False
        self._closing = False
        # True once h2 has sent GOAWAY and accepts no more frames, so the connection is ending.
        self._h2_closed = False
        # Deadlines in loop time, where 0 means not set. The worker's sweeper checks them.
        self.idle_deadline = 0.0
        self.head_deadline = 0.0
        self.write_paused_since = 0.0
        # The rejection for every request of a banned client or one over a connection limit.
        self.refusal: Rejection | None = None
        # Streams whose layers wait for the end of this read (see `_Stream.defers_start`).
        self._deferred: list[_Stream] = []
        self._admission: Admission | None = None
        self._ban_recheck = 0.0
        self._resets = 0
        self._reset_window_end = 0.0

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer_ip = peer_ip(transport.get_extra_info("peername"))
        self.worker.connections.add(self)
        runtime = self.worker.runtime
        # The preface and the first request must arrive within the head timeout.
        self.idle_deadline = self.loop.time() + runtime.timeouts.head
        self.h2.initiate_connection()
        # Give the connection window the size of a stream window (RFC 9113 section 6.9.2).
        self.h2.increment_flow_control_window(self.settings.initial_window_size - _DEFAULT_WINDOW)
        self.flush()
        admission = connection_admission(transport, runtime, self.peer_ip)
        self._admission = admission
        # A refused client gets the rejection on each stream.
        self.refusal = admission.rejection
        if admission.rejection is None and not admission.trusted:
            self._ban_recheck = self.loop.time() + BAN_RECHECK

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.worker.connections.discard(self)
        if self._admission is not None:
            self._admission.release()
        for stream in list(self.streams.values()):
            stream.client_gone(ConnectionResetError("the client closed the connection"))
        self.streams.clear()

    def data_received(self, data: bytes) -> None:
        if self._h2_closed:
            return
        try:
            self.guard.feed(data)
        except FrameLimitError as error:
            self._go_away(error.error_code, error.reason)
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            # h2 has queued the GOAWAY. Its messages may quote request bytes,
            # so only the type is logged.
            # NOTE: RFC 9113 section 8.1.1 makes a body that disagrees with its
            # content-length a stream error, but h2 4.4.1 raises it as a
            # connection error, so the client's other streams end too.
            log.info(
                "closing an HTTP/2 connection after a protocol error",
                extra={"peer": self.peer_ip, "error": type(error).__name__},
            )
            self._h2_closed = True
            self.flush()
            self.close_transport()
            return
        for event in events:
            try:
                self._handle(event)
            except Exception:
                log.exception("HTTP/2 event handling failed", extra={"peer": self.peer_ip})
                self._go_away(ErrorCodes.INTERNAL_ERROR, "internal error")
            if self._h2_closed:
                return
        deferred = self._deferred
        if deferred:
            self._deferred = []
            for stream in deferred:
                stream.start()
        self._set_deadlines()
        self.flush()

    def _set_deadlines(self) -> None:
        """Set the head deadline while a header block is open, or the idle one without streams."""
        timeouts = self.worker.runtime.timeouts
        if self.guard.in_header_block:
            # CONTINUATION frames sent slowly must not hold the connection forever.
            self.idle_deadline = 0.0
            if not self.head_deadline:
                self.head_deadline = self.loop.time() + timeouts.head
            return
        self.head_deadline = 0.0
        if not self.streams and not self.idle_deadline:
            timeout = timeouts.idle if self.requests else timeouts.head
            self.idle_deadline = self.loop.time() + timeout

    def eof_received(self) -> bool | None:
        """Keep a half-closed connection open while its streams finish."""
        return True if self.streams else None

    def pause_writing(self) -> None:
        # Reading stops too, so a client that does not read cannot make the
        # connection queue replies to its PING and SETTINGS frames.
        self.write_paused_since = self.loop.time()
        self._pause_reading()
        for stream in self.streams.values():
            stream.pause_upstream()

    def resume_writing(self) -> None:
        self.write_paused_since = 0.0
        self._resume_reading()
        for stream in self.streams.values():
            stream.resume_upstream()

    # -- h2 events --

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            length = event.flow_controlled_length or 0
            if stream is None:
                self.acknowledge(event.stream_id or 0, length)
            else:
                stream.data_received(event.data or b"", length)
        elif isinstance(event, h2.events.RequestReceived):
            self._request_received(event)
        elif isinstance(event, h2.events.StreamEnded):
            # Trailers also end the stream. h2 counts their fields against the
            # header list size, but they are never forwarded.
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.request_ended()
        elif isinstance(event, h2.events.StreamReset):
            self._stream_reset(event)
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id:
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.send_pending()
            else:
                self._send_all_pending()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._send_all_pending()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # h2 sends nothing after the client's GOAWAY, so no response can finish.
            self._h2_closed = True
            self.close_transport()

    def _request_received(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id or 0
        if stream_id in self.h2.refused:
            self.h2.refused.discard(stream_id)
            self._count_reset()
            return
        if len(self.streams) >= self.settings.max_concurrent_streams or self.closing:
            # Exchanges of streams the client already reset still count here.
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                # The client may have reset the stream in the same read.
                self.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            self._count_reset()
            return
        self.requests += 1
        self.idle_deadline = 0.0
        if self.requests >= self.worker.runtime.limits.max_requests_per_connection:
            self.closing = True  # this stream is served, later ones are refused
        stream = _Stream(self, stream_id)
        self.streams[stream_id] = stream
        stream.read_request(list(event.headers or ()), event.stream_ended is not None)
        if stream.defers_start():
            self._deferred.append(stream)
        else:
            stream.start()

    def _stream_reset(self, event: h2.events.StreamReset) -> None:
        stream_id = event.stream_id or 0
        if event.remote_reset:
            self._count_reset()
        stream = self.streams.get(stream_id)
        if stream is not None:
            # It stays in `streams`, counted against the limit, until its exchange finishes.
            stream.client_gone(ConnectionResetError("the client reset the stream"))

    def _count_reset(self) -> None:
        """Count a reset or refused stream, and send GOAWAY once past the limit."""
        now = self.loop.time()
        if now >= self._reset_window_end:
            # NOTE: a fixed window, so up to twice the limit can pass around a window's end.
            self._reset_window_end = now + self.settings.reset_window
            self._resets = 0
        self._resets += 1
        if self._resets > self.settings.max_reset_streams:
            self._go_away(
                ErrorCodes.ENHANCE_YOUR_CALM,
                f"more than {self.settings.max_reset_streams} streams reset or refused "
                f"within {self.settings.reset_window} s",
            )

    # -- sending --

    def acknowledge(self, stream_id: int, length: int) -> None:
        """Give `length` received bytes back to the flow-control windows."""
        if length and not self._h2_closed:
            self.h2.acknowledge_received_data(length, stream_id)

    def _send_all_pending(self) -> None:
        for stream in list(self.streams.values()):
            stream.send_pending()

    def flush(self) -> None:
        """Write the frames h2 has queued to the transport."""
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def stream_done(self, stream: _Stream) -> None:
        """Forget a stream whose response is sent or cut off."""
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
            if self.refusal is not None:
                self._closing = True  # the refused client's connection ends with its response
            self._stream_closed()

    def _stream_closed(self) -> None:
        if self.streams:
            return
        if self.closing:
            self.close()
            return
        self.idle_deadline = self.loop.time() + self.worker.runtime.timeouts.idle

    def _go_away(self, error_code: ErrorCodes, reason: str) -> None:
        log.info(
            "closing an HTTP/2 connection",
            extra={"peer": self.peer_ip, "error": error_code.name, "reason": reason},
        )
        if not self._h2_closed:
            self._h2_closed = True
            self.h2.close_connection(error_code=error_code)
            self.flush()
        self.close_transport()

    # -- ServedConnection, for the worker's drain and deadline sweep --

    @property
    def closing(self) -> bool:
        return self._closing

    @closing.setter
    def closing(self, value: bool) -> None:
        if value and not self._closing and not self._h2_closed and self.transport is not None:
            # Draining: with GOAWAY the client opens no more streams, and the
            # open ones still finish. h2 would accept no frames after its own
            # GOAWAY, so this one is written past it.
            self.flush()
            goaway = GoAwayFrame(0)
            goaway.last_stream_id = self.h2.highest_inbound_stream_id
            goaway.error_code = ErrorCodes.NO_ERROR
            self.transport.write(goaway.serialize())
        self._closing = value

    def idle(self) -> bool:
        return not self.streams

    def close(self) -> None:
        if not self._h2_closed:
            self._h2_closed = True
            self.h2.close_connection(error_code=ErrorCodes.NO_ERROR)
            self.flush()
        self.close_transport()

    def close_transport(self) -> None:
        self._closing = True
        self._h2_closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self._closing = True
        self._h2_closed = True
        if self.transport is not None:
            self.transport.abort()

    @property
    def sending(self) -> bool:
        """True while h2 still accepts frames to send."""
        return not self._h2_closed

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()

    # -- deadlines, checked by the worker's sweeper --

    def check_deadlines(self, now: float) -> None:
        timeouts = self.worker.runtime.timeouts
        if self.head_deadline and now > self.head_deadline:
            self._go_away(ErrorCodes.PROTOCOL_ERROR, "a header block was not completed in time")
            return
        if self.idle_deadline and now > self.idle_deadline:
            self.close()
            return
        if self.write_paused_since and now - self.write_paused_since > timeouts.write:
            log.info(
                "closing a client that does not read its response", extra={"peer": self.peer_ip}
            )
            self.abort()
            return
        for stream in list(self.streams.values()):
            stream.check_deadlines(now)


class _StreamForwarder(Forwarder):
    """The forwarder of one HTTP/2 stream, which sends the response head as a HEADERS frame."""

    __slots__ = ("stream",)

    def __init__(
        self, client: ForwardClient, exchange: Exchange, upstream: UpstreamRuntime
    ) -> None:
        super().__init__(client, exchange, upstream)
        if not isinstance(client, _Stream):
            raise TypeError("the client of a _StreamForwarder must be an HTTP/2 stream")
        self.stream = client

    def _write_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], *, upgrade: bool
    ) -> None:
        kept, _ = self._response_fields(status, headers)
        exchange = self.exchange
        kept.append((exchange.runtime.request_id_header, exchange.request_id.encode("ascii")))
        if exchange.response_headers:
            # The gateway's RateLimit and CORS fields replace the upstream's.
            kept.extend(exchange.response_headers)
        self.head_sent = True
        self.stream.send_head(status, kept)

    def response_complete(self, keep_alive: bool) -> bool:
        self.stream.mark_whole()
        return super().response_complete(keep_alive)

    def try_start(self) -> bool:
        return not self.stream.client_lost and super().try_start()

    async def run(self) -> None:
        if self.stream.client_lost:
            # Reset while its layers ran, so it is not sent upstream.
            raise BadRequest(LAYER, "the client reset the stream", close=True)
        await super().run()


class _Stream(ExchangeDriver):
    """One request stream: the exchange, its body, and the response waiting for window."""

    forwarder_type = _StreamForwarder

    def __init__(self, connection: H2Connection, stream_id: int) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.worker = connection.worker
        self.loop = connection.loop
        self.peer_ip = connection.peer_ip
        self.closing = connection.closing
        self.active: Exchange | None = None
        self.forwarder: Forwarder | None = None
        self.tunnel: UpstreamConnection | None = None
        self.exchange: Exchange | None = None
        self.body: RequestBody | None = None
        # Response bytes waiting for flow-control window.
        self.pending = bytearray()
        self.head_sent = False
        # The response is whole (not cut off), once its last byte is queued.
        self.response_whole = False
        self.finished = False
        self.ended = False  # END_STREAM or RST_STREAM sent
        self.client_lost = False  # the client reset the stream, or the connection is lost
        self.request_done = False
        self.upstream_paused = False
        # Received bytes not yet given back to the stream's window.
        self.unacknowledged = 0
        self.body_progress = 0.0
        self.body_started = 0.0
        self.blocked_since = 0.0

    @property
    def _ban_recheck(self) -> float:
        return self.connection._ban_recheck

    @_ban_recheck.setter
    def _ban_recheck(self, value: float) -> None:
        self.connection._ban_recheck = value

    # -- the request --

    def read_request(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        """Create the exchange of this stream from its header block."""
        connection = self.connection
        runtime = self.worker.runtime
        exchange = Exchange(runtime, self.peer_ip, self.loop.time(), time.time())
        exchange.version = "2"
        exchange.tls = connection.handshake
        self.exchange = exchange
        self.request_done = end_stream
        try:
            self._read_head(exchange, headers, end_stream)
        except Rejection as rejection:
            exchange.rejection = rejection
        if connection.refusal is not None and exchange.rejection is None:
            exchange.rejection = connection.refusal
        if exchange.has_body and not end_stream:
            self.body_started = self.body_progress = self.loop.time()
            body = RequestBody(runtime.max_body_bytes, _no_pause, self._give_back_window)
            self.body = exchange.body = body
            if exchange.expect_continue:
                body.on_first_wait(self._send_continue)

    def defers_start(self) -> bool:
        """Return whether the layers should wait for the end of the current read.

        As over HTTP/1.1 (see `ClientConnection._defer_start`), a small body
        usually arrives in the same read as its head. Layers that check the
        body then run without waiting for it, and the forwarder can send it
        with the head. Only a declared length within the body limit
        qualifies, and h2 ends the connection for DATA past the declared
        length, so feeding the body cannot fail before the layers run.
        """
        exchange = self.exchange
        body = self.body
        return not (
            exchange is None
            or body is None
            or exchange.content_length is None
            or exchange.content_length > PREBUFFER_BYTES
            or exchange.content_length > body.limit
            or exchange.expect_continue
            or exchange.rejection is not None
        )

    def start(self) -> None:
        """Run the layers on the exchange, then forward it or send its rejection."""
        assert self.exchange is not None
        self._start(self.exchange)

    def _read_head(
        self, exchange: Exchange, headers: list[tuple[bytes, bytes]], end_stream: bool
    ) -> None:
        """Apply the request rules of RFC 9113 section 8 and the gateway's head rules."""
        limits = exchange.runtime.limits
        pseudo, exchange.headers = split_fields(
            headers,
            limits.max_header_count,
            limits.max_header_bytes,
            self.connection.settings.max_header_list_size,
        )
        exchange.method = request_method(pseudo)
        if exchange.method == "CONNECT":
            raise MethodNotAllowed(LAYER, "CONNECT is not supported: this is not a forward proxy")
        target = request_target(pseudo, limits.max_request_target_bytes)
        exchange.target = target

        found = self._read_fields(exchange)
        self._check_fields(exchange, found)
        if found.expect is not None:
            if found.expect.lower() != b"100-continue":
                raise ExpectationFailed(LAYER, "only 'Expect: 100-continue' is supported")
            exchange.expect_continue = True
        if end_stream and found.content_length:
            raise BadRequest(LAYER, "Content-Length is above 0 but the request has no body")
        exchange.has_body = not end_stream
        # Without a Content-Length the body goes upstream chunked, unless it is whole by then.
        exchange.chunked = exchange.has_body and found.content_length is None

        hosts = found.hosts
        if len(hosts) > 1:
            raise BadRequest(LAYER, "more than one Host header")
        authority = pseudo.get(b":authority")
        if authority is not None:
            # RFC 9113 section 8.3.1: a Host field must name the same authority.
            if hosts and hosts[0].lower() != authority.lower():
                raise BadRequest(LAYER, "the Host header differs from :authority")
            self._set_host(exchange, authority)
        elif hosts:
            self._set_host(exchange, hosts[0])
        else:
            raise BadRequest(LAYER, "the request has neither :authority nor a Host header")
        exchange.path, exchange.query = split_target(target)

    def data_received(self, data: bytes, flow_controlled_length: int) -> None:
        exchange = self.exchange
        body = self.body
        # Padding is given back at once, because it is never buffered.
        padding = flow_controlled_length - len(data)
        if exchange is None or body is None or self.finished or body.error is not None:
            self.connection.acknowledge(self.stream_id, flow_controlled_length)
            return
        self.connection.acknowledge(self.stream_id, padding)
        exchange.bytes_in += len(data)
        self.body_progress = self.loop.time()
        self.unacknowledged += len(data)
        if exchange.rejection is None:
            try:
                body.feed(data)
            except Rejection as rejection:
                body.fail(rejection)
        self._give_back_window()

    def request_ended(self) -> None:
        self.request_done = True
        self.body_started = 0.0
        if self.body is not None:
            self.body.finish()

    def _give_back_window(self) -> None:
        """Give back the window of received bytes except those buffered past `_HELD_BODY_BYTES`."""
        body = self.body
        if not self.unacknowledged:
            return
        keep = 0
        # NOTE: a body that a layer reads whole gets all its window back, so one
        # connection can buffer max_concurrent_streams times the body limit.
        if body is not None and not body.collecting and body.error is None and not self.finished:
            keep = min(self.unacknowledged, max(0, body.buffered - _HELD_BODY_BYTES))
        returned = self.unacknowledged - keep
        if returned:
            self.unacknowledged = keep
            self.connection.acknowledge(self.stream_id, returned)
            self.connection.flush()

    def _send_continue(self) -> None:
        if self._can_send():
            self.connection.h2.send_headers(self.stream_id, [(b":status", b"100")])
            self.connection.flush()

    # -- ForwardClient --

    def write(self, data: bytes) -> None:
        if not self._can_send():
            return
        self.pending += data
        self.send_pending()
        if len(self.pending) > _SEND_HIGH_WATER:
            self.pause_upstream()

    def start_tunnel(self, upstream: UpstreamConnection, leftover_from_upstream: bytes) -> None:
        # Unreachable: no HTTP/2 request has `upgrade` set, so the forwarder
        # rejects a 101 response before it gets here.
        upstream.close()

    # -- the response --

    def send_head(self, status: int, fields: list[tuple[bytes, bytes]]) -> None:
        """Send the response's HEADERS frame, without END_STREAM."""
        if not self._can_send():
            return
        headers = [(b":status", b"%d" % status), *fields]
        try:
            self.connection.h2.send_headers(self.stream_id, headers)
        except h2.exceptions.ProtocolError as error:
            log.warning(
                "response head rejected by the HTTP/2 encoder",
                extra={"request_id": self._request_id(), "error": type(error).__name__},
            )
            self._reset(ErrorCodes.INTERNAL_ERROR)
            return
        self.head_sent = True
        self.connection.flush()

    def _send_response(
        self, exchange: Exchange, status: int, fields: list[tuple[str, str]], body: bytes
    ) -> None:
        if exchange.method == "HEAD":
            body = b""
        encoded = [
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in fields
        ]
        self.send_head(status, encoded)
        exchange.bytes_out += len(body)
        self.write(body)
        self.response_whole = True

    def _reject(self, exchange: Exchange, rejection: Rejection) -> None:
        if not self._note_rejection(exchange, rejection):
            return  # the response already started, so `_finish` resets the stream
        body = problem_body(rejection, exchange.request_id)
        fields = problem_fields(
            rejection,
            exchange.request_id,
            exchange.runtime.config.server.request_id_header,
            len(body),
            exchange.response_headers,
        )
        self._send_response(exchange, rejection.status, fields, body)

    def _respond_locally(self, exchange: Exchange, local: LocalResponse) -> None:
        exchange.status = local.status
        fields = list(local.headers)
        fields.extend(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in exchange.response_headers
        )
        if local.status not in (204, 304):
            fields.append(("content-length", str(len(local.body))))
        fields.append((exchange.runtime.config.server.request_id_header, exchange.request_id))
        self._send_response(exchange, local.status, fields, local.body)

    def _finish(self, exchange: Exchange) -> None:
        self.active = None
        self.finished = True
        self.worker.access_log.record(exchange)
        if self.client_lost or self.ended:
            self._done()
        elif not self.response_whole:
            # The response was cut off, or never started.
            self._reset(ErrorCodes.INTERNAL_ERROR if self.head_sent else ErrorCodes.CANCEL)
        else:
            self._give_back_window()
            self.send_pending()

    def mark_whole(self) -> None:
        self.response_whole = True

    def send_pending(self) -> None:
        """Send queued response bytes as the flow-control windows allow, then END_STREAM."""
        if not self._can_send():
            return
        connection = self.connection
        h2_connection = connection.h2
        pending = self.pending
        sent = False
        try:
            while pending:
                window = h2_connection.local_flow_control_window(self.stream_id)
                size = min(window, h2_connection.max_outbound_frame_size, len(pending))
                if size <= 0:
                    break
                h2_connection.send_data(self.stream_id, bytes(pending[:size]))
                del pending[:size]
                sent = True
            if not pending and self.finished:
                h2_connection.end_stream(self.stream_id)
                self.ended = True
                if not self.request_done:
                    # RFC 9113 section 8.1: the response is complete, so the rest
                    # of the request is not needed.
                    h2_connection.reset_stream(self.stream_id, ErrorCodes.NO_ERROR)
        except h2.exceptions.StreamClosedError:
            self.ended = True
        connection.flush()
        if not pending:
            self.blocked_since = 0.0
        elif sent or not self.blocked_since:
            self.blocked_since = self.loop.time()
        if self.upstream_paused and len(pending) <= _SEND_HIGH_WATER // 2:
            self.resume_upstream()
        if self.ended:
            self._done()

    def _reset(self, error_code: ErrorCodes) -> None:
        if self._can_send():
            # The client may have closed the stream already.
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self.connection.h2.reset_stream(self.stream_id, error_code)
            self.connection.flush()
        self.ended = True
        self.pending.clear()
        if self.finished:
            self._done()

    def _done(self) -> None:
        if self.unacknowledged:
            self.connection.acknowledge(self.stream_id, self.unacknowledged)
            self.unacknowledged = 0
        self.connection.stream_done(self)

    def _can_send(self) -> bool:
        return not (self.ended or self.client_lost) and self.connection.sending

    def _request_id(self) -> str:
        return self.exchange.request_id if self.exchange is not None else ""

    # -- flow control towards the upstream --

    def pause_upstream(self) -> None:
        if self.forwarder is not None:
            self.upstream_paused = True
            self.forwarder.pause_upstream_reading()

    def resume_upstream(self) -> None:
        if self.forwarder is not None and self.connection.write_paused_since == 0.0:
            self.upstream_paused = False
            self.forwarder.resume_upstream_reading()

    # -- the client went away --

    def client_gone(self, error: Exception) -> None:
        """Stop the exchange of a stream the client reset, or of a lost connection."""
        self.client_lost = True
        self.pending.clear()
        if self.body is not None and not self.body.complete:
            self.body.fail(BadRequest(LAYER, f"client stream lost: {error}", close=True))
        if self.forwarder is not None:
            self.forwarder.client_gone()
        if self.finished:
            self._done()

    def check_deadlines(self, now: float) -> None:
        timeouts = self.worker.runtime.timeouts
        if self.blocked_since and now - self.blocked_since > timeouts.write:
            log.info(
                "resetting a stream whose client gives no window for the response",
                extra={"peer": self.peer_ip, "request_id": self._request_id()},
            )
            self._reset(ErrorCodes.CANCEL)
            self.client_gone(TimeoutError("no flow-control window within the write timeout"))
            return
        body = self.body
        self._give_back_window()  # the forwarder may have taken the body since the last read
        if not self.body_started or body is None or body.error is not None or self.unacknowledged:
            return  # no body on the way, or the gateway itself withholds the window
        if now - self.body_progress > timeouts.body_idle:
            self._time_out("no part of the request body arrived within the body idle timeout")
            return
        elapsed = now - self.body_started
        exchange = self.exchange
        if (
            timeouts.min_body_rate
            and exchange is not None
            and elapsed > timeouts.body_rate_grace
            and exchange.bytes_in / elapsed < timeouts.min_body_rate
        ):
            self._time_out("the request body is arriving slower than the minimum rate")

    def _time_out(self, reason: str) -> None:
        self.body_started = 0.0
        if self.body is not None:
            self.body.fail(RequestTimeout(LAYER, reason, close=True))


def _no_pause() -> None:
    """Leave reading on, because a stream's body is bounded by withholding its window instead."""
