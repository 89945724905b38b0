"""Tests for ringwall.http.decompress: content codings, limits, bombs and corrupt streams."""

from __future__ import annotations

import gzip
import random
import struct
import time
import tracemalloc
import zlib
from collections.abc import Sequence

import pytest

from ringwall.errors import BadRequest, PayloadTooLarge, Rejection, UnsupportedMediaType
from ringwall.http.decompress import (
    MAX_GZIP_MEMBERS,
    SUPPORTED_CODINGS,
    content_coding,
    decode_body,
)
from tests.support.compression import MiB, gzip_zeros

JSON = b'{"product_id": 42, "quantity": 2, "note": "' + b"gift wrap " * 20 + b'"}'


def gzip_member(
    payload: bytes,
    *,
    flags: int = 0,
    extra: bytes = b"",
    method: int = 8,
    crc: int | None = None,
    size: int | None = None,
) -> bytes:
    """Build one gzip member by hand (RFC 1952), so header fields and the trailer can be set."""
    header = struct.pack("<BBBBIBB", 0x1F, 0x8B, method, flags, 0, 0, 255) + extra
    if flags & 0x02:  # FHCRC: the low 16 bits of the CRC-32 of the header
        header += struct.pack("<H", zlib.crc32(header) & 0xFFFF)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    raw = deflater.compress(payload) + deflater.flush()
    trailer = struct.pack(
        "<II",
        zlib.crc32(payload) if crc is None else crc,
        len(payload) if size is None else size,
    )
    return header + raw + trailer


def raw_deflate(payload: bytes) -> bytes:
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return deflater.compress(payload) + deflater.flush()


@pytest.fixture(scope="module")
def gigabyte_bomb() -> bytes:
    return gzip_zeros(1024)


def decode(data: bytes, coding: str = "gzip", max_bytes: int = MiB, max_ratio: int = 100) -> bytes:
    return decode_body(data, coding, max_bytes=max_bytes, max_ratio=max_ratio)


def rejection_of(data: bytes, coding: str = "gzip", **limits: int) -> Rejection:
    with pytest.raises(Rejection) as caught:
        decode(data, coding, **limits)
    return caught.value


# --- content_coding -----------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        ([b""], None),
        ([b"identity"], None),
        ([b"Identity, identity"], None),
        ([b"gzip"], "gzip"),
        ([b"GZip"], "gzip"),
        ([b" gzip\t"], "gzip"),
        ([b"x-gzip"], "gzip"),
        ([b"deflate"], "deflate"),
        ([b"identity, gzip"], "gzip"),
        ([b"gzip,"], "gzip"),
        ([b"identity", b"deflate"], "deflate"),
    ],
)
def test_content_coding_accepted(values: list[bytes], expected: str | None) -> None:
    assert content_coding(values, SUPPORTED_CODINGS) == expected


@pytest.mark.parametrize(
    ("values", "accepted", "reason"),
    [
        (
            [b"br"],
            SUPPORTED_CODINGS,
            "content coding br is not supported on this route: expected one of gzip, deflate",
        ),
        ([b"zstd"], SUPPORTED_CODINGS, "content coding zstd is not supported"),
        ([b"compress"], SUPPORTED_CODINGS, "content coding compress is not supported"),
        ([b"gzip;q=1"], SUPPORTED_CODINGS, "content coding gzip;q=1 is not supported"),
        ([b"g\xffzip"], SUPPORTED_CODINGS, r"content coding g\xffzip is not supported"),
        (
            [b"deflate"],
            ("gzip",),
            "content coding deflate is not supported on this route: expected one of gzip",
        ),
        (
            [b"gzip, gzip"],
            SUPPORTED_CODINGS,
            "stacked content codings (gzip, gzip) are not supported: send the body with "
            "one of gzip, deflate",
        ),
        ([b"gzip", b"gzip"], SUPPORTED_CODINGS, "stacked content codings (gzip, gzip)"),
        ([b"deflate, gzip"], SUPPORTED_CODINGS, "stacked content codings (deflate, gzip)"),
        ([b"gzip, br"], SUPPORTED_CODINGS, "stacked content codings (gzip, br)"),
    ],
)
def test_content_coding_rejected(values: list[bytes], accepted: Sequence[str], reason: str) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        content_coding(values, accepted)
    rejection = caught.value
    assert rejection.status == 415
    assert rejection.layer == "decompression"
    assert reason in rejection.reason
    assert rejection.headers == (("Accept-Encoding", ", ".join(accepted)),)


# --- decode_body: valid bodies --------------------------------------------------


@pytest.mark.parametrize(
    ("data", "coding", "expected"),
    [
        (gzip.compress(JSON), "gzip", JSON),
        (zlib.compress(JSON), "deflate", JSON),
        (gzip.compress(b""), "gzip", b""),
        (zlib.compress(b""), "deflate", b""),
        (gzip.compress(JSON, compresslevel=0), "gzip", JSON),  # stored blocks
        (gzip_member(JSON), "gzip", JSON),
        (gzip_member(JSON, flags=0x08, extra=b"body.json\x00"), "gzip", JSON),  # FNAME
        (gzip_member(JSON, flags=0x10, extra=b"a comment\x00"), "gzip", JSON),  # FCOMMENT
        (gzip_member(JSON, flags=0x04, extra=b"\x04\x00AB\x00\x00"), "gzip", JSON),  # FEXTRA
        (gzip_member(JSON, flags=0x02), "gzip", JSON),  # FHCRC
        # Concatenated members decode to the joined payloads (RFC 1952, section 2.2).
        (gzip.compress(b"[1,") + gzip.compress(b"2]"), "gzip", b"[1,2]"),
        (gzip.compress(b"") + gzip.compress(JSON) + gzip.compress(b""), "gzip", JSON),
    ],
)
def test_decode_valid(data: bytes, coding: str, expected: bytes) -> None:
    assert decode(data, coding) == expected


@pytest.mark.parametrize(
    "payload",
    [
        bytes(range(256)) * 8192,  # compresses well: the output spans many steps
        random.Random(0).randbytes(2 * MiB),  # incompressible: the input spans many steps
    ],
    ids=["repetitive", "random"],
)
def test_decode_large_body_in_many_steps(payload: bytes) -> None:
    assert decode(gzip.compress(payload), max_bytes=2 * MiB, max_ratio=10**6) == payload


def test_decode_exactly_at_max_bytes() -> None:
    payload = b"a" * 1000
    assert decode(gzip.compress(payload), max_bytes=1000, max_ratio=1000) == payload


def test_decode_at_max_ratio_boundary() -> None:
    payload = b"a" * 10_000
    data = gzip.compress(payload)
    # The smallest ratio for which max_ratio * len(data) covers the payload.
    ratio = -(-len(payload) // len(data))
    assert decode(data, max_ratio=ratio) == payload
    assert isinstance(rejection_of(data, max_ratio=ratio - 1), PayloadTooLarge)


# --- decode_body: limits ---------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "coding", "limits", "reason"),
    [
        (
            gzip.compress(b"a" * 1001),
            "gzip",
            {"max_bytes": 1000, "max_ratio": 1000},
            "the decompressed request body exceeds the limit of 1000 bytes",
        ),
        (
            zlib.compress(b"a" * 1001),
            "deflate",
            {"max_bytes": 1000, "max_ratio": 1000},
            "the decompressed request body exceeds the limit of 1000 bytes",
        ),
        (
            gzip.compress(b"a" * 600) + gzip.compress(b"a" * 600),
            "gzip",
            {"max_bytes": 1000, "max_ratio": 1000},
            "the decompressed request body exceeds the limit of 1000 bytes",
        ),
        (
            gzip_zeros(4),
            "gzip",
            {"max_bytes": 64 * MiB, "max_ratio": 100},
            f"the request body expands more than 100 times its {len(gzip_zeros(4))} "
            "compressed bytes when decompressed",
        ),
        (
            zlib.compress(bytes(4 * MiB)),
            "deflate",
            {"max_bytes": 64 * MiB, "max_ratio": 100},
            "the request body expands more than 100 times",
        ),
        (
            gzip.compress(JSON),
            "gzip",
            {"max_bytes": MiB, "max_ratio": 1},
            "the request body expands more than 1 times",
        ),
    ],
)
def test_decode_over_limit(data: bytes, coding: str, limits: dict[str, int], reason: str) -> None:
    rejection = rejection_of(data, coding, **limits)
    assert isinstance(rejection, PayloadTooLarge)
    assert rejection.status == 413
    assert rejection.layer == "decompression"
    assert reason in rejection.reason


def test_gigabyte_bomb_fast_and_bounded(gigabyte_bomb: bytes) -> None:
    assert len(gigabyte_bomb) < 1100 * 1024  # about 1 MB that inflates to 1 GiB
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(PayloadTooLarge) as caught:
            decode(gigabyte_bomb, max_bytes=MiB, max_ratio=10**6)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "exceeds the limit of 1048576 bytes" in caught.value.reason
    # Inflating 1 MiB takes about a millisecond, and all 1 GiB would take seconds.
    assert elapsed < 0.5
    # The output up to the limit, one step of output and one step of input.
    assert peak < MiB + 512 * 1024


def test_gigabyte_bomb_rejected_by_ratio(gigabyte_bomb: bytes) -> None:
    rejection = rejection_of(gigabyte_bomb, max_bytes=2**40, max_ratio=100)
    assert isinstance(rejection, PayloadTooLarge)
    assert "expands more than 100 times" in rejection.reason


def test_zeros_builder_makes_valid_gzip() -> None:
    assert gzip.decompress(gzip_zeros(3)) == bytes(3 * MiB)


# --- decode_body: corrupt, truncated and trailing data --------------------------

GZIP_JSON = gzip.compress(JSON)
ZLIB_JSON = zlib.compress(JSON)


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :]


@pytest.mark.parametrize(
    ("data", "coding", "reason"),
    [
        (b"", "gzip", "the gzip request body is truncated"),
        (b"", "deflate", "the deflate request body is truncated"),
        (GZIP_JSON[:10], "gzip", "the gzip request body is truncated"),
        (GZIP_JSON[: len(GZIP_JSON) // 2], "gzip", "the gzip request body is truncated"),
        (GZIP_JSON[:-1], "gzip", "the gzip request body is truncated"),
        (ZLIB_JSON[:-1], "deflate", "the deflate request body is truncated"),
        (flip(GZIP_JSON, len(GZIP_JSON) - 8), "gzip", "invalid: incorrect data check"),
        (flip(GZIP_JSON, len(GZIP_JSON) - 1), "gzip", "invalid: incorrect length check"),
        (gzip_member(JSON, size=len(JSON) + 1), "gzip", "invalid: incorrect length check"),
        (flip(ZLIB_JSON, len(ZLIB_JSON) - 1), "deflate", "invalid: incorrect data check"),
        (flip(GZIP_JSON, 12), "gzip", "the gzip request body is invalid"),
        (b"\x1f\x8b" + b"\x00" * 30, "gzip", "invalid: unknown compression method"),
        (gzip_member(JSON, method=7), "gzip", "invalid: unknown compression method"),
        (gzip_member(JSON, flags=0x20), "gzip", "invalid: unknown header flags set"),
        (flip(gzip_member(JSON, flags=0x02), 10), "gzip", "invalid: header crc mismatch"),
        (JSON, "gzip", "invalid: incorrect header check"),
        # The wrong wrapper for the coding, and raw deflate data, which
        # RFC 9110 does not define as deflate.
        (ZLIB_JSON, "gzip", "invalid: incorrect header check"),
        (GZIP_JSON, "deflate", "invalid: incorrect header check"),
        (raw_deflate(JSON), "deflate", "the deflate request body is invalid"),
        # A zlib stream that needs a preset dictionary (FDICT).
        (b"\x78\xbb\x00\x00\x00\x01" + raw_deflate(JSON), "deflate", "is invalid"),
        # Bytes after the end of the stream.
        (GZIP_JSON + b"x", "gzip", "has 1 bytes of other data after its end"),
        (GZIP_JSON + b"\x00" * 8, "gzip", "has 8 bytes of other data after its end"),
        (GZIP_JSON + b"\x1f", "gzip", "has 1 bytes of other data after its end"),
        (ZLIB_JSON + b"\n", "deflate", "has 1 bytes of other data after its end"),
        (ZLIB_JSON + ZLIB_JSON, "deflate", f"has {len(ZLIB_JSON)} bytes of other data"),
        # A second member that starts like gzip and is not.
        (GZIP_JSON + b"\x1f\x8b\x08", "gzip", "the gzip request body is truncated"),
        (GZIP_JSON + b"\x1f\x8bxxxxxxxxxxxx", "gzip", "invalid: unknown compression method"),
        (GZIP_JSON + GZIP_JSON[:-4], "gzip", "the gzip request body is truncated"),
    ],
)
def test_decode_invalid(data: bytes, coding: str, reason: str) -> None:
    rejection = rejection_of(data, coding)
    assert isinstance(rejection, BadRequest)
    assert rejection.status == 400
    assert reason in rejection.reason


def test_decode_invalid_hides_the_data() -> None:
    secret = b"<script>alert(1)</script>"
    rejection = rejection_of(secret + GZIP_JSON)
    assert "script" not in rejection.reason


def test_decode_rejects_too_many_members() -> None:
    member = gzip.compress(b"")
    assert decode(member * MAX_GZIP_MEMBERS) == b""
    rejection = rejection_of(member * (MAX_GZIP_MEMBERS + 1))
    assert isinstance(rejection, BadRequest)
    assert f"more than {MAX_GZIP_MEMBERS} members" in rejection.reason
