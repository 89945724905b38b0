"""Bans in Redis, so that every gateway instance enforces a ban within a second.

All ban state sits under one hash tag (`{bans}`), so in a Redis Cluster
the rule counters and the ban list share one slot and a script may touch
both. The ban list is a hash: field = client, value = "until level
level_until reason". Each worker copies the bans in force every
`POLL_SECONDS`, and checks read that copy, never waiting for Redis. When
Redis is unreachable, the last copy stays in force and the outage is
logged once, with its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from ringwall.config.limits import BanRule
from ringwall.edge.bans import BanEntry, EmbeddedBans
from ringwall.state.redis_client import RedisClient, RedisReplyError, RedisUnavailable, Script
from ringwall.state.shared import StoreError

log = logging.getLogger("ringwall.bans")

POLL_SECONDS = 0.5
# The whole list is read again only when its version changed, or this often.
FULL_READ_SECONDS = 30.0
# Automatic bans stop being added past this many entries, so an attacker with
# many addresses cannot make every worker's poll arbitrarily expensive.
MAX_ENTRIES = 100_000

# Count one rejection in the rule's sliding window (the same estimate as
# ringwall.limits.window), and ban when the count passes the threshold.
# KEYS: counter hash, ban list hash, version counter. ARGV: window,
# threshold, ban seconds, max ban seconds, client, rule name, max entries.
# Returns nil, or {until, level}.
_COUNT = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[1])
local threshold = tonumber(ARGV[2])
local start = math.floor(now / window) * window
local state = redis.call('HMGET', KEYS[1], 's', 'c', 'p')
local s = tonumber(state[1]) or 0
local c = tonumber(state[2]) or 0
local p = tonumber(state[3]) or 0
if s ~= start then
  if s == start - window then p = c else p = 0 end
  c = 0
end
c = c + 1
redis.call('HSET', KEYS[1], 's', string.format('%.17g', start), 'c', c, 'p', p)
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 2000))
local estimate = p * (1 - (now - start) / window) + c
if estimate <= threshold then return nil end
local level = 0
local previous = redis.call('HGET', KEYS[2], ARGV[5])
if previous then
  local until_, prev_level, level_until = string.match(previous, '^(%S+) (%S+) (%S+)')
  if tonumber(until_) > now then return nil end
  if tonumber(level_until) > now then level = tonumber(prev_level) + 1 end
end
if not previous and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[7]) then return nil end
local seconds = math.min(tonumber(ARGV[3]) * 2 ^ math.min(level, 40), tonumber(ARGV[4]))
local until_ = now + seconds
redis.call('HSET', KEYS[2], ARGV[5], string.format('%.6f %d %.6f %s', until_, level,
  until_ + tonumber(ARGV[4]), ARGV[6]))
redis.call('INCR', KEYS[3])
return {string.format('%.6f', until_), level}
"""
)

# Remove entries whose kept level ended. KEYS: ban list hash. ARGV: none.
_PRUNE = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local level_until = tonumber(string.match(all[i + 1], '^%S+ %S+ (%S+)'))
  if level_until == nil or level_until < now then redis.call('HDEL', KEYS[1], all[i]) end
end
return #all / 2
"""
)


def parse_entry(client: bytes, value: bytes) -> tuple[BanEntry, float] | None:
    """Parse one ban list field; return the entry and its level_until, or None if malformed."""
    parts = value.decode("utf-8", "replace").split(" ", 3)
    if len(parts) < 3:
        return None
    try:
        until, level, level_until = float(parts[0]), int(parts[1]), float(parts[2])
    except ValueError:
        return None
    reason = parts[3] if len(parts) > 3 else ""
    return BanEntry(client.decode("ascii", "replace"), until, level, reason), level_until


class RedisBans:
    """Bans kept in Redis and copied into memory by a polling task."""

    def __init__(
        self,
        client: RedisClient,
        prefix: str,
        clock: Callable[[], float] = time.time,
        *,
        fallback: EmbeddedBans | None = None,
    ) -> None:
        self.client = client
        # Counts and bans in this gateway's shared memory while Redis is unreachable.
        self.fallback = fallback
        self.list_key = f"{prefix}{{bans}}:list".encode()
        self.version_key = f"{prefix}{{bans}}:version".encode()
        self._version: bytes | None = None
        self._full_read_at = 0.0
        self.prefix = prefix
        self.clock = clock
        self._active: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._task = loop.create_task(self._poll())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def active(self, client: str, now: float) -> bool:
        until = self._active.get(client)
        if until is not None and until > now:
            return True
        if self._failing and self.fallback is not None:
            return self.fallback.active(client, now)
        return False

    async def count(self, rule: BanRule, client: str, now: float) -> BanEntry | None:
        counter = self._counter(rule, client)
        try:
            reply = await self.client.evalsha(
                _COUNT,
                [counter, self.list_key, self.version_key],
                [
                    rule.window,
                    rule.threshold,
                    rule.ban,
                    rule.max_ban,
                    client,
                    rule.name,
                    MAX_ENTRIES,
                ],
            )
        except (RedisUnavailable, RedisReplyError) as exc:
            self._failed(exc)
            if self.fallback is None:
                return None
            # NOTE: a ban made here is enforced by this gateway only, until it
            # ends. It is not copied to Redis when Redis returns.
            try:
                return self.fallback.count(rule, client, now)
            except StoreError as local_exc:
                log.warning(
                    "rejection not counted", extra={"layer": "ban", "error": str(local_exc)}
                )
                return None
        if not isinstance(reply, list) or len(reply) != 2:
            return None
        until = float(reply[0])
        self._active[client] = until
        return BanEntry(client, until, int(reply[1]), rule.name)

    async def add(self, client: str, seconds: float, reason: str, now: float) -> BanEntry:
        until = now + seconds
        value = f"{until:.6f} 0 {until:.6f} {reason}"
        await self.client.execute(b"HSET", self.list_key, client, value)
        await self.client.execute(b"INCR", self.version_key)
        self._active[client] = until
        return BanEntry(client, until, 0, reason)

    async def remove(self, client: str, rules: tuple[BanRule, ...]) -> bool:
        if self.fallback is not None:
            self.fallback.remove(client, rules)
        if rules:
            await self.client.execute(b"DEL", *(self._counter(rule, client) for rule in rules))
        removed = await self.client.execute(b"HDEL", self.list_key, client)
        await self.client.execute(b"INCR", self.version_key)
        self._active.pop(client, None)
        return removed == 1

    def _counter(self, rule: BanRule, client: str) -> bytes:
        """Return the key of the rejection counter of `rule` for `client`."""
        return f"{self.prefix}{{bans}}:count:{rule.name}:{client}".encode()

    async def entries(self, now: float) -> list[BanEntry]:
        reply = await self.client.execute(b"HGETALL", self.list_key)
        return [entry for entry, _ in _parse_all(reply) if entry.until > now]

    async def _poll(self) -> None:
        while True:
            try:
                await self._refresh()
            except (RedisUnavailable, RedisReplyError) as exc:
                self._failed(exc)
            else:
                if self._failing:
                    self._failing = False
                    log.warning("the ban list in Redis is reachable again")
            await asyncio.sleep(POLL_SECONDS)

    async def _refresh(self) -> None:
        """Copy the bans in force, when the list changed or a full read is due."""
        version = await self.client.execute(b"GET", self.version_key)
        now = self.clock()
        if version == self._version and now - self._full_read_at < FULL_READ_SECONDS:
            return
        await self.client.evalsha(_PRUNE, [self.list_key], [])
        reply = await self.client.execute(b"HGETALL", self.list_key)
        now = self.clock()
        self._active = {
            entry.client: entry.until for entry, _ in _parse_all(reply) if entry.until > now
        }
        self._version = version if isinstance(version, bytes) else None
        self._full_read_at = now

    def _failed(self, exc: Exception) -> None:
        if not self._failing:
            self._failing = True
            local = (
                ", and rejections are counted in this gateway's shared memory until it returns"
                if self.fallback is not None
                else ""
            )
            log.error(
                f"cannot reach the ban list in Redis; the last copy stays in force{local}",
                extra={"layer": "ban", "error": str(exc)},
            )


def _parse_all(reply: object) -> list[tuple[BanEntry, float]]:
    if not isinstance(reply, list):
        return []
    parsed = []
    for index in range(0, len(reply) - 1, 2):
        client, value = reply[index], reply[index + 1]
        if isinstance(client, bytes) and isinstance(value, bytes):
            entry = parse_entry(client, value)
            if entry is not None:
                parsed.append(entry)
    return parsed
