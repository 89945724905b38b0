"""Automatic and manual bans of client IPs, in the manner of fail2ban and CrowdSec.

A ban rule counts the rejections of the kinds it lists (statuses such as
401 or 429, or the layers `waf` and `validation`) per client IP in a
sliding window. More than `threshold` of them bans the IP for `ban`
seconds. Each new ban while the previous one's level is kept doubles the
time, up to `max_ban`. A banned IP is rejected at accept with 403, before
any of its requests is read. Every ban and unban goes to the audit log.

The bans live in the state store: the embedded shared memory, so all
workers of a gateway see a ban at once, or Redis, which every instance
polls (see `ringwall.state.redis_bans`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ringwall.audit import AuditLog, AuditRecord
from ringwall.config.limits import BanRule
from ringwall.errors import Forbidden, Rejection
from ringwall.limits.limiter import KeyBuilder
from ringwall.limits.window import Quota
from ringwall.state.shared import Ban, SharedStore, StoreError

if TYPE_CHECKING:
    from ringwall.exchange import Exchange

LAYER = "ban"
log = logging.getLogger("ringwall.bans")


@dataclass(frozen=True, slots=True)
class BanEntry:
    """One ban as listed: the client key (an IP or an IPv6 network), and its ban."""

    client: str
    until: float
    level: int
    reason: str


def ban_seconds(rule: BanRule, level: int) -> float:
    """Return the length of a ban at `level` (0 for a first ban) under `rule`."""
    return float(min(rule.ban * (2 ** min(level, 40)), rule.max_ban))


def matches(rule: BanRule, rejection: Rejection) -> bool:
    """Return whether `rule` counts `rejection`."""
    return str(rejection.status) in rule.rejections or rejection.layer in rule.rejections


def banned(client: str) -> Forbidden:
    return Forbidden(
        LAYER,
        f"the client {client} is banned",
        close=True,
        detail="this client address is banned",
    )


class BanBackend(Protocol):
    """The store of bans and of the rejection counts of ban rules."""

    def active(self, client: str, now: float) -> bool:
        """Return whether `client` is banned at `now`, from state in this process's memory."""

    def count(
        self, rule: BanRule, client: str, now: float
    ) -> Awaitable[BanEntry | None] | BanEntry | None:
        """Count one rejection of `client` under `rule`; return the new ban if it made one."""

    def add(
        self, client: str, seconds: float, reason: str, now: float
    ) -> Awaitable[BanEntry] | BanEntry:
        """Ban `client` for `seconds`, replacing any ban of it."""

    def remove(self, client: str, rules: tuple[BanRule, ...]) -> Awaitable[bool] | bool:
        """Lift the ban of `client`, drop its counts under `rules`, and return whether it had a ban.

        Without the counts dropped, the next rejection after an unban would
        ban the client again at once.
        """

    def entries(self, now: float) -> Awaitable[list[BanEntry]] | list[BanEntry]:
        """Return the bans in force at `now`."""


class EmbeddedBans:
    """Bans in the shared memory of one gateway's workers."""

    def __init__(self, store: SharedStore) -> None:
        self.store = store

    def active(self, client: str, now: float) -> bool:
        try:
            ban = self.store.get_ban(_key(client), now)
        except StoreError:
            return False
        return ban is not None and ban.active(now)

    def count(self, rule: BanRule, client: str, now: float) -> BanEntry | None:
        counted = self.store.count_event(
            _rule_key(rule, client), Quota(rule.threshold, rule.window), now
        )
        if counted <= rule.threshold:
            return None
        key = _key(client)
        previous = self.store.get_ban(key, now)
        if previous is not None and previous.active(now):
            return None
        level = previous.level + 1 if previous is not None else 0
        seconds = ban_seconds(rule, level)
        self.store.set_ban(
            key, now + seconds, level, rule.name, level_until=now + seconds + rule.max_ban, now=now
        )
        return BanEntry(client, now + seconds, level, rule.name)

    def add(self, client: str, seconds: float, reason: str, now: float) -> BanEntry:
        self.store.set_ban(_key(client), now + seconds, 0, reason, now=now)
        return BanEntry(client, now + seconds, 0, reason)

    def remove(self, client: str, rules: tuple[BanRule, ...]) -> bool:
        for rule in rules:
            self.store.forget_events(_rule_key(rule, client))
        return self.store.remove_ban(_key(client))

    def entries(self, now: float) -> list[BanEntry]:
        return [_entry(key, ban) for key, ban in self.store.list_bans(now)]


def _key(client: str) -> bytes:
    return client.encode("ascii")


def _rule_key(rule: BanRule, client: str) -> bytes:
    return f"ban\x00{rule.name}\x00{client}".encode("ascii")


def _entry(key: bytes, ban: Ban) -> BanEntry:
    return BanEntry(key.decode("ascii", "replace"), ban.until, ban.level, ban.reason)


class Bans:
    """Refuse banned clients, count rejections against the rules, and audit every change."""

    def __init__(
        self,
        backend: BanBackend,
        rules: tuple[BanRule, ...],
        keys: KeyBuilder,
        audit: AuditLog | None,
        *,
        spawn: Callable[[Coroutine[Any, Any, None]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.rules = rules
        self.keys = keys
        self.audit = audit
        self.clock = clock
        # Runs the awaitable of a backend that does I/O (Redis), without waiting.
        self._spawn = spawn

    def client(self, address: str) -> str:
        return self.keys.client(address)

    def check(self, address: str) -> Forbidden | None:
        """Return the rejection for a banned `address`, or None."""
        client = self.keys.client(address)
        if self.backend.active(client, self.clock()):
            return banned(client)
        return None

    def observe(self, address: str, rejection: Rejection, exchange: Exchange | None) -> None:
        """Count `rejection` of `address` against every rule that lists its kind."""
        if rejection.layer == LAYER or not self.rules:
            return
        client = self.keys.client(address)
        now = self.clock()
        for rule in self.rules:
            if not matches(rule, rejection):
                continue
            try:
                result = self.backend.count(rule, client, now)
            except StoreError as exc:
                log.warning("rejection not counted", extra={"layer": LAYER, "error": str(exc)})
                continue
            if isinstance(result, BanEntry):
                self._banned(result, rule, exchange)
            elif result is not None and self._spawn is not None:
                self._spawn(self._await_count(result, rule))

    async def _await_count(self, pending: Awaitable[BanEntry | None], rule: BanRule) -> None:
        entry = await pending
        if entry is not None:
            self._banned(entry, rule, None)

    def _banned(self, entry: BanEntry, rule: BanRule, exchange: Exchange | None) -> None:
        if exchange is not None:
            # Later requests must come on a new connection, refused at accept.
            exchange.close = True
        log.warning(
            "client banned",
            extra={
                "layer": LAYER,
                "client": entry.client,
                "rule": rule.name,
                "seconds": round(entry.until - self.clock(), 3),
                "level": entry.level,
            },
        )
        self.record("ban.added", entry.client, f"rule {rule.name}, level {entry.level}")

    def record(self, action: str, client: str, reason: str, subject: str | None = None) -> bool:
        """Write an audit record of a ban or unban.

        Returns False when the record was not stored and the audit log's
        `on_failure` is `reject`: the caller must then not make the change.
        """
        if self.audit is None:
            return True
        stored = self.audit.record(
            AuditRecord.command_action(
                time=self.clock(), action=action, target=client, subject=subject, reason=reason
            )
        )
        return stored or not self.audit.reject_on_failure
