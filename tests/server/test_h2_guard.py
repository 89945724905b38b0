"""The frame guard alone: frame headers checked before h2 buffers the frames."""

import h2.errors
import pytest

from ringwall.server.h2_guard import FrameGuard, FrameLimitError

ErrorCodes = h2.errors.ErrorCodes
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame_header(length: int, frame_type: int, flags: int, stream_id: int) -> bytes:
    return length.to_bytes(3, "big") + bytes([frame_type, flags]) + stream_id.to_bytes(4, "big")


def test_guard_counts_continuations() -> None:
    guard = FrameGuard(16_384, 2, 1_000_000)
    guard.feed(PREFACE + frame_header(0, 0x1, 0, 1))
    guard.feed(frame_header(0, 0x9, 0, 1))
    guard.feed(frame_header(0, 0x9, 0, 1))

    assert guard.in_header_block
    with pytest.raises(FrameLimitError) as raised:
        guard.feed(frame_header(0, 0x9, 0, 1))
    assert raised.value.error_code == ErrorCodes.ENHANCE_YOUR_CALM


def test_guard_resets_after_end_headers() -> None:
    guard = FrameGuard(16_384, 1, 1_000_000)
    guard.feed(PREFACE)
    for stream_id in (1, 3, 5):
        guard.feed(frame_header(0, 0x1, 0, stream_id) + frame_header(0, 0x9, 0x4, stream_id))

    assert not guard.in_header_block


def test_guard_limits_block_bytes() -> None:
    guard = FrameGuard(16_384, 100, 20_000)
    guard.feed(PREFACE + frame_header(10_000, 0x1, 0, 1) + b"\x00" * 10_000)
    guard.feed(frame_header(9_000, 0x9, 0, 1) + b"\x00" * 9_000)

    with pytest.raises(FrameLimitError):
        guard.feed(frame_header(9_000, 0x9, 0, 1))


def test_guard_reads_headers_split_across_reads() -> None:
    guard = FrameGuard(16_384, 0, 1_000_000)
    data = PREFACE + frame_header(3, 0x0, 0, 1) + b"abc" + frame_header(0, 0x1, 0, 3)
    for index in range(len(data)):
        guard.feed(data[index : index + 1])

    assert guard.in_header_block
    with pytest.raises(FrameLimitError):
        guard.feed(frame_header(0, 0x9, 0, 3)[:5])
        guard.feed(frame_header(0, 0x9, 0, 3)[5:])


def test_guard_rejects_oversize_frame_header() -> None:
    guard = FrameGuard(16_384, 32, 1_000_000)

    with pytest.raises(FrameLimitError) as raised:
        guard.feed(PREFACE + frame_header(16_385, 0x0, 0, 1))
    assert raised.value.error_code == ErrorCodes.FRAME_SIZE_ERROR
