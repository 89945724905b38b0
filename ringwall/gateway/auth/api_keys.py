"""API keys of the form `rw_<key id>_<secret>`: create, store, and verify.

A key has three parts:

- A prefix, set per store (default `rw_`), so secret scanners can find
  leaked keys.
- A key id of 12 characters from the lowercase base32 alphabet (a-z, 2-7),
  which names the key in logs and on the command line.
- A secret of 32 random bytes from `secrets`, base64url-encoded without
  padding (43 characters).

The store keeps only the SHA-256 hash of the secret's text. Slow password
hashes such as scrypt and PBKDF2 exist to make guessing low-entropy
passwords expensive. A 256-bit random secret cannot be guessed, even from a
leaked key file, so one SHA-256 per request is enough and keeps
verification cheap.

Verification compares hashes with `hmac.compare_digest`, and an unknown key
id is compared against a placeholder hash, so an unknown id and a wrong
secret take the same steps and give the same reason (`INVALID`).

Only `ApiKeyStore.load` and `ApiKeyStore.save` do I/O. Times are passed in
as `now`, in seconds since the Unix epoch.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ringwall.config.types import Secret
from ringwall.errors import RingwallError

DEFAULT_PREFIX = "rw_"
KEY_ID_LENGTH = 12
KEY_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
SECRET_BYTES = 32
FILE_VERSION = 1
MAX_NAME_LENGTH = 128
MAX_DESCRIPTION_LENGTH = 200

# Reasons of `ApiKeyInvalid`. They never contain any part of the presented key.
MISSING = "missing API key"
REPEATED = "repeated API key header"
TOO_LONG = "API key header too long"
NON_ASCII = "API key header contains non-ASCII bytes"
CONTROL_CHARACTERS = "API key header contains control characters"
MALFORMED = "malformed API key"
INVALID = "invalid API key"
REVOKED = "API key revoked"
EXPIRED = "API key expired"

_SECRET_TEXT_LENGTH = 43  # base64url of 32 bytes, without "=" padding
_PREFIX = re.compile(r"[a-z][a-z0-9_]{0,30}_", re.ASCII)
_KEY_ID = re.compile(rf"[a-z2-7]{{{KEY_ID_LENGTH}}}", re.ASCII)
_SECRET_TEXT = re.compile(rf"[A-Za-z0-9_-]{{{_SECRET_TEXT_LENGTH}}}", re.ASCII)
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:/@+-]{{0,{MAX_NAME_LENGTH - 1}}}", re.ASCII)
_SHA256_HEX = re.compile(r"[0-9a-f]{64}", re.ASCII)
_CONTROL_BYTES = re.compile(rb"[\x00-\x1f\x7f]")
_NAME_RULE = (
    f"1 to {MAX_NAME_LENGTH} ASCII letters, digits and . _ : / @ + -, "
    "starting with a letter or digit"
)
# Compared against when the key id is unknown. It has the length of a SHA-256
# hex digest, so the comparison takes the usual time, but no secret hashes to
# it because "-" is not a hexadecimal digit.
_PLACEHOLDER_HASH = "-" * 64


class ApiKeyInvalid(RingwallError):
    """A presented API key that does not authenticate the request.

    `reason` is one of the module's reason constants, so it is safe to send
    to the client and to log.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ApiKeyNotFound(RingwallError, LookupError):
    """A key id that is not in the store."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"API key {key_id!r} not found")
        self.key_id = key_id


class KeyFileError(RingwallError):
    """A key file that cannot be parsed. The message names the file and the problem."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """The metadata of one API key, without its secret or the secret's hash.

    Creating a record validates every field and raises `ValueError` with a
    message that starts with the field name.
    """

    id: str
    owner: str
    roles: tuple[str, ...]
    scopes: tuple[str, ...]
    plan: str | None
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not is_key_id(self.id):
            raise ValueError(f"id: invalid key id, {_KEY_ID_RULE}")
        _check_name("owner", self.owner)
        _check_names("roles", self.roles)
        _check_names("scopes", self.scopes)
        if self.plan is not None:
            _check_name("plan", self.plan)
        _check_times(self)
        _check_description(self.description)

    def is_expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


_KEY_ID_RULE = f"expected {KEY_ID_LENGTH} characters from a-z and 2-7"


def is_key_id(value: str) -> bool:
    """Return whether `value` has the form of a key id."""
    return _KEY_ID.fullmatch(value) is not None


def _check_name(field_name: str, value: str) -> None:
    if not _NAME.fullmatch(value):
        raise ValueError(f"{field_name}: invalid value {value[:40]!r}, expected {_NAME_RULE}")


def _check_names(field_name: str, values: tuple[str, ...]) -> None:
    for value in values:
        _check_name(field_name, value)
    if len(set(values)) != len(values):
        duplicate = next(value for value in values if values.count(value) > 1)
        raise ValueError(f"{field_name}: duplicate value {duplicate!r}")


def _check_time(field_name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{field_name}: expected seconds since the Unix epoch, got {value!r}")


def _check_times(record: ApiKeyRecord) -> None:
    _check_time("created_at", record.created_at)
    _check_time("expires_at", record.expires_at)
    _check_time("revoked_at", record.revoked_at)
    if record.expires_at is not None and record.expires_at <= record.created_at:
        raise ValueError("expires_at: must be later than created_at")


def _check_description(description: str) -> None:
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise ValueError(f"description: longer than {MAX_DESCRIPTION_LENGTH} characters")
    if not description.isprintable():
        raise ValueError("description: contains control or other non-printable characters")


@dataclass(frozen=True, slots=True)
class _StoredKey:
    record: ApiKeyRecord
    secret_sha256: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class _PresentedKey:
    key_id: str
    secret: str = field(repr=False)


def _encode_secret(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _is_canonical_secret(text: str) -> bool:
    # The last of the 43 characters carries 2 unused bits. Requiring them to
    # be zero gives each secret exactly one accepted spelling.
    if not _SECRET_TEXT.fullmatch(text):
        return False
    return _encode_secret(base64.urlsafe_b64decode(text + "=")) == text


def _parse_key(presented: str, prefix: str) -> _PresentedKey:
    """Split `presented` into key id and secret, or raise `ApiKeyInvalid(MALFORMED)`."""
    expected_length = len(prefix) + KEY_ID_LENGTH + 1 + _SECRET_TEXT_LENGTH
    if len(presented) != expected_length or not presented.startswith(prefix):
        raise ApiKeyInvalid(MALFORMED)
    body = presented[len(prefix) :]
    key_id, separator, secret = body[:KEY_ID_LENGTH], body[KEY_ID_LENGTH], body[KEY_ID_LENGTH + 1 :]
    if not is_key_id(key_id) or separator != "_" or not _is_canonical_secret(secret):
        raise ApiKeyInvalid(MALFORMED)
    return _PresentedKey(key_id, secret)


def read_api_key(header_values: list[bytes], max_length: int = 256) -> str:
    """Return the API key from the values of its request header.

    Raises `ApiKeyInvalid` when the header is missing, empty, repeated,
    longer than `max_length` bytes, or contains non-ASCII or control bytes.
    Spaces and tabs around the value are removed first, as RFC 9110 allows.
    """
    if len(header_values) > 1:
        raise ApiKeyInvalid(REPEATED)
    value = header_values[0].strip(b" \t") if header_values else b""
    if not value:
        raise ApiKeyInvalid(MISSING)
    if len(value) > max_length:
        raise ApiKeyInvalid(TOO_LONG)
    if not value.isascii():
        raise ApiKeyInvalid(NON_ASCII)
    if _CONTROL_BYTES.search(value):
        raise ApiKeyInvalid(CONTROL_CHARACTERS)
    return value.decode("ascii")


class ApiKeyStore:
    """The API keys of one key file, held in memory.

    `create` and `revoke` change only memory, so call `save` to write the file.
    """

    def __init__(self, *, prefix: str = DEFAULT_PREFIX) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(
                f"invalid API key prefix {prefix!r}: expected 2 to 32 characters from "
                "a-z, 0-9 and _, starting with a letter and ending with _"
            )
        self.prefix = prefix
        self._keys: dict[str, _StoredKey] = {}

    def __repr__(self) -> str:
        return f"ApiKeyStore(prefix={self.prefix!r}, keys={len(self._keys)})"

    def __len__(self) -> int:
        return len(self._keys)

    def create(
        self,
        owner: str,
        *,
        roles: Iterable[str] = (),
        scopes: Iterable[str] = (),
        plan: str | None = None,
        expires_at: float | None = None,
        description: str = "",
        now: float,
    ) -> tuple[ApiKeyRecord, Secret]:
        """Add a new key and return its record and the full key.

        The full key exists only in the returned `Secret`. Call `reveal()`
        on it to show it to the user once. Raises `ValueError` for an
        invalid field.
        """
        record = ApiKeyRecord(
            id=self._new_key_id(),
            owner=owner,
            roles=_as_tuple("roles", roles),
            scopes=_as_tuple("scopes", scopes),
            plan=plan,
            created_at=now,
            expires_at=expires_at,
            description=description,
        )
        secret = _encode_secret(secrets.token_bytes(SECRET_BYTES))
        self._keys[record.id] = _StoredKey(record, _hash_secret(secret))
        return record, Secret(f"{self.prefix}{record.id}_{secret}")

    def _new_key_id(self) -> str:
        while True:
            key_id = "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
            if key_id not in self._keys:
                return key_id

    def revoke(self, key_id: str, now: float) -> ApiKeyRecord:
        """Mark the key revoked at `now` and return its updated record.

        Raises `ApiKeyNotFound` for an unknown id and `ValueError` for a key
        that is already revoked.
        """
        stored = self._keys.get(key_id)
        if stored is None:
            raise ApiKeyNotFound(key_id)
        if stored.record.revoked_at is not None:
            raise ValueError(f"API key {key_id} is already revoked")
        record = replace(stored.record, revoked_at=now)
        self._keys[key_id] = replace(stored, record=record)
        return record

    def list(self) -> tuple[ApiKeyRecord, ...]:
        """Return every record, oldest first."""
        records = (stored.record for stored in self._keys.values())
        return tuple(sorted(records, key=lambda record: (record.created_at, record.id)))

    def verify(self, presented: str, now: float) -> ApiKeyRecord:
        """Check the key `presented` and return its record, or raise `ApiKeyInvalid`.

        Revocation and expiry are checked only after the secret matches, so
        without the secret a client learns nothing about a key id.
        """
        key = _parse_key(presented, self.prefix)
        stored = self._keys.get(key.key_id)
        expected = stored.secret_sha256 if stored is not None else _PLACEHOLDER_HASH
        matches = hmac.compare_digest(expected, _hash_secret(key.secret))
        if stored is None or not matches:
            raise ApiKeyInvalid(INVALID)
        if stored.record.revoked_at is not None:
            raise ApiKeyInvalid(REVOKED)
        if stored.record.is_expired(now):
            raise ApiKeyInvalid(EXPIRED)
        return stored.record

    def to_json(self) -> str:
        """Serialize the store as the text of a key file."""
        keys = [_entry_to_json(self._keys[record.id]) for record in self.list()]
        return json.dumps({"version": FILE_VERSION, "keys": keys}, indent=2) + "\n"

    @classmethod
    def from_json(
        cls, text: str, *, source: str = "<key file>", prefix: str = DEFAULT_PREFIX
    ) -> ApiKeyStore:
        """Parse the text of a key file, or raise `KeyFileError` naming `source`."""
        store = cls(prefix=prefix)
        for stored in _parse_key_file(text, source):
            store._keys[stored.record.id] = stored
        return store

    @classmethod
    def load(cls, path: str | Path, *, prefix: str = DEFAULT_PREFIX) -> ApiKeyStore:
        """Read the key file at `path`.

        Raises `KeyFileError` for a malformed file, and `OSError`
        (`FileNotFoundError` among others) when the file cannot be read.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise KeyFileError(str(path), f"not valid UTF-8 at byte {exc.start}") from None
        return cls.from_json(text, source=str(path), prefix=prefix)

    def save(self, path: str | Path) -> None:
        """Write the key file at `path` atomically, with mode 0600."""
        write_file_atomically(Path(path), self.to_json())


def _as_tuple(field_name: str, values: Iterable[str]) -> tuple[str, ...]:
    # tuple("admin") would silently become five one-letter roles.
    if isinstance(values, str):
        raise ValueError(f"{field_name}: expected a sequence of strings, got one string")
    return tuple(values)


def write_file_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace `path` with `text`, so readers see the old or the new file, never a mix.

    The text goes to a temporary file in the same directory, which is
    flushed to disk and then renamed over `path`. On any error the temporary
    file is removed and `path` is left as it was.
    """
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), mode)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # Flushes the directory entry, so the rename survives a crash.
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# Key file parsing. The file is JSON:
#   {"version": 1, "keys": [{"id": ..., "owner": ..., ..., "secret_sha256": ...}]}
# Unknown and missing members, duplicate members, and NaN or infinite numbers
# are all rejected, because a typo in a security file must not be ignored.

_DOCUMENT_MEMBERS = frozenset({"version", "keys"})
_ENTRY_MEMBERS = frozenset(
    {
        "id",
        "owner",
        "roles",
        "scopes",
        "plan",
        "created_at",
        "expires_at",
        "revoked_at",
        "description",
        "secret_sha256",
    }
)


class _DuplicateMember(ValueError):
    pass


def _reject_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise _DuplicateMember(name)
        result[name] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid number")


def _decode_json(text: str, source: str) -> Any:
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicate_members, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        raise KeyFileError(
            source, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except _DuplicateMember as exc:
        raise KeyFileError(source, f"duplicate member {exc.args[0]!r} in a JSON object") from None
    except ValueError as exc:
        raise KeyFileError(source, str(exc)) from None


def _check_members(value: object, expected: frozenset[str], where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a JSON object")
    unknown = sorted(set(value) - expected)
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown member")
    missing = sorted(expected - set(value))
    if missing:
        raise ValueError(f"{where}.{missing[0]}: missing member")
    return value


def _parse_key_file(text: str, source: str) -> list[_StoredKey]:
    document = _decode_json(text, source)
    try:
        members = _check_members(document, _DOCUMENT_MEMBERS, "$")
        version = members["version"]
        if type(version) is not int or version != FILE_VERSION:
            raise ValueError(f"$.version: expected {FILE_VERSION}, got {version!r}")
        if not isinstance(members["keys"], list):
            raise ValueError("$.keys: expected a JSON array")
    except ValueError as exc:
        raise KeyFileError(source, str(exc)) from None
    entries: list[_StoredKey] = []
    seen: set[str] = set()
    for index, item in enumerate(members["keys"]):
        stored = _parse_entry(item, f"$.keys[{index}]", source)
        if stored.record.id in seen:
            raise KeyFileError(source, f"$.keys[{index}].id: duplicate key id {stored.record.id}")
        seen.add(stored.record.id)
        entries.append(stored)
    return entries


def _parse_entry(item: object, where: str, source: str) -> _StoredKey:
    try:
        members = _check_members(item, _ENTRY_MEMBERS, where)
        record = ApiKeyRecord(
            id=_string(members, "id"),
            owner=_string(members, "owner"),
            roles=_strings(members, "roles"),
            scopes=_strings(members, "scopes"),
            plan=_optional_string(members, "plan"),
            created_at=_number(members, "created_at"),
            expires_at=_optional_number(members, "expires_at"),
            revoked_at=_optional_number(members, "revoked_at"),
            description=_string(members, "description"),
        )
        secret_sha256 = _string(members, "secret_sha256")
        if not _SHA256_HEX.fullmatch(secret_sha256):
            raise ValueError("secret_sha256: expected 64 lowercase hexadecimal digits")
    except ValueError as exc:
        message = str(exc)
        # Messages from the checks above start with a field name, not with `where`.
        if not message.startswith("$"):
            message = f"{where}.{message}"
        raise KeyFileError(source, message) from None
    return _StoredKey(record, secret_sha256)


def _string(members: dict[str, Any], name: str) -> str:
    value = members[name]
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected a string, got {type(value).__name__}")
    return value


def _strings(members: dict[str, Any], name: str) -> tuple[str, ...]:
    value = members[name]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{name}: expected an array of strings")
    return tuple(value)


def _number(members: dict[str, Any], name: str) -> float:
    value = members[name]
    # bool is a subclass of int, and `true` is not a time.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}: expected a number, got {type(value).__name__}")
    return float(value)


def _optional_string(members: dict[str, Any], name: str) -> str | None:
    return None if members[name] is None else _string(members, name)


def _optional_number(members: dict[str, Any], name: str) -> float | None:
    return None if members[name] is None else _number(members, name)


def _entry_to_json(stored: _StoredKey) -> dict[str, Any]:
    record = stored.record
    return {
        "id": record.id,
        "owner": record.owner,
        "roles": list(record.roles),
        "scopes": list(record.scopes),
        "plan": record.plan,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "revoked_at": record.revoked_at,
        "description": record.description,
        "secret_sha256": stored.secret_sha256,
    }
