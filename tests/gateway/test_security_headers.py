"""Tests for ringwall.gateway.security_headers: fields added to and removed from responses."""

from typing import Any

import pytest

from ringwall.config.response import SecurityHeadersConfig
from ringwall.gateway.security_headers import SecurityHeaders, is_html

DEFAULT_CSP = b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
JSON = (b"Content-Type", b"application/json")
HTML = (b"Content-Type", b"text/html; charset=utf-8")


def make_headers(https: bool = True, **fields: Any) -> SecurityHeaders:
    return SecurityHeaders(SecurityHeadersConfig(**fields), https=https)


def values(fields: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for field_name, value in fields if field_name.lower() == name.lower()]


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (b"text/html", True),
        (b"TEXT/HTML", True),
        (b"text/html; charset=utf-8", True),
        (b" text/html ;charset=utf-8", True),
        (b"application/xhtml+xml", True),
        (b"application/json", False),
        (b"text/plain", False),
        (b"text/htmlx", False),
        (b"text/html-sandboxed", False),
        (b"image/svg+xml", False),
        (b"", False),
    ],
)
def test_is_html(content_type: bytes, expected: bool) -> None:
    assert is_html(content_type) is expected


def test_json_response_defaults_on_https() -> None:
    upstream = [JSON, (b"Content-Length", b"2")]
    assert make_headers().apply(200, upstream) == [
        JSON,
        (b"Content-Length", b"2"),
        (b"Strict-Transport-Security", b"max-age=31536000"),
        (b"X-Content-Type-Options", b"nosniff"),
        (b"Referrer-Policy", b"no-referrer"),
    ]


def test_html_response_defaults_on_https() -> None:
    assert make_headers().apply(200, [HTML]) == [
        HTML,
        (b"Strict-Transport-Security", b"max-age=31536000"),
        (b"X-Content-Type-Options", b"nosniff"),
        (b"Referrer-Policy", b"no-referrer"),
        (b"Content-Security-Policy", DEFAULT_CSP),
        (b"X-Frame-Options", b"DENY"),
    ]


def test_input_not_modified() -> None:
    upstream = [HTML, (b"Server", b"nginx")]
    make_headers().apply(200, upstream)
    assert upstream == [HTML, (b"Server", b"nginx")]


# -- HSTS --


def test_hsts_only_on_https() -> None:
    assert values(make_headers(https=True).apply(200, [JSON]), b"Strict-Transport-Security") == [
        b"max-age=31536000"
    ]
    assert values(make_headers(https=False).apply(200, [JSON]), b"Strict-Transport-Security") == []


def test_hsts_upstream_copy_removed_on_http() -> None:
    upstream = [JSON, (b"Strict-Transport-Security", b"max-age=60")]
    fields = make_headers(https=False).apply(200, upstream)
    assert values(fields, b"Strict-Transport-Security") == []


def test_hsts_replaces_upstream_copy_on_https() -> None:
    upstream = [JSON, (b"strict-transport-security", b"max-age=60")]
    fields = make_headers(https=True).apply(200, upstream)
    assert values(fields, b"Strict-Transport-Security") == [b"max-age=31536000"]


def test_hsts_disabled_passes_upstream_copy() -> None:
    upstream = [JSON, (b"Strict-Transport-Security", b"max-age=60")]
    fields = make_headers(https=True, hsts={"enabled": False}).apply(200, upstream)
    assert values(fields, b"Strict-Transport-Security") == [b"max-age=60"]


@pytest.mark.parametrize(
    ("hsts", "expected"),
    [
        ({"max_age": "1h"}, b"max-age=3600"),
        ({"max_age": 0}, b"max-age=0"),
        ({"include_subdomains": True}, b"max-age=31536000; includeSubDomains"),
        (
            {"include_subdomains": True, "preload": True, "max_age": "17520h"},
            b"max-age=63072000; includeSubDomains; preload",
        ),
    ],
)
def test_hsts_value(hsts: dict[str, Any], expected: bytes) -> None:
    fields = make_headers(hsts=hsts).apply(200, [JSON])
    assert values(fields, b"Strict-Transport-Security") == [expected]


# -- nosniff and Referrer-Policy --


def test_nosniff_replaces_upstream_copy() -> None:
    upstream = [JSON, (b"X-Content-Type-Options", b"nosniff")]
    fields = make_headers().apply(200, upstream)
    assert values(fields, b"X-Content-Type-Options") == [b"nosniff"]


def test_nosniff_off_passes_upstream_copy() -> None:
    headers = make_headers(x_content_type_options=False)
    upstream = [JSON, (b"X-Content-Type-Options", b"nosniff")]
    assert values(headers.apply(200, upstream), b"X-Content-Type-Options") == [b"nosniff"]
    assert values(headers.apply(200, [JSON]), b"X-Content-Type-Options") == []


def test_nosniff_on_every_status() -> None:
    headers = make_headers()
    for status in (200, 204, 304, 404, 500):
        assert values(headers.apply(status, [JSON]), b"X-Content-Type-Options") == [b"nosniff"]


def test_referrer_policy_upstream_value_kept() -> None:
    upstream = [JSON, (b"Referrer-Policy", b"same-origin")]
    fields = make_headers().apply(200, upstream)
    assert values(fields, b"Referrer-Policy") == [b"same-origin"]


def test_referrer_policy_replaced_when_configured() -> None:
    upstream = [JSON, (b"Referrer-Policy", b"unsafe-url")]
    fields = make_headers(replace_upstream=True).apply(200, upstream)
    assert values(fields, b"Referrer-Policy") == [b"no-referrer"]


def test_referrer_policy_configured_value() -> None:
    fields = make_headers(referrer_policy="strict-origin-when-cross-origin").apply(200, [JSON])
    assert values(fields, b"Referrer-Policy") == [b"strict-origin-when-cross-origin"]


def test_referrer_policy_off() -> None:
    assert values(make_headers(referrer_policy=None).apply(200, [JSON]), b"Referrer-Policy") == []
    upstream = [JSON, (b"Referrer-Policy", b"origin")]
    fields = make_headers(referrer_policy=None, replace_upstream=True).apply(200, upstream)
    assert values(fields, b"Referrer-Policy") == [b"origin"]


# -- CSP and frame options --


@pytest.mark.parametrize(
    "content_type",
    [b"application/json", b"text/plain", b"image/svg+xml", b"application/problem+json"],
)
def test_csp_and_frame_options_only_on_html(content_type: bytes) -> None:
    fields = make_headers().apply(200, [(b"Content-Type", content_type)])
    assert values(fields, b"Content-Security-Policy") == []
    assert values(fields, b"X-Frame-Options") == []


def test_csp_absent_without_content_type() -> None:
    fields = make_headers().apply(204, [])
    assert values(fields, b"Content-Security-Policy") == []
    assert values(fields, b"X-Frame-Options") == []


@pytest.mark.parametrize(
    "content_type", [b"text/html", b"Text/HTML;charset=utf-8", b"application/xhtml+xml"]
)
def test_csp_and_frame_options_on_html(content_type: bytes) -> None:
    fields = make_headers().apply(200, [(b"content-type", content_type)])
    assert values(fields, b"Content-Security-Policy") == [DEFAULT_CSP]
    assert values(fields, b"X-Frame-Options") == [b"DENY"]


def test_html_detected_after_other_fields() -> None:
    upstream = [(b"Content-Length", b"10"), (b"Server", b"x"), HTML]
    fields = make_headers().apply(200, upstream)
    assert values(fields, b"Content-Security-Policy") == [DEFAULT_CSP]


def test_html_among_several_content_types() -> None:
    fields = make_headers().apply(200, [JSON, HTML])
    assert values(fields, b"Content-Security-Policy") == [DEFAULT_CSP]


def test_csp_on_html_error_status() -> None:
    fields = make_headers().apply(502, [HTML])
    assert values(fields, b"Content-Security-Policy") == [DEFAULT_CSP]


def test_upstream_csp_and_frame_options_kept() -> None:
    upstream = [
        HTML,
        (b"Content-Security-Policy", b"script-src 'nonce-abc'"),
        (b"X-Frame-Options", b"SAMEORIGIN"),
    ]
    fields = make_headers().apply(200, upstream)
    assert values(fields, b"Content-Security-Policy") == [b"script-src 'nonce-abc'"]
    assert values(fields, b"X-Frame-Options") == [b"SAMEORIGIN"]


def test_upstream_csp_kept_frame_options_added() -> None:
    upstream = [HTML, (b"content-security-policy", b"default-src 'self'")]
    fields = make_headers().apply(200, upstream)
    assert values(fields, b"Content-Security-Policy") == [b"default-src 'self'"]
    assert values(fields, b"X-Frame-Options") == [b"DENY"]


def test_upstream_csp_replaced_on_html() -> None:
    upstream = [
        (b"Content-Security-Policy", b"default-src *"),
        (b"X-Frame-Options", b"SAMEORIGIN"),
        HTML,
        (b"ETag", b'"1"'),
    ]
    fields = make_headers(replace_upstream=True).apply(200, upstream)
    assert values(fields, b"Content-Security-Policy") == [DEFAULT_CSP]
    assert values(fields, b"X-Frame-Options") == [b"DENY"]
    assert values(fields, b"ETag") == [b'"1"']


def test_replace_keeps_non_html_csp() -> None:
    upstream = [
        (b"Content-Type", b"image/svg+xml"),
        (b"Content-Security-Policy", b"default-src 'none'"),
    ]
    fields = make_headers(replace_upstream=True).apply(200, upstream)
    assert values(fields, b"Content-Security-Policy") == [b"default-src 'none'"]


def test_csp_off_passes_upstream_copy() -> None:
    upstream = [HTML, (b"Content-Security-Policy", b"default-src 'self'")]
    headers = make_headers(content_security_policy=None, replace_upstream=True)
    assert values(headers.apply(200, upstream), b"Content-Security-Policy") == [
        b"default-src 'self'"
    ]
    assert values(headers.apply(200, [HTML]), b"Content-Security-Policy") == []


def test_frame_options_off() -> None:
    fields = make_headers(frame_options=None).apply(200, [HTML])
    assert values(fields, b"X-Frame-Options") == []
    assert values(fields, b"Content-Security-Policy") == [DEFAULT_CSP]


def test_custom_csp_and_sameorigin() -> None:
    headers = make_headers(
        content_security_policy="default-src 'self'; frame-ancestors 'self'",
        frame_options="SAMEORIGIN",
    )
    fields = headers.apply(200, [HTML])
    assert values(fields, b"Content-Security-Policy") == [
        b"default-src 'self'; frame-ancestors 'self'"
    ]
    assert values(fields, b"X-Frame-Options") == [b"SAMEORIGIN"]


# -- removal of Server and X-Powered-By --


def test_server_and_powered_by_removed() -> None:
    upstream = [
        JSON,
        (b"Server", b"gunicorn/23.0"),
        (b"x-powered-by", b"Express"),
        (b"SERVER", b"x"),
    ]
    fields = make_headers().apply(200, upstream)
    assert values(fields, b"Server") == []
    assert values(fields, b"X-Powered-By") == []


def test_server_and_powered_by_kept_when_configured() -> None:
    upstream = [JSON, (b"Server", b"gunicorn/23.0"), (b"X-Powered-By", b"Express")]
    fields = make_headers(remove_server_header=False, remove_powered_by=False).apply(200, upstream)
    assert values(fields, b"Server") == [b"gunicorn/23.0"]
    assert values(fields, b"X-Powered-By") == [b"Express"]


def test_only_server_removed() -> None:
    upstream = [JSON, (b"Server", b"gunicorn/23.0"), (b"X-Powered-By", b"Express")]
    fields = make_headers(remove_powered_by=False).apply(200, upstream)
    assert values(fields, b"Server") == []
    assert values(fields, b"X-Powered-By") == [b"Express"]


def test_interim_response_only_removals() -> None:
    upstream = [(b"Link", b"</app.css>; rel=preload"), (b"Server", b"nginx")]
    assert make_headers().apply(103, upstream) == [(b"Link", b"</app.css>; rel=preload")]


# -- no duplicates --


@pytest.mark.parametrize("replace_upstream", [False, True])
@pytest.mark.parametrize("https", [False, True])
def test_no_field_duplicated(replace_upstream: bool, https: bool) -> None:
    upstream = [
        HTML,
        (b"Strict-Transport-Security", b"max-age=1"),
        (b"X-Content-Type-Options", b"nosniff"),
        (b"Referrer-Policy", b"origin"),
        (b"Content-Security-Policy", b"default-src 'self'"),
        (b"X-Frame-Options", b"SAMEORIGIN"),
    ]
    fields = make_headers(https=https, replace_upstream=replace_upstream).apply(200, upstream)
    names = [name.lower() for name, _ in fields]
    assert len(names) == len(set(names))


def test_everything_off_passes_fields_through() -> None:
    headers = make_headers(
        hsts={"enabled": False},
        x_content_type_options=False,
        referrer_policy=None,
        content_security_policy=None,
        frame_options=None,
        remove_server_header=False,
        remove_powered_by=False,
    )
    upstream = [HTML, (b"Server", b"nginx"), (b"Strict-Transport-Security", b"max-age=1")]
    assert headers.apply(200, upstream) == upstream
