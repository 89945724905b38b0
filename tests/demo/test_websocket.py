"""Tests for ringwall.demo.websocket with hand-built frames over a raw socket."""

import base64
import os
import socket
from collections.abc import Iterator

import pytest

from ringwall.demo.backend import DemoBackend
from ringwall.demo.websocket import compute_accept
from tests.support.backend_thread import running_backend

TIMEOUT = 5.0
KEY = base64.b64encode(b"0123456789abcdef").decode("ascii")
HANDSHAKE = (
    "GET /api/ws HTTP/1.1\r\nHost: demo\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode("ascii")


@pytest.fixture
def backend() -> Iterator[DemoBackend]:
    with running_backend() as started:
        yield started


def client_frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = bytes([first, mask_bit | length])
    else:
        header = bytes([first, mask_bit | 126]) + length.to_bytes(2, "big")
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def read_server_frame(sock: socket.socket) -> tuple[int, bytes]:
    first, second = receive_exactly(sock, 2)
    assert first & 0x80, "server frames are never fragmented"
    assert not second & 0x80, "server frames must not be masked"
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(receive_exactly(sock, 2), "big")
    elif length == 127:
        length = int.from_bytes(receive_exactly(sock, 8), "big")
    return first & 0x0F, receive_exactly(sock, length)


def open_websocket(backend: DemoBackend, first_frames: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", backend.port), timeout=TIMEOUT)
    sock.sendall(HANDSHAKE + first_frames)
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += receive_exactly(sock, 1)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert f"Sec-WebSocket-Accept: {compute_accept(KEY)}".encode() in head
    return sock


def test_accept_matches_rfc_6455_example() -> None:
    assert compute_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_frames_sent_with_handshake_are_echoed(backend: DemoBackend) -> None:
    with open_websocket(backend, client_frame(0x1, b"early")) as sock:
        assert read_server_frame(sock) == (0x1, b"early")


def test_fragments_with_ping_between(backend: DemoBackend) -> None:
    with open_websocket(backend) as sock:
        sock.sendall(
            client_frame(0x2, b"ab", fin=False)
            + client_frame(0x9, b"are you there")
            + client_frame(0x0, b"cd")
        )
        assert read_server_frame(sock) == (0xA, b"are you there")
        assert read_server_frame(sock) == (0x2, b"abcd")


def test_close_code_is_echoed(backend: DemoBackend) -> None:
    with open_websocket(backend) as sock:
        sock.sendall(client_frame(0x8, (1001).to_bytes(2, "big") + b"going away"))
        assert read_server_frame(sock) == (0x8, (1001).to_bytes(2, "big"))
        assert sock.recv(1) == b""


@pytest.mark.parametrize(
    ("frame", "close_code"),
    [
        (client_frame(0x1, b"plain", masked=False), 1002),
        (client_frame(0x1, b"\xff\xfe"), 1007),
        (client_frame(0x0, b"orphan"), 1002),
        (client_frame(0x3, b""), 1002),
        (client_frame(0x9, b"x" * 126), 1002),
    ],
)
def test_invalid_frame_closes_with_code(
    backend: DemoBackend, frame: bytes, close_code: int
) -> None:
    with open_websocket(backend) as sock:
        sock.sendall(frame)
        opcode, payload = read_server_frame(sock)
        assert opcode == 0x8
        assert int.from_bytes(payload[:2], "big") == close_code
        assert sock.recv(1) == b""


def test_message_over_limit_closes_with_1009() -> None:
    with running_backend(max_body_size=100) as backend, open_websocket(backend) as sock:
        sock.sendall(client_frame(0x1, b"x" * 60, fin=False) + client_frame(0x0, b"y" * 60))
        opcode, payload = read_server_frame(sock)
        assert opcode == 0x8
        assert int.from_bytes(payload[:2], "big") == 1009
