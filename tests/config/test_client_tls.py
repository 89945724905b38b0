"""Loading the TLS settings of connections to upstreams and to Redis, and their load errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from ringwall.config import parse_config
from ringwall.config.tls import CertificateFiles
from tests.support.config_issues import issue_at, issues_of
from tests.support.tls_upstream import TestPki


def upstream_yaml(targets: str, tls: str = "") -> str:
    tls_line = f"    tls: {tls}\n" if tls else ""
    return f"upstreams:\n  api:\n    targets: {targets}\n{tls_line}"


def store_yaml(url: str, extra: str = "") -> str:
    return f"limits:\n  store: {{kind: redis, url: '{url}'{extra}}}\n"


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path)


def mismatched_pair(pki: TestPki) -> CertificateFiles:
    """A certificate file with the key of another certificate."""
    first = pki.client("first")
    second = pki.client("second")
    return CertificateFiles(cert=first.cert, key=second.key)


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("https://backend", "backend", 443),
        ("https://backend:8443", "backend", 8443),
        ("HTTPS://Backend.Internal", "backend.internal", 443),
        ("https://[::1]", "::1", 443),
        ("https://127.0.0.1:9443/", "127.0.0.1", 9443),
    ],
)
def test_https_target_parsed(url: str, host: str, port: int) -> None:
    upstream = parse_config(upstream_yaml(f"['{url}']"), {}).upstreams["api"]
    target = upstream.targets[0]
    assert (target.scheme, target.host, target.port) == ("https", host, port)
    assert upstream.https


def test_http_target_scheme_recorded() -> None:
    upstream = parse_config(upstream_yaml("[http://backend]"), {}).upstreams["api"]
    assert upstream.targets[0].scheme == "http"
    assert not upstream.https


def test_https_target_with_tls(pki: TestPki) -> None:
    client = pki.client("gateway")
    tls = (
        f"{{ca: '{pki.ca_file}', server_name: API.Internal.Test, pins: "
        "[sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=], "
        f"client_certificate: {{cert: '{client.cert}', key: '{client.key}'}}}}"
    )
    config = parse_config(upstream_yaml("[https://backend]", tls), {})
    settings = config.upstreams["api"].tls
    assert settings is not None
    assert settings.ca == pki.ca_file
    assert settings.server_name == "api.internal.test"
    assert settings.pins == ("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",)
    assert settings.client_certificate == client


def test_mixed_schemes_rejected() -> None:
    issues = issues_of(upstream_yaml("[http://one:80, https://two]"))
    issue = issue_at(issues, "upstreams.api")
    assert "mix http:// and https://" in issue.message
    assert "split them into two upstreams" in issue.message


def test_tls_with_http_targets_rejected(pki: TestPki) -> None:
    issues = issues_of(upstream_yaml("[http://one]", f"{{ca: '{pki.ca_file}'}}"))
    issue = issue_at(issues, "upstreams.api")
    assert "tls applies to https:// targets only" in issue.message


def test_unsupported_target_scheme() -> None:
    issue = issue_at(issues_of(upstream_yaml("[ftp://one]")), "upstreams.api.targets")
    assert "expected http://HOST[:PORT] or https://HOST[:PORT]" in issue.message


def test_https_target_path_rejected() -> None:
    issue = issue_at(issues_of(upstream_yaml("[https://one/api]")), "upstreams.api.targets")
    assert "expected https://HOST:PORT with no path" in issue.message


def test_client_key_mismatch_names_key(pki: TestPki) -> None:
    pair = mismatched_pair(pki)
    tls = f"{{client_certificate: {{cert: '{pair.cert}', key: '{pair.key}'}}}}"
    issue = issue_at(issues_of(upstream_yaml("[https://one]", tls)), "upstreams.api.tls")
    assert f"private key file {pair.key} does not match the certificate in {pair.cert}" in (
        issue.message
    )


def test_encrypted_client_key_rejected(pki: TestPki, tmp_path: Path) -> None:
    client = pki.client("gateway")
    key = serialization.load_pem_private_key(client.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"password"),
        )
    )
    tls = f"{{client_certificate: {{cert: '{client.cert}', key: '{encrypted}'}}}}"
    issue = issue_at(issues_of(upstream_yaml("[https://one]", tls)), "upstreams.api.tls")
    assert f"private key file {encrypted} is encrypted" in issue.message


def test_ca_without_certificate_rejected(tmp_path: Path) -> None:
    ca = tmp_path / "not-a-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    issue = issue_at(
        issues_of(upstream_yaml("[https://one]", f"{{ca: '{ca}'}}")), "upstreams.api.tls"
    )
    assert f"CA file {ca}: no CA certificate could be loaded" in issue.message


def test_store_tls_loads(pki: TestPki) -> None:
    client = pki.client("gateway")
    extra = (
        f", tls: {{ca: '{pki.ca_file}', server_name: redis.internal.test, "
        f"client_certificate: {{cert: '{client.cert}', key: '{client.key}'}}}}"
    )
    config = parse_config(store_yaml("rediss://redis.internal.test:6380", extra), {})
    tls = config.limits.store.tls
    assert tls is not None
    assert tls.server_name == "redis.internal.test"
    assert tls.client_certificate == client


def test_store_ca_file_still_loads(pki: TestPki) -> None:
    extra = f", ca_file: '{pki.ca_file}'"
    config = parse_config(store_yaml("rediss://127.0.0.1:6380", extra), {})
    assert config.limits.store.ca_file == str(pki.ca_file)
    assert config.limits.store.tls is None


def test_store_ca_file_and_tls_rejected(pki: TestPki) -> None:
    extra = f", ca_file: '{pki.ca_file}', tls: {{ca: '{pki.ca_file}'}}"
    issue = issue_at(issues_of(store_yaml("rediss://127.0.0.1:6380", extra)), "limits.store")
    assert "ca_file and tls are both set" in issue.message


def test_store_tls_needs_rediss(pki: TestPki) -> None:
    extra = f", tls: {{ca: '{pki.ca_file}'}}"
    issue = issue_at(issues_of(store_yaml("redis://127.0.0.1:6379", extra)), "limits.store")
    assert "TLS settings need a rediss:// URL" in issue.message


def test_store_client_key_mismatch_names_key(pki: TestPki) -> None:
    pair = mismatched_pair(pki)
    extra = f", tls: {{client_certificate: {{cert: '{pair.cert}', key: '{pair.key}'}}}}"
    issue = issue_at(issues_of(store_yaml("rediss://127.0.0.1:6380", extra)), "limits.store")
    assert issue.message.startswith("tls: private key file")
    assert f"{pair.key} does not match the certificate in {pair.cert}" in issue.message


def test_store_tls_needs_kind_redis(pki: TestPki) -> None:
    text = f"limits:\n  store: {{kind: embedded, tls: {{ca: '{pki.ca_file}'}}}}\n"
    issue = issue_at(issues_of(text), "limits.store")
    assert "tls is for kind redis" in issue.message
