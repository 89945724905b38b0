"""Measure the time of one `verify_compact` call per JWS algorithm.

Keys are generated on every run: RSA 2048 bits (RS256, PS256), P-256
(ES256), Ed25519 (EdDSA) and a 256-bit HMAC secret (HS256). Each token
carries a small claims set. The printed number is the best of `--repeat`
runs of `--number` verifications, divided by `--number`, in microseconds.
Claim validation is not included.

    .venv/bin/python bench/jwt_verify.py [--number N] [--repeat R]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import secrets
import timeit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ringwall.gateway.auth.jwk import KeyMaterial, verification_key
from ringwall.gateway.auth.jws import CURVE_ORDERS, StaticKeySet, verify_compact

PAYLOAD = json.dumps(
    {
        "iss": "https://issuer.example",
        "sub": "user-1234",
        "aud": "api",
        "iat": 1_800_000_000,
        "exp": 1_800_000_600,
    }
).encode()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signing_input(alg: str) -> str:
    header = json.dumps({"alg": alg, "kid": "bench", "typ": "JWT"}).encode()
    return f"{b64(header)}.{b64(PAYLOAD)}"


def sign_rsa(key: rsa.RSAPrivateKey, alg: str, data: bytes) -> bytes:
    if alg == "PS256":
        scheme: padding.AsymmetricPadding = padding.PSS(
            padding.MGF1(hashes.SHA256()), hashes.SHA256.digest_size
        )
    else:
        scheme = padding.PKCS1v15()
    return key.sign(data, scheme, hashes.SHA256())


def sign_es256(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    order = CURVE_ORDERS["secp256r1"]
    s = min(s, order - s)  # the verifier accepts only low-s signatures
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def make_case(alg: str) -> tuple[str, KeyMaterial]:
    data = signing_input(alg).encode()
    public: KeyMaterial
    if alg in ("RS256", "PS256"):
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        signature, public = sign_rsa(rsa_key, alg, data), rsa_key.public_key()
    elif alg == "ES256":
        ec_key = ec.generate_private_key(ec.SECP256R1())
        signature, public = sign_es256(ec_key, data), ec_key.public_key()
    elif alg == "EdDSA":
        ed_key = ed25519.Ed25519PrivateKey.generate()
        signature, public = ed_key.sign(data), ed_key.public_key()
    else:
        public = secrets.token_bytes(32)
        signature = hmac.new(public, data, hashlib.sha256).digest()
    return f"{data.decode()}.{b64(signature)}", public


def measure(alg: str, number: int, repeat: int) -> float:
    """Return the best time of one verification, in microseconds."""
    token, public = make_case(alg)
    keys = StaticKeySet([verification_key(public, kid="bench", alg=alg)])
    allowed = frozenset({alg})
    verify_compact(token, keys, allowed)  # fail before timing if the token is wrong
    runs = timeit.repeat(lambda: verify_compact(token, keys, allowed), number=number, repeat=repeat)
    return min(runs) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000, help="verifications per run")
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs, of which the fastest is reported"
    )
    args = parser.parse_args()
    for alg in ("RS256", "PS256", "ES256", "EdDSA", "HS256"):
        print(f"{alg:6} {measure(alg, args.number, args.repeat):8.1f} µs")


if __name__ == "__main__":
    main()
