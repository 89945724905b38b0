"""Revoked tokens kept in Redis, so a revocation reaches every gateway instance.

The list is a sorted set: each member is `issuer NUL jti`, scored with the
time (seconds since the epoch) until which the token stays revoked. Every
worker of every instance reads the members still in force every
`POLL_SECONDS`, so a revocation takes effect everywhere within about that
long. Checks read the copy in memory and never wait for Redis. When Redis
cannot be reached, the last list read stays in force, and the outage is
logged once, with its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

log = logging.getLogger("ringwall.auth")

POLL_SECONDS = 0.5
DEFAULT_KEY = "ringwall:revoked-tokens"


def member(issuer: str, jti: str) -> str:
    return f"{issuer}\x00{jti}"


class RedisRevocationList:
    """The revoked tokens in a Redis sorted set, copied into memory by a polling task."""

    def __init__(
        self,
        url: str,
        key: str = DEFAULT_KEY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.key = key
        self._clock = clock
        self._client = redis_asyncio.Redis.from_url(
            url, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self._revoked: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._task = loop.create_task(self._poll())

    def is_revoked(self, issuer: str | None, jti: str | None) -> bool:
        if issuer is None or jti is None or not self._revoked:
            return False
        until = self._revoked.get(member(issuer, jti))
        return until is not None and until > self._clock()

    async def refresh(self) -> None:
        """Read the revocations in force now; raise RedisError when Redis fails."""
        now = self._clock()
        entries = await self._client.zrangebyscore(self.key, now, "+inf", withscores=True)
        revoked = {}
        for entry in entries:
            name, score = entry[0], entry[1]
            text = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
            revoked[text] = float(score)
        self._revoked = revoked

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()

    async def _poll(self) -> None:
        while True:
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                if not self._failing:
                    self._failing = True
                    log.error(
                        "cannot read revocations from Redis, keeping the last list read",
                        extra={"url": _redacted(self.url), "error": str(exc)},
                    )
            else:
                if self._failing:
                    self._failing = False
                    log.warning(
                        "reading revocations from Redis works again",
                        extra={"url": _redacted(self.url)},
                    )
            await asyncio.sleep(POLL_SECONDS)


async def add_revocation(
    url: str, key: str, issuer: str, jti: str, until: float, now: float
) -> None:
    """Revoke a token in Redis until `until`, and drop entries that have expired."""
    client = redis_asyncio.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        async with client.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {member(issuer, jti): until})
            pipe.zremrangebyscore(key, "-inf", now)
            await pipe.execute()
    finally:
        await client.aclose()


def _redacted(url: str) -> str:
    # A redis:// URL may carry a password; never log it.
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
