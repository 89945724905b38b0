"""Authentication by client certificate, with `exchange.tls` set directly and no sockets."""

import datetime
import json
from typing import Any

import pytest

from ringwall.audit import AuditLog, AuditRecord
from ringwall.config.model import AuthConfig, ClaimsConfig, IssuerConfig, MtlsConfig, Route
from ringwall.errors import Forbidden, Unauthorized
from ringwall.exchange import Exchange
from ringwall.gateway.auditing import AuditLayer, record_denial
from ringwall.gateway.auth.jwk import VerificationKey, verification_key
from ringwall.gateway.auth.jws import StaticKeySet
from ringwall.gateway.auth.jwt import ClaimRules
from ringwall.gateway.authentication import AuthenticationLayer, Issuer
from ringwall.gateway.authorization import AuthorizationLayer
from ringwall.gateway.identity import Identity
from ringwall.gateway.routing import CompiledRoute
from ringwall.http.problem import problem_body
from ringwall.tls.client_identity import EXPIRED, NO_ALLOW_MATCH, WRONG_USAGE
from ringwall.tls.handshake import HandshakeInfo
from tests.support.tokens import AUDIENCE, HMAC_SECRET, ISSUER, claims, hs256_token
from tests.tls.certificates import NOW, SERVER_AUTH, dns, make_certificate, uri

CLIENT_DNS = "app.clients.example.test"
MTLS = MtlsConfig.model_validate(
    {
        "allow": [{"dns": "*.clients.example.test"}, {"uri": "spiffe://example.test/payments"}],
        "roles": {"internal": [{"dns": CLIENT_DNS}]},
        "scopes": {"payments:write": [{"uri": "spiffe://example.test/payments"}]},
    }
)


class StaticKeys:
    def __init__(self, keys: StaticKeySet) -> None:
        self.keys = keys

    def cached_keys(self, kid: str | None, alg: str) -> list[VerificationKey]:
        return list(self.keys.find(kid, alg))

    async def keys_for(self, kid: str | None, alg: str) -> list[VerificationKey]:
        return self.cached_keys(kid, alg)


def hmac_issuer() -> Issuer:
    config = IssuerConfig(
        issuer=ISSUER, hmac_secret=HMAC_SECRET, algorithms=("HS256",), audiences=(AUDIENCE,)
    )
    rules = ClaimRules(
        issuer=ISSUER,
        audiences=frozenset({AUDIENCE}),
        leeway=config.leeway,
        max_lifetime=config.max_lifetime,
        required_claims=frozenset(),
    )
    keys = StaticKeys(StaticKeySet([verification_key(HMAC_SECRET.encode())]))
    return Issuer("test", config, rules, frozenset({"HS256"}), keys)


class Clock:
    def __init__(self, moment: datetime.datetime = NOW) -> None:
        self.now = moment.timestamp()

    def __call__(self) -> float:
        return self.now


def make_layer(
    mtls: MtlsConfig | None = MTLS, clock: Clock | None = None, jwt: bool = False
) -> AuthenticationLayer:
    config = AuthConfig(mtls=mtls, claims=ClaimsConfig())
    issuers = {"test": hmac_issuer()} if jwt else {}
    return AuthenticationLayer(config, issuers, None, clock=clock or Clock())


def make_exchange(
    auth: Any = "mtls",
    certificate: bytes | None = None,
    *,
    tls: bool = True,
    authorization: bytes | None = None,
    authorize: list[dict[str, Any]] | None = None,
) -> Exchange:
    route = Route(path="/api/internal/", upstream="api", auth=auth, authorize=authorize or [])
    no_runtime: Any = None
    exchange = Exchange(no_runtime, "127.0.0.1", 0.0, 0.0)
    exchange.route = CompiledRoute(route, 0)
    exchange.method = "GET"
    exchange.path = "/api/internal/status"
    exchange.request_id = "req-1"
    if tls:
        exchange.tls = HandshakeInfo(
            server_name="gateway.example.test",
            policy=-1,
            protocol="TLSv1.3",
            cipher="TLS_AES_128_GCM_SHA256",
            alpn="http/1.1",
            resumed=False,
            client_certificate=certificate,
        )
    if authorization is not None:
        exchange.authorization = (authorization,)
        exchange.forward_headers = [(b"Authorization", authorization), (b"Accept", b"*/*")]
        exchange.authorization_at = 0
        exchange.headers = list(exchange.forward_headers)
    return exchange


def authenticate(layer: AuthenticationLayer, exchange: Exchange) -> Identity | None:
    assert layer.check_head(exchange) is None
    return exchange.identity


def rejection(layer: AuthenticationLayer, exchange: Exchange) -> Unauthorized:
    with pytest.raises(Unauthorized) as caught:
        layer.check_head(exchange)
    return caught.value


def test_certificate_gives_identity() -> None:
    der = make_certificate()

    identity = authenticate(make_layer(), make_exchange(certificate=der))

    assert identity is not None
    assert identity.method == "mtls"
    assert identity.subject == f"cert:dns:{CLIENT_DNS}"
    assert identity.issuer == "CN=Test client CA"
    assert identity.roles == frozenset({"internal"})
    assert identity.scopes == frozenset()
    assert identity.certificate is not None
    assert identity.key_id == identity.certificate.fingerprint_sha256
    cert_claims: Any = identity.claims["cert"]
    assert cert_claims["dns"] == [CLIENT_DNS]
    assert cert_claims["serial"] == "1234abcd"


def test_uri_certificate_gets_scope() -> None:
    der = make_certificate([uri("spiffe://example.test/payments")])

    identity = authenticate(make_layer(), make_exchange(certificate=der))

    assert identity is not None
    assert identity.subject == "cert:uri:spiffe://example.test/payments"
    assert identity.scopes == frozenset({"payments:write"})
    assert identity.roles == frozenset()


def test_missing_certificate_gets_401() -> None:
    refused = rejection(make_layer(), make_exchange(certificate=None))

    assert refused.status == 401
    assert refused.layer == "authentication"
    assert refused.reason == "credentials are missing: the TLS handshake had no client certificate"
    assert ("WWW-Authenticate", 'ClientCertificate realm="ringwall"') in refused.headers
    body = json.loads(problem_body(refused, "req-1"))
    assert body["status"] == 401
    assert body["layer"] == "authentication"
    assert body["detail"] == refused.reason


def test_plain_http_gets_401() -> None:
    refused = rejection(make_layer(), make_exchange(tls=False))

    assert refused.reason == (
        "credentials are missing: no client certificate on a plain HTTP connection"
    )


def test_optional_route_without_certificate_is_anonymous() -> None:
    exchange = make_exchange({"methods": ["mtls"], "optional": True}, None)

    assert authenticate(make_layer(), exchange) is None


def test_optional_route_rejects_bad_certificate() -> None:
    exchange = make_exchange(
        {"methods": ["mtls"], "optional": True}, make_certificate([dns("other.example.test")])
    )

    assert rejection(make_layer(), exchange).reason == (
        f"client certificate rejected: {NO_ALLOW_MATCH}"
    )


def test_wrong_usage_gets_401() -> None:
    exchange = make_exchange(certificate=make_certificate(usages=[SERVER_AUTH]))

    refused = rejection(make_layer(), exchange)

    assert refused.reason == f"client certificate rejected: {WRONG_USAGE}"
    assert refused.detail == refused.reason


def test_certificate_expires_on_open_connection() -> None:
    clock = Clock()
    layer = make_layer(clock=clock)
    der = make_certificate(not_after=NOW + datetime.timedelta(minutes=1))
    authenticate(layer, make_exchange(certificate=der))

    clock.now += 61

    refused = rejection(layer, make_exchange(certificate=der))
    assert refused.reason == f"client certificate rejected: {EXPIRED}"


def test_cached_identity_reused() -> None:
    layer = make_layer()
    der = make_certificate()

    first = authenticate(layer, make_exchange(certificate=der))
    second = authenticate(layer, make_exchange(certificate=der))

    assert first is second


def test_cache_bounded() -> None:
    layer = make_layer()
    assert layer.certificates is not None
    layer.certificates.cache_size = 2
    for serial in range(1, 5):
        authenticate(layer, make_exchange(certificate=make_certificate(serial=serial)))

    assert len(layer.certificates._identities) == 2


def test_route_without_mtls_ignores_certificate() -> None:
    exchange = make_exchange("jwt", make_certificate())

    refused = rejection(make_layer(jwt=True), exchange)

    assert refused.reason == "credentials are missing"
    assert exchange.identity is None


def test_mtls_without_configuration_rejects() -> None:
    refused = rejection(make_layer(mtls=None), make_exchange(certificate=make_certificate()))

    assert refused.status == 401
    assert refused.reason.startswith("credentials are missing")


def test_bearer_token_decides_before_certificate() -> None:
    token = hs256_token(**claims("user-7")).encode()
    # The token's iat and exp are real times, so the layer's clock is too.
    layer = make_layer(clock=Clock(datetime.datetime.now(datetime.UTC)), jwt=True)
    exchange = make_exchange(["jwt", "mtls"], make_certificate(), authorization=b"Bearer " + token)

    identity = authenticate(layer, exchange)

    assert identity is not None
    assert identity.method == "jwt"
    assert identity.subject == "user-7"


def test_invalid_token_not_rescued_by_certificate() -> None:
    exchange = make_exchange(
        ["jwt", "mtls"], make_certificate(), authorization=b"Bearer not.a.token"
    )

    refused = rejection(make_layer(jwt=True), exchange)

    assert refused.reason.startswith("token rejected")


def test_certificate_used_when_no_token() -> None:
    exchange = make_exchange(["jwt", "mtls"], make_certificate())

    identity = authenticate(make_layer(jwt=True), exchange)

    assert identity is not None
    assert identity.method == "mtls"


def test_challenges_list_every_method() -> None:
    refused = rejection(make_layer(jwt=True), make_exchange(["jwt", "mtls"], None))

    challenge = dict(refused.headers)["WWW-Authenticate"]
    assert challenge == 'Bearer realm="ringwall", ClientCertificate realm="ringwall"'


def test_rejected_certificate_not_invalid_token() -> None:
    exchange = make_exchange(["jwt", "mtls"], make_certificate(usages=[SERVER_AUTH]))

    refused = rejection(make_layer(jwt=True), exchange)

    challenge = dict(refused.headers)["WWW-Authenticate"]
    assert challenge == 'Bearer realm="ringwall", ClientCertificate realm="ringwall"'
    assert refused.reason == f"client certificate rejected: {WRONG_USAGE}"


def test_unverified_authorization_dropped() -> None:
    exchange = make_exchange(certificate=make_certificate(), authorization=b"Bearer forged")

    authenticate(make_layer(), exchange)

    assert exchange.forward_headers == [(b"Accept", b"*/*")]


def test_identity_headers_for_certificate() -> None:
    identity = authenticate(make_layer(), make_exchange(certificate=make_certificate()))
    assert identity is not None

    lines = identity.header_block.decode("ascii").split("\r\n")

    assert lines[-1] == ""
    fields = dict(line.split(": ", 1) for line in lines[:-1])
    assert fields["X-Ringwall-Subject"] == f"cert:dns:{CLIENT_DNS}"
    assert fields["X-Ringwall-Auth-Method"] == "mtls"
    assert fields["X-Ringwall-Issuer"] == "CN=Test client CA"
    assert fields["X-Ringwall-Key-Id"] == identity.key_id
    assert fields["X-Ringwall-Client-Cert-Subject"] == "CN=app,O=Example"
    assert fields["X-Ringwall-Roles"] == "internal"


def test_identity_headers_encode_line_breaks() -> None:
    der = make_certificate(
        [uri("spiffe://example.test/a\r\nX-Ringwall-Roles: admin")],
        common_name="app\r\nX-Ringwall-Roles: admin",
    )
    mtls = MtlsConfig.model_validate({"allow": []})

    identity = authenticate(make_layer(mtls), make_exchange(certificate=der))
    assert identity is not None

    lines = identity.header_block.split(b"\r\n")
    names = [line.split(b":", 1)[0] for line in lines[:-1]]
    assert names.count(b"X-Ringwall-Roles") == 0
    assert all(name.startswith(b"X-Ringwall-") for name in names)
    for line in lines:
        assert b"\n" not in line
        assert b"\r" not in line
        assert b"\x00" not in line
    assert b"X-Ringwall-Subject: cert:uri:spiffe://example.test/a%0D%0AX-Ringwall-Roles" in (
        identity.header_block
    )


def test_authorization_sees_certificate_roles() -> None:
    layer = make_layer()
    rule = [{"roles": ["internal"]}]
    allowed = make_exchange(certificate=make_certificate(), authorize=rule)
    denied = make_exchange(
        certificate=make_certificate([dns("other.clients.example.test")]), authorize=rule
    )

    authenticate(layer, allowed)
    authenticate(layer, denied)

    AuthorizationLayer().check_head(allowed)
    with pytest.raises(Forbidden) as caught:
        AuthorizationLayer().check_head(denied)
    assert "internal" in caught.value.reason


class ListSink:
    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def write(self, record: AuditRecord) -> None:
        self.records.append(record)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_audit_records_certificate_identity() -> None:
    sink = ListSink()
    log = AuditLog(sink, on_failure="serve")
    exchange = make_exchange(certificate=make_certificate())
    identity = authenticate(make_layer(), exchange)
    assert identity is not None

    AuditLayer(log).check_head(exchange)

    record = sink.records[0]
    assert record.subject == f"cert:dns:{CLIENT_DNS}"
    assert record.auth_method == "mtls"
    assert record.key_id == identity.key_id
    assert record.issuer == "CN=Test client CA"
    assert record.decision == "allow"


def test_audit_records_refused_certificate() -> None:
    sink = ListSink()
    exchange = make_exchange(certificate=make_certificate(usages=[SERVER_AUTH]))
    refused = rejection(make_layer(), exchange)

    record_denial(AuditLog(sink, on_failure="serve"), exchange, refused)

    record = sink.records[0]
    assert record.decision == "deny"
    assert record.layer == "authentication"
    assert record.reason == f"client certificate rejected: {WRONG_USAGE}"
    assert record.status == 401
    assert record.subject is None
