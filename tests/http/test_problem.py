"""Tests for ringwall.http.problem: RFC 9457 problem responses for rejections."""

import json
from typing import Any

import pytest

from ringwall.errors import (
    BadGateway,
    BadRequest,
    GatewayTimeout,
    HeaderFieldsTooLarge,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Rejection,
    RequestTimeout,
    ServiceUnavailable,
    UriTooLong,
    VersionNotSupported,
)
from ringwall.http.problem import problem_body, problem_response, problem_type, reason_phrase

REQUEST_ID = "abc123-1f"


def split_response(response: bytes) -> tuple[str, dict[str, str], bytes]:
    """Split a response into its status line, headers (one value per name) and body."""
    head, separator, body = response.partition(b"\r\n\r\n")
    assert separator, response
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(": ")
        assert name.lower() not in headers, f"duplicate header {name}"
        headers[name.lower()] = value
    return status_line, headers, body


def render(rejection: Rejection, **options: Any) -> tuple[str, dict[str, str], bytes]:
    return split_response(problem_response(rejection, REQUEST_ID, "X-Request-Id", **options))


@pytest.mark.parametrize(
    ("kind", "status_line"),
    [
        (BadRequest, "HTTP/1.1 400 Bad Request"),
        (NotFound, "HTTP/1.1 404 Not Found"),
        (MethodNotAllowed, "HTTP/1.1 405 Method Not Allowed"),
        (RequestTimeout, "HTTP/1.1 408 Request Timeout"),
        (PayloadTooLarge, "HTTP/1.1 413 Content Too Large"),
        (UriTooLong, "HTTP/1.1 414 URI Too Long"),
        (HeaderFieldsTooLarge, "HTTP/1.1 431 Request Header Fields Too Large"),
        (BadGateway, "HTTP/1.1 502 Bad Gateway"),
        (ServiceUnavailable, "HTTP/1.1 503 Service Unavailable"),
        (GatewayTimeout, "HTTP/1.1 504 Gateway Timeout"),
        (VersionNotSupported, "HTTP/1.1 505 HTTP Version Not Supported"),
    ],
)
def test_status_line(kind: type[Rejection], status_line: str) -> None:
    line, _, _ = render(kind("protocol", "reason"))

    assert line == status_line


def test_body_fields() -> None:
    _, _, body = render(NotFound("routing", "no route matches this host and path"))

    document = json.loads(body)
    assert document["status"] == 404
    assert document["title"] == "Not Found"
    assert document["type"] == "urn:ringwall:problem:not-found"
    assert document["layer"] == "routing"
    assert document["request_id"] == REQUEST_ID
    assert document["detail"] == "no route matches this host and path"


def test_body_keys_exact() -> None:
    document = json.loads(problem_body(BadRequest("protocol", "x"), REQUEST_ID))

    assert set(document) == {"type", "title", "status", "detail", "layer", "request_id"}


@pytest.mark.parametrize(
    ("rejection", "type_uri"),
    [
        (BadRequest("protocol", "x"), "urn:ringwall:problem:bad-request"),
        (PayloadTooLarge("limits", "x"), "urn:ringwall:problem:content-too-large"),
        (VersionNotSupported("protocol", "x"), "urn:ringwall:problem:http-version-not-supported"),
    ],
)
def test_problem_type(rejection: Rejection, type_uri: str) -> None:
    assert problem_type(rejection) == type_uri


def test_body_ascii_json() -> None:
    body = problem_body(BadRequest("protocol", 'quote " and caf\u00e9'), "id\u00e9")

    assert body.isascii()
    assert json.loads(body)["detail"] == 'quote " and caf\u00e9'


def test_content_type() -> None:
    _, headers, _ = render(BadRequest("protocol", "x"))

    assert headers["content-type"] == "application/problem+json"


def test_content_length_matches() -> None:
    _, headers, body = render(BadRequest("protocol", "a longer reason " * 10))

    assert int(headers["content-length"]) == len(body)


def test_cache_control_no_store() -> None:
    _, headers, _ = render(BadRequest("protocol", "x"))

    assert headers["cache-control"] == "no-store"


def test_request_id_header() -> None:
    response = problem_response(BadRequest("protocol", "x"), REQUEST_ID, "X-Trace-Id")

    _, headers, _ = split_response(response)

    assert headers["x-trace-id"] == REQUEST_ID


def test_head_only_omits_body() -> None:
    rejection = NotFound("routing", "x")

    response = problem_response(rejection, REQUEST_ID, "X-Request-Id", head_only=True)
    full = problem_response(rejection, REQUEST_ID, "X-Request-Id")

    assert response.endswith(b"\r\n\r\n")
    assert full.startswith(response)
    assert split_response(response)[2] == b""


def test_head_only_keeps_length() -> None:
    rejection = NotFound("routing", "x")

    _, headers, _ = render(rejection, head_only=True)

    assert int(headers["content-length"]) == len(problem_body(rejection, REQUEST_ID))


def test_close_option_adds_header() -> None:
    _, headers, _ = render(BadRequest("protocol", "x"), close=True)

    assert headers["connection"] == "close"


def test_close_from_rejection() -> None:
    _, headers, _ = render(PayloadTooLarge("limits", "x", close=True))

    assert headers["connection"] == "close"


def test_no_close_by_default() -> None:
    _, headers, _ = render(BadRequest("protocol", "x"))

    assert "connection" not in headers


def test_close_header_once() -> None:
    response = problem_response(
        BadRequest("protocol", "x", close=True), REQUEST_ID, "X-Request-Id", close=True
    )

    assert response.count(b"Connection: close") == 1


def test_extra_headers_added() -> None:
    rejection = MethodNotAllowed("routing", "x", headers=(("Allow", "GET, POST"),))

    _, headers, _ = render(rejection)

    assert headers["allow"] == "GET, POST"


def test_several_extra_headers() -> None:
    rejection = ServiceUnavailable("proxy", "x", headers=(("Retry-After", "5"), ("X-A", "b")))

    _, headers, _ = render(rejection)

    assert headers["retry-after"] == "5"
    assert headers["x-a"] == "b"


@pytest.mark.parametrize(
    ("status", "phrase"),
    [(200, b"OK"), (404, b"Not Found"), (502, b"Bad Gateway"), (599, b"Unknown")],
)
def test_reason_phrase(status: int, phrase: bytes) -> None:
    assert reason_phrase(status) == phrase
