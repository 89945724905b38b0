"""The request rules of HTTP/2 for one header block, without sockets."""

import pytest

from ringwall.errors import BadRequest, HeaderFieldsTooLarge, UriTooLong
from ringwall.http.h2_request import request_method, request_target, split_fields

PSEUDO = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/a"), (b":authority", b"h")]


def split(
    fields: list[tuple[bytes, bytes]],
) -> tuple[dict[bytes, bytes], list[tuple[bytes, bytes]]]:
    return split_fields(fields, max_count=100, max_bytes=32_768, max_list_size=65_536)


def test_split_separates_pseudo_fields() -> None:
    pseudo, fields = split([*PSEUDO, (b"accept", b"*/*")])

    assert pseudo[b":path"] == b"/a"
    assert pseudo[b":authority"] == b"h"
    assert fields == [(b"accept", b"*/*")]


def test_split_joins_cookies() -> None:
    _, fields = split([*PSEUDO, (b"cookie", b"a=1"), (b"x", b"y"), (b"cookie", b"b=2")])

    assert fields == [(b"x", b"y"), (b"cookie", b"a=1; b=2")]


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ([(b"x", b"1"), (b":path", b"/")], "follows a regular field"),
        ([(b":status", b"200")], "unknown pseudo-header"),
        ([(b":path", b"/"), (b":path", b"/b")], "repeated pseudo-header"),
        ([(b"Accept", b"*/*")], "invalid header field name"),
        ([(b"x y", b"1")], "invalid header field name"),
        ([(b"x", b"a\x00b")], "invalid value"),
        ([(b"x", b"a\nb")], "invalid value"),
        ([(b"x", b"a ")], "invalid value"),
        ([(b"x", b"\tb")], "invalid value"),
        ([(b"connection", b"close")], "connection-specific"),
        ([(b"proxy-connection", b"close")], "connection-specific"),
        ([(b"te", b"gzip")], "connection-specific"),
    ],
)
def test_split_rejects_malformed_block(fields: list[tuple[bytes, bytes]], detail: str) -> None:
    with pytest.raises(BadRequest) as raised:
        split(fields)

    assert detail in raised.value.detail


def test_split_accepts_inner_whitespace_and_empty_value() -> None:
    _, fields = split([(b"x", b"a \t b"), (b"y", b""), (b"te", b"trailers")])

    assert fields == [(b"x", b"a \t b"), (b"y", b""), (b"te", b"trailers")]


def test_split_limits_list_size() -> None:
    with pytest.raises(HeaderFieldsTooLarge):
        split_fields([(b"x", b"v" * 1000)], max_count=100, max_bytes=32_768, max_list_size=1024)


def test_split_limits_field_count() -> None:
    fields = [(b"x-%d" % index, b"v") for index in range(11)]

    with pytest.raises(HeaderFieldsTooLarge):
        split_fields(fields, max_count=10, max_bytes=32_768, max_list_size=65_536)


def test_method_checked() -> None:
    assert request_method({b":method": b"PATCH"}) == "PATCH"
    with pytest.raises(BadRequest):
        request_method({})
    with pytest.raises(BadRequest):
        request_method({b":method": b"GE T"})


@pytest.mark.parametrize(
    "pseudo",
    [
        {b":path": b"/a"},
        {b":scheme": b"ftp", b":path": b"/a"},
        {b":scheme": b"https"},
        {b":scheme": b"https", b":path": b""},
        {b":scheme": b"https", b":path": b"/a b"},
        {b":scheme": b"https", b":path": b"/a\x7f"},
        {b":scheme": b"https", b":path": "/é".encode()},
    ],
)
def test_target_rejects_invalid(pseudo: dict[bytes, bytes]) -> None:
    with pytest.raises(BadRequest):
        request_target(pseudo, 100)


def test_target_limits_length() -> None:
    with pytest.raises(UriTooLong):
        request_target({b":scheme": b"http", b":path": b"/" + b"a" * 100}, 100)


def test_target_returned() -> None:
    assert request_target({b":scheme": b"http", b":path": b"/a?b=1"}, 100) == b"/a?b=1"
