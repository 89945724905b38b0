"""Upstreams and clients that close or reset while writes are held."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.server.test_write_order import read_responses
from tests.support.gateway_thread import proxy_config, running_gateway
from tests.support.scripted_upstream import content_length, read_head, scripted_upstream

# Loggers whose errors fail a test: the root, Ringwall's (which may not
# propagate to the root) and asyncio's, which reports unhandled callback errors.
_CHECKED_LOGGERS = ("", "ringwall", "asyncio")


class ErrorRecords(logging.Handler):
    """A logging handler that keeps every record of level ERROR and above."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [record.getMessage() for record in self.records]


@contextmanager
def recording_errors() -> Iterator[ErrorRecords]:
    """Collect the ERROR records of the root, Ringwall and asyncio loggers until the block exits."""
    handler = ErrorRecords()
    for name in _CHECKED_LOGGERS:
        logging.getLogger(name).addHandler(handler)
    try:
        yield handler
    finally:
        for name in _CHECKED_LOGGERS:
            logging.getLogger(name).removeHandler(handler)


@pytest.fixture
def errors() -> Iterator[ErrorRecords]:
    with recording_errors() as handler:
        yield handler


def reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def recv_until(sock: socket.socket, done: bytes, size: int) -> bytes:
    """Receive until the bytes after `done` number at least `size`, or the connection ends."""
    data = b""
    while len(data.partition(done)[2]) < size:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_upstream_ends_mid_response(
    tmp_path: Path, errors: ErrorRecords, how: str, framing: str
) -> None:
    first_part_received = threading.Event()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        await reader.readexactly(content_length(head))
        if framing == "length":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"p" * 5000)
        else:
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n" + b"p" * 5000
            )
        await writer.drain()
        # A reset can discard bytes the gateway has not read yet, so the
        # response ends only once the client has its first part.
        await asyncio.to_thread(first_part_received.wait, 5)
        if how == "reset":
            reset(writer)
        else:
            writer.close()

    with (
        scripted_upstream(upstream) as port,
        running_gateway(proxy_config(port), tmp_path) as gw,
        socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock,
    ):
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: app\r\n\r\nGET /b HTTP/1.1\r\nHost: app\r\n\r\n")
        data = recv_until(sock, b"\r\n\r\n", 5000)
        first_part_received.set()
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    assert data.startswith(b"HTTP/1.1 200")
    assert data.count(b"HTTP/1.1") == 1
    assert len(data.partition(b"\r\n\r\n")[2]) >= 5000
    assert errors.messages() == []


def test_client_resets_with_responses_held(tmp_path: Path, errors: ErrorRecords) -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_head(reader)
            await reader.readexactly(content_length(head))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n" + b"r" * 20000)
            await writer.drain()

    with scripted_upstream(upstream) as port, running_gateway(proxy_config(port), tmp_path) as gw:
        for _ in range(30):
            sock = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
            sock.sendall(b"GET /a HTTP/1.1\r\nHost: app\r\n\r\n" * 8)
            # The reset lands at a different point of the exchanges each time.
            time.sleep(0.002)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        # The gateway still serves, and its upstream pool is usable.
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
            sock.sendall(b"GET /ok HTTP/1.1\r\nHost: app\r\n\r\n")
            [(status, body)] = read_responses(sock, 1)
    assert status == 200
    assert len(body) == 20000
    assert errors.messages() == []


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
def test_close_delimited_upstream_response(
    tmp_path: Path, errors: ErrorRecords, version: bytes
) -> None:
    body = bytes(range(256)) * 400

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        await reader.readexactly(content_length(head))
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        for offset in range(0, len(body), 3000):
            writer.write(body[offset : offset + 3000])
        await writer.drain()

    with scripted_upstream(upstream) as port, running_gateway(proxy_config(port), tmp_path) as gw:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
                sock.sendall(b"GET /a HTTP/%b\r\nHost: app\r\n\r\n" % version)
                if version == b"1.1":
                    [(status, received)] = read_responses(sock, 1)
                else:
                    data = b""
                    while chunk := sock.recv(65536):
                        data += chunk
                    status = int(data.split(b" ")[1])
                    received = data.partition(b"\r\n\r\n")[2]
                assert status == 200
                assert received == body
    assert errors.messages() == []
