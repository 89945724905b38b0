"""A raw-socket HTTP/1.1 client for tests: send exact bytes, parse what comes back."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any

import h11

TIMEOUT_SECONDS = 10.0


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        lower = name.lower()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return None

    def header_list(self, name: str) -> list[str]:
        lower = name.lower()
        return [value for key, value in self.headers if key.lower() == lower]

    def json(self) -> Any:
        return json.loads(self.body)


class RawClient:
    """One client connection that sends raw bytes and reads h11-parsed responses."""

    def __init__(self, port: int, timeout: float = TIMEOUT_SECONDS) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._parser = h11.Connection(h11.CLIENT)
        # Responses are parsed without h11 knowing the requests: tell it one was sent.
        self._methods: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, method: bytes = b"GET") -> Response:
        """Read the next final response (1xx responses are skipped)."""
        self._start_cycle(method)
        status = 0
        headers: list[tuple[str, str]] = []
        body = bytearray()
        while True:
            event = self._parser.next_event()
            if event is h11.NEED_DATA:
                data = self.sock.recv(65536)
                self._parser.receive_data(data)
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = [(k.decode(), v.decode("latin-1")) for k, v in event.headers.raw_items()]
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return Response(status, headers, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("connection closed before the response ended")

    def _start_cycle(self, method: bytes) -> None:
        state = self._parser.our_state
        if state is h11.DONE and self._parser.their_state is h11.DONE:
            self._parser.start_next_cycle()
        if self._parser.our_state is h11.IDLE:
            request = h11.Request(method=method, target="/", headers=[("Host", "x")])
            self._parser.send(request)
            self._parser.send(h11.EndOfMessage())

    def read_until_closed(self) -> bytes:
        chunks = []
        while True:
            data = self.sock.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)

    def is_closed(self, wait: float = 2.0) -> bool:
        """Return True if the peer closes the connection within `wait` seconds."""
        self.sock.settimeout(wait)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request(port: int, raw: bytes, method: bytes = b"GET") -> Response:
    """Send one raw request on a new connection and return the response."""
    with RawClient(port) as client:
        client.send(raw)
        return client.response(method)
