"""The plain-HTTP listener of a gateway that serves HTTPS, which redirects every request.

Each request gets 308 Permanent Redirect to the same URL over HTTPS. 308
keeps the method and body, so a client that posted over HTTP posts
again over HTTPS instead of turning the request into a GET. The request is
not forwarded anywhere, and the connection closes after the response.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

import httptools

from ringwall.errors import BadRequest, Rejection, RequestTimeout
from ringwall.gateway.routing import normalize_host
from ringwall.http.problem import problem_response

if TYPE_CHECKING:
    from ringwall.server.worker import Worker

log = logging.getLogger("ringwall.server")

LAYER = "redirect"
# Maximum size of the request head read before the redirect is sent.
MAX_HEAD_BYTES = 16_384


class RedirectConnection(asyncio.Protocol):
    """A plain-HTTP connection that gets one 308 Permanent Redirect to the same URL over HTTPS."""

    def __init__(self, worker: Worker, https_port: int) -> None:
        self.worker = worker
        self.https_port = https_port
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.target = b""
        self.hosts: list[bytes] = []
        self.received = 0
        self.done = False
        self._deadline: asyncio.TimerHandle | None = None
        self._name = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        timeout = self.worker.runtime.timeouts.head
        self._deadline = self.worker.loop.call_later(timeout, self._time_out)

    def _time_out(self) -> None:
        """Send 408 for a head that started but did not finish in time, as the HTTPS port does."""
        if self.done or self.transport is None:
            return
        if self.received:
            self._reject(RequestTimeout(LAYER, "the request head took too long", close=True))
        else:
            self.transport.abort()  # nothing arrived, so no response, as on the HTTPS port

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        self.received += len(data)
        try:
            if self.received > MAX_HEAD_BYTES:
                raise BadRequest(LAYER, "the request head is too large", close=True)
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._respond_or_reject()
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            if isinstance(cause, Rejection):
                self._reject(cause)
            else:
                log.error("redirect parser callback failed", exc_info=cause)
                self._reject(BadRequest(LAYER, "the request could not be parsed", close=True))
        except httptools.HttpParserError:
            self._reject(BadRequest(LAYER, "malformed HTTP request", close=True))
        except Rejection as rejection:
            self._reject(rejection)

    # -- httptools callbacks --

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"host":
            self.hosts.append(value)

    def on_headers_complete(self) -> None:
        self._respond()

    # -- responses --

    def _respond_or_reject(self) -> None:
        try:
            self._respond()
        except Rejection as rejection:
            self._reject(rejection)

    def _respond(self) -> None:
        if self.done:
            return
        if len(self.hosts) != 1:
            raise BadRequest(LAYER, "expected exactly one Host header", close=True)
        host = normalize_host(self.hosts[0])
        if not self.target.startswith(b"/"):
            raise BadRequest(LAYER, "the request target must be a path", close=True)
        port = "" if self.https_port == 443 else f":{self.https_port}"
        location = f"https://{host}{port}".encode("ascii") + self.target
        request_id = self.worker.request_ids.next()
        header = self.worker.runtime.config.server.request_id_header
        head = (
            b"HTTP/1.1 308 Permanent Redirect\r\n"
            b"Location: " + location + b"\r\n"
            b"Content-Length: 0\r\n"
            + f"{header}: {request_id}\r\n".encode("ascii")
            + b"Connection: close\r\n\r\n"
        )
        self._send(head)

    def _reject(self, rejection: Rejection) -> None:
        request_id = self.worker.request_ids.next()
        log.info(
            "request rejected",
            extra={"layer": rejection.layer, "reason": rejection.reason, "request_id": request_id},
        )
        header = self.worker.runtime.config.server.request_id_header
        self._send(problem_response(rejection, request_id, header, close=True))

    def _send(self, data: bytes) -> None:
        self.done = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.transport.close()
