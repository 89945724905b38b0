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


def connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Return the lowercase option names listed in every `Connection` header."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(token.strip().lower() for token in value.split(b","))
    tokens.discard(b"")
    return frozenset(tokens)


def filter_request_headers(
    headers: list[tuple[bytes, bytes]],
    owned: frozenset[bytes],
) -> list[tuple[bytes, bytes]]:
    """Drop hop-by-hop headers, headers named in `Connection`, Host and gateway-owned headers.

    `owned` holds canonical names (see `canonical_name`) of headers the gateway
    sets itself, such as the request id header.
    """
    named = connection_tokens(headers)
    kept = []
    for name, value in headers:
        lower = name.lower()
        if lower in HopByHop or lower == b"host" or lower in named:
            continue
        canonical = lower.translate(_SPELLING_VARIANTS)
        if canonical in owned or canonical.startswith(GATEWAY_OWNED_PREFIX):
            continue
        kept.append((name, value))
    return kept


def filter_response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Drop hop-by-hop headers and those named in `Connection` from an upstream response."""
    named = connection_tokens(headers)
    return [
        (name, value)
        for name, value in headers
        if (lower := name.lower()) not in HopByHop and lower not in named
    ]


def encode_head(first_line: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    parts = [first_line]
    for name, value in headers:
        parts.append(name + b": " + value)
    parts.append(b"\r\n")
    return b"\r\n".join(parts)
