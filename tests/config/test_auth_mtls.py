"""Configuration of client-certificate authentication: `auth.mtls` and routes with `auth: mtls`."""

import datetime
from pathlib import Path

import pytest

from ringwall.config import parse_config
from ringwall.config.model import AUTH_METHODS, MtlsConfig, Route
from ringwall.tls import devca
from ringwall.tls.client_identity import NameRule
from tests.support.config_issues import issue_at, issues_of

NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write a development CA and a server certificate, as `ringwall certs dev` does."""
    directory = tmp_path_factory.mktemp("certs")
    ca = devca.create_ca(NOW)
    server = devca.issue_leaf(ca, devca.SERVER, NOW)
    (directory / devca.CA_FILE).write_bytes(devca.certificate_pem(ca.certificate))
    (directory / devca.SERVER_FILE).write_bytes(
        devca.leaf_file_pem(devca.SERVER, server.certificate, ca.certificate)
    )
    (directory / devca.SERVER_KEY_FILE).write_bytes(devca.private_key_pem(server.key))
    return directory


def config_text(
    directory: Path, mtls: str, *, client_auth: str = "optional", auth: str = "mtls"
) -> str:
    return f"""\
server:
  tls:
    listen: 127.0.0.1:8443
    certificates:
      - cert: {directory / devca.SERVER_FILE}
        key: {directory / devca.SERVER_KEY_FILE}
    client_auth:
      mode: {client_auth}
      ca: {directory / devca.CA_FILE}
auth:
{mtls}
upstreams:
  api:
    targets: [http://127.0.0.1:9000]
routes:
  - path: /api/internal/
    upstream: api
    auth: {auth}
    authorize:
      - roles: [internal]
"""


DEMO_MTLS = """\
  mtls:
    allow:
      - dns: demo-client.ringwall.localhost
      - dns: "*.Clients.example.test"
      - uri: spiffe://example.test/payments
      - email: ops@example.test
      - ip: "2001:db8:0::1"
      - subject: CN=demo-client,O=Ringwall development
    subject: san
    roles:
      internal: [{dns: demo-client.ringwall.localhost}]
    scopes:
      payments:write: [{uri: spiffe://example.test/payments}]
"""


def test_mtls_is_an_auth_method() -> None:
    assert "mtls" in AUTH_METHODS
    route = Route(path="/", upstream="api", auth="mtls")
    assert route.auth.methods == ("mtls",)
    assert not route.auth.public


def test_mtls_config_loads(tls_files: Path) -> None:
    config = parse_config(config_text(tls_files, DEMO_MTLS), {})

    mtls = config.auth.mtls
    assert mtls is not None
    policy = mtls.policy()
    assert policy.allow == (
        NameRule("dns", "demo-client.ringwall.localhost"),
        NameRule("dns", "*.clients.example.test"),
        NameRule("uri", "spiffe://example.test/payments"),
        NameRule("email", "ops@example.test"),
        NameRule("ip", "2001:db8::1"),
        NameRule("subject", "CN=demo-client,O=Ringwall development"),
    )
    assert policy.subject == "san"
    assert policy.roles == {"internal": (NameRule("dns", "demo-client.ringwall.localhost"),)}
    assert policy.scopes == {"payments:write": (NameRule("uri", "spiffe://example.test/payments"),)}
    assert config.routes[0].auth.methods == ("mtls",)


def test_empty_mtls_section_accepts_any(tls_files: Path) -> None:
    config = parse_config(config_text(tls_files, "  mtls: {}"), {})

    assert config.auth.mtls == MtlsConfig()
    assert config.auth.mtls.policy().allow == ()


def test_mtls_with_other_methods(tls_files: Path) -> None:
    text = config_text(tls_files, "  mtls: {}", auth="[api_key, mtls]")
    text = text.replace("\nauth:\n", "\nauth:\n  api_keys: {file: keys.json}\n", 1)

    config = parse_config(text, {})

    assert config.routes[0].auth.methods == ("api_key", "mtls")


def test_route_needs_mtls_section(tls_files: Path) -> None:
    issues = issues_of(config_text(tls_files, "  claims: {}"))

    assert "mtls needs auth.mtls" in issue_at(issues, "routes[0].auth").message


def test_route_needs_client_certificates_requested(tls_files: Path) -> None:
    issues = issues_of(config_text(tls_files, "  mtls: {}", client_auth="none"))

    message = issue_at(issues, "routes[0].auth").message
    assert "client_auth mode optional or required" in message


def test_sni_entry_may_request_certificates(tls_files: Path) -> None:
    text = config_text(tls_files, "  mtls: {}", client_auth="none").replace(
        "    client_auth:\n      mode: none\n",
        "    sni:\n      - names: [internal.example.test]\n        client_auth:\n"
        "          mode: required\n          ca: CA\n    client_auth:\n      mode: none\n",
    )
    text = text.replace("ca: CA", f"ca: {tls_files / devca.CA_FILE}")

    config = parse_config(text, {})

    assert config.server.tls is not None
    assert config.server.tls.sni[0].client_auth.mode == "required"


def test_route_needs_tls_listener() -> None:
    text = """\
auth:
  mtls: {}
upstreams:
  api:
    targets: [http://127.0.0.1:9000]
routes:
  - path: /
    upstream: api
    auth: mtls
"""

    issues = issues_of(text)

    assert "mtls needs server.tls" in issue_at(issues, "routes[0].auth").message


def test_missing_route_auth_lists_mtls() -> None:
    text = (
        "upstreams: {api: {targets: [http://127.0.0.1:9000]}}\nroutes: [{path: /, upstream: api}]"
    )

    issues = issues_of(text)

    assert "jwt, api_key, mtls" in issue_at(issues, "routes[0].auth").message


def test_unknown_route_method(tls_files: Path) -> None:
    issues = issues_of(config_text(tls_files, "  mtls: {}", auth="tls"))

    assert "'jwt', 'api_key' or 'mtls'" in issue_at(issues, "routes[0].auth").message


@pytest.mark.parametrize(
    ("mtls", "path", "message"),
    [
        (
            "  mtls:\n    allow: [{dns: a.example.test, uri: 'urn:a'}]",
            "auth.mtls.allow[0]",
            "set exactly one of dns, email, uri, ip, subject",
        ),
        ("  mtls:\n    allow: [{}]", "auth.mtls.allow[0]", "set exactly one of"),
        (
            "  mtls:\n    allow: [{dsn: a.example.test}]",
            "auth.mtls.allow[0].dsn",
            "did you mean 'dns'?",
        ),
        (
            "  mtls:\n    allow: [{dns: '*.*.example.test'}]",
            "auth.mtls.allow[0]",
            "one label under it",
        ),
        ("  mtls:\n    allow: [{dns: a..example.test}]", "auth.mtls.allow[0]", "invalid name"),
        ("  mtls:\n    allow: [{ip: 10.0.0.0/8}]", "auth.mtls.allow[0]", "invalid IP address"),
        ("  mtls:\n    allow: [{email: nobody}]", "auth.mtls.allow[0]", "invalid address"),
        ("  mtls:\n    allow: [{uri: nothing}]", "auth.mtls.allow[0]", "invalid URI"),
        ("  mtls:\n    allow: [{dns: 5}]", "auth.mtls.allow[0].dns", "expected a string"),
        ("  mtls:\n    allow: {dns: a.example.test}", "auth.mtls.allow", "expected a list"),
        ("  mtls:\n    subject: cn", "auth.mtls.subject", "'san', 'dn' or 'fingerprint'"),
        ("  mtls:\n    roles: {internal: []}", "auth.mtls.roles.internal", "at least 1 entry"),
        (
            "  mtls:\n    roles: {'a b': [{dns: a.test}]}",
            "auth.mtls.roles",
            "invalid role or scope name",
        ),
        ("  mtls:\n    scopes: {x: [{dns: -a.test}]}", "auth.mtls.scopes.x[0]", "invalid name"),
        ("  mtls:\n    roles: {x: [{dns: a.test}]}\n    extra: 1", "auth.mtls.extra", "unknown"),
    ],
)
def test_mtls_config_errors(tls_files: Path, mtls: str, path: str, message: str) -> None:
    issues = issues_of(config_text(tls_files, mtls))

    assert message in issue_at(issues, path).message
