"""Client-certificate authentication: turn a verified certificate into an `Identity`.

The policy itself (validity, extended key usage, allow rules, subject,
roles) is implemented in `ringwall.tls.client_identity`. This module
applies it per request and caches the result per certificate.
"""

from __future__ import annotations

import datetime

from ringwall.config.model import MtlsConfig
from ringwall.gateway.identity import Identity
from ringwall.tls.client_identity import ClientIdentity, check_validity, identify

METHOD = "mtls"
# Identities of accepted certificates kept per worker. A client keeps one
# certificate for many requests and connections, so a few thousand entries
# cover the clients of one gateway. When the cache is full, the oldest entry is evicted.
_CACHE_SIZE = 4096


class ClientCertificates:
    """The certificates that `auth.mtls` accepts, and the identities they give.

    NOTE: certificate revocation is not checked. There is no CRL or OCSP
    lookup, and `auth.revocations` covers only tokens. A certificate stays
    accepted until its notAfter.
    """

    def __init__(self, config: MtlsConfig, cache_size: int = _CACHE_SIZE) -> None:
        self.config = config
        self.policy = config.policy()
        self.cache_size = cache_size
        self._identities: dict[bytes, tuple[ClientIdentity, Identity]] = {}

    def verify(self, der: bytes, now: float) -> Identity:
        """Return the identity of the certificate `der`, or raise ClientCertificateRejected.

        `now` is in seconds since the Unix epoch. A cached certificate is
        checked against `now` again, so a connection that outlives its
        certificate's notAfter gets 401 on its next request.
        """
        moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
        cached = self._identities.get(der)
        if cached is not None:
            check_validity(cached[0].certificate, moment)
            return cached[1]
        verdict = identify(der, self.policy, moment)
        identity = _identity(verdict)
        if self.cache_size:
            if len(self._identities) >= self.cache_size:
                del self._identities[next(iter(self._identities))]
            self._identities[bytes(der)] = (verdict, identity)
        return identity


def _identity(verdict: ClientIdentity) -> Identity:
    certificate = verdict.certificate
    claims = {
        "sub": verdict.subject,
        "cert": {
            "subject": certificate.subject,
            "issuer": certificate.issuer,
            "serial": format(certificate.serial, "x"),
            "fingerprint_sha256": certificate.fingerprint_sha256,
            "dns": list(certificate.dns),
            "email": list(certificate.email),
            "uri": list(certificate.uri),
            "ip": list(certificate.ip),
        },
    }
    return Identity(
        subject=verdict.subject,
        method=METHOD,
        issuer=certificate.issuer,
        key_id=certificate.fingerprint_sha256,
        roles=verdict.roles,
        scopes=verdict.scopes,
        claims=claims,
        expires_at=certificate.not_after.timestamp(),
        certificate=certificate,
    )
