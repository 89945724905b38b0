"""HTTP/2 on a test gateway: a listener that hands connections to H2Connection, and a client.

The listener does what the HTTPS listener does for a client that chose h2
in ALPN: its protocol hands the transport over to an `H2Connection` from
`connection_made`. Without a TLS context it serves HTTP/2 with prior
knowledge over TCP. The client is a blocking socket driven by h2.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import cast

import h2.config
import h2.connection
import h2.events

from ringwall.config.tls import Http2Config
from ringwall.server.h2_connection import H2Connection
from ringwall.server.worker import Worker
from ringwall.tls.handshake import HandshakeInfo
from tests.support.gateway_thread import GatewayThread

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_READ_SIZE = 65_536


class _Handover(asyncio.Protocol):
    """Hand each new transport to an H2Connection, as the HTTPS listener does for h2."""

    def __init__(self, worker: Worker, settings: Http2Config | None) -> None:
        self.worker = worker
        self.settings = settings

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        handshake = None
        if ssl_object is not None:
            cipher = ssl_object.cipher()
            handshake = HandshakeInfo(
                server_name=None,
                policy=-1,
                protocol=ssl_object.version() or "",
                cipher=cipher[0] if cipher else "",
                alpn=ssl_object.selected_alpn_protocol(),
                resumed=ssl_object.session_reused,
            )
        protocol = H2Connection(self.worker, handshake, settings=self.settings)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)


@contextmanager
def serving_h2(
    gateway: GatewayThread,
    *,
    tls: ssl.SSLContext | None = None,
    settings: Http2Config | None = None,
) -> Iterator[int]:
    """Serve HTTP/2 from `gateway`'s worker on a free loopback port; yield the port."""
    worker = gateway.worker
    assert worker is not None

    async def start() -> asyncio.AbstractServer:
        return await gateway.loop.create_server(
            lambda: _Handover(worker, settings), "127.0.0.1", 0, ssl=tls
        )

    # uvloop's server has the `sockets` of asyncio.Server without being one.
    server = cast(
        asyncio.Server, asyncio.run_coroutine_threadsafe(start(), gateway.loop).result(10)
    )
    port: int = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        if not gateway.loop.is_closed():
            gateway.call(server.close)


@dataclass
class StreamResponse:
    """What the client received on one stream."""

    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    ended: bool = False
    # The error code of a RST_STREAM from the server, or None.
    reset_code: int | None = None

    def header(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name]

    @property
    def done(self) -> bool:
        return self.ended or self.reset_code is not None


class H2Client:
    """A blocking HTTP/2 client on 127.0.0.1:`port`, over TLS when `tls` is given.

    With `validate` False, h2 sends header fields as given, so tests can
    send malformed requests.
    """

    def __init__(
        self,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        validate: bool = True,
        server_name: str = "127.0.0.1",
    ) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock: socket.socket = (
            tls.wrap_socket(raw, server_hostname=server_name) if tls is not None else raw
        )
        self.connection = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=validate,
                normalize_outbound_headers=validate,
            )
        )
        self.responses: dict[int, StreamResponse] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.connection.initiate_connection()
        self.flush()

    def close(self) -> None:
        self.sock.close()

    def flush(self) -> None:
        data = self.connection.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self,
        method: bytes = b"GET",
        path: bytes = b"/api/items",
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes | None = None,
        authority: bytes = b"app",
        *,
        end: bool = True,
    ) -> int:
        """Send a request and return its stream id; `end` False leaves the stream open."""
        stream_id = self.connection.get_next_available_stream_id()
        fields = [
            (b":method", method),
            (b":scheme", b"https"),
            (b":authority", authority),
            (b":path", path),
            *headers,
        ]
        self.send_headers(stream_id, fields, end_stream=end and body is None)
        if body is not None:
            self.connection.send_data(stream_id, body, end_stream=end)
            self.flush()
        return stream_id

    def send_headers(
        self, stream_id: int, fields: Sequence[tuple[bytes, bytes]], *, end_stream: bool = True
    ) -> None:
        self.responses[stream_id] = StreamResponse()
        self.connection.send_headers(stream_id, list(fields), end_stream=end_stream)
        self.flush()

    def response(self, stream_id: int, timeout: float = 5.0) -> StreamResponse:
        """Read until stream `stream_id` ends or is reset, and return what it received."""
        response = self.responses.setdefault(stream_id, StreamResponse())
        self.read_until(lambda: response.done, timeout)
        return response

    def read_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Read and handle frames until `condition()` is true or the server closes the connection."""
        self.sock.settimeout(timeout)
        while not condition() and not self.closed:
            try:
                data = self.sock.recv(_READ_SIZE)
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                return
            for event in self.connection.receive_data(data):
                self._handle(event)
            self.flush()

    def wait_closed(self, timeout: float = 5.0) -> None:
        """Read until the server closes the connection; raise TimeoutError if it does not."""
        self.read_until(lambda: False, timeout)

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            response = self.responses.setdefault(event.stream_id or 0, StreamResponse())
            headers = list(event.headers or ())
            response.status = int(dict(headers)[b":status"])
            response.headers = [(n, v) for n, v in headers if not n.startswith(b":")]
        elif isinstance(event, h2.events.DataReceived):
            response = self.responses.setdefault(event.stream_id or 0, StreamResponse())
            response.body += event.data or b""
            length = event.flow_controlled_length or 0
            if length:
                self.connection.acknowledge_received_data(length, event.stream_id or 0)
        elif isinstance(event, h2.events.StreamEnded):
            self.responses.setdefault(event.stream_id or 0, StreamResponse()).ended = True
        elif isinstance(event, h2.events.StreamReset):
            response = self.responses.setdefault(event.stream_id or 0, StreamResponse())
            response.reset_code = int(event.error_code or 0)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = event


def read_raw_frames(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read from `sock` until the server closes it; return every byte received."""
    sock.settimeout(timeout)
    received = bytearray()
    while True:
        try:
            data = sock.recv(_READ_SIZE)
        except ConnectionResetError:
            break
        if not data:
            break
        received += data
    return bytes(received)


def tls_client_context(ca_file: str) -> ssl.SSLContext:
    """Return a client context that trusts `ca_file` and offers only h2 in ALPN."""
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2"])
    return context


def tls_server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """Return a server context for `cert_file` that selects h2 in ALPN."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["h2"])
    return context
