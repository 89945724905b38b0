"""Demo identity provider: serves the demo issuer's JWK set over HTTP/1.1 on asyncio and h11.

Run it standalone with `python -m ringwall.demo.idp --listen 127.0.0.1:9100 --state .ringwall`,
and mint tokens that it publishes the key for with `ringwall token`.

`GET /.well-known/jwks.json` returns the JWK set. The key files are read again for
every request, so a rotation done by another process is served at once. Other
paths get 404 and other methods 405, as problem details JSON (RFC 9457).
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import http
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import h11

from ringwall.demo.backend import _parse_listen_address
from ringwall.demo.issuer import (
    DEFAULT_STATE_DIR,
    IssuerStateError,
    load_issuer,
    load_or_create_issuer,
)
from ringwall.demo.serving import StreamServer

__all__ = ["JWKS_CACHE_CONTROL", "JWKS_PATH", "DemoIdentityProvider", "main"]

logger = logging.getLogger(__name__)

JWKS_PATH = "/.well-known/jwks.json"
JWKS_CACHE_CONTROL = "max-age=300"
MAX_REQUEST_BODY_SIZE = 64 * 1024
"""Maximum request body size in bytes. Bodies are read and discarded, and larger ones get 413."""

_READ_SIZE = 64 * 1024
_IDLE_TIMEOUT_SECONDS = 60.0
_LINGER_SECONDS = 1.0
_SERVER_NAME = "ringwall-demo-idp"
_ALLOWED_METHODS = ("GET", "HEAD")


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _problem(status: int, detail: str, headers: tuple[tuple[str, str], ...] = ()) -> _Response:
    """Build a problem details response (RFC 9457)."""
    document = {
        "type": "about:blank",
        "title": http.HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    body = json.dumps(document).encode("utf-8") + b"\n"
    return _Response(status, (("Content-Type", "application/problem+json"), *headers), body)


class _BodyTooLargeError(Exception):
    """Request body above MAX_REQUEST_BODY_SIZE."""


_Responder = Callable[[str, str], Awaitable[_Response]]


class _HttpConnection:
    """Handler of one client connection, serving requests until it closes, idles out or fails."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, respond: _Responder
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._respond = respond
        self._conn = h11.Connection(h11.SERVER)
        self._peer = writer.get_extra_info("peername")

    async def serve(self) -> None:
        """Serve requests until the connection ends. Invalid input gets an error response."""
        try:
            while await self._serve_request():
                pass
        except h11.RemoteProtocolError as error:
            logger.info("invalid request from %s: %s", self._peer, error)
            await self._send_error_and_close(error.error_status_hint, f"invalid request: {error}")
        except _BodyTooLargeError:
            logger.info("request body from %s too large", self._peer)
            detail = f"request body exceeds the limit of {MAX_REQUEST_BODY_SIZE} bytes"
            await self._send_error_and_close(413, detail)
        except TimeoutError:
            logger.debug(
                "connection from %s idle for %gs, closing", self._peer, _IDLE_TIMEOUT_SECONDS
            )
        except ConnectionError as error:
            logger.debug("connection from %s lost: %s", self._peer, error)

    async def _serve_request(self) -> bool:
        """Serve one request and return whether the connection can take another one."""
        event = await self._next_event()
        if isinstance(event, h11.ConnectionClosed):
            return False
        if not isinstance(event, h11.Request):
            raise RuntimeError(f"expected a request from h11, got {event!r}")
        await self._discard_body()
        method = event.method.decode("ascii")
        response = await self._respond(method, event.target.decode("latin-1"))
        await self._send_response(response, include_body=method != "HEAD")
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
            return True
        return False

    async def _next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        """Return the next h11 event, reading from the socket as needed.

        Raises TimeoutError when the client sends nothing for _IDLE_TIMEOUT_SECONDS.
        The result is never NEED_DATA, but h11's type hints cannot express that.
        """
        while True:
            event = self._conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if self._conn.they_are_waiting_for_100_continue:
                await self._send(h11.InformationalResponse(status_code=100, headers=[]))
            async with asyncio.timeout(_IDLE_TIMEOUT_SECONDS):
                data = await self._reader.read(_READ_SIZE)
            self._conn.receive_data(data)

    async def _discard_body(self) -> None:
        size = 0
        while True:
            event = await self._next_event()
            if isinstance(event, h11.EndOfMessage):
                return
            if not isinstance(event, h11.Data):
                raise RuntimeError(f"expected body data from h11, got {event!r}")
            size += len(event.data)
            if size > MAX_REQUEST_BODY_SIZE:
                raise _BodyTooLargeError

    async def _send(self, event: h11.Event) -> None:
        data = self._conn.send(event)
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def _send_response(self, response: _Response, *, include_body: bool) -> None:
        headers = [
            *response.headers,
            ("Content-Length", str(len(response.body))),
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Server", _SERVER_NAME),
        ]
        reason = http.HTTPStatus(response.status).phrase.encode("ascii")
        await self._send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        if include_body and response.body:
            await self._send(h11.Data(data=response.body))
        await self._send(h11.EndOfMessage())

    async def _send_error_and_close(self, status: int, detail: str) -> None:
        """Send an error response if no response has started yet, then drain and close."""
        if self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            response = _problem(status, detail, (("Connection", "close"),))
            with suppress(ConnectionError, h11.LocalProtocolError):
                await self._send_response(response, include_body=True)
        # Closing at once while the client still sends a body makes the kernel reset
        # the connection, and the client may then never read the error response.
        with suppress(ConnectionError, OSError, TimeoutError):
            if self._writer.can_write_eof():
                self._writer.write_eof()
            async with asyncio.timeout(_LINGER_SECONDS):
                while await self._reader.read(_READ_SIZE):
                    pass


def _read_jwks(state_dir: Path) -> bytes:
    return load_issuer(state_dir).jwks()


class DemoIdentityProvider(StreamServer):
    """Demo HTTP/1.1 server that publishes the JWK set of the demo issuer in `issuer_state_dir`.

    `start()` creates the state directory and the issuer key when they are
    missing. `jwks_request_count` counts the JWK set requests that got a 200 response.
    """

    description = "demo identity provider"

    def __init__(self, issuer_state_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.issuer_state_dir = Path(issuer_state_dir)
        self.jwks_request_count = 0

    async def start(self) -> None:
        """Load or create the issuer key, then bind; afterwards `port` is the bound port.

        Raises IssuerStateError for an invalid key file and OSError when a file
        cannot be read or written or the address cannot be bound.
        """
        issuer = await asyncio.to_thread(load_or_create_issuer, self.issuer_state_dir)
        await self._listen()
        logger.info(
            "demo identity provider listening on %s:%d, serving kid %s from %s",
            self.host,
            self.port,
            issuer.kid,
            self.issuer_state_dir,
        )

    async def _respond(self, method: str, target: str) -> _Response:
        path = target.partition("?")[0]
        if path != JWKS_PATH:
            return _problem(404, f"not found. The JWK set is at {JWKS_PATH}")
        if method not in _ALLOWED_METHODS:
            allow = ", ".join(_ALLOWED_METHODS)
            return _problem(405, f"{JWKS_PATH} supports {allow} only", (("Allow", allow),))
        try:
            jwks = await asyncio.to_thread(_read_jwks, self.issuer_state_dir)
        except (IssuerStateError, OSError) as error:
            logger.error("cannot read the demo issuer key in %s: %s", self.issuer_state_dir, error)
            return _problem(503, "the demo issuer key cannot be read. See the server log")
        self.jwks_request_count += 1
        headers = (("Content-Type", "application/json"), ("Cache-Control", JWKS_CACHE_CONTROL))
        return _Response(200, headers, jwks)

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            await _HttpConnection(reader, writer, self._respond).serve()
        except Exception:
            peer = writer.get_extra_info("peername")
            logger.exception("demo identity provider connection from %s failed", peer)
        finally:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo identity provider until SIGINT or SIGTERM and return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m ringwall.demo.idp",
        description="Run the Ringwall demo identity provider, which publishes the JWK set "
        "of the demo token issuer.",
    )
    parser.add_argument(
        "--listen",
        type=_parse_listen_address,
        default=("127.0.0.1", 9100),
        metavar="HOST:PORT",
        help="address and TCP port to listen on (default: 127.0.0.1:9100)",
    )
    parser.add_argument(
        "--state",
        type=Path,
        default=DEFAULT_STATE_DIR,
        metavar="DIR",
        help=f"demo state directory with the issuer key, created when missing "
        f"(default: {DEFAULT_STATE_DIR} in the working directory)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    host, port = args.listen
    try:
        asyncio.run(DemoIdentityProvider(args.state, host, port).serve_until_signal())
    except (IssuerStateError, OSError) as error:
        logger.error("demo identity provider failed to start: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
