"""Canonicalize a request path into the one form every layer and the upstream use.

Gateway bypasses come from a proxy that checks one reading of a path while
the backend acts on another (Envoy CVE-2019-9901 and CVE-2021-29492, Traefik
CVE-2025-66490). `canonical_path` therefore either returns a path that
common backends (a percent-decoding framework, Tomcat and Jetty with their
`;` path parameters, Windows with its trailing-dot rule) all read the same
way, or raises `BadRequest`. Routing, authorization, rate-limit keys, the
WAF, the access log and the upstream request are all to use that path.
NOTE: the server still calls `ringwall.http.target.split_target`, so
nothing uses this module yet.

The rules:

1. The path must start with `/`.
2. Percent-escapes must be `%` and two hex digits. Escapes of unreserved
   characters (ALPHA, DIGIT, `-._~`) are decoded, once. Other escapes stay
   escaped, with uppercase hex (`%3a` becomes `%3A`), as RFC 3986 section
   6.2.2 normalizes them.
3. Rejected, raw or encoded: control characters (0x00-0x1F, 0x7F and the
   C1 range U+0080-U+009F), `\\`, `;`, `?` and `#`. A raw `?` can only
   appear when the caller did not split off the query. Rejected when
   encoded: `/` (`%2F`).
4. `%25` followed by two hex digits (or by `u` and four, the non-standard
   `%uXXXX` form) is double encoding and is rejected, because a backend that decodes twice
   would read a different path. This is checked after rule 2, so
   `%25%34%31` is rejected too.
5. Bytes 0x80-0xFF, raw or encoded, must form valid UTF-8 (no overlong
   forms and no surrogates). They are written as uppercase escapes, so the
   result is ASCII and raw `/café` equals `/caf%C3%A9`. A character whose
   compatibility normalization (NFKC) contains ASCII, such as U+FF0E
   FULLWIDTH FULL STOP (NFKC ".") or U+FB01 LATIN SMALL LIGATURE FI, is
   rejected, because a backend that normalizes would read ASCII that the
   gateway did not see.
6. Printable ASCII that RFC 3986 does not allow raw in a path (space,
   `"<>[]^`{|}`) is written as an uppercase escape (a space as `%20`).
7. Repeated slashes are merged, and `.` and `..` segments (also `%2e`
   forms) are resolved as RFC 3986 section 5.2.4 describes. A `..` above
   the root is rejected. A path whose last segment is `.` or `..` keeps a
   trailing slash, so `/a/b/..` becomes `/a/`.
8. A segment that ends in `.` or a space (`%20`) is rejected, because
   Windows drops those characters and would read another name.

Choices beyond RFC 3986:

- `;` is rejected raw and encoded. Tomcat, Jetty and Spring read a raw `;`
  as the start of path parameters and drop them (`/admin;x/users` is
  `/admin/users` to them), and a backend or a second proxy that decodes
  `%3B` first does the same. Spring Security's default firewall rejects
  both for this reason. This also rejects `..;x` and `.;x`.
- NOTE: escapes of reserved characters other than `/`, `?`, `#` and `;`
  (`:@!$&'()*+,=`) stay distinct from their raw form, so `/a%3Ab` and
  `/a:b` are two paths here, while a backend that decodes the path reads
  one. A route whose path contains one of those characters can be
  bypassed that way, so route paths should use only unreserved characters.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from ringwall.errors import BadRequest, excerpt

LAYER = "target"

_HEX = frozenset(b"0123456789abcdefABCDEF")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Characters of RFC 3986 `pchar` that stay raw in the result: all but `;`.
_KEPT_RAW = _UNRESERVED | frozenset(b"!$&'()*+,=:@")
# Bytes that `_raw_ascii` passes through unchanged.
_PLAIN_TABLE = bytes(sorted(_KEPT_RAW | {ord("/")}))
# The fast path: a path that is already canonical, so that it needs no
# decoding. Every segment consists of `_KEPT_RAW` bytes, neither starts nor
# ends with "." and is not empty, except that a trailing slash is allowed.
# The possessive quantifiers keep the match linear in the path's length.
_PLAIN_PATH = re.compile(
    rb"/(?:[A-Za-z0-9_~!$&'()*+,=:@-][A-Za-z0-9_~!$&'()*+,=:@.-]*+(?<!\.)/?)*+"
).fullmatch

_NON_ASCII_RUNS = re.compile(rb"([\x80-\xff]+)")
# `%25` before two hex digits, or before the non-standard `%uXXXX` form.
_DOUBLE_ENCODED = re.compile(r"%25(?:[0-9A-Fa-f]{2}|[Uu][0-9A-Fa-f]{4})")
_C1_CONTROL = re.compile("[\x80-\x9f]")
# Mapped to `i` before `str.casefold`, because Java's String.equalsIgnoreCase
# matches both to ASCII `i` (Character.toUpperCase of U+0131 and
# Character.toLowerCase of U+0130 are ASCII). `str.casefold` keeps U+0131 and
# turns U+0130 into `i` and a combining dot.
_ASCII_I_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i"})

_SEMICOLON_REASON = (
    "';' in the path is not allowed, raw or encoded, because some servers read it "
    "as the start of path parameters"
)


def canonical_path(raw: bytes, *, lowercase: bool = False) -> str:
    """Return the canonical form of an origin-form path, or raise `BadRequest`.

    `raw` is the request-target's path: its bytes before the first `?`. The
    result is an ASCII string that starts with `/`, and it is a fixed point:
    `canonical_path(result.encode(), lowercase=lowercase) == result`.

    With `lowercase=True`, letters are case-folded: ASCII with `str.lower`,
    other characters with `str.casefold` after mapping U+0130 and U+0131
    (capital I with dot, dotless i) to `i`. Escapes keep uppercase hex.
    Routing is to apply it per route, for routes declared case-insensitive,
    and the folded path is then the one every layer and the upstream use.
    """
    if _PLAIN_PATH(raw):
        path = raw.decode("ascii")
        return path.lower() if lowercase else path

    if not raw.startswith(b"/"):
        raise BadRequest(LAYER, "the path must start with '/'")
    normalized = _normalize_encoding(raw, lowercase)
    if _DOUBLE_ENCODED.search(normalized):
        raise BadRequest(
            LAYER, "double percent-encoding ('%25' and hex digits) in the path is not allowed"
        )
    return _resolve_segments(normalized)


def _normalize_encoding(raw: bytes, lowercase: bool) -> str:
    """Apply rules 2, 3, 5 and 6 and return the path as ASCII, dot segments still in place."""
    pieces: list[str] = []
    # Bytes 0x80-0xFF of the current run, from raw bytes and escapes alike,
    # so that `%C3` followed by a raw 0xA9 decodes as one character.
    pending = bytearray()

    escapes = _LOWERCASE_ASCII_ESCAPES if lowercase else _ASCII_ESCAPES
    chunks = raw.split(b"%")
    _append_raw(chunks[0], pieces, pending, lowercase)
    for chunk in chunks[1:]:
        digits = chunk[:2]
        text = escapes.get(digits)
        if text is not None:
            if pending:
                pieces.append(_encode_utf8(pending, lowercase))
                pending.clear()
            pieces.append(text)
        elif len(digits) != 2 or digits[0] not in _HEX or digits[1] not in _HEX:
            raise BadRequest(LAYER, f"invalid percent-encoding in the path: '%{excerpt(digits)}'")
        elif (value := int(digits, 16)) >= 0x80:
            pending.append(value)
        else:
            _reject_escaped_ascii(value)
        if len(chunk) > 2:
            _append_raw(chunk[2:], pieces, pending, lowercase)

    if pending:
        pieces.append(_encode_utf8(pending, lowercase))
    return "".join(pieces)


def _append_raw(data: bytes, pieces: list[str], pending: bytearray, lowercase: bool) -> None:
    """Append raw path bytes that contain no `%`. Bytes 0x80-0xFF go to `pending`."""
    if data.isascii():
        if pending:
            pieces.append(_encode_utf8(pending, lowercase))
            pending.clear()
        if data:
            pieces.append(_raw_ascii(data, lowercase))
        return
    # re.split with a group alternates ASCII runs (even indexes) and non-ASCII runs.
    for index, run in enumerate(_NON_ASCII_RUNS.split(data)):
        if index % 2:
            pending.extend(run)
        elif run:
            if pending:
                pieces.append(_encode_utf8(pending, lowercase))
                pending.clear()
            pieces.append(_raw_ascii(run, lowercase))


def _raw_ascii(run: bytes, lowercase: bool) -> str:
    """Check raw ASCII bytes and return them with disallowed printable bytes escaped."""
    if lowercase:
        run = run.lower()
    if run.translate(None, _PLAIN_TABLE):
        out = []
        for byte in run:
            if byte in _KEPT_RAW or byte == 0x2F:
                out.append(chr(byte))
            elif byte < 0x20 or byte == 0x7F:
                raise BadRequest(LAYER, "control character in the path is not allowed")
            elif byte == 0x5C:
                raise BadRequest(LAYER, "backslash in the path is not allowed")
            elif byte == 0x3B:
                raise BadRequest(LAYER, _SEMICOLON_REASON)
            elif byte in (0x3F, 0x23):
                raise BadRequest(LAYER, "'?' or '#' in the path is not allowed")
            else:
                out.append(f"%{byte:02X}")
        return "".join(out)
    return run.decode("ascii")


def _reject_escaped_ascii(value: int) -> None:
    """Raise `BadRequest` for an escape of an ASCII byte that has no safe reading."""
    if value in (0x2F, 0x5C):
        raise BadRequest(LAYER, "encoded '/' or '\\' in the path is not allowed")
    if value < 0x20 or value == 0x7F:
        raise BadRequest(LAYER, "encoded control character in the path is not allowed")
    if value in (0x3F, 0x23):
        raise BadRequest(LAYER, "encoded '?' or '#' in the path is not allowed")
    if value == 0x3B:
        raise BadRequest(LAYER, _SEMICOLON_REASON)


def _ascii_escape_table(lowercase: bool) -> dict[bytes, str]:
    """Map the two hex digits of each allowed ASCII escape, in every case, to its canonical form."""
    table = {}
    for value in range(0x80):
        try:
            _reject_escaped_ascii(value)
        except BadRequest:
            continue
        digits = f"{value:02X}"
        if value in _UNRESERVED:
            text = chr(value).lower() if lowercase else chr(value)
        else:
            text = "%" + digits
        for high in {digits[0], digits[0].lower()}:
            for low in {digits[1], digits[1].lower()}:
                table[(high + low).encode()] = text
    return table


_ASCII_ESCAPES = _ascii_escape_table(lowercase=False)
_LOWERCASE_ASCII_ESCAPES = _ascii_escape_table(lowercase=True)


def _encode_utf8(data: bytearray, lowercase: bool) -> str:
    """Decode a run of non-ASCII bytes, check it and return it as uppercase escapes."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(LAYER, "the path is not valid UTF-8") from None
    if _C1_CONTROL.search(text):
        raise BadRequest(LAYER, "control character in the path is not allowed")
    _check_compatibility_forms(text)
    if lowercase:
        text = text.translate(_ASCII_I_FOLD).casefold()
        # Folding can produce characters the first check did not see.
        _check_compatibility_forms(text)
    # The only ASCII that folding produces is letters (checked for every code
    # point with Python 3.11), which quote() keeps raw like the fast path.
    # Everything else becomes uppercase escapes.
    return quote(text, safe="")


def _check_compatibility_forms(text: str) -> None:
    # A string already in NFKC contains no character that NFKC would change.
    if unicodedata.is_normalized("NFKC", text):
        return
    for char in text:
        if char.isascii():
            continue
        if any(part.isascii() for part in unicodedata.normalize("NFKC", char)):
            raise BadRequest(
                LAYER,
                "the path contains a Unicode character whose compatibility form (NFKC) "
                "contains ASCII; send the ASCII form",
            )


def _resolve_segments(path: str) -> str:
    """Merge slashes and resolve dot segments (rules 7 and 8) of an escape-normalized path."""
    segments = path.split("/")
    stack: list[str] = []
    for segment in segments[1:]:
        if segment in ("", "."):
            continue
        if segment == "..":
            if not stack:
                raise BadRequest(LAYER, "a '..' segment in the path climbs above the root")
            stack.pop()
            continue
        if segment.endswith((".", "%20")):
            raise BadRequest(LAYER, "a path segment must not end in '.' or a space")
        stack.append(segment)

    result = "/" + "/".join(stack)
    if stack and segments[-1] in ("", ".", ".."):
        result += "/"
    return result
