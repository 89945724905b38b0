"""Checks of one HTTP/2 request header block against RFC 9113 section 8, without I/O.

h2's own validation of received headers would end the whole connection for
a malformed request, so the server turns it off and applies these rules
per stream. A malformed request gets 400 on its own stream.
"""

from __future__ import annotations

import re

from ringwall.errors import BadRequest, HeaderFieldsTooLarge, UriTooLong, excerpt

LAYER = "protocol"

_PSEUDO_FIELDS = frozenset({b":method", b":scheme", b":authority", b":path"})
# RFC 9113 section 8.2.2: fields that are specific to an HTTP/1.1 connection.
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
# Tokens (RFC 9110 section 5.1) in lowercase, as RFC 9113 section 8.2.1 requires.
_FIELD_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9113 section 8.2.1: no NUL, CR or LF, and no leading or trailing
# whitespace. Other control characters are rejected too, because a field
# value of HTTP/1.1 (RFC 9110 section 5.5) may contain none but HTAB.
_FIELD_VALUE = re.compile(
    rb"(?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?"
)
# The request-target goes into the HTTP/1.1 request line upstream, so only
# visible ASCII is accepted (RFC 3986 characters are a subset of it).
_TARGET = re.compile(rb"[\x21-\x7e]+")


def split_fields(
    headers: list[tuple[bytes, bytes]], max_count: int, max_bytes: int, max_list_size: int
) -> tuple[dict[bytes, bytes], list[tuple[bytes, bytes]]]:
    """Check the fields of a request's header block and split them.

    Returns the pseudo-header fields by name, and the regular fields with
    the `cookie` fields joined into one for HTTP/1.1 (RFC 9113 section
    8.2.3). Raises a Rejection for a malformed block (RFC 9113 sections 8.2
    and 8.3) or one over the limits. `max_list_size` bounds the block's size
    as SETTINGS_MAX_HEADER_LIST_SIZE counts it, and `max_count` and
    `max_bytes` bound the fields as they bound an HTTP/1.1 header section.
    """
    pseudo: dict[bytes, bytes] = {}
    fields: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    size = 0
    list_size = 0
    for name, value in headers:
        size += len(name) + len(value) + 4
        list_size += len(name) + len(value) + 32
        if name.startswith(b":"):
            if fields or cookies:
                raise BadRequest(LAYER, "a pseudo-header field follows a regular field")
            if name not in _PSEUDO_FIELDS:
                raise BadRequest(LAYER, f"unknown pseudo-header field {excerpt(name, 40)}")
            if name in pseudo:
                raise BadRequest(LAYER, f"repeated pseudo-header field {excerpt(name, 40)}")
            pseudo[name] = value
            continue
        if not _FIELD_NAME.fullmatch(name):
            raise BadRequest(LAYER, f"invalid header field name {excerpt(name, 40)}")
        if not _FIELD_VALUE.fullmatch(value):
            raise BadRequest(LAYER, f"invalid value of header field {excerpt(name, 40)}")
        if name in _CONNECTION_SPECIFIC or (name == b"te" and value != b"trailers"):
            raise BadRequest(
                LAYER, f"connection-specific header field {excerpt(name, 40)} in HTTP/2"
            )
        if name == b"cookie":
            cookies.append(value)
            continue
        fields.append((name, value))
    if cookies:
        fields.append((b"cookie", b"; ".join(cookies)))
    if list_size > max_list_size or size > max_bytes:
        raise HeaderFieldsTooLarge(LAYER, "the request header section is too large")
    if len(fields) > max_count:
        raise HeaderFieldsTooLarge(LAYER, "the request has too many header fields")
    return pseudo, fields


def request_method(pseudo: dict[bytes, bytes]) -> str:
    """Return the `:method` of a request, or raise BadRequest if it is missing or invalid."""
    method = pseudo.get(b":method")
    if method is None or not _METHOD.fullmatch(method):
        raise BadRequest(LAYER, "the :method pseudo-header field is missing or invalid")
    return method.decode("ascii")


def request_target(pseudo: dict[bytes, bytes], max_bytes: int) -> bytes:
    """Return the `:path` of a request after checking it and `:scheme`.

    Raises UriTooLong for a path over `max_bytes`, and BadRequest for a
    missing or invalid path or scheme.
    """
    if pseudo.get(b":scheme") not in (b"https", b"http"):
        raise BadRequest(LAYER, "the :scheme pseudo-header field must be https or http")
    target = pseudo.get(b":path", b"")
    if len(target) > max_bytes:
        raise UriTooLong(LAYER, "the request-target is longer than the limit")
    if not _TARGET.fullmatch(target):
        raise BadRequest(LAYER, "the :path pseudo-header field is missing or invalid")
    return target
