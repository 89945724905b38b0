"""Compressed request bodies through a running gateway: decoded, checked, forwarded decoded."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.waf.conftest import requires_modsecurity
from tests.support.client import Response, request
from tests.support.compression import gzip_zeros
from tests.support.gateway_thread import GatewayThread, running_gateway
from tests.support.raw_upstream import RawUpstream
from tests.support.tokens import AUDIENCE, HMAC_SECRET, ISSUER, claims, hs256_token

ROUTE_LIMIT = 2 * 1024 * 1024
ORDER = b'{"product_id": 42, "quantity": 2}'


def config_text(upstream_port: int) -> str:
    return f"""
server:
  timeouts: {{drain: 1s}}
auth:
  issuers:
    main:
      issuer: "{ISSUER}"
      hmac_secret: "{HMAC_SECRET}"
      algorithms: [HS256]
      audiences: [{AUDIENCE}]
upstreams:
  app:
    targets: ["http://127.0.0.1:{upstream_port}"]
routes:
  - name: orders
    path: /orders
    methods: [POST]
    upstream: app
    auth: none
    max_body_bytes: 2MiB
    decompress: {{encodings: [gzip, deflate], max_ratio: 100}}
    validate:
      content_types: [application/json]
      json:
        schema:
          type: object
          properties:
            product_id: {{type: integer, minimum: 1}}
            quantity: {{type: integer, minimum: 1}}
          required: [product_id, quantity]
          additionalProperties: false
  - name: private
    path: /private
    upstream: app
    auth: jwt
    max_body_bytes: 2MiB
    decompress: {{}}
  - name: gzip-only
    path: /gzip-only
    upstream: app
    auth: none
    decompress: {{encodings: [gzip]}}
  - name: validated
    path: /validated
    upstream: app
    auth: none
    validate:
      content_types: [application/json]
      json: {{}}
  - name: passthrough
    path: /passthrough
    upstream: app
    auth: none
"""


@pytest.fixture
def gateway(upstream: RawUpstream, tmp_path: Path) -> Iterator[GatewayThread]:
    with running_gateway(config_text(upstream.port), tmp_path) as server:
        yield server


def post(
    gateway: GatewayThread,
    path: bytes,
    body: bytes,
    encoding: bytes | None = b"gzip",
    extra: bytes = b"",
) -> Response:
    coding = b"Content-Encoding: %b\r\n" % encoding if encoding is not None else b""
    head = (
        b"POST %b HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n%b%b"
        b"Content-Length: %d\r\n\r\n" % (path, coding, extra, len(body))
    )
    return request(gateway.port, head + body, b"POST")


def assert_problem(response: Response, status: int, layer: str, detail: str) -> None:
    assert response.status == status
    problem = response.json()
    assert problem["layer"] == layer
    assert detail in problem["detail"]


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        (b"gzip", gzip.compress(ORDER)),
        (b"deflate", zlib.compress(ORDER)),
        (b"x-gzip", gzip.compress(ORDER)),
    ],
)
def test_compressed_json_forwarded_decoded(
    gateway: GatewayThread, upstream: RawUpstream, encoding: bytes, body: bytes
) -> None:
    response = post(gateway, b"/orders", body, encoding)
    assert response.status == 200
    [recorded] = upstream.wait_for_requests(1)
    assert recorded.body == ORDER
    raw = upstream.connections[0]
    head = raw.split(b"\r\n\r\n", 1)[0].lower()
    assert b"content-encoding" not in head
    assert b"\r\ncontent-length: %d\r\n" % len(ORDER) in head + b"\r\n"
    assert b"\r\ncontent-type: application/json" in head
    assert raw.endswith(b"\r\n\r\n" + ORDER)
    assert gateway.access_records()[-1]["status"] == 200


def test_compressed_chunked_json_forwarded_with_length(
    gateway: GatewayThread, upstream: RawUpstream
) -> None:
    data = gzip.compress(ORDER)
    chunks = b"".join(b"%x\r\n%b\r\n" % (len(part), part) for part in (data[:7], data[7:]))
    head = (
        b"POST /orders HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    response = request(gateway.port, head + chunks + b"0\r\n\r\n", b"POST")
    assert response.status == 200
    [recorded] = upstream.wait_for_requests(1)
    assert recorded.body == ORDER
    head_sent = upstream.connections[0].split(b"\r\n\r\n", 1)[0].lower()
    assert b"transfer-encoding" not in head_sent
    assert b"content-encoding" not in head_sent
    assert b"\r\ncontent-length: %d" % len(ORDER) in head_sent


def test_invalid_json_inside_gzip_rejected(gateway: GatewayThread, upstream: RawUpstream) -> None:
    body = gzip.compress(b'{"product_id": 0, "quantity": 2}')
    response = post(gateway, b"/orders", body)
    assert_problem(response, 400, "validation", "/product_id")
    assert upstream.connections == []


def test_gigabyte_bomb_rejected_before_upstream(
    gateway: GatewayThread, upstream: RawUpstream
) -> None:
    bomb = gzip_zeros(1024)  # about 1 MB, within the route's 2 MiB limit
    assert len(bomb) < ROUTE_LIMIT
    response = post(gateway, b"/orders", bomb)
    assert_problem(
        response,
        413,
        "decompression",
        f"the decompressed request body exceeds the limit of {ROUTE_LIMIT} bytes",
    )
    assert upstream.connections == []
    record = gateway.access_records()[-1]
    assert record["layer"] == "decompression"
    assert record["status"] == 413


def test_high_ratio_rejected_before_upstream(gateway: GatewayThread, upstream: RawUpstream) -> None:
    body = gzip.compress(bytes(1024 * 1024))  # 1 MiB of zeros in about 1 KB
    response = post(gateway, b"/orders", body)
    assert_problem(response, 413, "decompression", "expands more than 100 times")
    assert upstream.connections == []


@pytest.mark.parametrize(
    ("path", "encoding", "detail", "accepted"),
    [
        (b"/orders", b"br", "content coding br is not supported", "gzip, deflate"),
        (b"/orders", b"zstd", "content coding zstd is not supported", "gzip, deflate"),
        (b"/orders", b"gzip, gzip", "stacked content codings (gzip, gzip)", "gzip, deflate"),
        (b"/gzip-only", b"deflate", "content coding deflate is not supported", "gzip"),
    ],
)
def test_unsupported_coding_gets_415(
    gateway: GatewayThread,
    upstream: RawUpstream,
    path: bytes,
    encoding: bytes,
    detail: str,
    accepted: str,
) -> None:
    response = post(gateway, path, b"\x0b\x02\x80hello", encoding)
    assert_problem(response, 415, "decompression", detail)
    assert response.header("Accept-Encoding") == accepted
    assert upstream.connections == []


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (gzip.compress(ORDER)[:-4], "the gzip request body is truncated"),
        (gzip.compress(ORDER) + b"junk", "has 4 bytes of other data after its end"),
        (b"not gzip at all", "the gzip request body is invalid: incorrect header check"),
    ],
)
def test_corrupt_body_gets_400(
    gateway: GatewayThread, upstream: RawUpstream, body: bytes, detail: str
) -> None:
    response = post(gateway, b"/orders", body)
    assert_problem(response, 400, "decompression", detail)
    assert upstream.connections == []


def test_route_decodes_after_authentication(gateway: GatewayThread, upstream: RawUpstream) -> None:
    bomb = gzip.compress(bytes(1024 * 1024))
    # Without credentials the body is never decoded.
    assert post(gateway, b"/private", bomb).status == 401
    token = hs256_token(**claims()).encode()
    authorization = b"Authorization: Bearer %b\r\n" % token
    response = post(gateway, b"/private", bomb, extra=authorization)
    assert_problem(response, 413, "decompression", "expands more than 100 times")
    response = post(gateway, b"/private", gzip.compress(b"plain text"), extra=authorization)
    assert response.status == 200
    assert upstream.wait_for_requests(1)[0].body == b"plain text"


def test_validated_route_without_option_415(gateway: GatewayThread, upstream: RawUpstream) -> None:
    response = post(gateway, b"/validated", gzip.compress(ORDER))
    assert_problem(response, 415, "validation", "compressed request bodies are not accepted")
    assert upstream.connections == []


def test_passthrough_forwards_compressed_body(
    gateway: GatewayThread, upstream: RawUpstream
) -> None:
    body = gzip.compress(ORDER)
    assert post(gateway, b"/passthrough", body).status == 200
    [recorded] = upstream.wait_for_requests(1)
    assert recorded.body == body
    assert b"\r\nContent-Encoding: gzip\r\n" in upstream.connections[0]


# --- a route with the WAF ------------------------------------------------------

WAF_CONFIG = """
server:
  timeouts: {{drain: 1s}}
logging:
  security: "{security_log}"
waf: {{mode: block, paranoia: 1}}
upstreams:
  app:
    targets: ["http://127.0.0.1:{port}"]
routes:
  - {{name: api, path: /api, upstream: app, auth: none, decompress: {{}}}}
  - {{name: plain, path: /plain, upstream: app, auth: none}}
"""
SQLI_ORDER = b'{"product_id": "1 UNION SELECT password FROM users--", "quantity": 2}'


@pytest.fixture
def waf_gateway(upstream: RawUpstream, tmp_path: Path) -> Iterator[GatewayThread]:
    text = WAF_CONFIG.format(security_log=tmp_path / "security.log", port=upstream.port)
    with running_gateway(text, tmp_path) as server:
        yield server


@requires_modsecurity
def test_waf_blocks_attack_inside_gzip(
    waf_gateway: GatewayThread, upstream: RawUpstream, tmp_path: Path
) -> None:
    response = post(waf_gateway, b"/api", gzip.compress(SQLI_ORDER))
    assert response.status == 403
    assert response.json()["layer"] == "waf"
    assert upstream.connections == []
    record = json.loads((tmp_path / "security.log").read_text().splitlines()[-1])
    assert record["blocked"] is True


@requires_modsecurity
def test_waf_passes_benign_gzip_decoded(waf_gateway: GatewayThread, upstream: RawUpstream) -> None:
    response = post(waf_gateway, b"/api", gzip.compress(ORDER))
    assert response.status == 200
    [recorded] = upstream.wait_for_requests(1)
    assert recorded.body == ORDER
    assert b"content-encoding" not in upstream.connections[0].lower()


@requires_modsecurity
def test_waf_route_without_option_rejects_gzip(
    waf_gateway: GatewayThread, upstream: RawUpstream
) -> None:
    response = post(waf_gateway, b"/plain", gzip.compress(SQLI_ORDER))
    assert_problem(response, 415, "waf", "compressed request bodies cannot be inspected")
    assert upstream.connections == []
