"""Minimal RFC 6455 WebSocket server side: handshake check and an echo loop.

The demo backend needs only an echo endpoint, so this module supports no extensions
(such as permessage-deflate) and no subprotocols.
"""

import asyncio
import base64
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# RFC 6455 section 1.3: the server appends this GUID to Sec-WebSocket-Key.
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OPCODE_CONTINUATION = 0x0
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_MESSAGE_TOO_BIG = 1009

_KNOWN_OPCODES = frozenset(
    {OPCODE_CONTINUATION, OPCODE_TEXT, OPCODE_BINARY, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG}
)
_MAX_CONTROL_PAYLOAD = 125


class HandshakeError(Exception):
    """Invalid WebSocket opening handshake, with the HTTP status to send in `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ProtocolViolation(Exception):
    """Invalid frame from the client, with the close code to send in `close_code`."""

    def __init__(self, close_code: int, message: str) -> None:
        super().__init__(message)
        self.close_code = close_code


@dataclass(frozen=True)
class Frame:
    """One decoded WebSocket frame with its payload already unmasked."""

    fin: bool
    opcode: int
    payload: bytes


def compute_accept(key: str) -> str:
    """Return the Sec-WebSocket-Accept value for a Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    digest = hashlib.sha1(key.encode("ascii") + _ACCEPT_GUID, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


def _header_tokens(headers: Mapping[str, str], name: str) -> set[str]:
    return {token.strip().lower() for token in headers.get(name, "").split(",")}


def validate_handshake(headers: Mapping[str, str]) -> str:
    """Check the opening handshake headers and return the Sec-WebSocket-Accept value.

    `headers` maps lowercase names to values. Raises HandshakeError with status 426
    when the Upgrade header or the version is missing or unsupported, and 400 for
    any other invalid header.
    """
    if "websocket" not in _header_tokens(headers, "upgrade"):
        raise HandshakeError(426, "missing 'Upgrade: websocket' header")
    if "upgrade" not in _header_tokens(headers, "connection"):
        raise HandshakeError(400, "missing 'Connection: Upgrade' header")
    if headers.get("sec-websocket-version", "").strip() != "13":
        raise HandshakeError(426, "unsupported Sec-WebSocket-Version: only 13 is supported")
    key = headers.get("sec-websocket-key", "").strip()
    try:
        decoded_key = base64.b64decode(key, validate=True)
    except ValueError:
        decoded_key = b""
    if len(decoded_key) != 16:
        raise HandshakeError(400, "invalid Sec-WebSocket-Key: expected 16 bytes in base64")
    return compute_accept(key)


class PrefixedReader:
    """Stream reader that first returns bytes already read from the socket.

    After the HTTP upgrade, h11 may hold bytes that the client sent right after its
    request (`h11.Connection.trailing_data`). They belong to the first frames.
    """

    def __init__(self, prefix: bytes, reader: asyncio.StreamReader) -> None:
        self._buffer = bytearray(prefix)
        self._reader = reader

    async def read_exactly(self, size: int) -> bytes:
        """Read `size` bytes, or raise asyncio.IncompleteReadError at end of stream."""
        if len(self._buffer) >= size:
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
            return data
        head = bytes(self._buffer)
        self._buffer.clear()
        return head + await self._reader.readexactly(size - len(head))


def _unmask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    repeated_mask = (mask * (len(payload) // 4 + 1))[: len(payload)]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(repeated_mask, "big")
    return value.to_bytes(len(payload), "big")


async def _read_payload_length(reader: PrefixedReader, short_length: int) -> int:
    if short_length == 126:
        return int.from_bytes(await reader.read_exactly(2), "big")
    if short_length == 127:
        return int.from_bytes(await reader.read_exactly(8), "big")
    return short_length


def _check_frame_header(first: int, second: int) -> None:
    if first & 0x70:
        raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "reserved bits set without an extension")
    if not second & 0x80:
        raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "client frame is not masked")
    opcode = first & 0x0F
    if opcode not in _KNOWN_OPCODES:
        raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")


async def read_frame(reader: PrefixedReader, max_payload: int) -> Frame:
    """Read and unmask one client frame.

    Raises ProtocolViolation for an invalid frame or one whose payload exceeds
    `max_payload` bytes, and asyncio.IncompleteReadError at end of stream.
    """
    first, second = await reader.read_exactly(2)
    _check_frame_header(first, second)
    fin = bool(first & 0x80)
    opcode = first & 0x0F
    length = await _read_payload_length(reader, second & 0x7F)
    if opcode >= OPCODE_CLOSE and (length > _MAX_CONTROL_PAYLOAD or not fin):
        raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "control frame is fragmented or too long")
    if length > max_payload:
        raise ProtocolViolation(CLOSE_MESSAGE_TOO_BIG, f"frame exceeds {max_payload} bytes")
    mask = await reader.read_exactly(4)
    payload = _unmask(await reader.read_exactly(length), mask)
    return Frame(fin=fin, opcode=opcode, payload=payload)


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """Encode one unfragmented, unmasked server frame."""
    header = bytearray([0x80 | opcode])
    length = len(payload)
    if length <= _MAX_CONTROL_PAYLOAD:
        header.append(length)
    elif length <= 0xFFFF:
        header.append(126)
        header += length.to_bytes(2, "big")
    else:
        header.append(127)
        header += length.to_bytes(8, "big")
    return bytes(header) + payload


def encode_close(code: int, reason: str = "") -> bytes:
    """Encode a close frame with a status code and an optional UTF-8 reason."""
    return encode_frame(OPCODE_CLOSE, code.to_bytes(2, "big") + reason.encode("utf-8")[:123])


class EchoSession:
    """Echo loop for one upgraded connection.

    Text and binary messages are sent back whole, with the opcode they arrived with,
    even when the client fragmented them. Pings get a pong with the same payload.
    A close frame gets a close frame with the same status code, and then the
    connection ends. Messages above `max_message_size` bytes close the connection
    with code 1009.
    """

    def __init__(
        self, reader: PrefixedReader, writer: asyncio.StreamWriter, max_message_size: int
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._max_message_size = max_message_size
        self._message_opcode: int | None = None
        self._message = bytearray()

    async def run(self) -> None:
        """Echo frames until the client closes or violates the protocol."""
        try:
            while await self._handle_frame(await read_frame(self._reader, self._max_message_size)):
                pass
        except ProtocolViolation as violation:
            logger.info("closing WebSocket: %s (code %d)", violation, violation.close_code)
            await self._send(encode_close(violation.close_code, str(violation)))
        except asyncio.IncompleteReadError:
            logger.debug("WebSocket client closed the connection without a close frame")

    async def _send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def _handle_frame(self, frame: Frame) -> bool:
        """Process one frame and return False once the session is over."""
        if frame.opcode == OPCODE_CLOSE:
            await self._send(_close_reply(frame.payload))
            return False
        if frame.opcode == OPCODE_PING:
            await self._send(encode_frame(OPCODE_PONG, frame.payload))
        elif frame.opcode != OPCODE_PONG:
            await self._handle_data_frame(frame)
        return True

    async def _handle_data_frame(self, frame: Frame) -> None:
        if frame.opcode == OPCODE_CONTINUATION:
            if self._message_opcode is None:
                raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "continuation frame without a start")
        elif self._message_opcode is not None:
            raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "new message before the last one ended")
        else:
            self._message_opcode = frame.opcode
        self._message += frame.payload
        if len(self._message) > self._max_message_size:
            raise ProtocolViolation(
                CLOSE_MESSAGE_TOO_BIG, f"message exceeds {self._max_message_size} bytes"
            )
        if frame.fin:
            await self._echo_message()

    async def _echo_message(self) -> None:
        opcode = self._message_opcode
        message = bytes(self._message)
        self._message_opcode = None
        self._message.clear()
        assert opcode is not None
        if opcode == OPCODE_TEXT:
            _validate_utf8(message)
        await self._send(encode_frame(opcode, message))


def _validate_utf8(data: bytes) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ProtocolViolation(CLOSE_INVALID_PAYLOAD, "text message is not UTF-8") from error


def _close_reply(payload: bytes) -> bytes:
    """Build the close frame that replies to a client close frame with `payload`."""
    if not payload:
        return encode_frame(OPCODE_CLOSE, b"")
    if len(payload) == 1:
        raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "close frame payload of 1 byte")
    _validate_utf8(payload[2:])
    return encode_frame(OPCODE_CLOSE, payload[:2])
