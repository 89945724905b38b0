"""The WAF in a running gateway: attacks get 403 before authentication, with a security record."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.client import Response, request
from tests.support.gateway_thread import GatewayThread, running_gateway
from tests.support.raw_upstream import RawUpstream


def config_text(upstream_port: int, security_log: Path) -> str:
    return f"""
server:
  timeouts: {{drain: 1s}}
logging:
  security: "{security_log}"
waf: {{mode: block, paranoia: 1}}
upstreams:
  app:
    targets: ["http://127.0.0.1:{upstream_port}"]
routes:
  - {{name: api, path: /api, upstream: app, auth: none}}
  - {{name: detect, path: /detect, upstream: app, auth: none, waf: {{mode: detect}}}}
  - {{name: open, path: /open, upstream: app, auth: none, waf: {{enabled: false}}}}
"""


@pytest.fixture
def gateway(upstream: RawUpstream, tmp_path: Path) -> Iterator[GatewayThread]:
    text = config_text(upstream.port, tmp_path / "security.log")
    with running_gateway(text, tmp_path) as server:
        yield server


def get(gateway: GatewayThread, target: bytes) -> Response:
    return request(gateway.port, b"GET %b HTTP/1.1\r\nHost: a\r\n\r\n" % target)


SQLI = b"/?id=1%27%20OR%20%271%27%3D%271"


def test_sql_injection_blocked(
    gateway: GatewayThread, upstream: RawUpstream, tmp_path: Path
) -> None:
    response = get(gateway, b"/api" + SQLI)
    assert response.status == 403
    assert response.json()["layer"] == "waf"
    assert "942" not in response.body.decode()  # nothing about the rules
    assert upstream.requests == []
    record = json.loads((tmp_path / "security.log").read_text().splitlines()[-1])
    assert record["blocked"] is True
    assert record["request_id"] == response.json()["request_id"]
    assert any(rule["id"] == 942100 or str(rule["id"]) == "942100" for rule in record["rules"])


def test_benign_request_passes(gateway: GatewayThread, upstream: RawUpstream) -> None:
    assert get(gateway, b"/api/products?page=2").status == 200
    assert len(upstream.requests) == 1


def test_detect_mode_forwards_and_records(
    gateway: GatewayThread, upstream: RawUpstream, tmp_path: Path
) -> None:
    assert get(gateway, b"/detect" + SQLI).status == 200
    record = json.loads((tmp_path / "security.log").read_text().splitlines()[-1])
    assert record["blocked"] is False


def test_route_without_waf(gateway: GatewayThread) -> None:
    assert get(gateway, b"/open" + SQLI).status == 200


def post(gateway: GatewayThread, path: bytes, fields: bytes, body: bytes) -> Response:
    return request(
        gateway.port,
        b"POST %b HTTP/1.1\r\nHost: a\r\n%bContent-Length: %d\r\n\r\n%b"
        % (path, fields, len(body), body),
        b"POST",
    )


@pytest.mark.parametrize(
    ("fields", "body", "status"),
    [
        # Compressed: the engine could not read it, so it is refused, not passed.
        (b"Content-Type: application/json\r\nContent-Encoding: gzip\r\n", b"\x1f\x8b\x08", 415),
        # A charset the rules cannot decode.
        (b"Content-Type: application/json; charset=utf-7\r\n", b'{"a": 1}', 403),
        # A JSON string written with \\u escapes is decoded before the rules run.
        (
            b"Content-Type: application/json\r\n",
            b'{"q": "1\\u0027 UNION SELECT password FROM users--"}',
            403,
        ),
        # A +json type gets the JSON body processor too.
        (
            b"Content-Type: application/merge-patch+json\r\n",
            b'{"q": "1 UNION SELECT password FROM users"}',
            403,
        ),
        # Types without a body parser are not allowed, so their bodies cannot slip past.
        (b"Content-Type: text/plain\r\n", b"1 UNION SELECT password FROM users--", 403),
        (
            b"Content-Type: application/csp-report\r\n",
            b'{"csp-report": {"x": "1 UNION SELECT password FROM users--"}}',
            403,
        ),
        # Multipart parts are parsed and inspected; malformed part headers get 400.
        (
            b"Content-Type: multipart/form-data; boundary=xyz\r\n",
            b'--xyz\r\nContent-Disposition: form-data; name="a"\r\n\r\n'
            b"1 UNION SELECT password FROM users--\r\n--xyz--\r\n",
            403,
        ),
        (
            b"Content-Type: multipart/form-data; boundary=xyz\r\n",
            b"--xyz\r\nContent-Disposition form-data name=a\r\n\r\nx\r\n--xyz--\r\n",
            400,
        ),
    ],
)
def test_body_bypass_classes_closed(
    gateway: GatewayThread, upstream: RawUpstream, fields: bytes, body: bytes, status: int
) -> None:
    response = post(gateway, b"/api/items", fields, body)
    assert response.status == status
    assert upstream.requests == []


def test_two_content_types_rejected(gateway: GatewayThread, upstream: RawUpstream) -> None:
    fields = b"Content-Type: text/plain\r\nContent-Type: application/json\r\n"
    assert post(gateway, b"/api/items", fields, b'{"a": 1}').status == 400
    assert upstream.requests == []


def test_encoded_question_mark_in_path_rejected(gateway: GatewayThread) -> None:
    assert get(gateway, b"/api/x%3Fid=1%27%20OR%20%271%27%3D%271").status == 400
