"""Authentication and authorization through a real gateway, over real sockets."""

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from ringwall.demo.backend import DemoBackend
from ringwall.gateway.auth.api_keys import ApiKeyStore
from tests.support.backend_thread import running_backend
from tests.support.client import Response, request
from tests.support.gateway_thread import GatewayThread, running_gateway
from tests.support.tokens import AUDIENCE, ISSUER, RsaIssuer, b64, claims, hs256_token


@dataclass
class Setup:
    gateway: GatewayThread
    backend: DemoBackend
    issuer: RsaIssuer
    jwks_path: Path
    api_key: str
    key_store: ApiKeyStore
    key_file: Path


def config_text(backend_port: int, jwks_path: Path, key_file: Path) -> str:
    return f"""
server:
  timeouts: {{drain: 1s}}
  # Variant spellings are forwarded then, so the tests see them dropped.
  reject_header_name_variants: false
auth:
  issuers:
    main:
      issuer: "{ISSUER}"
      jwks: "file:{jwks_path}"
      algorithms: [RS256]
      audiences: [{AUDIENCE}]
  api_keys:
    file: "{key_file}"
upstreams:
  app:
    targets: ["http://127.0.0.1:{backend_port}"]
routes:
  - name: products
    path: /api/products
    upstream: app
    auth: none
  - name: orders
    path: /api/orders
    upstream: app
    auth: jwt
    authorize:
      - methods: [POST]
        roles: [customer]
  - name: account
    path: /api/accounts/{{account_id}}
    match: template
    upstream: app
    auth: jwt
    authorize:
      - owner: {{param: account_id, claim: accounts}}
  - name: admin
    path: /api/admin
    upstream: app
    auth: jwt
    authorize:
      - roles: [admin]
  - name: partner
    path: /api/echo/partner
    upstream: app
    auth: api_key
  - name: echo
    path: /api/echo
    upstream: app
    auth: {{methods: [jwt, api_key], optional: true}}
"""


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    issuer = RsaIssuer()
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_bytes(issuer.jwks())
    store = ApiKeyStore()
    _, secret = store.create("partner-7", roles=("partner",), now=time.time())
    key_file = tmp_path / "keys.json"
    store.save(key_file)
    with running_backend() as backend:
        text = config_text(backend.port, jwks_path, key_file)
        with running_gateway(text, tmp_path) as gateway:
            yield Setup(gateway, backend, issuer, jwks_path, secret.reveal(), store, key_file)


def get(setup: Setup, path: str, token: str | None = None, extra: bytes = b"") -> Response:
    auth = b"Authorization: Bearer %b\r\n" % token.encode() if token else b""
    return request(
        setup.gateway.port, b"GET %b HTTP/1.1\r\nHost: a\r\n%b%b\r\n" % (path.encode(), auth, extra)
    )


def test_public_route_needs_nothing(setup: Setup) -> None:
    assert get(setup, "/api/products").status == 200


def test_missing_token_gets_401(setup: Setup) -> None:
    response = get(setup, "/api/orders")
    assert response.status == 401
    assert response.header("WWW-Authenticate") == 'Bearer realm="ringwall"'
    assert response.json()["layer"] == "authentication"
    assert setup.backend.received == []


def test_valid_token_reaches_backend(setup: Setup) -> None:
    assert get(setup, "/api/orders", setup.issuer.token(**claims())).status == 200


@pytest.mark.parametrize(
    "case",
    ["expired", "wrong-audience", "wrong-issuer", "not-yet-valid", "no-exp", "bad-signature"],
)
def test_invalid_tokens_get_401(setup: Setup, case: str) -> None:
    now = time.time()
    token_claims = {
        "expired": claims(ttl=-120),
        "wrong-audience": claims(aud="other"),
        "wrong-issuer": claims(iss="https://evil.test"),
        "not-yet-valid": claims(nbf=now + 600),
        "no-exp": {k: v for k, v in claims().items() if k != "exp"},
        "bad-signature": claims(),
    }[case]
    token = setup.issuer.token(**token_claims)
    if case == "bad-signature":
        token = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    response = get(setup, "/api/orders", token)
    assert response.status == 401
    assert 'error="invalid_token"' in (response.header("WWW-Authenticate") or "")
    assert setup.backend.received == []


def test_alg_none_rejected(setup: Setup) -> None:
    header = b64(json.dumps({"alg": "none", "kid": setup.issuer.kid}).encode())
    payload = b64(json.dumps(claims()).encode())
    assert get(setup, "/api/orders", f"{header}.{payload}.").status == 401


def test_hmac_with_public_key_rejected(setup: Setup) -> None:
    public_pem = setup.issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = hs256_token(public_pem.decode(), header={"kid": setup.issuer.kid}, **claims())
    assert get(setup, "/api/orders", token).status == 401


def test_embedded_jwk_not_trusted(setup: Setup) -> None:
    attacker = RsaIssuer(kid="attacker")
    jwk = json.loads(attacker.jwks())["keys"][0]
    token = attacker.token(header={"jwk": jwk, "kid": setup.issuer.kid}, **claims())
    assert get(setup, "/api/orders", token).status == 401


def test_role_required_gets_403(setup: Setup) -> None:
    token = setup.issuer.token(**claims(roles=["customer"]))
    response = get(setup, "/api/admin/users", token)
    assert response.status == 403
    assert response.json()["detail"] == "the caller is not allowed to make this request"
    record = setup.gateway.access_records()[-1]
    assert record["layer"] == "authorization"
    assert "admin" in record["reason"]


def test_post_needs_customer_role(setup: Setup) -> None:
    body = b"{}"
    for roles, expected in ((["viewer"], 403), (["customer"], 201)):
        token = setup.issuer.token(**claims(roles=roles))
        response = request(
            setup.gateway.port,
            b"POST /api/orders HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %b\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n%b"
            % (token.encode(), body),
            b"POST",
        )
        assert response.status == expected


def test_own_account_only(setup: Setup) -> None:
    token = setup.issuer.token(**claims(accounts=["acc-1001"]))
    assert get(setup, "/api/accounts/acc-1001", token).status == 200
    assert get(setup, "/api/accounts/acc-2002", token).status == 403


def test_identity_forwarded_and_injection_removed(setup: Setup) -> None:
    token = setup.issuer.token(**claims("user-42", roles=["customer"], scope="orders:read"))
    response = get(
        setup,
        "/api/echo",
        token,
        b"X-Ringwall-Subject: admin\r\nX_Ringwall_Roles: admin\r\nx.ringwall.subject: root\r\n",
    )
    assert response.status == 200
    headers = [(name.lower(), value) for name, value in response.json()["headers"]]
    subjects = [value for name, value in headers if name == "x-ringwall-subject"]
    assert subjects == ["user-42"]
    assert ("x-ringwall-roles", "customer") in headers
    assert ("x-ringwall-auth-method", "jwt") in headers
    assert ("x-ringwall-scopes", "orders:read") in headers
    assert not any(name in ("x_ringwall_roles", "x.ringwall.subject") for name, _ in headers)


def test_optional_auth_anonymous_and_invalid(setup: Setup) -> None:
    anonymous = get(setup, "/api/echo")
    assert anonymous.status == 200
    names = [name.lower() for name, _ in anonymous.json()["headers"]]
    assert "x-ringwall-subject" not in names
    assert get(setup, "/api/echo", "not.a.token").status == 401


def test_api_key_route(setup: Setup) -> None:
    ok = get(setup, "/api/echo/partner", extra=b"X-API-Key: %b\r\n" % setup.api_key.encode())
    assert ok.status == 200
    headers = {name.lower(): value for name, value in ok.json()["headers"]}
    assert headers["x-ringwall-subject"] == "partner-7"
    assert headers["x-ringwall-auth-method"] == "api_key"
    assert "x-api-key" not in headers
    wrong = setup.api_key[:-2] + ("AA" if not setup.api_key.endswith("AA") else "BB")
    assert (
        get(setup, "/api/echo/partner", extra=b"X-API-Key: %b\r\n" % wrong.encode()).status == 401
    )
    assert get(setup, "/api/echo/partner", setup.issuer.token(**claims())).status == 401


def test_revoked_api_key_rejected_within_a_second(setup: Setup) -> None:
    header = b"X-API-Key: %b\r\n" % setup.api_key.encode()
    assert get(setup, "/api/echo/partner", extra=header).status == 200
    key_id = setup.key_store.list()[0].id
    setup.key_store.revoke(key_id, time.time())
    setup.key_store.save(setup.key_file)
    time.sleep(1.1)
    assert get(setup, "/api/echo/partner", extra=header).status == 401


def test_key_rotation_accepted_at_once(setup: Setup) -> None:
    assert get(setup, "/api/orders", setup.issuer.token(**claims())).status == 200
    rotated = RsaIssuer(kid="key-2")
    setup.jwks_path.write_bytes(rotated.jwks())
    assert get(setup, "/api/orders", rotated.token(**claims())).status == 200


def test_repeated_authorization_rejected(setup: Setup) -> None:
    token = setup.issuer.token(**claims())
    extra = b"Authorization: Bearer %b\r\n" % token.encode()
    response = get(setup, "/api/orders", token, extra)
    assert response.status == 400
    assert response.json()["layer"] == "protocol"


def test_token_in_query_not_accepted(setup: Setup) -> None:
    token = setup.issuer.token(**claims())
    assert get(setup, f"/api/orders?access_token={token}").status == 401


def test_oversized_token_rejected(setup: Setup) -> None:
    huge = "a" * 9000 + "." + base64.urlsafe_b64encode(b"{}").decode() + ".x"
    assert get(setup, "/api/orders", huge).status == 401


def test_revoked_token_rejected_within_a_second(tmp_path: Path) -> None:
    from ringwall.gateway.revocation import RevokedToken, add_revocation

    issuer = RsaIssuer()
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_bytes(issuer.jwks())
    revocations = tmp_path / "revocations.json"
    with running_backend() as backend:
        text = config_text(backend.port, jwks_path, tmp_path / "keys.json").replace(
            "  api_keys:", f'  revocations:\n    file: "{revocations}"\n  api_keys:'
        )
        with running_gateway(text, tmp_path) as gateway:
            token = issuer.token(**claims(jti="token-1"))
            first = request(
                gateway.port,
                b"GET /api/orders HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %b\r\n\r\n"
                % token.encode(),
            )
            add_revocation(
                revocations, RevokedToken(ISSUER, "token-1", time.time() + 300), time.time()
            )
            time.sleep(1.1)
            second = request(
                gateway.port,
                b"GET /api/orders HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %b\r\n\r\n"
                % token.encode(),
            )
    assert first.status == 200
    assert second.status == 401


def audit_records(setup: Setup, count: int) -> list[dict[str, Any]]:
    """Return the audit records once there are `count`, or after 2 s.

    Records are written once per event-loop iteration, which may come just
    after the response reached the client.
    """
    path = setup.gateway.access_log_path.parent / "audit.log"
    deadline = time.monotonic() + 2
    lines = path.read_text().splitlines()
    while len(lines) < count and time.monotonic() < deadline:
        time.sleep(0.02)
        lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_audit_records_decisions(setup: Setup) -> None:
    token = setup.issuer.token(**claims("user-9", roles=["customer"], accounts=["acc-1001"]))
    get(setup, "/api/accounts/acc-1001", token)
    get(setup, "/api/accounts/acc-2002", token)
    get(setup, "/api/products")
    get(setup, "/api/orders")
    records = audit_records(setup, count=3)
    assert [(r["decision"], r["path"], r["status"]) for r in records] == [
        ("allow", "/api/accounts/acc-1001", 0),
        ("deny", "/api/accounts/acc-2002", 403),
        ("deny", "/api/orders", 401),
    ]
    assert records[0]["subject"] == "user-9"
    assert records[0]["auth_method"] == "jwt"
    assert records[1]["layer"] == "authorization"
    assert records[2]["layer"] == "authentication"
    assert all(r["request_id"] and r["client_ip"] == "127.0.0.1" for r in records)


def test_audit_failure_rejects_when_configured(tmp_path: Path) -> None:
    issuer = RsaIssuer()
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_bytes(issuer.jwks())
    with running_backend() as backend:
        text = config_text(backend.port, jwks_path, tmp_path / "keys.json")
        text = text.replace("server:\n", "logging:\n  audit: {on_failure: reject}\nserver:\n", 1)
        with running_gateway(text, tmp_path) as gateway:
            # Make every audit write fail: point the sink at a closed descriptor.
            runtime = gateway.worker.runtime if gateway.worker else None
            assert runtime is not None and runtime.audit is not None
            gateway.call(runtime.audit.close)
            token = issuer.token(**claims())
            blocked = request(
                gateway.port,
                b"GET /api/orders HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %b\r\n\r\n"
                % token.encode(),
            )
            public = request(gateway.port, b"GET /api/products HTTP/1.1\r\nHost: a\r\n\r\n")
    assert blocked.status == 503
    assert public.status == 200
    assert backend.received[-1].target == "/api/products"


def test_unverified_credentials_not_forwarded(setup: Setup) -> None:
    extra = (
        b"X-API-Key: %b\r\nAuthorization: Basic Z2FyYmFnZQ==\r\nX_API_Key: leak\r\nx.api.key: leak2\r\n"
        % setup.api_key.encode()
    )
    response = get(setup, "/api/echo/partner", extra=extra)
    assert response.status == 200
    names = [name.lower() for name, _ in response.json()["headers"]]
    assert "authorization" not in names
    assert not any(name.replace("_", "-").replace(".", "-") == "x-api-key" for name in names)


def test_token_not_forwarded_by_default(setup: Setup) -> None:
    response = get(setup, "/api/echo", setup.issuer.token(**claims()))
    names = [name.lower() for name, _ in response.json()["headers"]]
    assert "authorization" not in names
    assert "x-ringwall-subject" in names


def test_token_not_forwarded_when_connection_names_other_fields(setup: Setup) -> None:
    # Fields named in Connection are dropped after the pass that finds the
    # token, so the token's position in the forwarded list moves.
    token = setup.issuer.token(**claims()).encode()
    response = request(
        setup.gateway.port,
        b"GET /api/echo HTTP/1.1\r\nHost: a\r\nConnection: x-a\r\nX-A: 1\r\n"
        b"Authorization: Bearer %b\r\nX-B: 2\r\n\r\n" % token,
    )
    assert response.status == 200
    names = [name.lower() for name, _ in response.json()["headers"]]
    assert "authorization" not in names
    assert "x-a" not in names
    assert "x-b" in names
