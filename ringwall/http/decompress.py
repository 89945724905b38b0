"""Decode a gzip or deflate request body within a size limit and an expansion ratio.

No I/O: `content_coding` reads the Content-Encoding fields of a request, and
`decode_body` inflates a whole body. Both return a value or raise a
`Rejection`: 415 for a coding the route does not accept, 413 for a body that
expands past a limit, 400 for a stream that is corrupt, truncated or
followed by other bytes.

Every `decompress` call passes `max_length`, so inflating stops at the
first byte past the limit, and a compression bomb makes the gateway hold at
most the limit plus one step of output.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from ringwall.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, excerpt

LAYER = "decompression"
GZIP = "gzip"
DEFLATE = "deflate"
SUPPORTED_CODINGS = (GZIP, DEFLATE)

# RFC 9110, section 8.4.1.3: a recipient SHOULD treat x-gzip as gzip.
_ALIASES = {"x-gzip": GZIP}
# Window bits for zlib: 16 + 15 reads only the gzip format (RFC 1952), and 15
# only the zlib format (RFC 1950). RFC 9110, section 8.4.1.2 defines deflate
# as zlib-wrapped, so raw deflate data fails the zlib header check with 400.
_WINDOW_BITS = {GZIP: 16 + zlib.MAX_WBITS, DEFLATE: zlib.MAX_WBITS}
_GZIP_MAGIC = b"\x1f\x8b"
# The maximum output requested from zlib per call, and the maximum input given per
# call. It bounds how far past the limit one call can allocate, and how much
# unconsumed input zlib copies after each call.
_STEP = 64 * 1024
# Each gzip member starts a new zlib stream: 1 MiB of empty 20-byte members
# took 0.7 s on one core of a virtual Intel Xeon (an estimate of the cost,
# not a benchmark), all of it on the event loop. 1,000 members still fit a
# bgzip file (64 KiB per member) of up to 64 MiB.
MAX_GZIP_MEMBERS = 1000


def content_coding(values: Sequence[bytes], accepted: Sequence[str]) -> str | None:
    """Return the one content coding that Content-Encoding `values` name, or None.

    None means no coding: no field, empty fields or only `identity`. Raise 415
    for a coding not in `accepted` and for more than one coding (stacked
    codings such as `gzip, gzip`), with an Accept-Encoding field that lists
    `accepted`, as RFC 9110, section 15.5.16 recommends.
    """
    codings: list[bytes] = []
    for value in values:
        for item in value.split(b","):
            # RFC 9110, section 5.6.1: empty list elements are ignored.
            token = item.strip(b" \t").lower()
            if token and token != b"identity":
                codings.append(token)
    if not codings:
        return None
    expected = ", ".join(accepted)
    accept_encoding = (("Accept-Encoding", expected),)
    if len(codings) > 1:
        raise UnsupportedMediaType(
            LAYER,
            f"stacked content codings ({excerpt(b', '.join(codings), 64)}) are not "
            f"supported: send the body with one of {expected}",
            headers=accept_encoding,
        )
    name = codings[0].decode("latin-1")
    coding = _ALIASES.get(name, name)
    if coding not in accepted:
        raise UnsupportedMediaType(
            LAYER,
            f"content coding {excerpt(codings[0], 32)} is not supported on this route: "
            f"expected one of {expected}",
            headers=accept_encoding,
        )
    return coding


def decode_body(data: bytes, coding: str, *, max_bytes: int, max_ratio: int) -> bytes:
    """Return `data` decompressed from `coding` (gzip or deflate).

    Raise PayloadTooLarge when the output would exceed `max_bytes`, or
    `max_ratio` times the length of `data`. Raise BadRequest when the data is
    corrupt, truncated, or followed by bytes that are not another gzip member.
    A gzip body may hold several members (RFC 1952, section 2.2), and their
    outputs are joined, as `gzip -d` does.
    """
    ratio_limit = max_ratio * len(data)
    output = _Output(min(max_bytes, ratio_limit))
    view = memoryview(data)
    position = 0
    members = 0
    while True:
        members += 1
        if members > MAX_GZIP_MEMBERS:
            raise BadRequest(
                LAYER, f"the gzip request body has more than {MAX_GZIP_MEMBERS} members"
            )
        try:
            position = _inflate_stream(view, position, coding, output)
        except _CapExceeded:
            raise _too_large(len(data), max_bytes, max_ratio, ratio_limit) from None
        if position == len(data):
            return b"".join(output.chunks)
        if coding != GZIP or view[position : position + 2] != _GZIP_MAGIC:
            raise BadRequest(
                LAYER,
                f"the {coding} request body has {len(data) - position} bytes of other "
                "data after its end",
            )


class _CapExceeded(Exception):
    """The output reached one byte past its cap."""


class _Output:
    """Decoded chunks, and how many more bytes fit under the cap."""

    __slots__ = ("chunks", "room")

    def __init__(self, cap: int) -> None:
        self.chunks: list[bytes] = []
        self.room = cap

    def add(self, chunk: bytes) -> None:
        self.room -= len(chunk)
        if self.room < 0:
            raise _CapExceeded
        self.chunks.append(chunk)


def _inflate_stream(view: memoryview, position: int, coding: str, output: _Output) -> int:
    """Inflate one gzip member or zlib stream that starts at `position`, and return where it ends.

    Input goes to zlib in slices of at most _STEP bytes, because zlib copies
    the input it has not consumed (`unconsumed_tail`) after every call.
    """
    inflater = zlib.decompressobj(_WINDOW_BITS[coding])
    while not inflater.eof:
        piece = view[position : position + _STEP]
        try:
            # room + 1: one byte past the cap is enough to reject the body.
            chunk = inflater.decompress(piece, min(_STEP, output.room + 1))
        except zlib.error as exc:
            # zlib's message names the fault, such as "invalid block type",
            # and never quotes the data.
            fault = str(exc).rpartition(": ")[2]
            raise BadRequest(LAYER, f"the {coding} request body is invalid: {fault}") from None
        # The unconsumed rest of `piece` is in unconsumed_tail before the end of
        # the stream, and in unused_data after it.
        consumed = len(piece) - len(inflater.unconsumed_tail) - len(inflater.unused_data)
        position += consumed
        if chunk:
            output.add(chunk)
        elif not consumed:
            # No input left and no output pending: the data ended before the stream did.
            raise BadRequest(LAYER, f"the {coding} request body is truncated")
    return position


def _too_large(received: int, max_bytes: int, max_ratio: int, ratio_limit: int) -> PayloadTooLarge:
    # 413, not 400, for both limits: the data is well formed, and the same
    # content sent with less compression, or none, could be accepted.
    if ratio_limit < max_bytes:
        return PayloadTooLarge(
            LAYER,
            f"the request body expands more than {max_ratio} times its {received} "
            "compressed bytes when decompressed",
        )
    return PayloadTooLarge(
        LAYER, f"the decompressed request body exceeds the limit of {max_bytes} bytes"
    )
