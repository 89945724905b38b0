"""Tests for ringwall.config.response: CORS and security header settings."""

import re
from typing import Any

import pytest
from pydantic import ValidationError

from ringwall.config.response import (
    CorsConfig,
    HstsConfig,
    SecurityHeadersConfig,
    compile_origin_pattern,
    frame_ancestors,
    normalize_origin,
)
from ringwall.edge.cors import parse_serialized_origin


def make_cors(**fields: Any) -> CorsConfig:
    fields.setdefault("allow_origins", ["https://app.example.test"])
    return CorsConfig(**fields)


@pytest.mark.parametrize(
    ("written", "normalized"),
    [
        ("https://app.example.test", "https://app.example.test"),
        ("HTTPS://App.Example.TEST", "https://app.example.test"),
        ("https://app.example.test:443", "https://app.example.test"),
        ("http://app.example.test:80", "http://app.example.test"),
        ("http://app.example.test:443", "http://app.example.test:443"),
        ("https://app.example.test:80", "https://app.example.test:80"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("https://app.example.test:08443", "https://app.example.test:8443"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[0:0::1]:8080", "http://[::1]:8080"),
        ("https://[2001:DB8::1]", "https://[2001:db8::1]"),
        ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
        ("chrome-extension://abcdefghijklmnop", "chrome-extension://abcdefghijklmnop"),
    ],
)
def test_origin_normalized(written: str, normalized: str) -> None:
    assert normalize_origin(written) == normalized
    assert make_cors(allow_origins=[written]).allow_origins == (normalized,)


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("app.example.test", "expected scheme://host"),
        ("https://", "expected scheme://host"),
        ("://app.example.test", "expected scheme://host"),
        ("1https://app.example.test", "expected scheme://host"),
        ("https://app.example.test/", "remove the path"),
        ("https://app.example.test/app", "remove the path"),
        ("https://app.example.test?x=1", "remove the query"),
        ("https://app.example.test#top", "remove the fragment"),
        ("https://user@app.example.test", "remove the user info"),
        ("https://user:pass@app.example.test", "remove the user info"),
        ("https://app.example.test.", "trailing dot"),
        ("https://app..example.test", "invalid host"),
        ("https://-app.example.test", "invalid host"),
        ("https://app_1.example.test", "invalid host"),
        ("https://bücher.example", "ASCII"),
        ("https://app.example.test:0", "port from 1 to 65535"),
        ("https://app.example.test:65536", "port from 1 to 65535"),
        ("https://app.example.test:", "port from 1 to 65535"),
        ("https://app.example.test:+80", "port from 1 to 65535"),
        ("https://app.example.test:80:80", "brackets"),
        ("https://::1", "brackets"),
        ("https://[::1", "expected \\[IPV6\\]"),
        ("https://[::g]", "IPv6"),
        ("https://[::1]x", "expected \\[IPV6\\]"),
        ("https://1.2.3", "IPv4 address"),
        ("https://0x7f.0.0.1", "IPv4 address"),
        ("https://app.example.test\n", "without spaces"),
        ("https://app example.test", "without spaces"),
    ],
)
def test_origin_invalid(written: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        make_cors(allow_origins=[written])
    assert caught.value.errors()[0]["loc"] == ("allow_origins", 0)


def test_origin_not_a_string() -> None:
    with pytest.raises(ValidationError, match="expected an origin"):
        make_cors(allow_origins=[443])


def test_normalized_origins_pass_runtime_parse() -> None:
    # Every normalized origin must be in the form the request-side parser accepts,
    # or an allowed origin could never match.
    for written in [
        "HTTPS://App.Example.TEST:443",
        "http://[0:0::1]:8080",
        "http://127.0.0.1:8080",
        "https://app.example.test:8443",
    ]:
        normalized = normalize_origin(written)
        assert parse_serialized_origin(normalized.encode()) == normalized


def test_null_and_wildcard_kept_as_written() -> None:
    config = make_cors(allow_origins=["*", "null"])
    assert config.allow_origins == ("*", "null")


def test_wildcard_with_credentials_rejected() -> None:
    with pytest.raises(ValidationError, match="'\\*' cannot be used with allow_credentials"):
        make_cors(allow_origins=["*"], allow_credentials=True)


def test_null_with_credentials_rejected() -> None:
    with pytest.raises(ValidationError, match="'null' cannot be used with allow_credentials"):
        make_cors(allow_origins=["https://app.example.test", "null"], allow_credentials=True)


def test_null_without_credentials_accepted() -> None:
    config = make_cors(allow_origins=["null"])
    assert config.allow_origins == ("null",)
    assert config.allow_credentials is False


@pytest.mark.parametrize(
    "fields",
    [
        {"allow_origins": ["*", "https://app.example.test"]},
        {"allow_origins": ["*"], "allow_origin_patterns": [r"https://[a-z]+\.example\.test"]},
    ],
)
def test_wildcard_with_other_origins_rejected(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="already allows every origin"):
        CorsConfig(**fields)


def test_no_origin_rejected() -> None:
    with pytest.raises(ValidationError, match="set allow_origins or allow_origin_patterns"):
        CorsConfig()


def test_credentials_with_exact_origins_and_patterns() -> None:
    config = make_cors(
        allow_origin_patterns=[r"https://[a-z0-9-]+\.example\.test"], allow_credentials=True
    )
    assert config.allow_credentials is True


def test_pattern_compiled_at_load() -> None:
    config = make_cors(allow_origin_patterns=[r"https://[a-z0-9-]+\.example\.test"])
    (pattern,) = config.allow_origin_patterns
    assert isinstance(pattern, re.Pattern)
    assert pattern.fullmatch("https://app.example.test")


def test_pattern_serialized_as_text() -> None:
    config = make_cors(allow_origin_patterns=[r"https://[a-z]+\.example\.test"])
    dumped = config.model_dump()
    assert dumped["allow_origin_patterns"] == (r"https://[a-z]+\.example\.test",)
    assert CorsConfig(**dumped) == config


def test_pattern_invalid_regex_names_index() -> None:
    with pytest.raises(ValidationError, match="invalid regular expression") as caught:
        make_cors(allow_origin_patterns=[r"https://[a-z]+\.example\.test", "https://(app"])
    assert caught.value.errors()[0]["loc"] == ("allow_origin_patterns", 1)


@pytest.mark.parametrize("pattern", ["", 7, None])
def test_pattern_not_a_string(pattern: object) -> None:
    with pytest.raises(ValidationError, match="expected a regular expression"):
        make_cors(allow_origin_patterns=[pattern])


@pytest.mark.parametrize(
    ("pattern", "position"),
    [
        ("https://app.example.test", 11),
        (r"https://app\.example.test", 20),
        (r"https://[a-z]+.example\.test", 14),
        (r"https://(.)\.example\.test", 9),
    ],
)
def test_pattern_bare_dot_rejected(pattern: str, position: int) -> None:
    with pytest.raises(ValidationError, match=f"'.' at position {position} "):
        make_cors(allow_origin_patterns=[pattern])


@pytest.mark.parametrize(
    "pattern",
    [
        r"https://[a-z0-9-]+\.example\.test",
        r"https://.*\.example\.test",
        r"https://.+\.example\.test(:\d+)?",
        r"https://a.?b\.example\.test",
        r"https://x.{1,3}\.example\.test",
        r"https://[.a-z]+\.example\.test",
        r"https://[^.]+\.example\.test",
        r"https://[].a]+\.example\.test",
        r"https://[^].a]+\.example\.test",
        r"https://app\.example\.test",
    ],
)
def test_pattern_intended_dot_accepted(pattern: str) -> None:
    assert compile_origin_pattern(pattern).pattern == pattern


def test_methods_uppercased_and_deduplicated() -> None:
    config = make_cors(allow_methods=["get", "PUT", "put", "patch"])
    assert config.allow_methods == ("GET", "PUT", "PATCH")


def test_single_method_as_string() -> None:
    assert make_cors(allow_methods="DELETE").allow_methods == ("DELETE",)


@pytest.mark.parametrize(
    ("methods", "message"),
    [(["*"], "list the methods"), (["GET POST"], "invalid method"), ("", "invalid method")],
)
def test_methods_invalid(methods: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make_cors(allow_methods=methods)


def test_header_names_deduplicated_ignoring_case() -> None:
    config = make_cors(allow_headers=["Content-Type", "content-type", "Authorization"])
    assert config.allow_headers == ("Content-Type", "Authorization")


@pytest.mark.parametrize("key", ["allow_headers", "expose_headers"])
@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["*"], "list the header names"),
        (["X Trace"], "invalid header name"),
        (["X-Trace:"], "invalid header name"),
        (7, "expected a list of header names"),
    ],
)
def test_header_names_invalid(key: str, names: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make_cors(**{key: names})


def test_cors_defaults() -> None:
    config = make_cors()
    assert config.allow_methods == ("GET", "HEAD", "POST")
    assert config.allow_headers == ()
    assert config.expose_headers == ()
    assert config.allow_credentials is False
    assert config.max_age == 600.0


@pytest.mark.parametrize(("written", "seconds"), [("10m", 600.0), (0, 0.0), ("24h", 86400.0)])
def test_max_age_duration(written: object, seconds: float) -> None:
    assert make_cors(max_age=written).max_age == seconds


@pytest.mark.parametrize("written", ["25h", -1, "soon"])
def test_max_age_invalid(written: object) -> None:
    with pytest.raises(ValidationError):
        make_cors(max_age=written)


def test_cors_config_frozen() -> None:
    config = make_cors()
    with pytest.raises(ValidationError, match="frozen"):
        config.allow_credentials = True  # type: ignore[misc]


def test_cors_config_unknown_key_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        make_cors(allow_origin="https://app.example.test")


def test_security_headers_defaults() -> None:
    config = SecurityHeadersConfig()
    assert config.hsts == HstsConfig(
        enabled=True, max_age=31_536_000.0, include_subdomains=False, preload=False
    )
    assert config.x_content_type_options is True
    assert config.referrer_policy == "no-referrer"
    assert config.content_security_policy is not None
    assert frame_ancestors(config.content_security_policy) == "'none'"
    assert config.frame_options == "DENY"
    assert config.replace_upstream is False
    assert config.remove_server_header is True
    assert config.remove_powered_by is True


def test_hsts_preload_requirements() -> None:
    assert HstsConfig(include_subdomains=True, preload=True).preload is True
    with pytest.raises(ValidationError, match="preload needs include_subdomains"):
        HstsConfig(preload=True)
    with pytest.raises(ValidationError, match="preload needs include_subdomains"):
        HstsConfig(include_subdomains=True, preload=True, max_age="1h")


def test_hsts_max_age_duration() -> None:
    assert HstsConfig(max_age="8760h").max_age == 31_536_000.0
    assert HstsConfig(max_age=0).max_age == 0.0
    with pytest.raises(ValidationError):
        HstsConfig(max_age=-1)


def test_referrer_policy_values() -> None:
    config = SecurityHeadersConfig(referrer_policy="strict-origin-when-cross-origin")
    assert config.referrer_policy == "strict-origin-when-cross-origin"
    assert SecurityHeadersConfig(referrer_policy=None).referrer_policy is None
    with pytest.raises(ValidationError):
        SecurityHeadersConfig(referrer_policy="never")


def test_frame_options_case_insensitive() -> None:
    config = SecurityHeadersConfig(
        frame_options="sameorigin", content_security_policy="frame-ancestors 'self'"
    )
    assert config.frame_options == "SAMEORIGIN"
    with pytest.raises(ValidationError):
        SecurityHeadersConfig(frame_options="ALLOW-FROM https://a.test")


@pytest.mark.parametrize(
    ("frame_options", "policy"),
    [
        ("SAMEORIGIN", "default-src 'self'; frame-ancestors 'none'"),
        ("DENY", "frame-ancestors 'self'"),
    ],
)
def test_frame_options_conflict_rejected(frame_options: str, policy: str) -> None:
    with pytest.raises(ValidationError, match="disagrees with frame-ancestors"):
        SecurityHeadersConfig(frame_options=frame_options, content_security_policy=policy)


@pytest.mark.parametrize(
    ("frame_options", "policy"),
    [
        ("SAMEORIGIN", "frame-ancestors 'self' https://partner.example.test"),
        ("SAMEORIGIN", "default-src 'self'"),
        ("DENY", "default-src 'none'; frame-ancestors 'none'"),
        (None, "frame-ancestors 'self'"),
    ],
)
def test_frame_options_agreeing(frame_options: str | None, policy: str) -> None:
    config = SecurityHeadersConfig(frame_options=frame_options, content_security_policy=policy)
    assert config.content_security_policy == policy


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("default-src 'self'\r\nX-Injected: 1", "without line breaks"),
        ("default-src 'self'\x00", "without line breaks"),
        ("default-src 'sélf'", "printable ASCII"),
        (" ; ;", "at least one directive"),
        ("default_src 'self'", "invalid directive name"),
        (42, "expected a policy"),
    ],
)
def test_csp_invalid(policy: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SecurityHeadersConfig(content_security_policy=policy, frame_options=None)


def test_csp_turned_off() -> None:
    assert SecurityHeadersConfig(content_security_policy=None).content_security_policy is None
