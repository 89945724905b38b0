from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest

from ringwall.edge.waf.engine import WafEngine
from ringwall.edge.waf.layer import BLOCKED_DETAIL, WafLayer
from ringwall.edge.waf.security_log import SecurityLog
from ringwall.errors import Forbidden, PayloadTooLarge
from ringwall.exchange import Exchange
from ringwall.server.body import RequestBody
from tests.edge.waf.conftest import HEADERS, requires_modsecurity

pytestmark = requires_modsecurity


def exchange(target: bytes, method: str = "GET", body: bytes | None = None) -> Exchange:
    no_runtime: Any = None
    result = Exchange(no_runtime, "192.0.2.10", 0.0, 0.0)
    result.method = method
    result.target = target
    result.request_id = "req-1"
    result.headers = list(HEADERS)
    if body is not None:
        result.headers += [
            (b"Content-Type", b"application/json"),
            (b"Content-Length", str(len(body)).encode()),
        ]
        result.content_length = len(body)
        result.has_body = True
        request_body = RequestBody(1 << 20, lambda: None, lambda: None)
        request_body.feed(body)
        request_body.finish()
        result.body = request_body
    return result


def run(layer: WafLayer, request: Exchange) -> None:
    async def check() -> None:
        pending = layer.check_head(request)
        if pending is not None:
            await pending

    try:
        asyncio.run(check())
    finally:
        layer.close()


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_sqli_rejected_403_and_logged(block_engine: WafEngine) -> None:
    stream = io.StringIO()
    layer = WafLayer(SecurityLog(stream), block_engine, clock=lambda: 0.0)
    with pytest.raises(Forbidden) as caught:
        run(layer, exchange(b"/?id=1'%20OR%20'1'='1"))
    assert caught.value.layer == "waf"
    assert caught.value.detail == BLOCKED_DETAIL
    [record] = records(stream)
    assert record["request_id"] == "req-1"
    assert record["client_ip"] == "192.0.2.10"
    assert record["blocked"] is True
    assert record["anomaly_score"] == 5
    assert {rule["id"] for rule in record["rules"]} == {942100, 949110}
    assert record["time"] == "1970-01-01T00:00:00.000+00:00"


def test_benign_post_passes_without_record(block_engine: WafEngine) -> None:
    stream = io.StringIO()
    layer = WafLayer(SecurityLog(stream), block_engine)
    run(layer, exchange(b"/api/orders", "POST", b'{"sku": "BOOK-1", "quantity": 2}'))
    assert stream.getvalue() == ""


def test_detect_mode_passes_with_record(detect_engine: WafEngine) -> None:
    stream = io.StringIO()
    layer = WafLayer(SecurityLog(stream), detect_engine)
    run(layer, exchange(b"/?id=1'%20OR%20'1'='1"))
    [record] = records(stream)
    assert record["blocked"] is False
    assert 942100 in {rule["id"] for rule in record["rules"]}


def test_body_above_limit_rejected_413(block_engine: WafEngine) -> None:
    layer = WafLayer(SecurityLog(io.StringIO()), block_engine)
    body = b'{"a": "' + b"x" * block_engine.config.max_body_bytes + b'"}'
    with pytest.raises(PayloadTooLarge):
        run(layer, exchange(b"/api/orders", "POST", body))


def test_log_escapes_request_bytes(detect_engine: WafEngine) -> None:
    stream = io.StringIO()
    layer = WafLayer(SecurityLog(stream), detect_engine)
    run(layer, exchange(b"/?q=%3Cscript%3E%0A%22%E2%80%A8alert(1)%3C/script%3E"))
    text = stream.getvalue()
    assert text.count("\n") == 1
    assert text.isascii()
    [record] = records(stream)
    assert record["rules"]
