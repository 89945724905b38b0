"""Upgrade tunnels while writes are held per poll: order, half-closes and large transfers."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
from pathlib import Path

from tests.server.test_write_resets import recording_errors
from tests.support.gateway_thread import GatewayThread, proxy_config, running_gateway
from tests.support.scripted_upstream import read_head, scripted_upstream
from tests.support.waiting import wait_for

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)
SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


def tunnel_config(port: int) -> str:
    return proxy_config(port, route_extra="    upgrades: [websocket]")


def read_until_eof(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            return data + b"<timeout>"
        if not chunk:
            return data
        data += chunk


def test_tunnel_client_half_close(tmp_path: Path) -> None:
    seen: dict[str, bytes] = {}

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(SWITCH + b"hello-from-upstream")
        await writer.drain()
        seen["from_client"] = await reader.read(-1)  # until the client's FIN
        writer.write(b"|after-eof")
        await writer.drain()

    with (
        scripted_upstream(upstream) as port,
        running_gateway(tunnel_config(port), tmp_path) as gw,
        socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock,
    ):
        sock.sendall(UPGRADE + b"first")
        sock.sendall(b"second")
        sock.shutdown(socket.SHUT_WR)
        received = read_until_eof(sock)
    assert seen["from_client"] == b"firstsecond"
    assert received.startswith(b"HTTP/1.1 101")
    assert received.endswith(b"hello-from-upstream|after-eof")


def open_client_connections(gateway: GatewayThread) -> int:
    """Return how many client connections the gateway has open. Call it on the gateway's loop."""
    assert gateway.worker is not None
    return len(gateway.worker.connections)


def test_tunnel_upstream_half_close(tmp_path: Path) -> None:
    seen: dict[str, bytes] = {}
    done = threading.Event()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(SWITCH + b"last-words")
        await writer.drain()
        writer.write_eof()
        seen["from_client"] = await reader.read(-1)
        done.set()

    with (
        recording_errors() as errors,
        scripted_upstream(upstream) as port,
        running_gateway(tunnel_config(port), tmp_path) as gw,
        socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock,
    ):
        sock.sendall(UPGRADE)
        received = read_until_eof(sock)
        try:
            sock.sendall(b"still-talking")
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            seen["client_error"] = repr(exc).encode()
        done.wait(3)
        # Both sides sent FIN, so the gateway closes the tunnel at once.
        closed = wait_for(lambda: gw.call(open_client_connections, gw) == 0, 2)
    assert received.endswith(b"last-words")
    assert seen.get("from_client") == b"still-talking", seen
    assert closed, "the tunnel stayed open after both sides sent FIN"
    assert errors.messages() == []


def test_tunnel_large_transfer(tmp_path: Path) -> None:
    size = 8 * 1024 * 1024
    payload = bytes(range(256)) * (size // 256)
    seen: dict[str, str] = {}

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(SWITCH)

        async def send() -> None:
            for offset in range(0, size, 10_000):
                writer.write(payload[offset : offset + 10_000])
                await writer.drain()

        sender = asyncio.ensure_future(send())
        digest = hashlib.sha256()
        total = 0
        while chunk := await reader.read(1 << 16):
            digest.update(chunk)
            total += len(chunk)
        seen["digest"] = digest.hexdigest()
        seen["total"] = str(total)
        await sender
        writer.close()

    with (
        scripted_upstream(upstream) as port,
        running_gateway(tunnel_config(port), tmp_path) as gw,
        socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock,
    ):
        sock.sendall(UPGRADE)
        received = bytearray()

        def reader() -> None:
            sock.settimeout(10)
            while chunk := sock.recv(1 << 20):
                received.extend(chunk)

        thread = threading.Thread(target=reader)
        thread.start()
        for offset in range(0, size, 3000):
            sock.sendall(payload[offset : offset + 3000])
        sock.shutdown(socket.SHUT_WR)
        thread.join(15)
    assert not thread.is_alive(), "the client's reader did not see the tunnel end"
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    assert seen.get("total") == str(size)
    assert seen["digest"] == hashlib.sha256(payload).hexdigest()
    assert len(body) == size
    assert body == payload
