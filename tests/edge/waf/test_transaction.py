"""The C extension that runs a whole transaction: ringwall/edge/waf/_transaction.c."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ringwall.config.waf import WafConfig
from ringwall.edge.waf import engine as engine_module
from ringwall.edge.waf.engine import WafEngine, WafRequest, parse_log_line
from tests.edge.waf.conftest import (
    HEADERS,
    get,
    post_json,
    requires_modsecurity,
    requires_native,
)

pytestmark = [requires_modsecurity, requires_native]

SQLI = b"/?id=1'%20OR%20'1'='1"


@pytest.fixture(scope="module")
def native_engine() -> WafEngine:
    return WafEngine.load(WafConfig(), native=True)


@pytest.fixture(scope="module")
def ctypes_engine() -> WafEngine:
    return WafEngine.load(WafConfig(), native=False)


def run(engine: WafEngine, uri: bytes, headers: Any = HEADERS, body: bytes = b"") -> Any:
    return engine_module._transaction.run(
        engine._library.instance,
        engine._rules,
        b"1",
        b"192.0.2.10",
        50000,
        b"127.0.0.1",
        8080,
        b"GET",
        uri,
        b"1.1",
        headers,
        body,
    )


def test_benign_request_has_no_lines(native_engine: WafEngine) -> None:
    assert run(native_engine, b"/api/orders") == (200, None, ())


def test_blocked_request_returns_intervention(native_engine: WafEngine) -> None:
    status, blocking_line, lines = run(native_engine, SQLI)
    assert status == 403
    assert blocking_line is not None
    blocking_rule = parse_log_line(blocking_line)
    assert blocking_rule is not None
    assert blocking_rule.id == 949110
    matched = [parse_log_line(line) for line in lines]
    assert 942100 in {rule.id for rule in matched if rule is not None}


def test_headers_accept_any_sequence(native_engine: WafEngine) -> None:
    assert run(native_engine, b"/", tuple(HEADERS))[0] == 200
    assert run(native_engine, b"/", iter(HEADERS))[0] == 200


@pytest.mark.parametrize(
    "headers",
    [[(b"Host", "example.com")], [[b"Host", b"example.com"]], [(b"Host",)], [b"Host: x"]],
    ids=["str-value", "list-pair", "one-item", "not-a-pair"],
)
def test_invalid_header_raises_type_error(native_engine: WafEngine, headers: Any) -> None:
    with pytest.raises(TypeError, match="invalid header at index 0"):
        run(native_engine, b"/", headers)


def test_mutable_body_raises_type_error(native_engine: WafEngine) -> None:
    # The body is read without the GIL, so a buffer that can change meanwhile is rejected.
    with pytest.raises(TypeError, match="read-only bytes-like object"):
        run(native_engine, b"/", HEADERS, bytearray(b"{}"))


def test_null_rules_raises_value_error(native_engine: WafEngine) -> None:
    arguments = [native_engine._library.instance, 0, b"1", b"192.0.2.10", 1, b"127.0.0.1", 1]
    with pytest.raises(ValueError, match="invalid rule set"):
        engine_module._transaction.run(*arguments, b"GET", b"/", b"1.1", [], b"")


def test_null_instance_raises_value_error() -> None:
    with pytest.raises(ValueError, match="invalid ModSecurity instance"):
        engine_module._transaction.install_log_callback(0)


@pytest.mark.parametrize(
    "request_",
    [
        get(b"/api/orders?page=2"),
        get(SQLI),
        get(b"/?q=%3Cscript%3Ealert(1)%3C/script%3E"),
        # The URI is read up to the NUL byte by both bindings.
        get(b"/?a=1\x00'%20OR%20'1'='1"),
        post_json(b"/api/orders", b'{"note": "1 UNION SELECT password FROM users"}'),
        post_json(b"/api/orders", b'{"note": '),
        post_json(b"/api/orders", b'{"note": "\x00\xff binary"}'),
    ],
    ids=["benign", "sqli", "xss", "nul-in-uri", "json-sqli", "bad-json", "binary-body"],
)
def test_verdict_equals_ctypes_binding(
    native_engine: WafEngine, ctypes_engine: WafEngine, request_: WafRequest
) -> None:
    assert native_engine.inspect(request_) == ctypes_engine.inspect(request_)


def test_gil_released_during_transaction(native_engine: WafEngine) -> None:
    # About 1,000 JSON fields take tens of milliseconds in libmodsecurity.
    body = b"{" + b",".join(b'"field%d": "value %d"' % (i, i) for i in range(1000)) + b"}"
    request = post_json(b"/api/orders", body)
    thread = threading.Thread(target=native_engine.inspect, args=(request,))
    iterations = 0
    thread.start()
    while thread.is_alive():
        iterations += 1
    thread.join()
    # With the GIL held for the whole transaction, this loop would run only
    # until the thread took the GIL, then once more after the thread ended.
    assert iterations > 1000
