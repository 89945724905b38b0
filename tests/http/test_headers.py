"""Tests for ringwall.http.headers: what a request forwards upstream and a response sends back."""

import pytest

from ringwall.http.headers import (
    GATEWAY_OWNED,
    HopByHop,
    canonical_name,
    connection_tokens,
    content_fields,
    encode_head,
    filter_response_headers,
    read_request_headers,
)

REQUEST_ID = b"x-request-id"

# What the runtime passes: the fixed gateway-owned set plus the request id header.
OWNED = GATEWAY_OWNED | {canonical_name(REQUEST_ID)}

Headers = list[tuple[bytes, bytes]]


def forwarded(headers: Headers) -> Headers:
    return read_request_headers(headers, REQUEST_ID, OWNED).forward


def names_of(headers: Headers) -> list[bytes]:
    return [name for name, _ in headers]


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        (b"X-Forwarded-For", b"x-forwarded-for"),
        (b"X_Forwarded_For", b"x-forwarded-for"),
        (b"x.real.ip", b"x-real-ip"),
        (b"X_Real.IP", b"x-real-ip"),
        (b"Content-Type", b"content-type"),
    ],
)
def test_canonical_name(name: bytes, canonical: bytes) -> None:
    assert canonical_name(name) == canonical


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        (b"X-Custom", {b"x-custom"}),
        (b" X-A ,x-b,, ", {b"x-a", b"x-b"}),
        (b"close", set()),
        (b"Keep-Alive, Upgrade, X-A", {b"x-a"}),
        (b"", set()),
    ],
)
def test_connection_tokens(value: bytes, tokens: set[bytes]) -> None:
    assert connection_tokens(value) == tokens


@pytest.mark.parametrize(
    "name",
    sorted(HopByHop - {b"connection", b"transfer-encoding", b"upgrade"}),
)
def test_request_hop_by_hop_removed(name: bytes) -> None:
    headers = [(name, b"x"), (name.upper(), b"y"), (b"Accept", b"*/*")]

    assert forwarded(headers) == [(b"Accept", b"*/*")]


@pytest.mark.parametrize(
    "name",
    [
        b"Host",
        b"HOST",
        b"Content-Length",
        b"Transfer-Encoding",
        b"Expect",
        b"Connection",
        b"Upgrade",
        b"X-Forwarded-For",
    ],
)
def test_request_read_fields_not_forwarded(name: bytes) -> None:
    value = b"5" if name == b"Content-Length" else b"x"

    assert forwarded([(name, value), (b"Accept", b"*/*")]) == [(b"Accept", b"*/*")]


def test_request_authorization_found_with_its_forward_index() -> None:
    found = read_request_headers(
        [(b"Accept", b"*/*"), (b"Host", b"a"), (b"authorization", b"Bearer t"), (b"X-A", b"1")],
        REQUEST_ID,
        OWNED,
    )
    assert found.authorization == [b"Bearer t"]
    assert found.forward[found.authorization_at] == (b"authorization", b"Bearer t")


def test_request_repeated_authorization_all_found() -> None:
    found = read_request_headers(
        [(b"Authorization", b"Bearer a"), (b"AUTHORIZATION", b"Bearer b")], REQUEST_ID, OWNED
    )
    assert found.authorization == [b"Bearer a", b"Bearer b"]


def test_request_fields_read() -> None:
    found = read_request_headers(
        [
            (b"Host", b"example.com"),
            (b"Content-Length", b"12"),
            (b"Expect", b"100-continue"),
            (b"Upgrade", b"websocket"),
            (b"X-Forwarded-For", b"1.2.3.4"),
            (b"x-forwarded-for", b"5.6.7.8"),
            (b"X-Request-Id", b"abc"),
        ],
        REQUEST_ID,
        OWNED,
    )

    assert found.hosts == [b"example.com"]
    assert found.content_length == 12
    assert found.chunked is False
    assert found.expect == b"100-continue"
    assert found.upgrade == b"websocket"
    assert found.forwarded_for == [b"1.2.3.4", b"5.6.7.8"]
    assert found.request_id == b"abc"
    assert found.forward == []


def test_request_chunked_read() -> None:
    found = read_request_headers([(b"Transfer-Encoding", b"chunked")], REQUEST_ID, OWNED)

    assert found.chunked is True
    assert found.content_length is None


def test_request_hosts_all_kept() -> None:
    found = read_request_headers([(b"Host", b"a"), (b"host", b"b")], REQUEST_ID, OWNED)

    assert found.hosts == [b"a", b"b"]


def test_request_defaults() -> None:
    found = read_request_headers([], REQUEST_ID, OWNED)

    assert found.hosts == []
    assert found.content_length is None
    assert found.chunked is False
    assert found.expect is None
    assert found.upgrade is None
    assert found.forwarded_for == []
    assert found.request_id == b""
    assert found.forward == []


def test_request_connection_named_removed() -> None:
    headers = [
        (b"Connection", b"X-Custom, x-other"),
        (b"X-Custom", b"1"),
        (b"X-OTHER", b"2"),
        (b"X-Kept", b"3"),
    ]

    assert forwarded(headers) == [(b"X-Kept", b"3")]


def test_request_connection_names_across_lines() -> None:
    headers = [
        (b"X-A", b"1"),
        (b"Connection", b"x-a"),
        (b"X-B", b"2"),
        (b"connection", b"X-B"),
        (b"X-C", b"3"),
    ]

    assert forwarded(headers) == [(b"X-C", b"3")]


@pytest.mark.parametrize(
    "name",
    [
        b"X_Forwarded_For",
        b"X.Forwarded.For",
        b"x_forwarded.for",
        b"Forwarded",
        b"FORWARDED",
        b"X-Real-IP",
        b"x.real.ip",
        b"X_REAL_IP",
        b"X-Forwarded-Host",
        b"X-Forwarded-Port",
        b"X-Forwarded-Prefix",
        b"X-Forwarded-Proto",
        b"x_forwarded_proto",
        b"X-Client-IP",
        b"x_request_id",
        b"X.Request.ID",
    ],
)
def test_request_owned_removed(name: bytes) -> None:
    headers = [(name, b"1.2.3.4"), (b"Accept", b"*/*")]

    assert forwarded(headers) == [(b"Accept", b"*/*")]


@pytest.mark.parametrize("name", [b"X_Forwarded_For", b"x.forwarded.for"])
def test_request_xff_variant_not_read(name: bytes) -> None:
    found = read_request_headers([(name, b"1.2.3.4")], REQUEST_ID, OWNED)

    assert found.forwarded_for == []


@pytest.mark.parametrize("name", [b"X_Request_Id", b"x.request.id"])
def test_request_id_variant_not_read(name: bytes) -> None:
    found = read_request_headers([(name, b"forged")], REQUEST_ID, OWNED)

    assert found.request_id == b""


@pytest.mark.parametrize(
    "name",
    [b"X-Ringwall-Route", b"x-ringwall-anything", b"X_Ringwall_Auth", b"x.ringwall.user"],
)
def test_request_ringwall_prefix_removed(name: bytes) -> None:
    headers = [(name, b"admin"), (b"Accept", b"*/*")]

    assert forwarded(headers) == [(b"Accept", b"*/*")]


def test_request_id_header_configurable() -> None:
    owned = GATEWAY_OWNED | {canonical_name(b"X-Trace-Id")}
    headers = [(b"X_Trace_Id", b"forged"), (b"X-Trace-Id", b"t-1"), (b"X-Request-Id", b"kept")]

    found = read_request_headers(headers, b"x-trace-id", owned)

    assert found.forward == [(b"X-Request-Id", b"kept")]
    assert found.request_id == b"t-1"


@pytest.mark.parametrize(
    "name",
    [b"X-Forwarded", b"X-Forwarded-Forx", b"Real-IP", b"X-Ringwall", b"X-Ringwallx-A"],
)
def test_request_similar_names_kept(name: bytes) -> None:
    headers = [(name, b"1")]

    assert forwarded(headers) == headers


def test_request_order_and_duplicates_kept() -> None:
    headers = [
        (b"Accept", b"a"),
        (b"Cookie", b"x=1"),
        (b"X-Forwarded-For", b"6.6.6.6"),
        (b"Cookie", b"y=2"),
        (b"Content-Type", b"text/plain"),
    ]

    assert forwarded(headers) == [
        (b"Accept", b"a"),
        (b"Cookie", b"x=1"),
        (b"Cookie", b"y=2"),
        (b"Content-Type", b"text/plain"),
    ]


def test_request_connection_names_request_id() -> None:
    # The runtime appends its own request id field after the forwarded ones, so
    # a client naming that field in Connection affects only the client's copy.
    headers = [(b"Connection", b"x-request-id"), (b"X-Request-Id", b"forged")]

    found = read_request_headers(headers, REQUEST_ID, OWNED)
    sent = [*found.forward, (b"X-Request-Id", b"gateway-id")]

    assert found.forward == []
    assert sent == [(b"X-Request-Id", b"gateway-id")]


def test_request_connection_names_owned() -> None:
    headers = [(b"Connection", b"x-forwarded-for, x-real-ip"), (b"X-Forwarded-For", b"1.2.3.4")]

    found = read_request_headers(headers, REQUEST_ID, OWNED)

    assert found.forward == []
    assert found.forwarded_for == [b"1.2.3.4"]


@pytest.mark.parametrize("name", sorted(HopByHop))
def test_response_hop_by_hop_removed(name: bytes) -> None:
    headers = [(name, b"x"), (b"Content-Type", b"text/plain")]

    assert filter_response_headers(headers) == ([(b"Content-Type", b"text/plain")], False)


def test_response_connection_named_removed() -> None:
    headers = [
        (b"Connection", b"X-Backend-Secret"),
        (b"x-backend-secret", b"s"),
        (b"Content-Length", b"2"),
    ]

    assert filter_response_headers(headers) == ([(b"Content-Length", b"2")], True)


def test_response_connection_names_length() -> None:
    headers = [(b"Connection", b"content-length"), (b"Content-Length", b"2")]

    assert filter_response_headers(headers) == ([], False)


@pytest.mark.parametrize("name", [b"Content-Length", b"content-length", b"CONTENT-LENGTH"])
def test_response_has_length(name: bytes) -> None:
    _, has_length = filter_response_headers([(name, b"10")])

    assert has_length is True


def test_response_keeps_other_headers() -> None:
    headers = [
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
        (b"X-Forwarded-For", b"1.2.3.4"),
        (b"X-Request-Id", b"upstream"),
        (b"Host", b"backend"),
    ]

    assert filter_response_headers(headers) == (headers, False)


def test_encode_head() -> None:
    head = encode_head(b"GET / HTTP/1.1", [(b"Host", b"a"), (b"Accept", b"*/*")])

    assert head == b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"


def test_encode_head_no_headers() -> None:
    assert encode_head(b"HTTP/1.1 204 No Content", []) == b"HTTP/1.1 204 No Content\r\n\r\n"


def test_content_fields_collects_both_in_order() -> None:
    headers = [
        (b"Content-Type", b"application/json"),
        (b"Host", b"example.test"),
        (b"CONTENT-ENCODING", b"gzip"),
        (b"content-type", b"text/plain"),
        (b"Content-Encoding", b"identity"),
    ]
    content_types, content_encodings = content_fields(headers)
    assert content_types == [b"application/json", b"text/plain"]
    assert content_encodings == [b"gzip", b"identity"]


@pytest.mark.parametrize(
    "name",
    [
        b"Content-Types",
        b"Content_Type",
        b"X-Content-Type",
        b"Content-Encodings",
        b"Accept-Encoding",
    ],
)
def test_content_fields_ignores_other_names(name: bytes) -> None:
    assert content_fields([(name, b"x")]) == ([], [])
