"""The validation layer: head checks, and which body checker a body goes to."""

import asyncio
from typing import Any

import pytest

from ringwall.config.validation import ValidateConfig
from ringwall.errors import BadRequest, UnsupportedMediaType
from ringwall.exchange import Exchange
from ringwall.gateway.validation.layer import RouteValidation, parse_content_type
from ringwall.server.body import RequestBody


def exchange(
    headers: list[tuple[bytes, bytes]] | None = None,
    query: bytes = b"",
    params: dict[str, str] | None = None,
    has_body: bool = False,
    method: str = "GET",
) -> Exchange:
    no_runtime: Any = None
    result = Exchange(no_runtime, "127.0.0.1", 0.0, 0.0)
    result.headers = headers or []
    result.query = query
    result.params = params or {}
    result.has_body = has_body
    result.method = method
    return result


def validation(**config: Any) -> RouteValidation:
    return RouteValidation(ValidateConfig.model_validate(config))


JSON_ONLY = {"content_types": ["application/json"]}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"application/json", ("application/json", None)),
        (b"Application/JSON; charset=UTF-8", ("application/json", "utf-8")),
        (b'application/json;charset="utf-8"', ("application/json", "utf-8")),
        (b"text/plain ; format=flowed", ("text/plain", None)),
    ],
)
def test_parse_content_type(value: bytes, expected: tuple[str, str | None]) -> None:
    assert parse_content_type(value) == expected


def test_declared_content_type_accepted() -> None:
    headers = [(b"Content-Type", b"application/json; charset=utf-8")]
    validation(**JSON_ONLY).check_head(exchange(headers, has_body=True))


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Content-Type", b"text/plain")],
        [(b"Content-Type", b"application/json; charset=iso-8859-1")],
        [],
        [(b"Content-Type", b"application/json"), (b"Content-Encoding", b"gzip")],
    ],
)
def test_undeclared_body_gets_415(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(UnsupportedMediaType):
        validation(**JSON_ONLY).check_head(exchange(headers, has_body=True))


def test_check_runs_head_and_json_body() -> None:
    checks = validation(**JSON_ONLY, json={"schema": {"type": "object"}})
    assert checks.check(body_exchange(b"application/json", b'{"a": 1}')) is None
    with pytest.raises(BadRequest, match="expected object, got array"):
        checks.check(body_exchange(b"application/json", b"[]"))
    with pytest.raises(UnsupportedMediaType):
        checks.check(body_exchange(b"text/plain", b"{}"))


def test_check_after_cached_content_type() -> None:
    # Once the media type is cached, requests take the shorter path, which
    # must still find a repeated Content-Type, an encoding and a bad body.
    checks = validation(**JSON_ONLY, json={"schema": {"type": "object"}})
    assert checks.check(body_exchange(b"application/json", b"{}")) is None
    repeated = body_exchange(b"application/json", b"{}")
    repeated.headers.append((b"Content-Type", b"application/json"))
    with pytest.raises(BadRequest, match="Content-Type: sent more than once"):
        checks.check(repeated)
    encoded = body_exchange(b"application/json", b"{}")
    encoded.headers.append((b"Content-Encoding", b"gzip"))
    with pytest.raises(UnsupportedMediaType, match="compressed request bodies"):
        checks.check(encoded)
    identity = body_exchange(b"application/json", b"{}")
    identity.headers.append((b"content-encoding", b"identity"))
    assert checks.check(identity) is None
    other_field = body_exchange(b"application/json", b"{}")
    other_field.headers.append((b"X-Request-Id", b"abc"))  # 12 characters, like Content-Type
    assert checks.check(other_field) is None
    with pytest.raises(BadRequest, match="body /a: duplicate key"):
        checks.check(body_exchange(b"application/json", b'{"a": 1, "a": 2}'))


def test_check_waits_for_incomplete_body() -> None:
    checks = validation(**JSON_ONLY, json={"schema": {"type": "object"}})
    checks.check(body_exchange(b"application/json", b"{}"))
    request = exchange([(b"content-type", b"application/json")], has_body=True, method="POST")
    request.body = RequestBody(1024, lambda: None, lambda: None)
    pending = checks.check(request)
    assert pending is not None
    request.body.feed(b"[]")
    request.body.finish()

    async def run() -> None:
        await pending

    with pytest.raises(BadRequest, match="expected object, got array"):
        asyncio.run(run())


def test_check_rejects_compression_before_media_type() -> None:
    request = body_exchange(b"text/plain", b"{}")
    request.headers.append((b"Content-Encoding", b"br"))
    with pytest.raises(UnsupportedMediaType, match="compressed request bodies"):
        validation(**JSON_ONLY).check(request)


def test_identity_content_encoding_accepted() -> None:
    headers = [(b"Content-Type", b"application/json"), (b"Content-Encoding", b" Identity ")]
    validation(**JSON_ONLY).check_head(exchange(headers, has_body=True))


def test_accepted_content_type_checked_again_from_cache() -> None:
    checks = validation(content_types=["application/json"], charsets=["utf-8"])
    accepted = [(b"Content-Type", b"application/json; charset=UTF-8")]
    for _ in range(2):
        checks.check_head(exchange(accepted, has_body=True))
    assert list(checks._accepted_content_types) == [b"application/json; charset=UTF-8"]
    # A rejected value is never cached, so it is rejected each time.
    rejected = [(b"Content-Type", b"application/json; charset=latin-1")]
    for _ in range(2):
        with pytest.raises(UnsupportedMediaType, match="charset latin-1"):
            checks.check_head(exchange(rejected, has_body=True))
    assert len(checks._accepted_content_types) == 1


def test_content_type_cache_stops_growing() -> None:
    checks = validation(**JSON_ONLY)
    for number in range(100):
        value = b"application/json; v=%d" % number
        checks.check_head(exchange([(b"Content-Type", value)], has_body=True))
    assert len(checks._accepted_content_types) == 64
    # Values past the cache's size are still checked and accepted.
    checks.check_head(exchange([(b"Content-Type", b"application/json; v=999")], has_body=True))


def test_cached_media_type_decides_json_body() -> None:
    checks = validation(**FORM_AND_JSON)
    request = body_exchange(b"Application/JSON", b"{}")
    checks.check_head(request)
    assert checks._accepted_content_types == {b"Application/JSON": "application/json"}
    assert checks.needs_body(request)


def test_repeated_content_type_400() -> None:
    headers = [(b"Content-Type", b"application/json"), (b"Content-Type", b"application/json")]
    with pytest.raises(BadRequest):
        validation(**JSON_ONLY).check_head(exchange(headers, has_body=True))


def test_required_body_missing() -> None:
    with pytest.raises(BadRequest, match="body is required"):
        validation(body_required=True, **JSON_ONLY).check_head(exchange(method="POST"))


QUERY = {
    "query": {
        "page": {"type": "integer", "minimum": 1, "maximum": 100},
        "sort": {"enum": ["asc", "desc"]},
        "q": {"required": True, "max_length": 8},
    },
    "additional_query": False,
}


@pytest.mark.parametrize("query", [b"q=abc", b"q=abc&page=3&sort=asc", b"q="])
def test_query_accepted(query: bytes) -> None:
    validation(**QUERY).check_head(exchange(query=query))


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (b"page=2", "q: missing"),
        (b"q=a&page=x", "page: expected an integer"),
        (b"q=a&page=0", "page: below the minimum"),
        (b"q=a&page=101", "page: above the maximum"),
        (b"q=a&sort=up", "sort: not one of"),
        (b"q=abcdefghi", "q: longer than 8"),
        (b"q=a&q=b", "q: sent more than once"),
        (b"q=a&other=1", "other is not accepted"),
    ],
)
def test_query_rejected_naming_parameter(query: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        validation(**QUERY).check_head(exchange(query=query))


def test_header_and_path_params() -> None:
    checks = validation(
        headers={"X-Tenant": {"required": True, "pattern": "^[a-z]+$"}},
        path_params={"account_id": {"pattern": "^acc-[0-9]{4}$"}},
    )
    checks.check_head(exchange([(b"x-tenant", b"acme")], params={"account_id": "acc-1001"}))
    with pytest.raises(BadRequest, match="header X-Tenant: missing"):
        checks.check_head(exchange(params={"account_id": "acc-1001"}))
    with pytest.raises(BadRequest, match="path parameter account_id"):
        checks.check_head(exchange([(b"x-tenant", b"acme")], params={"account_id": "acc-1"}))


FORM_AND_JSON = {
    "content_types": ["application/json", "application/x-www-form-urlencoded"],
    "json": {"schema": {"type": "object"}},
    "form": {"fields": {"count": {"type": "integer"}}},
}


def body_exchange(content_type: bytes, data: bytes) -> Exchange:
    result = exchange([(b"content-type", content_type)], has_body=True, method="POST")
    result.body = RequestBody(1024, lambda: None, lambda: None)
    result.body.feed(data)
    result.body.finish()
    return result


def check_and_read(checks: RouteValidation, request: Exchange) -> bytes | None:
    async def run() -> bytes | None:
        pending = checks.check_body(request)
        if pending is not None:
            await pending
        assert request.body is not None
        return await request.body.read()

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("content_type", "has_body", "expected"),
    [
        (b"application/x-www-form-urlencoded", True, True),
        (b"application/json", True, True),
        (b"application/x-www-form-urlencoded", False, False),
        (b"text/plain", True, False),
    ],
)
def test_needs_body_for_form_and_json(content_type: bytes, has_body: bool, expected: bool) -> None:
    request = exchange([(b"content-type", content_type)], has_body=has_body, method="POST")
    assert validation(**FORM_AND_JSON).needs_body(request) is expected


def test_form_media_type_alone_needs_body() -> None:
    checks = validation(content_types=["multipart/form-data"])
    form = [(b"content-type", b"multipart/form-data; boundary=x")]
    assert checks.needs_body(exchange(form, has_body=True, method="POST"))


def test_check_body_dispatches_by_media_type() -> None:
    checks = validation(**FORM_AND_JSON)
    form = b"application/x-www-form-urlencoded"
    assert check_and_read(checks, body_exchange(form, b"count=3")) == b"count=3"
    assert check_and_read(checks, body_exchange(b"application/json", b"{}")) == b"{}"
    with pytest.raises(BadRequest, match="form field count: expected an integer"):
        check_and_read(checks, body_exchange(form, b"count=x"))
    with pytest.raises(BadRequest, match="invalid JSON"):
        check_and_read(checks, body_exchange(b"application/json", b"count=3"))
