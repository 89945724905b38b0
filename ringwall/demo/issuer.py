"""Demo issuer: the RS256 signing key of the demo identity provider, and the tokens it mints.

The state directory (default `.ringwall/` in the working directory, mode 0700)
contains these files, both with mode 0600:

- `issuer-key.pem`: the current RSA-2048 private key, as unencrypted PKCS#8 PEM.
- `issuer-key-previous.pem`: after a rotation, the public key that the current
  key replaced, as SubjectPublicKeyInfo PEM. Its private key is discarded.

The JWK set publishes both public keys, so a token signed before a rotation
keeps verifying until the next rotation drops its key.

The private key is stored unencrypted, so it is fit only for demos and tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ringwall.errors import RingwallError

__all__ = [
    "DEFAULT_STATE_DIR",
    "DEFAULT_TTL",
    "DEMO_AUDIENCE",
    "DEMO_ISSUER",
    "KEY_FILE_NAME",
    "MAX_TTL",
    "PREVIOUS_KEY_FILE_NAME",
    "DemoIssuer",
    "IssuerKeyMissing",
    "IssuerStateError",
    "key_id",
    "load_issuer",
    "load_or_create_issuer",
]

logger = logging.getLogger(__name__)

DEMO_ISSUER = "https://idp.ringwall.demo"
DEMO_AUDIENCE = "ringwall-demo"
DEFAULT_STATE_DIR = Path(".ringwall")
KEY_FILE_NAME = "issuer-key.pem"
PREVIOUS_KEY_FILE_NAME = "issuer-key-previous.pem"
SIGNING_ALGORITHM = "RS256"
RSA_KEY_BITS = 2048

DEFAULT_TTL = 300
"""Default token lifetime in seconds."""
MAX_TTL = 86_400
"""Maximum absolute value of `ttl` in seconds. It equals the verifier's default maximum lifetime."""
EXPIRED_TOKEN_LIFETIME = 60
"""Lifetime in seconds of a token minted with a negative `ttl`, which expired `-ttl` seconds ago."""

MAX_SUBJECT_LENGTH = 255
MAX_VALUE_LENGTH = 128
# Roles, scopes and accounts use the scope-token characters of RFC 6749 section 3.3:
# printable ASCII without space, double quote and backslash.
_CLAIM_VALUE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class IssuerStateError(RingwallError):
    """A demo issuer state directory or key file that cannot be used. The message names the path."""


class IssuerKeyMissing(IssuerStateError):
    """The state directory has no issuer private key."""

    def __init__(self, key_path: Path) -> None:
        super().__init__(f"demo issuer key {key_path} not found")
        self.key_path = key_path


# The file name of the admin API token, not the token.
ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105


def key_id(public_key: rsa.RSAPublicKey) -> str:
    """Derive the kid: "demo-" and the first 16 hex digits of SHA-256 over the DER public key."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "demo-" + hashlib.sha256(der).hexdigest()[:16]


class DemoIssuer:
    """The demo issuer's current signing key, the public key it replaced, and their files.

    Get one from `load_or_create_issuer` or `load_issuer`. An instance does not
    watch its files. After another process rotates the key, load a new instance.
    """

    def __init__(
        self,
        state_dir: Path,
        signing_key: rsa.RSAPrivateKey,
        previous_key: rsa.RSAPublicKey | None = None,
    ) -> None:
        self.state_dir = state_dir
        self._signing_key = signing_key
        self._previous_key = previous_key

    @property
    def key_path(self) -> Path:
        """Path of the current private key file."""
        return self.state_dir / KEY_FILE_NAME

    @property
    def previous_key_path(self) -> Path:
        """Path of the file with the public key that the last rotation replaced."""
        return self.state_dir / PREVIOUS_KEY_FILE_NAME

    @property
    def kid(self) -> str:
        """Key id of the current signing key, sent in the header of every minted token."""
        return key_id(self._signing_key.public_key())

    @property
    def previous_kid(self) -> str | None:
        """Key id of the key that the last rotation replaced, or None before any rotation."""
        return None if self._previous_key is None else key_id(self._previous_key)

    def public_keys(self) -> list[rsa.RSAPublicKey]:
        """Return the published public keys: the current one first, then the previous one."""
        keys = [self._signing_key.public_key()]
        # Between the two file writes of a rotation, the previous file can
        # contain the current key, so it is published once only.
        if self._previous_key is not None and self.previous_kid != self.kid:
            keys.append(self._previous_key)
        return keys

    def jwks(self) -> bytes:
        """Return the JWK set document (RFC 7517) with every published public key, as JSON."""
        document = {"keys": [_public_jwk(key) for key in self.public_keys()]}
        return json.dumps(document, indent=2).encode("ascii") + b"\n"

    def mint(
        self,
        subject: str,
        *,
        roles: Iterable[str] = (),
        scopes: Iterable[str] = (),
        accounts: Iterable[str] = (),
        audience: str = DEMO_AUDIENCE,
        ttl: int = DEFAULT_TTL,
        now: float | None = None,
        jti: str | None = None,
    ) -> str:
        """Sign a JWT for `subject` with RS256 and return it in compact serialization.

        `ttl` is the lifetime in seconds, between -MAX_TTL and MAX_TTL. A negative
        `ttl` gives a token that expired `-ttl` seconds before `now`, with a
        lifetime of EXPIRED_TOKEN_LIFETIME seconds. `now` defaults to the current
        time, and `jti` to a random value. Raises ValueError for an invalid
        argument, with a message that starts with the parameter name.
        """
        claims = _build_claims(
            subject,
            roles=_checked_values("roles", roles),
            scopes=_checked_values("scopes", scopes),
            accounts=_checked_values("accounts", accounts),
            audience=audience,
            ttl=ttl,
            now=time.time() if now is None else now,
            jti=jti,
        )
        header = {"alg": SIGNING_ALGORITHM, "typ": "JWT", "kid": self.kid}
        signing_input = f"{_encode_json(header)}.{_encode_json(claims)}"
        signature = self._signing_key.sign(
            signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{signing_input}.{_base64url(signature)}"

    def rotate(self) -> None:
        """Replace the signing key with a new one and keep the replaced public key published.

        The replaced key is the one in the key file, which another process may
        have rotated since this instance was loaded. A key published as
        previous before this rotation is no longer published.

        NOTE: the files are not locked, so two rotations at the same moment
        can leave a key published as previous that no longer matches either one.
        """
        replaced = _read_private_key(self.key_path).public_key()
        new_key = _generate_key()
        _write_private_file(self.previous_key_path, _public_pem(replaced), replace=True)
        _write_private_file(self.key_path, _private_pem(new_key), replace=True)
        self._signing_key = new_key
        self._previous_key = replaced
        logger.info(
            "rotated the demo issuer key in %s: new kid %s, previous kid %s",
            self.state_dir,
            self.kid,
            self.previous_kid,
        )


def load_or_create_issuer(state_dir: Path = DEFAULT_STATE_DIR) -> DemoIssuer:
    """Load the demo issuer from `state_dir`, creating the directory and the key when missing.

    Raises IssuerStateError when a file exists but is invalid, and OSError
    when a file cannot be read or written.
    """
    _make_state_dir(state_dir)
    key_path = state_dir / KEY_FILE_NAME
    if not key_path.exists():
        # Another process may create the key at the same moment. Then its key is
        # kept and loaded, so every process signs with the same key.
        if _write_private_file(key_path, _private_pem(_generate_key()), replace=False):
            logger.info("created the demo issuer key %s", key_path)
    return load_issuer(state_dir)


def load_issuer(state_dir: Path = DEFAULT_STATE_DIR) -> DemoIssuer:
    """Load the demo issuer from `state_dir` without creating anything.

    Raises IssuerKeyMissing when there is no key file, IssuerStateError when a
    key file is invalid, and OSError when a file cannot be read.
    """
    key_path = state_dir / KEY_FILE_NAME
    try:
        signing_key = _read_private_key(key_path)
    except FileNotFoundError:
        raise IssuerKeyMissing(key_path) from None
    try:
        previous_key = _read_public_key(state_dir / PREVIOUS_KEY_FILE_NAME)
    except FileNotFoundError:
        previous_key = None
    return DemoIssuer(state_dir, signing_key, previous_key)


# Claims.


def _build_claims(
    subject: str,
    *,
    roles: list[str],
    scopes: list[str],
    accounts: list[str],
    audience: str,
    ttl: int,
    now: float,
    jti: str | None,
) -> dict[str, object]:
    _check_text("subject", subject, MAX_SUBJECT_LENGTH)
    _check_text("audience", audience, MAX_SUBJECT_LENGTH)
    if jti is not None:
        _check_text("jti", jti, MAX_VALUE_LENGTH)
    issued_at, expires_at = _token_times(ttl, now)
    claims: dict[str, object] = {
        "iss": DEMO_ISSUER,
        "sub": subject,
        "aud": audience,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": expires_at,
        "jti": secrets.token_urlsafe(16) if jti is None else jti,
        "roles": roles,
    }
    if scopes:
        claims["scope"] = " ".join(scopes)
    if accounts:
        claims["accounts"] = accounts
    return claims


def _token_times(ttl: int, now: float) -> tuple[int, int]:
    """Return (iat, exp) in whole seconds since the Unix epoch."""
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise ValueError(f"ttl: expected whole seconds, got {ttl!r}")
    if not -MAX_TTL <= ttl <= MAX_TTL:
        raise ValueError(f"ttl: {ttl} is outside {-MAX_TTL} to {MAX_TTL} seconds")
    if not (math.isfinite(now) and now >= 0):
        raise ValueError(f"now: expected seconds since the Unix epoch, got {now!r}")
    if ttl >= 0:
        issued_at = math.floor(now)
        return issued_at, issued_at + ttl
    expires_at = math.floor(now) + ttl
    return expires_at - EXPIRED_TOKEN_LIFETIME, expires_at


def _check_text(name: str, value: str, max_length: int) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: must be a non-empty string")
    if len(value) > max_length:
        raise ValueError(f"{name}: longer than {max_length} characters")
    if _CONTROL_CHARACTERS.search(value):
        raise ValueError(f"{name}: contains control characters")


def _checked_values(name: str, values: Iterable[str]) -> list[str]:
    if isinstance(values, str):
        raise ValueError(f"{name}: expected a sequence of strings, got one string")
    checked = list(values)
    for value in checked:
        if not isinstance(value, str) or not _CLAIM_VALUE.fullmatch(value):
            raise ValueError(
                f'{name}: invalid value {value!r}, expected printable ASCII without space, " and \\'
            )
        if len(value) > MAX_VALUE_LENGTH:
            raise ValueError(
                f"{name}: {value[:40]!r}... is longer than {MAX_VALUE_LENGTH} characters"
            )
    duplicates = sorted({value for value in checked if checked.count(value) > 1})
    if duplicates:
        raise ValueError(f"{name}: duplicate value {duplicates[0]!r}")
    return checked


# Encoding.


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _encode_json(value: Mapping[str, object]) -> str:
    return _base64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _unsigned_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")


def _public_jwk(key: rsa.RSAPublicKey) -> dict[str, str]:
    numbers = key.public_numbers()
    return {
        "kty": "RSA",
        "kid": key_id(key),
        "alg": SIGNING_ALGORITHM,
        "use": "sig",
        "n": _base64url(_unsigned_bytes(numbers.n)),
        "e": _base64url(_unsigned_bytes(numbers.e)),
    }


# Key files.


def _generate_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)


def _private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_pem(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _read_private_key(path: Path) -> rsa.RSAPrivateKey:
    data = path.read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise _invalid_key_file(path, f"not an unencrypted PEM private key ({err})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise _invalid_key_file(path, "not an RSA private key")
    _check_key_size(path, key.key_size)
    return key


def _read_public_key(path: Path) -> rsa.RSAPublicKey:
    data = path.read_bytes()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as err:
        raise _invalid_key_file(path, f"not a PEM public key ({err})") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise _invalid_key_file(path, "not an RSA public key")
    _check_key_size(path, key.key_size)
    return key


def _check_key_size(path: Path, bits: int) -> None:
    # The JWK set parser skips RSA keys below 2048 bits.
    if bits < RSA_KEY_BITS:
        raise _invalid_key_file(
            path, f"RSA key has {bits} bits, below the minimum of {RSA_KEY_BITS}"
        )


def _invalid_key_file(path: Path, problem: str) -> IssuerStateError:
    return IssuerStateError(
        f"invalid demo issuer key file {path}: {problem}. "
        "Delete the file to make the demo create a new key"
    )


def create_admin_token(state_dir: Path) -> Path:
    """Create `state_dir`/admin-token (64 hex characters, mode 0600) unless it exists."""
    _make_state_dir(state_dir)
    path = state_dir / ADMIN_TOKEN_FILE
    _write_private_file(path, secrets.token_hex(32).encode("ascii"), replace=False)
    return path


def _make_state_dir(state_dir: Path) -> None:
    """Create `state_dir` with mode 0700, and any missing parents with default modes."""
    if state_dir.is_dir():
        return
    try:
        state_dir.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if not state_dir.is_dir():
            raise IssuerStateError(
                f"demo state directory {state_dir} exists but is not a directory"
            ) from None
        return
    # mkdir applies the umask, so set the mode explicitly.
    state_dir.chmod(0o700)


def _write_private_file(path: Path, data: bytes, *, replace: bool) -> bool:
    """Write `data` to `path` with mode 0600, so readers never see a partial file.

    The data goes to a temporary file in the same directory first. With
    `replace` false, an existing `path` is left alone and the result is False.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            # os.open applies the umask, which could leave the owner without access.
            os.fchmod(file.fileno(), 0o600)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
            return True
        try:
            # Unlike os.replace, os.link fails when the target exists.
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        temporary.unlink(missing_ok=True)
