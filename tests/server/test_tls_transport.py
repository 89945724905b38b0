"""TLS over an in-memory raw transport: admission, handshake, records, pausing and close."""

import asyncio
import logging
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ringwall.server.admission import ADMISSION_INFO, Admission
from ringwall.server.tls_transport import TlsServerProtocol, TlsTransport
from tests.support.tls import make_tls_files


class RawTransport(asyncio.Transport):
    """The accepted TCP connection, keeping what the server writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True

    def write(self, data: Any) -> None:
        if self.aborted:
            # As uvloop does once the connection is closed.
            raise RuntimeError("unable to perform operation: the handler is closed")
        self.written += data

    def take(self) -> bytes:
        data = bytes(self.written)
        self.written.clear()
        return data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.7", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return 0


class App(asyncio.Protocol):
    """The HTTP side: records what it receives, and can pause after each read."""

    def __init__(self, pause_after_read: bool = False, keep_open: bool | None = None) -> None:
        self.transport: TlsTransport | None = None
        self.received: list[bytes] = []
        self.eof = False
        self.lost = False
        self.pause_after_read = pause_after_read
        # What eof_received returns: True to finish responses after the client's half-close.
        self.keep_open = keep_open

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, TlsTransport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received.append(data)
        if self.pause_after_read:
            assert self.transport is not None
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self.eof = True
        return self.keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_tls_files(tmp_path_factory.mktemp("tls-transport"))


def server_context(files: tuple[Path, Path, Path]) -> ssl.SSLContext:
    _ca, cert, key = files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


class Pair:
    """A client SSLObject talking to a TlsServerProtocol through RawTransport."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        files: tuple[Path, Path, Path],
        app: App,
        client_context: ssl.SSLContext | None = None,
        admit: Callable[[str], Admission | None] = lambda _client: None,
    ) -> None:
        if client_context is None:
            client_context = ssl.create_default_context(cafile=str(files[0]))
        self.loop = loop
        self.app = app
        self.raw = RawTransport()
        self.server = TlsServerProtocol(loop, server_context(files), 5.0, lambda: app, admit)
        self.server.connection_made(self.raw)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.client = client_context.wrap_bio(
            self.incoming, self.outgoing, server_hostname="127.0.0.1"
        )

    def pump(self) -> None:
        """Move bytes both ways until neither side has more to send."""
        for _ in range(10):
            data = self.outgoing.read()
            if data:
                self.server.data_received(data)
            answer = self.raw.take()
            if answer:
                self.incoming.write(answer)
            if not data and not answer:
                return

    def handshake(self) -> TlsTransport:
        """Finish the handshake and return the transport the app got."""
        for _ in range(10):
            try:
                self.client.do_handshake()
                self.pump()
                break
            except ssl.SSLWantReadError:
                self.pump()
        else:
            raise AssertionError("the handshake did not finish")
        assert self.app.transport is not None
        return self.app.transport

    def client_read(self) -> bytes:
        chunks = []
        while True:
            try:
                chunks.append(self.client.read(65536))
            except ssl.SSLWantReadError:
                return b"".join(chunks)


def test_transport_relays_records(
    loop: asyncio.AbstractEventLoop, files: tuple[Path, Path, Path]
) -> None:
    pair = Pair(loop, files, App())
    pair.handshake()
    assert pair.app.transport is not None
    assert pair.app.transport.get_extra_info("ssl_object").version() == "TLSv1.3"
    assert pair.app.transport.get_extra_info("peername") == ("127.0.0.7", 40000)
    pair.client.write(b"GET / HTTP/1.1\r\n\r\n")
    pair.pump()
    assert b"".join(pair.app.received) == b"GET / HTTP/1.1\r\n\r\n"
    pair.app.transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    pair.pump()
    assert pair.client_read() == b"HTTP/1.1 200 OK\r\n\r\n"


def test_paused_records_delivered_on_resume(
    loop: asyncio.AbstractEventLoop, files: tuple[Path, Path, Path]
) -> None:
    pair = Pair(loop, files, App(pause_after_read=True))
    pair.handshake()
    for index in range(3):
        pair.client.write(b"request %d;" % index)
    pair.server.data_received(pair.outgoing.read())  # three records in one read
    assert pair.app.received == [b"request 0;"]
    assert not pair.raw.reading
    transport = pair.app.transport
    assert transport is not None
    for expected in (b"request 1;", b"request 2;"):
        transport.resume_reading()
        loop.run_until_complete(asyncio.sleep(0))
        assert pair.app.received[-1] == expected
    assert pair.raw.reading is False  # paused again by the app after the last one


def test_close_sends_close_notify(
    loop: asyncio.AbstractEventLoop, files: tuple[Path, Path, Path]
) -> None:
    pair = Pair(loop, files, App())
    transport = pair.handshake()
    transport.write(b"last response")
    transport.close()
    assert transport.is_closing()
    transport.write(b"after close")  # dropped
    pair.incoming.write(pair.raw.take())
    assert pair.client.read(100) == b"last response"
    assert pair.client.read(100) == b""  # close_notify
    assert pair.raw.closed


def test_client_close_notify_is_eof(
    loop: asyncio.AbstractEventLoop, files: tuple[Path, Path, Path]
) -> None:
    pair = Pair(loop, files, App())
    pair.handshake()
    with pytest.raises(ssl.SSLWantReadError):
        pair.client.unwrap()
    pair.server.data_received(pair.outgoing.read())
    assert pair.app.eof
    assert pair.raw.closed
    pair.server.connection_lost(None)
    assert pair.app.lost


def test_half_close_keeps_connection_open(
    loop: asyncio.AbstractEventLoop, files: tuple[Path, Path, Path]
) -> None:
    pair = Pair(loop, files, App(keep_open=True))
    pair.handshake()

    assert pair.server.eof_received() is True  # a bare FIN after a complete request
    assert pair.app.eof
    assert not pair.raw.closed
    transport = pair.app.transport
    assert transport is not None
    transport.write(b"response")
    pair.incoming.write(pair.raw.take())
    assert pair.client.read(100) == b"response"


def test_close_notify_then_fin_keeps_open(
    loop: asyncio.AbstractEventLoop, files: tuple[Path, Path, Path]
) -> None:
    pair = Pair(loop, files, App(keep_open=True))
    pair.handshake()
    with pytest.raises(ssl.SSLWantReadError):
        pair.client.unwrap()
    pair.server.data_received(pair.outgoing.read())

    assert pair.app.eof
    assert not pair.raw.closed
    assert pair.server.eof_received() is True  # the FIN that follows close_notify
    assert not pair.raw.closed


def test_fin_closes_idle_connection(
    loop: asyncio.AbstractEventLoop, files: tuple[Path, Path, Path]
) -> None:
    pair = Pair(loop, files, App())
    pair.handshake()

    assert not pair.server.eof_received()
    assert pair.app.eof


def test_close_after_reset_writes_nothing(
    loop: asyncio.AbstractEventLoop, files: tuple[Path, Path, Path]
) -> None:
    pair = Pair(loop, files, App())
    transport = pair.handshake()
    pair.raw.abort()  # the client reset the connection
    pair.server.connection_lost(ConnectionResetError())

    # A response that finishes after the reset writes and closes without raising.
    transport.write(b"late response")
    transport.close()
    assert pair.raw.take() == b""
    assert pair.app.lost


def test_handshake_failure_logged(
    loop: asyncio.AbstractEventLoop,
    files: tuple[Path, Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client_context = ssl.create_default_context(cafile=str(files[0]))
    client_context.maximum_version = ssl.TLSVersion.TLSv1_2
    client_context.set_ciphers("ECDHE-ECDSA-AES128-SHA")  # CBC only
    context = server_context(files)
    context.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    app = App()
    pair = Pair(loop, files, app, client_context)
    pair.server = TlsServerProtocol(loop, context, 5.0, lambda: app)
    pair.server.connection_made(pair.raw)
    with caplog.at_level(logging.INFO, logger="ringwall.tls"), pytest.raises(ssl.SSLError):
        pair.handshake()
    assert pair.raw.aborted
    assert app.transport is None
    record = next(r for r in caplog.records if r.getMessage() == "TLS handshake failed")
    assert record.layer == "tls"  # type: ignore[attr-defined]
    assert record.reason == "NO_SHARED_CIPHER"  # type: ignore[attr-defined]
    assert record.client == "127.0.0.7"  # type: ignore[attr-defined]


def test_handshake_timeout_aborts(
    loop: asyncio.AbstractEventLoop,
    files: tuple[Path, Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw = RawTransport()
    server = TlsServerProtocol(loop, server_context(files), 0.01, App)
    server.connection_made(raw)
    with caplog.at_level(logging.INFO, logger="ringwall.tls"):
        loop.run_until_complete(asyncio.sleep(0.05))
    assert raw.aborted
    assert any(r.getMessage() == "TLS handshake timed out" for r in caplog.records)


def test_admission_made_at_accept(
    loop: asyncio.AbstractEventLoop, files: tuple[Path, Path, Path]
) -> None:
    admitted: list[str] = []
    released: list[str] = []

    class Counted(Admission):
        def release(self) -> None:
            released.append("released")

    def admit(client: str) -> Admission:
        admitted.append(client)
        return Counted()

    pair = Pair(loop, files, App(), admit=admit)
    assert admitted == ["127.0.0.7"]  # before any handshake byte
    transport = pair.handshake()
    assert transport.get_extra_info(ADMISSION_INFO) is pair.server.admission
    pair.server.connection_lost(None)
    assert released == ["released"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"mkcol /x HTTP/1.1\r\n",
        b"\r\nGET / HTTP/1.1\r\n",
        b"P",
    ],
)
def test_plain_http_gets_400(
    loop: asyncio.AbstractEventLoop,
    files: tuple[Path, Path, Path],
    caplog: pytest.LogCaptureFixture,
    request_bytes: bytes,
) -> None:
    raw = RawTransport()
    app = App()
    server = TlsServerProtocol(
        loop,
        server_context(files),
        5.0,
        lambda: app,
        plain_http_response=lambda _client: ("req-1", b"HTTP/1.1 400 Bad Request\r\n\r\n"),
    )
    server.connection_made(raw)
    with caplog.at_level(logging.INFO, logger="ringwall.tls"):
        server.data_received(request_bytes)

    assert raw.take() == b"HTTP/1.1 400 Bad Request\r\n\r\n"
    assert raw.closed
    assert app.transport is None
    record = next(
        r for r in caplog.records if r.getMessage() == "plain HTTP request on the HTTPS listener"
    )
    assert record.request_id == "req-1"  # type: ignore[attr-defined]
    server.connection_lost(None)
    loop.run_until_complete(asyncio.sleep(0))


def test_records_after_close_not_delivered(
    loop: asyncio.AbstractEventLoop,
    files: tuple[Path, Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    class ClosingApp(App):
        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            self.transport.close()

    pair = Pair(loop, files, ClosingApp())
    pair.handshake()
    pair.client.write(b"bad request;")
    pair.client.write(b"next request;")
    with caplog.at_level(logging.INFO, logger="ringwall.tls"):
        pair.server.data_received(pair.outgoing.read())  # both records in one read

    assert pair.app.received == [b"bad request;"]
    assert not pair.app.eof
    assert pair.raw.closed
    assert not pair.raw.aborted
    assert not [r for r in caplog.records if r.getMessage() == "TLS connection failed"]
    pair.incoming.write(pair.raw.take())
    assert pair.client.read(100) == b"HTTP/1.1 400 Bad Request\r\n\r\n"
