"""Split and normalize a request-target into the path every layer uses.

The path that routing, later checks and the access log see is exactly the
path sent upstream, so a layer and the backend can never read two different
paths. Until full canonicalization exists, anything with more than one
plausible reading is rejected instead of normalized: encoded `/` and `\\`,
encoded control bytes, raw backslashes and dot segments. Repeated slashes
are merged.
"""

from __future__ import annotations

from ringwall.errors import BadRequest, excerpt

LAYER = "protocol"

_HEX = frozenset(b"0123456789abcdefABCDEF")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Bytes allowed raw in a path by RFC 3986 (pchar and "/"), besides "%".
_PATH_BYTES = _UNRESERVED | frozenset(b"!$&'()*+,;=:@/")
_PATH_BYTES_TABLE = bytes(sorted(_PATH_BYTES))


def split_target(target: bytes) -> tuple[str, bytes]:
    """Return the normalized path and the raw query (b"" when absent) of an origin-form target.

    Raises `BadRequest` for any target the gateway will not forward.
    """
    if not target.startswith(b"/"):
        raise BadRequest(LAYER, "the request-target must be an absolute path (origin-form)")
    if b"#" in target:
        raise BadRequest(LAYER, "the request-target must not contain a fragment (#)")
    raw_path, _, query = target.partition(b"?")
    if b"%" not in raw_path and _is_plain(raw_path):
        path = raw_path
    else:
        path = _normalize_escapes(raw_path)
    if b"//" in path:
        path = _merge_slashes(path)
    _reject_dot_segments(path)
    return path.decode("ascii"), query


def _merge_slashes(path: bytes) -> bytes:
    # "//admin" and "/admin" are one resource to most backends, so routing must
    # see, and the upstream must receive, the merged form.
    while b"//" in path:
        path = path.replace(b"//", b"/")
    return path


def _is_plain(raw_path: bytes) -> bool:
    # Fast path for the common case: every byte is allowed raw, so nothing needs decoding.
    return not raw_path.translate(None, _PATH_BYTES_TABLE)


def _normalize_escapes(raw_path: bytes) -> bytes:
    """Decode escapes of unreserved bytes, uppercase the others, reject the ambiguous ones."""
    out = bytearray()
    index = 0
    length = len(raw_path)
    while index < length:
        byte = raw_path[index]
        if byte == 0x25:  # "%"
            escape = raw_path[index + 1 : index + 3]
            if len(escape) != 2 or escape[0] not in _HEX or escape[1] not in _HEX:
                raise BadRequest(
                    LAYER, f"invalid percent-encoding in path near '{excerpt(escape)}'"
                )
            value = int(escape, 16)
            if value in (0x2F, 0x5C):
                raise BadRequest(LAYER, "encoded '/' or '\\' in the path is not allowed")
            if value < 0x20 or value == 0x7F:
                raise BadRequest(LAYER, "encoded control character in the path is not allowed")
            if value in _UNRESERVED:
                out.append(value)
            else:
                out += b"%" + escape.upper()
            index += 3
            continue
        if byte == 0x5C:
            raise BadRequest(LAYER, "backslash in the path is not allowed")
        if byte not in _PATH_BYTES:
            raise BadRequest(LAYER, f"invalid byte 0x{byte:02x} in the path")
        out.append(byte)
        index += 1
    return bytes(out)


def _reject_dot_segments(path: bytes) -> None:
    if b"/." not in path:
        return
    for segment in path.split(b"/"):
        name = segment.split(b";", 1)[0]
        if name in (b".", b".."):
            raise BadRequest(LAYER, "dot segments ('.' or '..') in the path are not allowed")
