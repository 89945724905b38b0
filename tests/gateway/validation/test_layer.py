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
