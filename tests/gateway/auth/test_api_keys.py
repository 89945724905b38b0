"""Tests for ringwall.gateway.auth.api_keys: key format, storage and verification."""

import base64
import hashlib
import hmac
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from ringwall.gateway.auth import api_keys
from ringwall.gateway.auth.api_keys import (
    EXPIRED,
    INVALID,
    MALFORMED,
    MISSING,
    REPEATED,
    REVOKED,
    ApiKeyInvalid,
    ApiKeyNotFound,
    ApiKeyRecord,
    ApiKeyStore,
    KeyFileError,
    read_api_key,
)

NOW = 1_800_000_000.0
KEY_PATTERN = re.compile(r"rw_([a-z2-7]{12})_([A-Za-z0-9_-]{43})")


def new_key(store: ApiKeyStore, **fields: Any) -> tuple[ApiKeyRecord, str]:
    fields.setdefault("now", NOW)
    record, key = store.create(fields.pop("owner", "alice"), **fields)
    return record, key.reveal()


def replace_secret(key: str, secret: str) -> str:
    return key[: -len(secret)] + secret


# Key format and creation


def test_create_key_format() -> None:
    record, key = new_key(ApiKeyStore())
    match = KEY_PATTERN.fullmatch(key)
    assert match is not None
    assert match[1] == record.id
    secret_bytes = base64.urlsafe_b64decode(match[2] + "=")
    assert len(secret_bytes) == 32


def test_create_keys_differ() -> None:
    store = ApiKeyStore()
    keys = {new_key(store)[1] for _ in range(50)}
    assert len(keys) == 50
    assert len(store) == 50


def test_create_record_fields() -> None:
    record, _ = new_key(
        ApiKeyStore(),
        owner="svc-billing",
        roles=["reader", "writer"],
        scopes=("orders:read",),
        plan="gold",
        expires_at=NOW + 60,
        description="billing batch job",
    )
    assert record.owner == "svc-billing"
    assert record.roles == ("reader", "writer")
    assert record.scopes == ("orders:read",)
    assert record.plan == "gold"
    assert record.created_at == NOW
    assert record.expires_at == NOW + 60
    assert record.revoked_at is None
    assert record.description == "billing batch job"


def test_create_custom_prefix() -> None:
    store = ApiKeyStore(prefix="acme_live_")
    record, key = new_key(store)
    assert key.startswith(f"acme_live_{record.id}_")
    assert store.verify(key, NOW) == record
    default_prefix_key = "rw_" + key.removeprefix("acme_live_")
    with pytest.raises(ApiKeyInvalid) as caught:
        store.verify(default_prefix_key, NOW)
    assert caught.value.reason == MALFORMED


@pytest.mark.parametrize("prefix", ["", "rw", "RW_", "_rw_", "rw-", "r w_", "é_", "a" * 40 + "_"])
def test_store_rejects_invalid_prefix(prefix: str) -> None:
    with pytest.raises(ValueError, match="invalid API key prefix"):
        ApiKeyStore(prefix=prefix)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"owner": ""}, "owner: invalid value"),
        ({"owner": "alice smith"}, "owner: invalid value"),
        ({"owner": "a" * 129}, "owner: invalid value"),
        ({"owner": "-alice"}, "owner: invalid value"),
        ({"roles": "admin"}, "roles: expected a sequence of strings"),
        ({"roles": ["admin", "admin"]}, "roles: duplicate value 'admin'"),
        ({"scopes": ["orders read"]}, "scopes: invalid value"),
        ({"plan": ""}, "plan: invalid value"),
        ({"expires_at": NOW}, "expires_at: must be later than created_at"),
        ({"expires_at": NOW - 1}, "expires_at: must be later than created_at"),
        ({"expires_at": float("nan")}, "expires_at: expected seconds"),
        ({"description": "line\nbreak"}, "description: contains control"),
        ({"description": "x" * 201}, "description: longer than 200"),
        ({"now": -1.0}, "created_at: expected seconds"),
    ],
)
def test_create_rejects_invalid_fields(fields: dict[str, Any], message: str) -> None:
    store = ApiKeyStore()
    with pytest.raises(ValueError, match=re.escape(message)):
        new_key(store, **fields)
    assert len(store) == 0


def test_create_accepts_unicode_description() -> None:
    record, _ = new_key(ApiKeyStore(), description="clé de l'équipe données")
    assert record.description == "clé de l'équipe données"


# Verification


def test_verify_returns_record() -> None:
    store = ApiKeyStore()
    record, key = new_key(store, roles=["admin"])
    assert store.verify(key, NOW) == record


def test_verify_hides_unknown_key_id() -> None:
    store = ApiKeyStore()
    _, key = new_key(store)
    other_store = ApiKeyStore()
    _, unknown_key = new_key(other_store)
    secret = KEY_PATTERN.fullmatch(key)[2]  # type: ignore[index]
    wrong_secret = replace_secret(key, base64.urlsafe_b64encode(bytes(32)).decode()[:43])
    assert wrong_secret != key

    reasons = []
    for presented in (wrong_secret, unknown_key):
        with pytest.raises(ApiKeyInvalid) as caught:
            store.verify(presented, NOW)
        reasons.append(caught.value.reason)
        assert secret not in str(caught.value)
    assert reasons == [INVALID, INVALID]


def test_verify_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real_compare = hmac.compare_digest

    def recording_compare(a: str, b: str) -> bool:
        calls.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording_compare)
    store = ApiKeyStore()
    _, key = new_key(store)
    _, unknown_key = new_key(ApiKeyStore())
    secret = key[-43:]

    store.verify(key, NOW)
    with pytest.raises(ApiKeyInvalid):
        store.verify(unknown_key, NOW)

    assert len(calls) == 2
    assert calls[0] == (hashlib.sha256(secret.encode()).hexdigest(),) * 2
    # An unknown key id is still compared, against a digest of the same length.
    assert len(calls[1][0]) == len(calls[1][1]) == 64


def test_verify_rejects_revoked_key() -> None:
    store = ApiKeyStore()
    record, key = new_key(store)
    revoked = store.revoke(record.id, NOW + 10)
    assert revoked.revoked_at == NOW + 10
    with pytest.raises(ApiKeyInvalid) as caught:
        store.verify(key, NOW + 20)
    assert caught.value.reason == REVOKED


def test_verify_revoked_wrong_secret() -> None:
    # Without the secret a client must not learn that the key id was revoked.
    store = ApiKeyStore()
    record, key = new_key(store)
    store.revoke(record.id, NOW)
    wrong_secret = replace_secret(key, "A" * 43)
    with pytest.raises(ApiKeyInvalid) as caught:
        store.verify(wrong_secret, NOW)
    assert caught.value.reason == INVALID


def test_verify_expired_key() -> None:
    store = ApiKeyStore()
    record, key = new_key(store, expires_at=NOW + 3600)
    assert store.verify(key, NOW + 3599.999) == record
    for now in (NOW + 3600, NOW + 86400):
        with pytest.raises(ApiKeyInvalid) as caught:
            store.verify(key, now)
        assert caught.value.reason == EXPIRED


def _valid_key() -> str:
    return "rw_abcdefgh2345_" + base64.urlsafe_b64encode(bytes(range(32))).decode()[:43]


def _malformed_keys() -> list[str]:
    key = _valid_key()
    body = key[3:]
    secret = key[-43:]
    return [
        "",
        "rw_",
        key[:-1],
        key + "A",
        key + "\n",
        " " + key,
        key.upper(),
        "RW_" + body,
        "xx_" + body,
        "rw" + body,
        "rw__" + body,
        "Bearer " + key,
        body,
        "rw_ABCDEFGH2345_" + secret,  # uppercase key id
        "rw_abcdefgh0189_" + secret,  # 0, 1, 8 and 9 are not base32
        "rw_abcdefgh234_A" + secret,  # key id one character short
        "rw_abcdefgh2345-" + secret,  # wrong separator
        "rw_abcdefgh2345_" + secret[:-1] + "=",  # padding
        "rw_abcdefgh2345_" + secret[:-2] + "==",
        "rw_abcdefgh2345_" + "+" + secret[1:],  # standard base64, not base64url
        "rw_abcdefgh2345_" + "/" + secret[1:],
        "rw_abcdefgh2345_" + secret[:-1] + "B",  # unused low bits set
        "rw_abcdefgh2345_" + secret[:-1] + "\u0410",  # Cyrillic A
        "rw_abcdefgh2345_" + secret[:-1] + "\x00",
        "rw_abcdefgh2345_" + secret[:20] + " " + secret[21:],
        "rw_abcdefgh2345_" + "\uff41" + secret[1:],  # fullwidth a
        "rw_\u0430bcdefgh2345_" + secret,  # Cyrillic a in the key id
        "rw_" + "a" * 12 + "_" + "A" * 10_000,
    ]


def test_valid_key_fixture_is_well_formed() -> None:
    # The malformed cases below are edits of this key, which must itself parse.
    with pytest.raises(ApiKeyInvalid) as caught:
        ApiKeyStore().verify(_valid_key(), NOW)
    assert caught.value.reason == INVALID


@pytest.mark.parametrize("presented", _malformed_keys())
def test_verify_rejects_malformed_key(presented: str) -> None:
    with pytest.raises(ApiKeyInvalid) as caught:
        ApiKeyStore().verify(presented, NOW)
    assert caught.value.reason == MALFORMED
    assert str(caught.value) == MALFORMED


def test_verify_malformed_skips_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []

    def recording_compare(a: str, b: str) -> bool:
        calls.append((a, b))
        return False

    monkeypatch.setattr(hmac, "compare_digest", recording_compare)
    with pytest.raises(ApiKeyInvalid):
        ApiKeyStore().verify("rw_short", NOW)
    assert calls == []


# Revoking and listing


def test_revoke_unknown_key() -> None:
    with pytest.raises(ApiKeyNotFound) as caught:
        ApiKeyStore().revoke("abcdefgh2345", NOW)
    assert caught.value.key_id == "abcdefgh2345"
    assert isinstance(caught.value, LookupError)


def test_revoke_twice() -> None:
    store = ApiKeyStore()
    record, _ = new_key(store)
    store.revoke(record.id, NOW + 1)
    with pytest.raises(ValueError, match="already revoked"):
        store.revoke(record.id, NOW + 2)
    assert store.list()[0].revoked_at == NOW + 1


def test_list_oldest_first() -> None:
    store = ApiKeyStore()
    second, _ = new_key(store, now=NOW + 5)
    first, _ = new_key(store, now=NOW)
    third, _ = new_key(store, now=NOW + 9)
    assert store.list() == (first, second, third)


# Secrets never appear in repr or str


def test_repr_hides_secret() -> None:
    store = ApiKeyStore()
    record, key = store.create("alice", now=NOW)
    revealed = key.reveal()
    secret = revealed[-43:]
    digest = hashlib.sha256(secret.encode()).hexdigest()
    texts = [repr(key), str(key), f"{key}", repr(store), repr(record), repr((record, key))]
    texts.append(repr(store._keys))
    texts.append(repr(api_keys._parse_key(revealed, "rw_")))
    for text in texts:
        assert secret not in text
        assert digest not in text


# Key file


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = ApiKeyStore()
    first, first_key = new_key(store, roles=["admin"], scopes=["a:b"], plan="gold")
    second, second_key = new_key(store, expires_at=NOW + 1.5, description="ci")
    store.revoke(second.id, NOW + 1)
    store.save(path)

    loaded = ApiKeyStore.load(path)
    assert loaded.list() == store.list()
    assert loaded.verify(first_key, NOW) == first
    with pytest.raises(ApiKeyInvalid) as caught:
        loaded.verify(second_key, NOW)
    assert caught.value.reason == REVOKED


def test_save_stores_only_hash(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = ApiKeyStore()
    record, key = new_key(store)
    store.save(path)
    text = path.read_text()
    secret = key[-43:]
    assert secret not in text
    entry = json.loads(text)["keys"][0]
    assert entry["id"] == record.id
    assert entry["secret_sha256"] == hashlib.sha256(secret.encode()).hexdigest()


def test_save_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("{}")
    path.chmod(0o644)
    ApiKeyStore().save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_save_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = ApiKeyStore()
    for _ in range(3):
        new_key(store)
        store.save(tmp_path / "keys.json")
    assert os.listdir(tmp_path) == ["keys.json"]


def test_save_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys.json"
    ApiKeyStore().save(path)
    before = path.read_text()

    def failing_replace(source: object, destination: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    store = ApiKeyStore()
    new_key(store)
    with pytest.raises(OSError, match="No space left"):
        store.save(path)
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["keys.json"]


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ApiKeyStore.load(tmp_path / "absent.json")


def test_load_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_bytes(b'{"version": 1, "keys": []}\xff')
    with pytest.raises(KeyFileError) as caught:
        ApiKeyStore.load(path)
    assert str(caught.value) == f"{path}: not valid UTF-8 at byte 26"


def _entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": "abcdefgh2345",
        "owner": "alice",
        "roles": [],
        "scopes": [],
        "plan": None,
        "created_at": NOW,
        "expires_at": None,
        "revoked_at": None,
        "description": "",
        "secret_sha256": "0" * 64,
    }
    entry.update(changes)
    return entry


def _document(*entries: dict[str, Any]) -> str:
    return json.dumps({"version": 1, "keys": list(entries)})


def test_from_json_accepts_minimal_entry() -> None:
    store = ApiKeyStore.from_json(_document(_entry(created_at=5)))
    assert store.list()[0].created_at == 5.0


MALFORMED_FILES = [
    ("", "invalid JSON at line 1 column 1"),
    ('{"version": 1, "keys": [}', "invalid JSON at line 1 column 25"),
    ('{"version": 1, "version": 1, "keys": []}', "duplicate member 'version'"),
    (_document(_entry()).replace('"owner"', '"owner": "bob", "owner"'), "duplicate member 'owner'"),
    ("[]", "$: expected a JSON object"),
    ('{"keys": []}', "$.version: missing member"),
    ('{"version": 2, "keys": []}', "$.version: expected 1, got 2"),
    ('{"version": true, "keys": []}', "$.version: expected 1, got True"),
    ('{"version": 1.0, "keys": []}', "$.version: expected 1, got 1.0"),
    ('{"version": 1, "keys": {}}', "$.keys: expected a JSON array"),
    ('{"version": 1, "keys": [], "extra": 0}', "$.extra: unknown member"),
    ('{"version": 1, "keys": [1]}', "$.keys[0]: expected a JSON object"),
    (_document({"id": "abcdefgh2345"}), "$.keys[0].created_at: missing member"),
    (_document(_entry(colour="red")), "$.keys[0].colour: unknown member"),
    (_document(_entry(id="ABC")), "$.keys[0].id: invalid key id"),
    (_document(_entry(id=7)), "$.keys[0].id: expected a string, got int"),
    (_document(_entry(owner="al ice")), "$.keys[0].owner: invalid value 'al ice'"),
    (_document(_entry(roles="admin")), "$.keys[0].roles: expected an array of strings"),
    (_document(_entry(scopes=[1])), "$.keys[0].scopes: expected an array of strings"),
    (_document(_entry(plan=3)), "$.keys[0].plan: expected a string, got int"),
    (_document(_entry(created_at="now")), "$.keys[0].created_at: expected a number, got str"),
    (_document(_entry(created_at=True)), "$.keys[0].created_at: expected a number, got bool"),
    (_document(_entry(created_at=-1)), "$.keys[0].created_at: expected seconds"),
    (_document(_entry()).replace(str(NOW), "1e400"), "$.keys[0].created_at: expected seconds"),
    (_document(_entry()).replace(str(NOW), "NaN"), "NaN is not a valid number"),
    (_document(_entry(expires_at=NOW)), "$.keys[0].expires_at: must be later than created_at"),
    (_document(_entry(revoked_at=[])), "$.keys[0].revoked_at: expected a number, got list"),
    (_document(_entry(description="a\tb")), "$.keys[0].description: contains control"),
    (_document(_entry(secret_sha256="A" * 64)), "$.keys[0].secret_sha256: expected 64"),
    (_document(_entry(secret_sha256="0" * 63)), "$.keys[0].secret_sha256: expected 64"),
    (_document(_entry(), _entry()), "$.keys[1].id: duplicate key id abcdefgh2345"),
]


@pytest.mark.parametrize(("text", "problem"), MALFORMED_FILES)
def test_from_json_rejects_malformed_file(text: str, problem: str) -> None:
    with pytest.raises(KeyFileError) as caught:
        ApiKeyStore.from_json(text, source="keys.json")
    assert caught.value.source == "keys.json"
    assert str(caught.value).startswith("keys.json: ")
    assert problem in caught.value.problem
    assert "\n" not in str(caught.value)


def test_load_names_file_in_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text('{"version": 1, "keys": [], "keys": []}')
    with pytest.raises(KeyFileError) as caught:
        ApiKeyStore.load(path)
    assert str(caught.value) == f"{path}: duplicate member 'keys' in a JSON object"


# Reading the header


def test_read_api_key_single_value() -> None:
    assert read_api_key([b"rw_abc"]) == "rw_abc"


def test_read_api_key_strips_spaces_and_tabs() -> None:
    assert read_api_key([b" \trw_abc\t "]) == "rw_abc"


def test_read_api_key_max_length() -> None:
    assert read_api_key([b"a" * 256]) == "a" * 256
    assert read_api_key([b"a" * 10], max_length=10) == "a" * 10


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([], MISSING),
        ([b""], MISSING),
        ([b" \t "], MISSING),
        ([b"rw_a", b"rw_b"], REPEATED),
        ([b"rw_a", b"rw_a"], REPEATED),
        ([b"rw_a", b""], REPEATED),
        ([b"a" * 257], "API key header too long"),
        (["rw_clé".encode()], "API key header contains non-ASCII bytes"),
        ([b"rw_\x80abc"], "API key header contains non-ASCII bytes"),
        ([b"rw_a\x00b"], "API key header contains control characters"),
        ([b"rw_a\r\nX-Admin: 1"], "API key header contains control characters"),
        ([b"rw_a\tb"], "API key header contains control characters"),
        ([b"rw_a\x7f"], "API key header contains control characters"),
    ],
)
def test_read_api_key_rejects(values: list[bytes], reason: str) -> None:
    with pytest.raises(ApiKeyInvalid) as caught:
        read_api_key(values)
    assert caught.value.reason == reason


def test_read_api_key_custom_max_length() -> None:
    with pytest.raises(ApiKeyInvalid) as caught:
        read_api_key([b"a" * 11], max_length=10)
    assert caught.value.reason == "API key header too long"


def test_read_then_verify() -> None:
    store = ApiKeyStore()
    record, key = new_key(store)
    assert store.verify(read_api_key([key.encode()]), NOW) == record
