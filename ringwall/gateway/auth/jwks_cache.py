"""Decide when to fetch an issuer's JWK set, and which cached keys may be used meanwhile.

`JwksCache` is sans-IO: it never fetches. The caller passes the current time
(seconds from a monotonic clock) to every method, calls `lookup` for keys,
performs the fetch that `lookup` requests, and reports the result with
`record_fetch_success` or `record_fetch_failure`. `ringwall.server.jwks_fetch`
is the asyncio adapter.

The rules, with the defaults of the constructor:

- A fetched document is parsed once. Its keys are fresh for `ttl` (600 s)
  after the fetch. Cache-Control and Expires headers of the key server are
  not read, so the configured TTL applies to every issuer.
- A token whose `kid` is not in the set, or for whose `alg` no key with that
  `kid` exists, requests a fetch that the caller waits for. So a rotated key
  is found on first use, without waiting for the TTL.
- After the TTL the keys are stale but still used while a background refresh
  runs. When refreshes fail, stale keys keep working for up to `max_stale`
  (24 h) after the TTL ran out, and then nothing is usable until a fetch
  succeeds.
- A fetch for an unknown `kid` is requested at most once per `cooldown`
  (30 s), and not within `cooldown` after a failed fetch. This bounds the
  fetches that tokens with random `kid` values can cause, and the retries
  against a failing key server. A routine fetch (at start or after the TTL)
  does not start this cooldown, so a key rotated in just after one is still
  found on first use. Background refreshes of stale keys wait `cooldown`
  after the last fetch ended.
- A fetched document that is invalid or has no usable key counts as a failed
  fetch, so the keys already known stay in use.

Events worth logging come back as `FetchOutcome` values. This module logs nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from ringwall.gateway.auth.jwk import (
    MAX_JWKS_SIZE,
    JwksInvalid,
    SkippedKey,
    VerificationKey,
    parse_jwks,
)

DEFAULT_TTL = 600.0
DEFAULT_COOLDOWN = 30.0
DEFAULT_MAX_STALE = 24 * 3600.0


class CacheState(enum.Enum):
    """Usability of the cached keys at a given time."""

    EMPTY = "empty"  # no fetch has succeeded yet
    FRESH = "fresh"  # within the TTL
    STALE = "stale"  # used while a refresh is tried, past the TTL but within max_stale
    EXPIRED = "expired"  # past TTL plus max_stale: not used


class FetchNeed(enum.Enum):
    """The fetch that a lookup requests from the caller."""

    NONE = "none"
    BACKGROUND = "background"  # the returned keys are usable, so refresh without waiting
    WAIT = "wait"  # no usable key matched, so fetch and then call lookup again


class FetchEvent(enum.Enum):
    """Effect of a recorded fetch result on the cached keys."""

    KEYS_LOADED = "keys_loaded"  # first usable keys, or usable again after expiry
    KEYS_CHANGED = "keys_changed"
    KEYS_UNCHANGED = "keys_unchanged"
    FAILED_KEEPING_KEYS = "failed_keeping_keys"  # the keys already known stay in use
    FAILED_WITHOUT_KEYS = "failed_without_keys"  # no key is usable for this issuer


@dataclass(frozen=True, slots=True)
class KeyLookupResult:
    """The keys whose kid matches a token, and the fetch the caller should start.

    `keys` contains every usable key with the token's kid (every usable key when
    the token has none), including keys that do not allow the token's alg, so
    that `verify_compact` can name the problem precisely.
    """

    keys: tuple[VerificationKey, ...]
    fetch: FetchNeed
    stale: bool


@dataclass(frozen=True, slots=True)
class FetchOutcome:
    """The effect of one recorded fetch, for the caller to log.

    `error` is the failure reason, or None after a success. `keys_age` is
    the number of seconds since the keys now in use were fetched, or None
    when no key is usable.
    """

    event: FetchEvent
    key_count: int
    skipped: tuple[SkippedKey, ...] = ()
    error: str | None = None
    keys_age: float | None = None
    consecutive_failures: int = 0


class JwksCache:
    """The fetch policy and the current keys of one issuer's JWK set."""

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TTL,
        cooldown: float = DEFAULT_COOLDOWN,
        max_stale: float = DEFAULT_MAX_STALE,
        max_size: int = MAX_JWKS_SIZE,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, not {ttl}")
        if cooldown < 0:
            raise ValueError(f"cooldown must not be negative, not {cooldown}")
        if max_stale < 0:
            raise ValueError(f"max_stale must not be negative, not {max_stale}")
        self.ttl = ttl
        self.cooldown = cooldown
        self.max_stale = max_stale
        self.max_size = max_size
        self._keys: tuple[VerificationKey, ...] = ()
        self._fetched_at: float | None = None
        self._last_fetch_ended_at: float | None = None
        self._last_miss_fetch_at: float | None = None
        self._consecutive_failures = 0

    def state(self, now: float) -> CacheState:
        """Return how usable the cached keys are at `now`."""
        if self._fetched_at is None:
            return CacheState.EMPTY
        age = now - self._fetched_at
        if age < self.ttl:
            return CacheState.FRESH
        if age < self.ttl + self.max_stale:
            return CacheState.STALE
        return CacheState.EXPIRED

    def usable_keys(self, now: float) -> tuple[VerificationKey, ...]:
        """Return every key that may verify tokens at `now`."""
        if self.state(now) in (CacheState.FRESH, CacheState.STALE):
            return self._keys
        return ()

    def lookup(self, kid: str | None, alg: str, now: float) -> KeyLookupResult:
        """Find the usable keys for a token's `kid` and `alg`, and decide whether to fetch.

        This only reads the cache. A fetch it requests is started by the caller,
        which later calls `record_fetch_success` or `record_fetch_failure`.
        """
        state = self.state(now)
        usable = self._keys if state in (CacheState.FRESH, CacheState.STALE) else ()
        matches = tuple(key for key in usable if kid is None or key.kid == kid)

        fetch = FetchNeed.NONE
        if not any(alg in key.algorithms for key in matches):
            if self._miss_fetch_allowed(now):
                if usable:
                    # Only a kid missing from a loaded set starts the cooldown; the
                    # first load must not delay the first rotation.
                    self._last_miss_fetch_at = now
                fetch = FetchNeed.WAIT
        elif state is CacheState.STALE and self._fetch_allowed(now):
            fetch = FetchNeed.BACKGROUND
        return KeyLookupResult(matches, fetch, stale=state is CacheState.STALE)

    def at(self, now: float) -> CachedKeyLookup:
        """Return a `KeyLookup` over the keys usable at `now`, for `verify_compact`."""
        return CachedKeyLookup(self, now)

    def record_fetch_success(self, document: bytes, now: float) -> FetchOutcome:
        """Parse a fetched JWK set and use its keys, unless it has none that are usable.

        An invalid document or one without usable keys is recorded as a failed
        fetch, and the keys already known stay in use.
        """
        try:
            key_set = parse_jwks(document, max_size=self.max_size)
        except JwksInvalid as err:
            return self.record_fetch_failure(f"the JWK set is invalid: {err.reason}", now)
        if not key_set.keys:
            return self._record_failure(
                _no_usable_keys_reason(key_set.skipped), now, key_set.skipped
            )

        event = self._change_event(key_set.keys, now)
        self._keys = key_set.keys
        self._fetched_at = now
        self._last_fetch_ended_at = now
        self._consecutive_failures = 0
        return FetchOutcome(event, len(key_set.keys), key_set.skipped, keys_age=0.0)

    def record_fetch_failure(self, error: str, now: float) -> FetchOutcome:
        """Record a fetch that failed with the reason `error`, keeping the known keys."""
        return self._record_failure(error, now, ())

    def _record_failure(
        self, error: str, now: float, skipped: tuple[SkippedKey, ...]
    ) -> FetchOutcome:
        self._last_fetch_ended_at = now
        self._consecutive_failures += 1
        usable = self.usable_keys(now)
        if usable and self._fetched_at is not None:
            event = FetchEvent.FAILED_KEEPING_KEYS
            keys_age: float | None = now - self._fetched_at
        else:
            event = FetchEvent.FAILED_WITHOUT_KEYS
            keys_age = None
        return FetchOutcome(
            event, len(usable), skipped, error, keys_age, self._consecutive_failures
        )

    def _miss_fetch_allowed(self, now: float) -> bool:
        if self._last_fetch_ended_at is None:
            return True
        recent_miss = (
            self._last_miss_fetch_at is not None and now - self._last_miss_fetch_at < self.cooldown
        )
        recent_failure = (
            self._consecutive_failures > 0 and now - self._last_fetch_ended_at < self.cooldown
        )
        return not (recent_miss or recent_failure)

    def _fetch_allowed(self, now: float) -> bool:
        if self._last_fetch_ended_at is None:
            return True
        return now - self._last_fetch_ended_at >= self.cooldown

    def _change_event(self, keys: tuple[VerificationKey, ...], now: float) -> FetchEvent:
        if not self.usable_keys(now):
            return FetchEvent.KEYS_LOADED
        if keys == self._keys:
            return FetchEvent.KEYS_UNCHANGED
        return FetchEvent.KEYS_CHANGED


class CachedKeyLookup:
    """A `KeyLookup` over a `JwksCache` at one instant.

    `find` never fetches. `fetch` is the fetch need of the last `find`, so
    after `verify_compact` fails the caller can check whether fetching the
    key set and verifying again may succeed.
    """

    def __init__(self, cache: JwksCache, now: float) -> None:
        self._cache = cache
        self._now = now
        self.fetch = FetchNeed.NONE

    def find(self, kid: str | None, alg: str) -> Sequence[VerificationKey]:
        result = self._cache.lookup(kid, alg, self._now)
        self.fetch = result.fetch
        return result.keys


def _no_usable_keys_reason(skipped: tuple[SkippedKey, ...]) -> str:
    if not skipped:
        return "the JWK set has no keys"
    first = skipped[0]
    return (
        f"the JWK set has no usable key: all {len(skipped)} were skipped, "
        f"the first (keys[{first.index}]) because {first.reason}"
    )
