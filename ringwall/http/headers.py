"""Header rules for requests sent upstream and responses sent back to clients.

Order matters for safety: hop-by-hop headers and every header named in
`Connection` are removed first, then client-sent copies of the headers the
gateway owns, and only then does the gateway add its own. `Connection` can
therefore never remove a header the gateway set.
"""

from __future__ import annotations

HopByHop = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Headers only the gateway may set towards the upstream. A client-sent copy
# is removed under any spelling: case, and "_" or "." in place of "-", since
# some frameworks (CGI, WSGI, PHP) map all three to the same variable.
GATEWAY_OWNED = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-forwarded-proto",
        b"x-real-ip",
        b"x-client-ip",
    }
)
GATEWAY_OWNED_PREFIX = b"x-ringwall-"

_SPELLING_VARIANTS = bytes.maketrans(b"_.", b"--")


def canonical_name(name: bytes) -> bytes:
    """Return the lowercase name with `_` and `.` read as `-`."""
    return name.lower().translate(_SPELLING_VARIANTS)


# Connection options that name no header field.
_CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive", b"upgrade"})
_CONNECTION_OPTION_VALUES = frozenset(
    {b"close", b"keep-alive", b"Close", b"Keep-Alive", b"upgrade", b"Upgrade"}
)


def connection_tokens(value: bytes) -> frozenset[bytes]:
    """Return the lowercase header names listed in one `Connection` value.

    The options close, keep-alive and upgrade are not header names and are left out.
    """
    if value in _CONNECTION_OPTION_VALUES:
        return frozenset()
    tokens = {token.strip().lower() for token in value.split(b",")}
    return frozenset(tokens - _CONNECTION_OPTIONS - {b""})


class RequestHeaders:
    """The result of one pass over a request's header fields, and the fields to forward."""

    __slots__ = (
        "authorization",
        "authorization_at",
        "chunked",
        "content_length",
        "content_types",
        "expect",
        "forward",
        "forwarded_for",
        "hosts",
        "odd_name",
        "request_id",
        "upgrade",
    )

    def __init__(self) -> None:
        self.hosts: list[bytes] = []
        self.content_length: int | None = None
        self.chunked = False
        self.expect: bytes | None = None
        self.forwarded_for: list[bytes] = []
        self.upgrade: bytes | None = None
        self.request_id = b""
        self.forward: list[tuple[bytes, bytes]] = []
        # Authorization values, and the index in `forward` of the last one.
        self.authorization: list[bytes] = []
        self.authorization_at = -1
        # How many Content-Type fields, and the first name with "_" or "." (b"" if none).
        self.content_types = 0
        self.odd_name = b""


# Fields the gateway reads itself; none of them is forwarded as received.
_READ_BY_GATEWAY = frozenset(
    {
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"expect",
        b"connection",
        b"upgrade",
        b"x-forwarded-for",
    }
)


def read_request_headers(
    headers: list[tuple[bytes, bytes]], request_id_name: bytes, owned: frozenset[bytes]
) -> RequestHeaders:
    """Read the fields the gateway needs and select those forwarded upstream, in one pass.

    Dropped: hop-by-hop fields, fields named in `Connection`, Host, framing
    fields (the gateway writes its own), `Expect`, and gateway-owned fields under
    any spelling (`owned` contains canonical names, see `canonical_name`).
    `request_id_name` is the lowercase name of the request id field.
    """
    found = RequestHeaders()
    forward = found.forward
    named: frozenset[bytes] = frozenset()
    for name, value in headers:
        lower = name.lower()
        if lower in _READ_BY_GATEWAY:
            if lower == b"host":
                found.hosts.append(value)
            elif lower == b"content-length":
                found.content_length = int(value)  # llhttp accepts digits only
            elif lower == b"transfer-encoding":
                found.chunked = True  # llhttp accepts only a final "chunked"
            elif lower == b"expect":
                found.expect = value
            elif lower == b"connection":
                named |= connection_tokens(value)
            elif lower == b"upgrade":
                found.upgrade = value
            else:
                found.forwarded_for.append(value)
            continue
        if lower == request_id_name:
            found.request_id = value
            continue
        if lower in HopByHop:
            continue
        if b"_" in lower or b"." in lower:
            if not found.odd_name:
                found.odd_name = name
            # A variant spelling of a field the gateway reads or owns, such as
            # Transfer_Encoding, is dropped: a backend may read it as the real one.
            canonical = lower.translate(_SPELLING_VARIANTS)
            if canonical in _READ_BY_GATEWAY or canonical in HopByHop:
                continue
        else:
            canonical = lower
        if canonical in owned or canonical.startswith(GATEWAY_OWNED_PREFIX):
            continue
        if lower == b"authorization":
            found.authorization.append(value)
            found.authorization_at = len(forward)
        elif lower == b"content-type":
            found.content_types += 1
        forward.append((name, value))
    if named:
        found.forward = [(n, v) for n, v in forward if n.lower() not in named]
    return found


def content_fields(headers: list[tuple[bytes, bytes]]) -> tuple[list[bytes], list[bytes]]:
    """Return the Content-Type values and the Content-Encoding values of `headers`, in one pass."""
    content_types: list[bytes] = []
    content_encodings: list[bytes] = []
    for name, value in headers:
        # Comparing lengths first skips lowering the names of most other fields.
        size = len(name)
        if size == 12:
            if name.lower() == b"content-type":
                content_types.append(value)
        elif size == 16 and name.lower() == b"content-encoding":
            content_encodings.append(value)
    return content_types, content_encodings


def filter_response_headers(
    headers: list[tuple[bytes, bytes]],
    request_id_name: bytes = b"",
    *,
    drop: frozenset[bytes] = frozenset(),
) -> tuple[list[tuple[bytes, bytes]], bool]:
    """Drop hop-by-hop fields, those named in `Connection`, and the request id field.

    The gateway writes the request id itself, so an upstream's own value
    (`request_id_name`, lowercase) would be a second, conflicting one.
    `drop` names (lowercase) further fields the gateway writes in this
    response. Returns the kept fields and whether a Content-Length is among them.
    """
    kept = []
    named: frozenset[bytes] = frozenset()
    has_length = False
    for name, value in headers:
        lower = name.lower()
        if lower in HopByHop:
            if lower == b"connection":
                named |= connection_tokens(value)
            continue
        if lower == request_id_name or (drop and lower in drop):
            continue
        if lower == b"content-length":
            has_length = True
        kept.append((name, value))
    if named:
        kept = [(n, v) for n, v in kept if n.lower() not in named]
        has_length = has_length and b"content-length" not in named
    return kept, has_length


def encode_head(first_line: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    return first_line + b"\r\n" + b"".join([b"%b: %b\r\n" % field for field in headers]) + b"\r\n"
