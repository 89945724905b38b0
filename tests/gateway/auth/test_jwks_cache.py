"""Tests for ringwall.gateway.auth.jwks_cache: when the cache fetches, and which keys it serves."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ringwall.gateway.auth.jwks_cache import (
    CacheState,
    FetchEvent,
    FetchNeed,
    JwksCache,
)
from ringwall.gateway.auth.jws import TokenInvalid, verify_compact

EC_KEY_1 = ec.generate_private_key(ec.SECP256R1())
EC_KEY_2 = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)

TTL = 600.0
COOLDOWN = 30.0
MAX_STALE = 3600.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(value: int) -> str:
    return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "kid": kid,
        "crv": "P-256",
        "x": b64(numbers.x.to_bytes(32, "big")),
        "y": b64(numbers.y.to_bytes(32, "big")),
        **extra,
    }


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "kid": kid, "n": uint(numbers.n), "e": uint(numbers.e)}


def document(*members: object) -> bytes:
    return json.dumps({"keys": list(members)}).encode()


KEY_SET_1 = document(ec_jwk(EC_KEY_1, "ec-1"))
KEY_SET_2 = document(ec_jwk(EC_KEY_1, "ec-1"), ec_jwk(EC_KEY_2, "ec-2"))


def es256_token(key: ec.EllipticCurvePrivateKey, kid: str) -> str:
    header = b64(json.dumps({"alg": "ES256", "kid": kid}).encode())
    payload = b64(b'{"sub":"alice"}')
    signing_input = f"{header}.{payload}".encode()
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{header}.{payload}.{b64(signature)}"


def loaded_cache(now: float = 0.0, doc: bytes = KEY_SET_1) -> JwksCache:
    cache = JwksCache(ttl=TTL, cooldown=COOLDOWN, max_stale=MAX_STALE)
    outcome = cache.record_fetch_success(doc, now)
    assert outcome.event is FetchEvent.KEYS_LOADED
    return cache


def kids(keys: tuple[Any, ...]) -> list[str | None]:
    return [key.kid for key in keys]


# First fetch.


def test_empty_cache_requests_fetch() -> None:
    cache = JwksCache()
    result = cache.lookup("ec-1", "ES256", 0.0)
    assert cache.state(0.0) is CacheState.EMPTY
    assert result.keys == ()
    assert result.fetch is FetchNeed.WAIT


def test_first_fetch_loads_keys() -> None:
    cache = JwksCache()
    outcome = cache.record_fetch_success(KEY_SET_2, 5.0)
    assert outcome.event is FetchEvent.KEYS_LOADED
    assert outcome.key_count == 2
    assert outcome.error is None
    result = cache.lookup("ec-2", "ES256", 6.0)
    assert kids(result.keys) == ["ec-2"]
    assert result.fetch is FetchNeed.NONE
    assert result.stale is False


def test_failed_first_fetch_waits_for_cooldown() -> None:
    cache = JwksCache(cooldown=COOLDOWN)
    outcome = cache.record_fetch_failure("connection refused", 0.0)
    assert outcome.event is FetchEvent.FAILED_WITHOUT_KEYS
    assert outcome.key_count == 0
    assert outcome.keys_age is None
    assert outcome.error == "connection refused"
    assert cache.lookup("ec-1", "ES256", 29.9).fetch is FetchNeed.NONE
    assert cache.lookup("ec-1", "ES256", 30.0).fetch is FetchNeed.WAIT


def test_kid_none_returns_every_key() -> None:
    cache = loaded_cache(doc=KEY_SET_2)
    result = cache.lookup(None, "ES256", 1.0)
    assert kids(result.keys) == ["ec-1", "ec-2"]
    assert result.fetch is FetchNeed.NONE


# Unknown kid, rotation and the cooldown.


def test_unknown_kid_after_routine_fetch_requests_fetch() -> None:
    # A key rotated in just after the routine fetch is still found on first use.
    cache = loaded_cache()
    result = cache.lookup("ec-2", "ES256", 1)
    assert result.fetch is FetchNeed.WAIT


def test_second_unknown_kid_within_cooldown_no_fetch() -> None:
    cache = loaded_cache()
    assert cache.lookup("ec-2", "ES256", 1).fetch is FetchNeed.WAIT
    result = cache.lookup("ec-3", "ES256", COOLDOWN - 1)
    assert result.keys == ()
    assert result.fetch is FetchNeed.NONE


def test_unknown_kid_after_cooldown_requests_fetch() -> None:
    cache = loaded_cache()
    result = cache.lookup("ec-2", "ES256", COOLDOWN)
    assert result.keys == ()
    assert result.fetch is FetchNeed.WAIT


def test_rotation_new_kid_found_before_ttl() -> None:
    cache = loaded_cache()
    assert cache.lookup("ec-2", "ES256", 100.0).fetch is FetchNeed.WAIT
    outcome = cache.record_fetch_success(KEY_SET_2, 100.5)
    assert outcome.event is FetchEvent.KEYS_CHANGED
    assert outcome.key_count == 2
    result = cache.lookup("ec-2", "ES256", 100.5)
    assert kids(result.keys) == ["ec-2"]
    assert result.fetch is FetchNeed.NONE


def test_kid_miss_refetches_once_per_cooldown() -> None:
    cache = loaded_cache()
    assert cache.lookup("unknown", "ES256", 100.0).fetch is FetchNeed.WAIT
    cache.record_fetch_success(KEY_SET_1, 100.0)
    for now in (100.0, 110.0, 129.9):
        assert cache.lookup("unknown", "ES256", now).fetch is FetchNeed.NONE
        assert cache.lookup("other", "ES256", now).fetch is FetchNeed.NONE
    assert cache.lookup("unknown", "ES256", 130.0).fetch is FetchNeed.WAIT


def test_failed_refetch_also_starts_cooldown() -> None:
    cache = loaded_cache()
    cache.record_fetch_failure("timed out", 100.0)
    assert cache.lookup("unknown", "ES256", 129.9).fetch is FetchNeed.NONE
    assert cache.lookup("unknown", "ES256", 130.0).fetch is FetchNeed.WAIT


def test_known_kid_without_alg_requests_fetch() -> None:
    cache = loaded_cache(doc=document(rsa_jwk(RSA_KEY, "shared")))
    result = cache.lookup("shared", "ES256", COOLDOWN)
    assert kids(result.keys) == ["shared"]
    assert result.fetch is FetchNeed.WAIT


def test_missing_kid_unknown_alg_requests_fetch() -> None:
    cache = loaded_cache()
    assert cache.lookup(None, "RS256", COOLDOWN).fetch is FetchNeed.WAIT


def test_same_document_reports_unchanged() -> None:
    cache = loaded_cache()
    outcome = cache.record_fetch_success(KEY_SET_1, 50.0)
    assert outcome.event is FetchEvent.KEYS_UNCHANGED
    assert outcome.key_count == 1


def test_same_kid_new_key_reports_changed() -> None:
    cache = loaded_cache()
    outcome = cache.record_fetch_success(document(ec_jwk(EC_KEY_2, "ec-1")), 50.0)
    assert outcome.event is FetchEvent.KEYS_CHANGED


# TTL and refresh.


def test_keys_fresh_until_ttl() -> None:
    cache = loaded_cache()
    result = cache.lookup("ec-1", "ES256", TTL - 0.1)
    assert cache.state(TTL - 0.1) is CacheState.FRESH
    assert result.fetch is FetchNeed.NONE
    assert result.stale is False


def test_expired_ttl_serves_keys_and_refreshes() -> None:
    cache = loaded_cache()
    result = cache.lookup("ec-1", "ES256", TTL)
    assert cache.state(TTL) is CacheState.STALE
    assert kids(result.keys) == ["ec-1"]
    assert result.fetch is FetchNeed.BACKGROUND
    assert result.stale is True


def test_refresh_success_restarts_ttl() -> None:
    cache = loaded_cache()
    outcome = cache.record_fetch_success(KEY_SET_1, TTL + 1)
    assert outcome.event is FetchEvent.KEYS_UNCHANGED
    assert outcome.keys_age == 0.0
    assert cache.state(2 * TTL) is CacheState.FRESH
    assert cache.lookup("ec-1", "ES256", 2 * TTL).fetch is FetchNeed.NONE


def test_ttl_shorter_than_cooldown_refreshes_per_cooldown() -> None:
    cache = JwksCache(ttl=5.0, cooldown=COOLDOWN)
    cache.record_fetch_success(KEY_SET_1, 0.0)
    assert cache.lookup("ec-1", "ES256", 10.0).fetch is FetchNeed.NONE
    assert cache.lookup("ec-1", "ES256", COOLDOWN).fetch is FetchNeed.BACKGROUND


# Stale-if-error and the max stale age.


def test_failed_refresh_keeps_stale_keys() -> None:
    cache = loaded_cache()
    outcome = cache.record_fetch_failure("connection refused", TTL + 10)
    assert outcome.event is FetchEvent.FAILED_KEEPING_KEYS
    assert outcome.key_count == 1
    assert outcome.keys_age == TTL + 10
    assert outcome.consecutive_failures == 1
    result = cache.lookup("ec-1", "ES256", TTL + 20)
    assert kids(result.keys) == ["ec-1"]
    assert result.stale is True
    assert result.fetch is FetchNeed.NONE


def test_failed_refresh_retried_after_cooldown() -> None:
    cache = loaded_cache()
    cache.record_fetch_failure("connection refused", TTL)
    assert cache.lookup("ec-1", "ES256", TTL + COOLDOWN).fetch is FetchNeed.BACKGROUND


def test_consecutive_failures_counted_and_reset() -> None:
    cache = loaded_cache()
    cache.record_fetch_failure("timed out", TTL)
    outcome = cache.record_fetch_failure("timed out", TTL + COOLDOWN)
    assert outcome.consecutive_failures == 2
    cache.record_fetch_success(KEY_SET_1, TTL + 2 * COOLDOWN)
    assert cache.record_fetch_failure("timed out", TTL + 3 * COOLDOWN).consecutive_failures == 1


def test_stale_keys_usable_until_max_stale() -> None:
    cache = loaded_cache()
    cache.record_fetch_failure("connection refused", TTL)
    last_usable = TTL + MAX_STALE - 0.1
    assert cache.state(last_usable) is CacheState.STALE
    assert kids(cache.lookup("ec-1", "ES256", last_usable).keys) == ["ec-1"]


def test_keys_past_max_stale_not_used() -> None:
    cache = loaded_cache()
    expired_at = TTL + MAX_STALE
    result = cache.lookup("ec-1", "ES256", expired_at)
    assert cache.state(expired_at) is CacheState.EXPIRED
    assert result.keys == ()
    assert result.fetch is FetchNeed.WAIT
    assert cache.usable_keys(expired_at) == ()


def test_failure_past_max_stale_reports_no_keys() -> None:
    cache = loaded_cache()
    outcome = cache.record_fetch_failure("connection refused", TTL + MAX_STALE)
    assert outcome.event is FetchEvent.FAILED_WITHOUT_KEYS
    assert outcome.key_count == 0
    assert outcome.keys_age is None


def test_success_after_expiry_reports_loaded() -> None:
    cache = loaded_cache()
    outcome = cache.record_fetch_success(KEY_SET_1, TTL + MAX_STALE + 1)
    assert outcome.event is FetchEvent.KEYS_LOADED


def test_max_stale_zero_disables_stale_keys() -> None:
    cache = JwksCache(ttl=TTL, max_stale=0.0)
    cache.record_fetch_success(KEY_SET_1, 0.0)
    assert cache.state(TTL) is CacheState.EXPIRED
    assert cache.lookup("ec-1", "ES256", TTL).keys == ()


# Documents that count as failures.


def test_zero_usable_keys_counts_as_failure() -> None:
    cache = loaded_cache()
    encryption_only = document(ec_jwk(EC_KEY_2, "ec-2", use="enc"))
    outcome = cache.record_fetch_success(encryption_only, 100.0)
    assert outcome.event is FetchEvent.FAILED_KEEPING_KEYS
    assert outcome.key_count == 1
    assert outcome.error is not None
    assert "no usable key" in outcome.error
    assert 'use is "enc", not sig' in outcome.error
    assert [skipped.kid for skipped in outcome.skipped] == ["ec-2"]
    assert kids(cache.lookup("ec-1", "ES256", 101.0).keys) == ["ec-1"]


def test_zero_key_failure_keeps_original_ttl() -> None:
    cache = loaded_cache()
    cache.record_fetch_success(document(), 100.0)
    assert cache.state(TTL) is CacheState.STALE


def test_empty_key_array_counts_as_failure() -> None:
    cache = JwksCache()
    outcome = cache.record_fetch_success(document(), 0.0)
    assert outcome.event is FetchEvent.FAILED_WITHOUT_KEYS
    assert outcome.error == "the JWK set has no keys"
    assert cache.state(1.0) is CacheState.EMPTY


def test_invalid_document_counts_as_failure() -> None:
    cache = loaded_cache()
    outcome = cache.record_fetch_success(b"<html>Bad Gateway</html>", 100.0)
    assert outcome.event is FetchEvent.FAILED_KEEPING_KEYS
    assert outcome.error is not None
    assert outcome.error.startswith("the JWK set is invalid: JWK set is not valid JSON")
    assert kids(cache.lookup("ec-1", "ES256", 101.0).keys) == ["ec-1"]


def test_document_over_max_size_counts_as_failure() -> None:
    cache = JwksCache(max_size=100)
    outcome = cache.record_fetch_success(KEY_SET_1, 0.0)
    assert outcome.event is FetchEvent.FAILED_WITHOUT_KEYS
    assert outcome.error == "the JWK set is invalid: JWK set is larger than 100 bytes"


def test_symmetric_keys_never_used_from_fetch() -> None:
    cache = JwksCache()
    outcome = cache.record_fetch_success(document({"kty": "oct", "k": b64(b"s" * 32)}), 0.0)
    assert outcome.event is FetchEvent.FAILED_WITHOUT_KEYS


# KeyLookup view for verify_compact.


def test_view_verifies_token_with_cached_key() -> None:
    cache = loaded_cache()
    view = cache.at(1.0)
    verified = verify_compact(es256_token(EC_KEY_1, "ec-1"), view, frozenset({"ES256"}))
    assert verified.kid == "ec-1"
    assert view.fetch is FetchNeed.NONE


def test_view_reports_fetch_for_unknown_kid() -> None:
    cache = loaded_cache()
    view = cache.at(COOLDOWN)
    with pytest.raises(TokenInvalid, match="no key found"):
        verify_compact(es256_token(EC_KEY_2, "ec-2"), view, frozenset({"ES256"}))
    assert view.fetch is FetchNeed.WAIT


# Configuration.


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"ttl": 0.0}, "ttl must be positive"),
        ({"cooldown": -1.0}, "cooldown must not be negative"),
        ({"max_stale": -1.0}, "max_stale must not be negative"),
    ],
)
def test_invalid_settings_rejected(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JwksCache(**arguments)
