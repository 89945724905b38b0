"""Form bodies through a running gateway: a malformed one gets 400 and is never forwarded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.client import Response, request
from tests.support.gateway_thread import GatewayThread, running_gateway
from tests.support.raw_upstream import RawUpstream, running_raw_upstream


def config_text(upstream_port: int) -> str:
    return f"""
server:
  timeouts: {{drain: 1s}}
upstreams:
  app:
    targets: ["http://127.0.0.1:{upstream_port}"]
routes:
  - name: upload
    path: /upload
    upstream: app
    auth: none
    validate:
      content_types: [multipart/form-data, application/x-www-form-urlencoded]
      body_required: true
      form:
        max_file_bytes: 64KiB
        fields:
          title: {{required: true, max_length: 40}}
          count: {{type: integer, minimum: 1}}
          attachment: {{type: file}}
  - name: plain
    path: /plain
    upstream: app
    auth: none
    validate:
      content_types: [application/x-www-form-urlencoded]
"""


@pytest.fixture
def upstream() -> Iterator[RawUpstream]:
    with running_raw_upstream() as server:
        yield server


@pytest.fixture
def gateway(upstream: RawUpstream, tmp_path: Path) -> Iterator[GatewayThread]:
    with running_gateway(config_text(upstream.port), tmp_path) as server:
        yield server


BOUNDARY = b"----ringwallTestBoundary7MA4YWxk"
MULTIPART = b"multipart/form-data; boundary=" + BOUNDARY


def post(gateway: GatewayThread, target: bytes, content_type: bytes, body: bytes) -> Response:
    head = b"POST %b HTTP/1.1\r\nHost: a\r\nContent-Type: %b\r\nContent-Length: %d\r\n\r\n" % (
        target,
        content_type,
        len(body),
    )
    return request(gateway.port, head + body, b"POST")


def part(disposition: bytes, content: bytes, *headers: bytes) -> bytes:
    head = b"\r\n".join((b"Content-Disposition: " + disposition, *headers))
    return b"--" + BOUNDARY + b"\r\n" + head + b"\r\n\r\n" + content + b"\r\n"


def multipart(*parts: bytes, close: bytes | None = None) -> bytes:
    return b"".join(parts) + (close if close is not None else b"--" + BOUNDARY + b"--\r\n")


TITLE = part(b'form-data; name="title"', b"Quarterly report")
# Binary content with NUL, 0xFF, CRLF and dashes, but never the boundary.
FILE_CONTENT = b"%PDF-1.7\r\n\x00\xff\xfe--\r\n--ringwall\r\n" + bytes(range(256)) * 4
ATTACHMENT = part(
    b'form-data; name="attachment"; filename="report.pdf"',
    FILE_CONTENT,
    b"Content-Type: application/pdf",
)
VALID = multipart(TITLE, part(b'form-data; name="count"', b"3"), ATTACHMENT)


@pytest.mark.parametrize(
    ("content_type", "body", "detail"),
    [
        (
            MULTIPART,
            multipart(TITLE, ATTACHMENT, close=b""),
            "form body: the closing boundary is missing",
        ),
        (
            MULTIPART,
            multipart(TITLE.replace(b"form-data;", b"attachment;")),
            "form body: part 1: the Content-Disposition type must be form-data",
        ),
        (
            MULTIPART,
            multipart(
                TITLE,
                part(b'form-data; name="attachment"; filename="../../etc/passwd"', b"x"),
            ),
            "form field attachment: the file name contains a path separator",
        ),
        (
            MULTIPART,
            multipart(TITLE.replace(b"\r\n\r\n", b"\r\nX-Bad header\r\n\r\n")),
            "form body: part 1: a header line is malformed",
        ),
        (
            MULTIPART,
            multipart(TITLE, TITLE),
            "form field title: sent more than once",
        ),
        (
            MULTIPART,
            multipart(TITLE, part(b'form-data; name="\xffadmin"', b"1")),
            r"form field \xffadmin: the name is not valid UTF-8",
        ),
        (
            MULTIPART,
            multipart(TITLE, part(b'form-data; name="role"', b"admin")),
            "form field role: not accepted on this route",
        ),
        (
            MULTIPART,
            multipart(part(b'form-data; name="count"', b"0")),
            "form field title: missing",
        ),
        (
            MULTIPART,
            multipart(TITLE, part(b'form-data; name="count"', b"0")),
            "form field count: below the minimum 1",
        ),
        (
            b"multipart/form-data",
            VALID,
            "form body: the Content-Type has no boundary parameter",
        ),
        (
            b"application/x-www-form-urlencoded",
            b"title=a&title=b",
            "form field title: sent more than once",
        ),
    ],
)
def test_malformed_form_rejected_and_not_forwarded(
    gateway: GatewayThread, upstream: RawUpstream, content_type: bytes, body: bytes, detail: str
) -> None:
    response = post(gateway, b"/upload", content_type, body)
    assert response.status == 400
    assert response.header("Content-Type") == "application/problem+json"
    problem = response.json()
    assert problem["layer"] == "validation"
    assert problem["detail"] == detail
    assert upstream.connections == []
    record = gateway.access_records()[-1]
    assert record["status"] == 400
    assert record["layer"] == "validation"
    assert record["reason"] == detail


def test_valid_multipart_forwarded_byte_for_byte(
    gateway: GatewayThread, upstream: RawUpstream
) -> None:
    response = post(gateway, b"/upload", MULTIPART, VALID)
    assert response.status == 200
    [recorded] = upstream.wait_for_requests(1)
    assert recorded.body == VALID
    raw = upstream.connections[0]
    assert raw.endswith(b"\r\n\r\n" + VALID)
    assert b"\r\nContent-Type: " + MULTIPART + b"\r\n" in raw


def test_valid_chunked_multipart_forwarded(gateway: GatewayThread, upstream: RawUpstream) -> None:
    chunks = [VALID[:100], VALID[100:101], VALID[101:]]
    encoded = b"".join(b"%x\r\n%b\r\n" % (len(chunk), chunk) for chunk in chunks)
    head = (
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Type: %b\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" % MULTIPART
    )
    response = request(gateway.port, head + encoded + b"0\r\n\r\n", b"POST")
    assert response.status == 200
    [recorded] = upstream.wait_for_requests(1)
    assert recorded.body == VALID


def test_file_over_limit_rejected(gateway: GatewayThread, upstream: RawUpstream) -> None:
    large = part(b'form-data; name="attachment"; filename="big.bin"', b"x" * (64 * 1024 + 1))
    response = post(gateway, b"/upload", MULTIPART, multipart(TITLE, large))
    assert response.status == 400
    assert response.json()["detail"] == (
        "form field attachment: the file is larger than 65536 bytes"
    )
    assert upstream.connections == []


def test_valid_urlencoded_forwarded(gateway: GatewayThread, upstream: RawUpstream) -> None:
    body = b"title=Quarterly+report&count=3"
    response = post(gateway, b"/upload", b"application/x-www-form-urlencoded", body)
    assert response.status == 200
    [recorded] = upstream.wait_for_requests(1)
    assert recorded.body == body


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"a=1;b=2", "byte 3 is a semicolon"),
        (b"a=%zz", "form field a: invalid percent-encoding in the value"),
        (b"a=%ff", "form field a: the value is not valid UTF-8 at byte 0"),
    ],
)
def test_form_route_without_form_block_parses_strictly(
    gateway: GatewayThread, upstream: RawUpstream, body: bytes, detail: str
) -> None:
    response = post(gateway, b"/plain", b"application/x-www-form-urlencoded", body)
    assert response.status == 400
    assert detail in response.json()["detail"]
    assert upstream.connections == []


def test_form_route_without_form_block_forwards_any_names(
    gateway: GatewayThread, upstream: RawUpstream
) -> None:
    body = b"anything=1&other=%C3%A9"
    response = post(gateway, b"/plain", b"application/x-www-form-urlencoded", body)
    assert response.status == 200
    assert upstream.wait_for_requests(1)[0].body == body
