"""Tests for ringwall.edge.cors: origin parsing, preflights and actual-response fields."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringwall.config.response import CorsConfig
from ringwall.edge.cors import (
    RESPONSE_FIELD_NAMES,
    VARY_ORIGIN,
    CorsPolicy,
    parse_serialized_origin,
)

APP = b"https://app.example.test"
PATTERN = r"https://[a-z0-9-]+\.tenants\.example\.test"
VARY_PREFLIGHT = (b"Vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers")


def make_policy(**fields: Any) -> CorsPolicy:
    fields.setdefault("allow_origins", [APP.decode()])
    return CorsPolicy(CorsConfig(**fields))


def field_values(fields: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for field_name, value in fields if field_name.lower() == name.lower()]


def allowed_origin(fields: list[tuple[bytes, bytes]]) -> bytes | None:
    values = field_values(fields, b"Access-Control-Allow-Origin")
    assert len(values) <= 1
    return values[0] if values else None


@pytest.fixture
def policy() -> CorsPolicy:
    return make_policy(
        allow_origins=[APP.decode(), "http://localhost:3000"],
        allow_origin_patterns=[PATTERN],
        allow_methods=["GET", "POST", "PUT", "DELETE"],
        allow_headers=["Content-Type", "Authorization", "X-Trace-Id"],
        expose_headers=["X-Request-Id", "RateLimit"],
        allow_credentials=True,
        max_age="10m",
    )


# -- parse_serialized_origin --


@pytest.mark.parametrize(
    "origin",
    [
        b"https://app.example.test",
        b"http://localhost:3000",
        b"https://app.example.test:8443",
        b"http://app.example.test:443",
        b"http://127.0.0.1:8080",
        b"http://[::1]:8080",
        b"https://[2001:db8::1]",
        b"https://xn--bcher-kva.example",
        b"chrome-extension://abcdefghijklmnop",
        b"https://a",
    ],
)
def test_parse_serialized_origin_accepts(origin: bytes) -> None:
    assert parse_serialized_origin(origin) == origin.decode()


@pytest.mark.parametrize(
    "origin",
    [
        b"",
        b"null",
        b"https://",
        b"app.example.test",
        b"//app.example.test",
        b"HTTPS://app.example.test",
        b"https://App.example.test",
        b"https://app.example.test/",
        b"https://app.example.test/path",
        b"https://app.example.test?",
        b"https://app.example.test#",
        b"https://user@app.example.test",
        b"https://app.example.test@evil.test",
        b"https://app.example.test.",
        b"https://app..example.test",
        b"https://-app.example.test",
        b"https://app.example.test:443",
        b"http://app.example.test:80",
        b"https://app.example.test:0",
        b"https://app.example.test:08443",
        b"https://app.example.test:65536",
        b"https://app.example.test:99999",
        b"https://app.example.test:",
        b" https://app.example.test",
        b"https://app.example.test ",
        b"https://app.example.test\r\n",
        b"https://app.example.test\x00",
        b"https://b\xc3\xbccher.example",
        b"https://[0:0::1]",
        b"https://[::1",
        b"https://[::g]",
        b"https://[::1%25eth0]",
        b"https://1.2.3",
        b"https://0x7f.0.0.1",
        b"https://127.0.0.01",
        b"https://256.0.0.1",
        b"https://" + b"a" * 64 + b".test",
        b"https://" + b"a." * 127 + b"a",
        b"https://" + b"a" * 600,
    ],
)
def test_parse_serialized_origin_rejects(origin: bytes) -> None:
    assert parse_serialized_origin(origin) is None


# -- actual responses --


def test_allowed_origin_reflected(policy: CorsPolicy) -> None:
    fields = policy.response_fields(APP)
    assert fields == [
        (b"Access-Control-Allow-Origin", APP),
        (b"Access-Control-Allow-Credentials", b"true"),
        (b"Access-Control-Expose-Headers", b"X-Request-Id, RateLimit"),
        VARY_ORIGIN,
    ]


def test_second_exact_origin_reflected(policy: CorsPolicy) -> None:
    assert allowed_origin(policy.response_fields(b"http://localhost:3000")) == (
        b"http://localhost:3000"
    )


@pytest.mark.parametrize(
    "origin",
    [
        b"https://app.example.test.evil.test",
        b"https://evil.test",
        b"https://evilapp.example.test",
        b"https://app.example.tes",
        b"http://app.example.test",
        b"https://app.example.test:8443",
        b"https://app.example.test:443",
        b"https://APP.example.test",
        b"https://app.example.test/",
        b"https://app.example.test.",
        b"https://app.example.test@evil.test",
        b"https://evil.test@app.example.test",
        b"https://app.example.test, https://evil.test",
        b" https://app.example.test",
        b"null",
        b"NULL",
        b"",
        b"*",
        b"http://localhost:3001",
        b"http://localhost",
    ],
)
def test_disallowed_origin_gets_only_vary(policy: CorsPolicy, origin: bytes) -> None:
    assert policy.response_fields(origin) == [VARY_ORIGIN]


def test_missing_origin_gets_only_vary(policy: CorsPolicy) -> None:
    assert policy.response_fields(None) == [VARY_ORIGIN]


def test_vary_origin_always_present(policy: CorsPolicy) -> None:
    for origin in [APP, b"https://t1.tenants.example.test", b"https://evil.test", b"null", None]:
        assert VARY_ORIGIN in policy.response_fields(origin)


def test_no_credentials_field_unless_configured() -> None:
    fields = make_policy().response_fields(APP)
    assert field_values(fields, b"Access-Control-Allow-Credentials") == []
    assert field_values(fields, b"Access-Control-Expose-Headers") == []
    assert fields == [(b"Access-Control-Allow-Origin", APP), VARY_ORIGIN]


def test_returned_list_is_fresh(policy: CorsPolicy) -> None:
    first = policy.response_fields(APP)
    first.append((b"X-Extra", b"1"))
    assert (b"X-Extra", b"1") not in policy.response_fields(APP)
    denied = policy.response_fields(None)
    denied.clear()
    assert policy.response_fields(None) == [VARY_ORIGIN]


# -- null and * --


def test_null_denied_by_default(policy: CorsPolicy) -> None:
    assert allowed_origin(policy.response_fields(b"null")) is None
    assert policy.preflight("OPTIONS", b"null", b"GET", None) is None


def test_null_allowed_when_listed() -> None:
    policy = make_policy(allow_origins=["null"])
    assert policy.response_fields(b"null") == [
        (b"Access-Control-Allow-Origin", b"null"),
        VARY_ORIGIN,
    ]
    assert allowed_origin(policy.response_fields(APP)) is None


def test_wildcard_allows_valid_origins() -> None:
    policy = make_policy(allow_origins=["*"])
    assert allowed_origin(policy.response_fields(APP)) == b"*"
    assert allowed_origin(policy.response_fields(b"https://anything.test:8443")) == b"*"


@pytest.mark.parametrize(
    "origin", [b"null", b"https://app.example.test/path", b"javascript:alert(1)", b"garbage"]
)
def test_wildcard_skips_null_and_malformed(origin: bytes) -> None:
    policy = make_policy(allow_origins=["*"])
    assert policy.response_fields(origin) == [VARY_ORIGIN]


def test_wildcard_with_listed_null() -> None:
    policy = make_policy(allow_origins=["*", "null"])
    assert allowed_origin(policy.response_fields(b"null")) == b"null"
    assert allowed_origin(policy.response_fields(APP)) == b"*"


# -- patterns --


@pytest.mark.parametrize(
    "origin", [b"https://t1.tenants.example.test", b"https://a-b-c.tenants.example.test"]
)
def test_pattern_match_reflected(policy: CorsPolicy, origin: bytes) -> None:
    fields = policy.response_fields(origin)
    assert allowed_origin(fields) == origin
    assert field_values(fields, b"Access-Control-Allow-Credentials") == [b"true"]


@pytest.mark.parametrize(
    "origin",
    [
        # The pattern is anchored at both ends.
        b"https://t1.tenants.example.test.evil.test",
        b"https://t1.tenants.example.test:8443",
        b"xhttps://t1.tenants.example.test",
        b"http://t1.tenants.example.test",
        b"https://a.b.tenants.example.test",
        b"https://tenants.example.test",
        b"https://t1.tenants.example.test/",
        b"https://T1.tenants.example.test",
    ],
)
def test_pattern_anchored(policy: CorsPolicy, origin: bytes) -> None:
    assert policy.response_fields(origin) == [VARY_ORIGIN]


@pytest.mark.parametrize(
    "origin",
    [
        b"https://evil.test/x.example.test",
        b"https://evil.test?.example.test",
        b"https://evil.test#.example.test",
        b"https://evil.test@x.example.test",
        b"https://x.example.test\n",
    ],
)
def test_wide_pattern_cannot_reach_past_host(origin: bytes) -> None:
    policy = make_policy(allow_origins=[], allow_origin_patterns=[r"https://.*\.example\.test"])
    assert policy.response_fields(origin) == [VARY_ORIGIN]
    assert allowed_origin(policy.response_fields(b"https://x.example.test")) == (
        b"https://x.example.test"
    )


def test_pattern_with_explicit_anchors() -> None:
    policy = make_policy(
        allow_origins=[], allow_origin_patterns=[r"^https://[a-z]+\.example\.test$"]
    )
    assert allowed_origin(policy.response_fields(APP)) == APP
    assert policy.response_fields(APP + b".evil.test") == [VARY_ORIGIN]


def test_decision_cache_bounded(policy: CorsPolicy) -> None:
    for index in range(3000):
        assert policy.response_fields(b"https://junk%d.test" % index) == [VARY_ORIGIN]
    assert len(policy._cache) <= 1024
    assert allowed_origin(policy.response_fields(b"https://t9.tenants.example.test")) == (
        b"https://t9.tenants.example.test"
    )
    assert allowed_origin(policy.response_fields(APP)) == APP


# -- preflight --


def test_preflight_allowed(policy: CorsPolicy) -> None:
    fields = policy.preflight("OPTIONS", APP, b"PUT", b"content-type,x-trace-id")
    assert fields == [
        (b"Access-Control-Allow-Origin", APP),
        (b"Access-Control-Allow-Credentials", b"true"),
        (b"Access-Control-Allow-Methods", b"GET, POST, PUT, DELETE"),
        (b"Access-Control-Allow-Headers", b"Content-Type, Authorization, X-Trace-Id"),
        (b"Access-Control-Max-Age", b"600"),
        VARY_PREFLIGHT,
    ]


def test_preflight_allowed_by_pattern(policy: CorsPolicy) -> None:
    origin = b"https://t1.tenants.example.test"
    fields = policy.preflight("OPTIONS", origin, b"DELETE", None)
    assert fields is not None
    assert allowed_origin(fields) == origin


@pytest.mark.parametrize("method", [b"PATCH", b"put", b"OPTIONS", b"TRACE", b"", b"GET, PUT"])
def test_preflight_denied_by_method(policy: CorsPolicy, method: bytes) -> None:
    assert policy.preflight("OPTIONS", APP, method, None) is None


@pytest.mark.parametrize(
    "headers",
    [
        b"x-other",
        b"content-type,x-other",
        b"authorization, cookie",
        b"content-type;x-trace-id",
        b"*",
    ],
)
def test_preflight_denied_by_header(policy: CorsPolicy, headers: bytes) -> None:
    assert policy.preflight("OPTIONS", APP, b"POST", headers) is None


@pytest.mark.parametrize(
    "headers",
    [
        b"",
        b"content-type",
        b"Content-Type, AUTHORIZATION",
        b"authorization,content-type,x-trace-id",
        b"content-type,,\tx-trace-id ,",
    ],
)
def test_preflight_header_list_forms(policy: CorsPolicy, headers: bytes) -> None:
    assert policy.preflight("OPTIONS", APP, b"POST", headers) is not None


def test_preflight_without_allowed_headers() -> None:
    policy = make_policy()
    fields = policy.preflight("OPTIONS", APP, b"GET", None)
    assert fields is not None
    assert field_values(fields, b"Access-Control-Allow-Headers") == []
    assert policy.preflight("OPTIONS", APP, b"POST", b"content-type") is None


@pytest.mark.parametrize(
    "origin", [b"https://app.example.test.evil.test", b"null", b"https://evil.test", b"x"]
)
def test_preflight_denied_by_origin(policy: CorsPolicy, origin: bytes) -> None:
    assert policy.preflight("OPTIONS", origin, b"GET", None) is None


@pytest.mark.parametrize(
    ("method", "origin", "request_method"),
    [
        ("GET", APP, b"GET"),
        ("OPTIONS", None, b"GET"),
        ("OPTIONS", APP, None),
        ("options", APP, b"GET"),
    ],
)
def test_not_a_preflight(
    policy: CorsPolicy, method: str, origin: bytes | None, request_method: bytes | None
) -> None:
    assert not CorsPolicy.is_preflight(method, origin, request_method)
    assert policy.preflight(method, origin, request_method, None) is None


def test_preflight_max_age_zero() -> None:
    fields = make_policy(max_age=0).preflight("OPTIONS", APP, b"GET", None)
    assert fields is not None
    assert field_values(fields, b"Access-Control-Max-Age") == [b"0"]


def test_preflight_wildcard_has_no_credentials() -> None:
    fields = make_policy(allow_origins=["*"]).preflight("OPTIONS", APP, b"GET", None)
    assert fields is not None
    assert allowed_origin(fields) == b"*"
    assert field_values(fields, b"Access-Control-Allow-Credentials") == []


def test_response_field_names_complete(policy: CorsPolicy) -> None:
    preflight = policy.preflight("OPTIONS", APP, b"GET", None)
    assert preflight is not None
    written = {name.lower() for name, _ in [*preflight, *policy.response_fields(APP)]}
    assert written - {b"vary"} == RESPONSE_FIELD_NAMES


# -- property --

_policy_for_property = make_policy(
    allow_origins=[APP.decode(), "null"],
    allow_origin_patterns=[r"https://.*\.example\.test"],
)


@given(
    st.one_of(
        st.binary(max_size=80),
        st.builds(
            lambda prefix, suffix: prefix + APP + suffix,
            st.sampled_from([b"", b" ", b"x", b"https://evil.test/", b"https://evil.test@"]),
            st.sampled_from([b"", b"/", b".", b".evil.test", b":443", b"@evil.test", b"\n"]),
        ),
    )
)
def test_any_origin_reflected_only_when_allowed(origin: bytes) -> None:
    fields = _policy_for_property.response_fields(origin)
    assert fields[-1] == VARY_ORIGIN
    reflected = allowed_origin(fields)
    if reflected is None:
        return
    assert reflected == origin
    if origin not in (APP, b"null"):
        text = parse_serialized_origin(origin)
        assert text is not None
        assert text.endswith(".example.test")
