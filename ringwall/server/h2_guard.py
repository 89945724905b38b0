"""h2's server connection with the gateway's limits on frames and streams.

h2 4.4.1 buffers a whole frame of any declared length before it compares the
length with SETTINGS_MAX_FRAME_SIZE, and buffers up to 64 CONTINUATION frames
of one header block before it decodes any of them. `FrameGuard` reads every
frame header before h2 parses the bytes, so the connection can end at the
first header past the limits and a CONTINUATION flood (CVE-2024-27919 and
its relatives) is never buffered. `GuardedH2Connection` resets a stream past
SETTINGS_MAX_CONCURRENT_STREAMS with REFUSED_STREAM, where h2 would end the
connection.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
from hyperframe.frame import Frame, HeadersFrame

from ringwall.config.tls import Http2Config

ErrorCodes = h2.errors.ErrorCodes

_PREFACE_LENGTH = len(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
_FRAME_HEADER_LENGTH = 9
_HEADERS = 0x1
_PUSH_PROMISE = 0x5
_CONTINUATION = 0x9
_END_HEADERS = 0x4


class FrameLimitError(Exception):
    """A frame header broke a limit of `FrameGuard`, so the connection ends with `error_code`."""

    def __init__(self, error_code: ErrorCodes, reason: str) -> None:
        super().__init__(reason)
        self.error_code = error_code
        self.reason = reason


class FrameGuard:
    """A check of each frame header in the raw input, run before h2 buffers the frame.

    `max_block_bytes` bounds the encoded header block of HEADERS and its
    CONTINUATION frames together, and `max_continuations` bounds the number
    of CONTINUATION frames in it.
    """

    __slots__ = (
        "_block_bytes",
        "_block_stream",
        "_continuations",
        "_header",
        "_payload_left",
        "_preface_left",
        "max_block_bytes",
        "max_continuations",
        "max_frame_size",
    )

    def __init__(self, max_frame_size: int, max_continuations: int, max_block_bytes: int) -> None:
        self.max_frame_size = max_frame_size
        self.max_continuations = max_continuations
        self.max_block_bytes = max_block_bytes
        self._preface_left = _PREFACE_LENGTH  # h2 checks the preface itself
        self._header = b""
        self._payload_left = 0
        self._block_stream = 0
        self._continuations = 0
        self._block_bytes = 0

    @property
    def in_header_block(self) -> bool:
        """True while a header block has started and its END_HEADERS has not arrived."""
        return self._block_stream != 0

    def feed(self, data: bytes) -> None:
        """Check each frame header that `data` completes.

        Raises FrameLimitError on a violation.
        """
        position = 0
        size = len(data)
        if self._preface_left:
            skipped = min(self._preface_left, size)
            self._preface_left -= skipped
            position = skipped
        while position < size:
            if self._payload_left:
                taken = min(self._payload_left, size - position)
                self._payload_left -= taken
                position += taken
                continue
            missing = _FRAME_HEADER_LENGTH - len(self._header)
            self._header += data[position : position + missing]
            position += missing
            if len(self._header) < _FRAME_HEADER_LENGTH:
                return
            header = self._header
            self._header = b""
            self._check(header)

    def _check(self, header: bytes) -> None:
        length = int.from_bytes(header[:3], "big")
        frame_type = header[3]
        end_headers = header[4] & _END_HEADERS
        stream_id = int.from_bytes(header[5:9], "big") & 0x7FFF_FFFF

        if length > self.max_frame_size:
            raise FrameLimitError(
                ErrorCodes.FRAME_SIZE_ERROR,
                f"a frame of {length} bytes exceeds SETTINGS_MAX_FRAME_SIZE",
            )
        self._payload_left = length

        if frame_type in (_HEADERS, _PUSH_PROMISE):
            if not end_headers:
                self._block_stream = stream_id or -1
                self._continuations = 0
                self._block_bytes = length
            return
        if frame_type != _CONTINUATION:
            return  # h2 rejects any other frame inside a header block

        self._continuations += 1
        self._block_bytes += length
        if self._continuations > self.max_continuations:
            raise FrameLimitError(
                ErrorCodes.ENHANCE_YOUR_CALM,
                f"a header block has more than {self.max_continuations} CONTINUATION frames",
            )
        if self._block_bytes > self.max_block_bytes:
            raise FrameLimitError(
                ErrorCodes.ENHANCE_YOUR_CALM,
                f"a header block is larger than {self.max_block_bytes} bytes",
            )
        if end_headers:
            self._block_stream = 0


class _LocalSettings(h2.settings.Settings):
    """The server's settings, with MAX_CONCURRENT_STREAMS enforced by h2 at one above it.

    h2 ends the connection for a stream past its limit. The one stream past
    the advertised value gets through to `GuardedH2Connection`, which resets
    it with REFUSED_STREAM within the same frame, so h2's limit is never
    reached.
    """

    @property
    def max_concurrent_streams(self) -> int:
        return int(self[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS]) + 1

    @max_concurrent_streams.setter
    def max_concurrent_streams(self, value: int) -> None:
        self[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = value


class GuardedH2Connection(h2.connection.H2Connection):
    """h2's connection, refusing a stream past the limit instead of ending the connection.

    The refused stream's header block is still decoded, because skipping it
    would leave the HPACK state out of step with the client's.
    """

    def __init__(self, settings: Http2Config) -> None:
        # h2's validation of received headers ends the connection for a
        # malformed request, so `ringwall.http.h2_request` checks each stream
        # instead. h2 still checks Content-Length against the DATA received,
        # and ends the connection with PROTOCOL_ERROR for an invalid one.
        super().__init__(
            h2.config.H2Configuration(
                client_side=False, header_encoding=None, validate_inbound_headers=False
            )
        )
        self.stream_limit = settings.max_concurrent_streams
        self.local_settings = _LocalSettings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: settings.max_header_list_size,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: settings.initial_window_size,
            },
        )
        # Header lists up to twice the advertised size are decoded and get 431
        # on their stream. h2 ends the connection for larger ones (ENHANCE_YOUR_CALM).
        self.decoder.max_header_list_size = 2 * settings.max_header_list_size
        # Streams reset with REFUSED_STREAM whose events are still to be read.
        self.refused: set[int] = set()

    # NOTE: this overrides a private method of h2, checked against h2 4.4.1 only.
    def _receive_headers_frame(
        self, frame: HeadersFrame
    ) -> tuple[list[Frame], list[h2.events.Event]]:
        opens = frame.stream_id not in self.streams
        refuse = opens and self.open_inbound_streams >= self.stream_limit
        frames, events = super()._receive_headers_frame(frame)
        if refuse:
            self.refused.add(frame.stream_id)
            self.reset_stream(frame.stream_id, ErrorCodes.REFUSED_STREAM)
        return frames, events
