"""TLS on a plain TCP transport, with fewer steps per record than uvloop's.

`TlsServerProtocol` receives the raw bytes of an accepted HTTPS connection,
runs the handshake through an `ssl.SSLObject` on two memory BIOs, and then
gives the connection's protocol (ClientConnection or H2Connection) a
`TlsTransport` that encrypts what it writes and decrypts what arrives.

Why not `loop.create_server(ssl=...)`: uvloop's `SSLProtocol` ends every
read by calling `SSL_read` until it raises `SSLWantReadError`. Python builds
a formatted exception object for that, about 1 µs each time in a timeit
loop on the benchmark machine. It also goes through the Python methods of
`ssl.SSLObject` and a general write queue. Here a read stops when neither
the BIO nor OpenSSL contains more bytes, and the calls go straight to the
`_ssl` object. docs/benchmarks.md measures the difference.

Owning the raw connection also lets the worker act before the handshake:
a connection counts against the connection limits from accept, and a
failed or timed-out handshake is logged with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any, cast

from ringwall.server.admission import ADMISSION_INFO, Admission
from ringwall.server.dispatch import peer_ip

log = logging.getLogger("ringwall.tls")

LAYER = "tls"
# Decrypted bytes handed to the protocol per call. A TLS record carries at most 16 KiB.
_READ_SIZE = 65536
_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)
# First bytes that mark a connection as plain HTTP: ASCII letters, CR and LF.
_PLAIN_HTTP_START = [
    chr(byte).isascii() and (chr(byte).isalpha() or byte in (10, 13)) for byte in range(256)
]


class TlsTransport(asyncio.Transport):
    """The transport the protocol of an HTTPS connection writes to, after the handshake."""

    def __init__(self, tls: TlsServerProtocol, protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self._tls = tls
        self._protocol = protocol
        self._closing = False
        # Bound once: write() runs for every response.
        self._encrypt = tls.sslobj.write
        self._encrypted = tls.outgoing.read
        self._send = tls.raw.write
        self._raw_closing = tls.raw.is_closing

    # -- what the protocol calls --

    def write(self, data: bytes | bytearray | memoryview) -> None:
        # uvloop raises RuntimeError on a write to a connection it has closed.
        # close() and abort() close the raw connection at once, so this also
        # covers them.
        if self._raw_closing():
            return
        try:
            self._encrypt(data)
        except ssl.SSLError as exc:
            self._tls.fail(exc)
            return
        self._send(self._encrypted())

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._tls.ssl_object
        if name == ADMISSION_INFO:
            return self._tls.admission
        if name == "sslcontext":
            return self._tls.ssl_object.context
        if name == "peercert":
            return self._tls.ssl_object.getpeercert()
        if name == "cipher":
            return self._tls.ssl_object.cipher()
        return self._tls.raw.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._closing or self._tls.raw.is_closing()

    def close(self) -> None:
        """Send close_notify after what is already written, then close the connection."""
        if self._closing:
            return
        self._closing = True
        self._tls.shutdown()

    def abort(self) -> None:
        self._closing = True
        self._tls.raw.abort()

    def can_write_eof(self) -> bool:
        return False  # TLS has no half-close

    def write_eof(self) -> None:
        raise NotImplementedError("TLS connections cannot half-close")

    def pause_reading(self) -> None:
        self._tls.paused = True
        self._tls.raw.pause_reading()

    def resume_reading(self) -> None:
        tls = self._tls
        if not tls.paused:
            return
        tls.paused = False
        tls.raw.resume_reading()
        # Records decrypted or buffered while paused get no new read event.
        tls.loop.call_soon(tls.deliver)

    def is_reading(self) -> bool:
        return not self._tls.paused

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._tls.app = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def get_write_buffer_size(self) -> int:
        return self._tls.raw.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._tls.raw.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._tls.raw.set_write_buffer_limits(high, low)


class TlsServerProtocol(asyncio.Protocol):
    """The raw side of one accepted HTTPS connection: handshake, then records."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        context: ssl.SSLContext,
        handshake_timeout: float,
        protocol_factory: Callable[[], asyncio.Protocol],
        admit: Callable[[str], Admission | None] = lambda _client: None,
        plain_http_response: Callable[[str], tuple[str, bytes]] | None = None,
    ) -> None:
        self.loop = loop
        self._admit = admit
        # Given the client address, records the refusal of plain HTTP and
        # returns its request id and response.
        self._plain_http_response = plain_http_response
        self._received = False
        # Bans and connection limits, checked at accept so that a connection
        # counts while it handshakes. A rejection is sent after the handshake.
        self.admission: Admission | None = None
        self._context = context
        self._handshake_timeout = handshake_timeout
        self._protocol_factory = protocol_factory
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.ssl_object = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        # The _ssl object under ssl.SSLObject: its methods skip one Python call each.
        self.sslobj: Any = self.ssl_object._sslobj  # type: ignore[attr-defined]
        self.raw: asyncio.Transport = None  # type: ignore[assignment]
        self.app: asyncio.BaseProtocol | None = None
        self.transport: TlsTransport | None = None
        self.paused = False
        self._timer: asyncio.TimerHandle | None = None
        # Whether the peer has ended its side (close_notify or FIN), and whether
        # the protocol asked to keep the connection open to finish its responses.
        self._done = False
        self._keep_open = False

    # -- asyncio.Protocol, on the raw connection --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = cast(asyncio.Transport, transport)
        self.admission = self._admit(peer_ip(transport.get_extra_info("peername")))
        self._timer = self.loop.call_later(self._handshake_timeout, self._handshake_expired)

    def data_received(self, data: bytes) -> None:
        if self.transport is not None:
            self.incoming.write(data)
            if not self.paused:
                self.deliver()
            return
        if self.raw.is_closing():
            return  # after the 400 to plain HTTP, or a failed handshake
        # A TLS client starts with a record type byte (22, a handshake), while
        # a plain HTTP request starts with a letter of its method, or an empty line.
        if not self._received and _PLAIN_HTTP_START[data[0]] and self._plain_http_response:
            self._reject_plain_http(self._plain_http_response)
            return
        self._received = True
        self.incoming.write(data)
        self._handshake()

    def eof_received(self) -> bool | None:
        # A TLS peer ends its side with close_notify, usually followed by a FIN.
        # A bare FIN ends it too. Either way the protocol may keep the
        # connection open to send the responses to requests already received.
        if self.app is None:
            return False
        if not self._done:
            self._done = True
            try:
                self._keep_open = bool(self.app.eof_received())  # type: ignore[attr-defined]
            except Exception:
                log.exception("eof_received of the HTTPS connection's protocol failed")
                self._keep_open = False
        return self._keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        if self.admission is not None:
            self.admission.release()
        if self.transport is not None:
            self.transport._closing = True  # close() does nothing from now on
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        app = self.app
        self.app = None
        if app is not None:
            app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()

    # -- handshake --

    def _handshake(self) -> None:
        try:
            self.sslobj.do_handshake()
        except _WANT:
            self._flush()
            return
        except (ssl.SSLError, OSError) as exc:
            self._flush()
            self._handshake_failed(exc)
            return
        self._flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        app = self._protocol_factory()
        self.app = app
        self.transport = TlsTransport(self, app)
        app.connection_made(self.transport)
        if self.incoming.pending and not self.paused and not self.raw.is_closing():
            self.deliver()

    def _reject_plain_http(self, response: Callable[[str], tuple[str, bytes]]) -> None:
        """Send a plain HTTP 400 to a client that sent HTTP to the HTTPS listener, and close."""
        client = peer_ip(self.raw.get_extra_info("peername"))
        request_id, data = response(client)
        log.info(
            "plain HTTP request on the HTTPS listener",
            extra={
                "layer": LAYER,
                "reason": "plain_http",
                "client": client,
                "request_id": request_id,
            },
        )
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.raw.write(data)
        self.raw.close()

    def _handshake_failed(self, exc: BaseException) -> None:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        log.info(
            "TLS handshake failed",
            extra={
                "layer": LAYER,
                "reason": str(reason),
                "client": peer_ip(self.raw.get_extra_info("peername")),
            },
        )
        self.raw.abort()

    def _handshake_expired(self) -> None:
        self._timer = None
        log.info(
            "TLS handshake timed out",
            extra={
                "layer": LAYER,
                "reason": "handshake_timeout",
                "client": peer_ip(self.raw.get_extra_info("peername")),
            },
        )
        self.raw.abort()

    # -- records --

    def deliver(self) -> None:
        """Decrypt what has arrived and hand it to the protocol, until paused or empty."""
        sslobj = self.sslobj
        incoming = self.incoming
        raw = self.raw
        # The protocol may close the connection while it handles a record.
        while not self.paused and self.app is not None and not raw.is_closing():
            try:
                chunk = sslobj.read(_READ_SIZE)
            except _WANT:
                # A partial record, or a post-handshake message that OpenSSL must reply to.
                if self.outgoing.pending:
                    self._flush()
                return
            except (ssl.SSLError, OSError) as exc:
                self.fail(exc)
                return
            if not chunk:
                # _ssl returns no bytes, not SSLZeroReturnError, for the peer's close_notify.
                self._peer_closed()
                return
            self.app.data_received(chunk)  # type: ignore[attr-defined]
            # OpenSSL keeps no decrypted bytes back: a record carries at most
            # 16 KiB, and each read requests more, so SSL_pending is 0 here.
            if not incoming.pending:
                # Reading may have made a reply, such as to a key update.
                if self.outgoing.pending:
                    self._flush()
                return

    def _peer_closed(self) -> None:
        """The peer sent close_notify: no more data will come."""
        if self.app is not None and not self._done:
            self._done = True
            self._keep_open = bool(self.app.eof_received())  # type: ignore[attr-defined]
            if self._keep_open:
                return
        self.shutdown()

    def shutdown(self) -> None:
        """Send close_notify and close the raw connection once its buffer is written."""
        if self.raw.is_closing():
            # Closed already, for example after the client's reset, so nothing can be sent.
            return
        # The peer's close_notify is not awaited, so shutdown() ends in WantRead.
        with contextlib.suppress(ssl.SSLError, OSError):
            self.sslobj.shutdown()
        self._flush()
        self.raw.close()

    def fail(self, exc: BaseException) -> None:
        """End the connection after a TLS error on a record."""
        log.info(
            "TLS connection failed",
            extra={
                "layer": LAYER,
                "reason": str(getattr(exc, "reason", None) or type(exc).__name__),
                "client": peer_ip(self.raw.get_extra_info("peername")),
            },
        )
        self.raw.abort()

    def _flush(self) -> None:
        if self.outgoing.pending:
            self.raw.write(self.outgoing.read())
