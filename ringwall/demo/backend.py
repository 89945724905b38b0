"""Demo backend: a fintech-style HTTP/1.1 API on asyncio and h11, without a web framework.

Run it standalone with `python -m ringwall.demo.backend --listen 127.0.0.1:9000`.
The routes live in ringwall.demo.api and the WebSocket echo in ringwall.demo.websocket.
This module contains the server and the HTTP/1.1 connection handling: keep-alive,
chunked request bodies, `Expect: 100-continue`, the body size limit and the
WebSocket upgrade.
"""

import argparse
import asyncio
import email.utils
import http
import logging
from collections.abc import Sequence
from contextlib import aclosing, suppress

import h11

from ringwall.demo.api import DemoApi, ReceivedRequest, Reply, WebSocketAccept, error_reply
from ringwall.demo.serving import StreamServer
from ringwall.demo.websocket import EchoSession, PrefixedReader

__all__ = ["MAX_BODY_SIZE", "DemoBackend", "ReceivedRequest", "main"]

logger = logging.getLogger(__name__)

MAX_BODY_SIZE = 16 * 1024 * 1024
"""Maximum request body and WebSocket message size in bytes. Larger request bodies get 413."""

_READ_SIZE = 64 * 1024
_LINGER_SECONDS = 1.0
_SERVER_NAME = "ringwall-demo-backend"


class _BodyTooLargeError(Exception):
    """Request body above the size limit. The message contains the size."""


class _HttpConnection:
    """Serves the requests of one client connection until it closes or fails."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        api: DemoApi,
        received: list[ReceivedRequest],
        max_body_size: int,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._api = api
        self._received = received
        self._max_body_size = max_body_size
        self._conn = h11.Connection(h11.SERVER)
        self._method: str | None = None
        self._peer = writer.get_extra_info("peername")

    async def serve(self) -> None:
        """Serve requests until the connection ends. Invalid input gets an error response."""
        try:
            while await self._serve_request():
                pass
        except h11.RemoteProtocolError as error:
            logger.info("invalid request from %s: %s", self._peer, error)
            await self._send_error_and_close(error.error_status_hint, f"invalid request: {error}")
        except _BodyTooLargeError as error:
            logger.info("request body from %s too large: %s", self._peer, error)
            await self._send_error_and_close(413, str(error))
        except ConnectionError as error:
            logger.debug("connection from %s lost: %s", self._peer, error)

    async def _serve_request(self) -> bool:
        """Serve one request and return whether the connection can take another one."""
        request = await self._receive_request()
        if request is None:
            return False
        self._method = request.method.decode("ascii")
        body = await self._receive_body(request)
        received = ReceivedRequest(
            method=self._method,
            target=request.target.decode("latin-1"),
            headers=tuple(
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in request.headers.raw_items()
            ),
            body=body,
        )
        self._received.append(received)
        outcome = await self._dispatch(received)
        if isinstance(outcome, WebSocketAccept):
            await self._run_websocket(outcome)
            return False
        await self._send_reply(outcome)
        return self._start_next_cycle()

    async def _dispatch(self, request: ReceivedRequest) -> Reply | WebSocketAccept:
        try:
            return await self._api.handle(request)
        except Exception:
            logger.exception("handler failed for %s %s", request.method, request.target)
            return error_reply(500, "internal error in the demo backend")

    async def _next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        """Return the next h11 event, reading from the socket as needed.

        Sends `100 Continue` when the client waits for it and the body is needed.
        The result is never NEED_DATA, but h11's type hints cannot express that.
        """
        while True:
            event = self._conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if self._conn.they_are_waiting_for_100_continue:
                await self._send(h11.InformationalResponse(status_code=100, headers=[]))
            self._conn.receive_data(await self._reader.read(_READ_SIZE))

    async def _receive_request(self) -> h11.Request | None:
        """Return the next request head, or None when the client closed the connection."""
        event = await self._next_event()
        if isinstance(event, h11.ConnectionClosed):
            return None
        if not isinstance(event, h11.Request):
            raise RuntimeError(f"expected a request from h11, got {event!r}")
        return event

    async def _receive_body(self, request: h11.Request) -> bytes:
        """Read the whole body, or raise _BodyTooLargeError above the size limit."""
        declared = _declared_length(request)
        if declared is not None and declared > self._max_body_size:
            raise _BodyTooLargeError(self._too_large_message(declared))
        body = bytearray()
        while True:
            event = await self._next_event()
            if isinstance(event, h11.EndOfMessage):
                return bytes(body)
            if not isinstance(event, h11.Data):
                raise RuntimeError(f"expected body data from h11, got {event!r}")
            body += event.data
            if len(body) > self._max_body_size:
                raise _BodyTooLargeError(self._too_large_message(len(body)))

    def _too_large_message(self, size: int) -> str:
        return f"request body of {size} bytes exceeds the limit of {self._max_body_size} bytes"

    async def _send(self, event: h11.Event) -> None:
        data = self._conn.send(event)
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def _send_reply(self, reply: Reply) -> None:
        headers = [*reply.headers, *_standard_headers()]
        if reply.stream is None and reply.status not in (204, 304):
            headers.append(("Content-Length", str(len(reply.body))))
        reason = http.HTTPStatus(reply.status).phrase.encode("ascii")
        await self._send(h11.Response(status_code=reply.status, headers=headers, reason=reason))
        if reply.stream is not None:
            async with aclosing(reply.stream) as chunks:
                if self._method != "HEAD":
                    async for chunk in chunks:
                        await self._send(h11.Data(data=chunk))
        elif reply.body and self._method != "HEAD":
            await self._send(h11.Data(data=reply.body))
        await self._send(h11.EndOfMessage())

    def _start_next_cycle(self) -> bool:
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
            self._method = None
            return True
        return False

    async def _send_error_and_close(self, status: int, message: str) -> None:
        """Send an error response if no response has started yet, then drain and close."""
        if self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with suppress(ConnectionError, h11.LocalProtocolError):
                await self._send_reply(error_reply(status, message, (("Connection", "close"),)))
        await self._linger()

    async def _linger(self) -> None:
        """Close the write side and discard input for a moment.

        Closing at once while the client still sends a body makes the kernel reset the
        connection, and the client may then never read the error response.
        """
        with suppress(ConnectionError, OSError, TimeoutError):
            if self._writer.can_write_eof():
                self._writer.write_eof()
            async with asyncio.timeout(_LINGER_SECONDS):
                while await self._reader.read(_READ_SIZE):
                    pass

    async def _run_websocket(self, accept: WebSocketAccept) -> None:
        switch = h11.InformationalResponse(
            status_code=101,
            headers=[
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", accept.accept),
            ],
            reason=b"Switching Protocols",
        )
        await self._send(switch)
        trailing_data, _ = self._conn.trailing_data
        reader = PrefixedReader(trailing_data, self._reader)
        await EchoSession(reader, self._writer, self._max_body_size).run()


def _declared_length(request: h11.Request) -> int | None:
    """Return the Content-Length value; h11 has already checked that it is valid."""
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)
    return None


def _standard_headers() -> tuple[tuple[str, str], ...]:
    return (("Date", email.utils.formatdate(usegmt=True)), ("Server", _SERVER_NAME))


class DemoBackend(StreamServer):
    """Demo HTTP/1.1 backend server.

    `received` lists every complete request in arrival order, with its full body.
    Requests rejected before their body was read (invalid framing, body above
    `max_body_size`) are not in it, but `connection_count` still counts their
    connections, so a test can check that nothing at all reached the backend.

    NOTE: idle keep-alive connections have no timeout. They stay open until the
    client closes them or stop() runs.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, max_body_size: int = MAX_BODY_SIZE
    ) -> None:
        super().__init__(host, port)
        self.max_body_size = max_body_size
        self.received: list[ReceivedRequest] = []
        self.connection_count = 0
        self._api = DemoApi()

    description = "demo backend"

    async def start(self) -> None:
        """Bind and start accepting connections; afterwards `port` is the bound port."""
        await self._listen()
        logger.info("demo backend listening on %s:%d", self.host, self.port)

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connection_count += 1
        connection = _HttpConnection(reader, writer, self._api, self.received, self.max_body_size)
        try:
            await connection.serve()
        except Exception:
            peer = writer.get_extra_info("peername")
            logger.exception("demo backend connection from %s failed", peer)
        finally:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()


def _parse_listen_address(value: str) -> tuple[str, int]:
    """Parse HOST:PORT, with IPv6 hosts in brackets ([::1]:9000)."""
    host, separator, port_text = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    valid_port = port_text.isascii() and port_text.isdigit() and int(port_text) <= 65535
    if not separator or not host or not valid_port:
        raise argparse.ArgumentTypeError(f"invalid address {value!r}: expected HOST:PORT")
    return host, int(port_text)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the demo backend until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m ringwall.demo.backend",
        description="Run the Ringwall demo backend, a fintech-style HTTP API.",
    )
    parser.add_argument(
        "--listen",
        type=_parse_listen_address,
        default=("127.0.0.1", 9000),
        metavar="HOST:PORT",
        help="address and TCP port to listen on (default: 127.0.0.1:9000)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    host, port = args.listen
    asyncio.run(DemoBackend(host, port).serve_until_signal())


if __name__ == "__main__":
    main()
