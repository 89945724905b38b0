"""Configuration of rate limits, quotas, connection limits and automatic bans.

A rate is written as `100/minute`, `10/s`, `50/60s` or as a mapping
`{limit: 100, period: 1m, burst: 20}`. Rates use GCRA; quotas (`quota:`)
use a sliding-window counter and suit long windows such as a day.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

from ringwall.config.tls import ClientTlsConfig
from ringwall.config.types import Duration, parse_duration

Count = Annotated[int, Strict()]
StoreFailure = Literal["fail_open", "fail_closed", "local_fallback"]

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\S+)\s*$")
_PERIODS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "month": 30 * 86400.0,
}
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_FIXED_KEY_PARTS = ("ip", "subject", "api_key", "route")
# Key parts known only after authentication.
IDENTITY_KEY_PARTS = frozenset({"subject", "api_key"})
BAN_LAYERS = ("waf", "validation")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _parse_rate(value: object) -> object:
    if not isinstance(value, str):
        return value
    match = _RATE.match(value)
    if match is None:
        raise ValueError("expected a rate such as 100/minute, 10/s or 50/60s")
    limit, unit = int(match.group(1)), match.group(2)
    period = _PERIODS.get(unit)
    if period is None:
        try:
            period = parse_duration(unit)
        except ValueError:
            raise ValueError(
                f"unknown period {unit!r}: use s, minute, hour, day, month or a duration "
                "such as 60s"
            ) from None
    return {"limit": limit, "period": period}


class RateSpec(_Model):
    """`limit` requests per `period`; `burst` (default: `limit`) may arrive at once."""

    limit: Count = Field(ge=1, le=1_000_000_000)
    period: Duration = Field(gt=0, le=366 * 86400.0)
    burst: Count | None = Field(None, ge=1, le=1_000_000_000)

    @property
    def burst_or_limit(self) -> int:
        return self.burst if self.burst is not None else self.limit


Rate = Annotated[RateSpec, BeforeValidator(_parse_rate)]


class Tier(_Model):
    """A different rate or quota for callers with any of `roles` (roles or key scopes)."""

    roles: tuple[str, ...] = Field(min_length=1)
    rate: Rate | None = None
    quota: Rate | None = None


class LimitConfig(_Model):
    """One limit: who is counted together (`key`), and a `rate` or a `quota`.

    Key parts: `ip` (the client address; IPv6 grouped by `limits.ipv6_prefix`),
    `subject`, `api_key` (the key id), `route`, and `header:NAME`. A limit
    whose key has `subject` or `api_key` runs after authentication and
    authorization, so it counts only requests that pass them. Any other limit
    runs right after routing and counts every request that reaches it.
    """

    name: str
    key: tuple[str, ...] = ("ip",)
    rate: Rate | None = None
    quota: Rate | None = None
    tiers: tuple[Tier, ...] = ()
    # None: the store's `on_failure`.
    on_store_failure: StoreFailure | None = None

    @model_validator(mode="after")
    def _check(self) -> LimitConfig:
        if not _NAME.match(self.name):
            raise ValueError(
                f"invalid limit name {self.name!r}: use 1 to 64 letters, digits, _ . : or -"
            )
        if (self.rate is None) == (self.quota is None):
            raise ValueError("set exactly one of rate (GCRA) and quota (sliding window)")
        if self.quota is not None and self.quota.burst is not None:
            raise ValueError("a quota has no burst: use rate for a burst limit")
        if not self.key or len(set(self.key)) != len(self.key):
            raise ValueError("key: expected a list of distinct parts such as [ip] or [subject]")
        for part in self.key:
            if part in _FIXED_KEY_PARTS:
                continue
            name = part.removeprefix("header:")
            if name == part or not _HEADER_NAME.match(name):
                raise ValueError(
                    f"key: unknown part {part!r}: use ip, subject, api_key, route or header:NAME"
                )
        for index, tier in enumerate(self.tiers):
            if (tier.rate is None) != (self.rate is None) or (tier.quota is None) != (
                self.quota is None
            ):
                raise ValueError(
                    f"tiers[{index}]: set {'rate' if self.rate else 'quota'}, as the limit does"
                )
        if self.tiers and not self.after_authentication:
            raise ValueError("tiers depend on the caller: add subject or api_key to the key")
        return self

    @property
    def after_authentication(self) -> bool:
        return any(part in IDENTITY_KEY_PARTS for part in self.key)


class StoreConfig(_Model):
    """Where limits, connection counts and bans are kept.

    `embedded`: shared memory of one gateway, exact across its workers.
    `redis`: shared by every gateway instance using `url` (`redis://`,
    `rediss://`, `redis+sentinel://`, `redis+cluster://`). With Redis
    unreachable, each limit follows its `on_store_failure` setting, and
    `local_fallback` enforces limit / `instances` in the embedded store.
    `tls` sets how the servers of a `rediss` URL are verified. `ca_file` is
    the older spelling of `tls: {ca: FILE}`.
    """

    kind: Literal["embedded", "redis"] = "embedded"
    url: str | None = None
    ca_file: str | None = None
    # None: the system roots (or ca_file) and the host names of the URL.
    tls: ClientTlsConfig | None = None
    timeout: Duration = Field(0.25, gt=0, le=10)
    key_prefix: str = "ringwall:"
    on_failure: StoreFailure = "local_fallback"
    instances: Count = Field(1, ge=1, le=1000)
    max_keys: Count = Field(65536, ge=64, le=1_048_576)

    @model_validator(mode="after")
    def _check(self) -> StoreConfig:
        if self.kind == "redis" and not self.url:
            raise ValueError("kind redis needs url, such as redis://127.0.0.1:6379")
        if self.kind == "redis" and self.url:
            # Imported here: the client module is needed only with Redis.
            from ringwall.state.redis_client import RedisClient
            from ringwall.tls.client_context import ClientTlsError

            if self.ca_file is not None and not os.path.isfile(self.ca_file):
                raise ValueError(f"ca_file: {self.ca_file} is not a readable file")
            if self.ca_file is not None and self.tls is not None:
                raise ValueError("ca_file and tls are both set: move the CA bundle to tls.ca")
            try:
                RedisClient.from_url(
                    self.url, timeout=self.timeout, ca_file=self.ca_file, tls=self.tls
                )
            except ClientTlsError as exc:
                raise ValueError(f"{'ca_file' if self.tls is None else 'tls'}: {exc}") from None
            except ValueError as exc:
                raise ValueError(f"url: {exc}") from None
        if self.kind == "embedded" and self.url:
            raise ValueError("url is for kind redis: set kind: redis or remove url")
        if self.kind == "embedded" and self.tls is not None:
            raise ValueError("tls is for kind redis with a rediss:// url: remove tls")
        return self


class ConnectionLimitsConfig(_Model):
    """Open connections per client IP and in total, counted from accept."""

    per_ip: Count | None = Field(None, ge=1, le=1_000_000)
    total: Count | None = Field(None, ge=1, le=10_000_000)


def _parse_rejection_kinds(value: object) -> object:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise ValueError("expected a list such as [401, 429, waf, validation]")
    kinds = []
    for item in value:
        text = str(item)
        if text in BAN_LAYERS or (text.isdigit() and len(text) == 3 and "400" <= text <= "599"):
            kinds.append(text)
        else:
            raise ValueError(
                f"unknown rejection kind {item!r}: use a status from 400 to 599, waf or validation"
            )
    return tuple(kinds)


class BanRule(_Model):
    """Ban a client IP that gets more than `threshold` rejections of the kinds listed
    within `window`. The first ban lasts `ban`; each repeat within `max_ban` after the
    previous ban doubles it, up to `max_ban`."""

    name: str
    rejections: Annotated[tuple[str, ...], BeforeValidator(_parse_rejection_kinds)] = Field(
        min_length=1
    )
    threshold: Count = Field(ge=1, le=1_000_000)
    window: Duration = Field(gt=0, le=86400.0)
    ban: Duration = Field(gt=0, le=366 * 86400.0)
    max_ban: Duration = Field(86400.0, gt=0, le=366 * 86400.0)

    @model_validator(mode="after")
    def _check(self) -> BanRule:
        if not _NAME.match(self.name):
            raise ValueError(f"invalid rule name {self.name!r}: use letters, digits, _ . : or -")
        if self.max_ban < self.ban:
            raise ValueError("max_ban must be at least ban")
        return self


class LimitsConfig(_Model):
    """Gateway-wide limit settings; routes list their own `limits`."""

    store: StoreConfig = StoreConfig()
    ipv6_prefix: Count = Field(64, ge=16, le=128)
    # Limits on every request, before routing, so 404s count too. Keys: ip, header.
    edge: tuple[LimitConfig, ...] = ()
    connections: ConnectionLimitsConfig = ConnectionLimitsConfig()
    bans: tuple[BanRule, ...] = ()
    # Retry-After seconds of the 503 sent when the store fails and a limit fails closed.
    store_retry_after: Count = Field(5, ge=1, le=3600)

    @model_validator(mode="after")
    def _check(self) -> LimitsConfig:
        for index, limit in enumerate(self.edge):
            if limit.after_authentication or "route" in limit.key:
                raise ValueError(
                    f"edge[{index}]: an edge limit runs before routing and authentication: "
                    "use ip or header:NAME in its key"
                )
        names = [rule.name for rule in self.bans]
        if len(set(names)) != len(names):
            raise ValueError("bans: rule names must be unique")
        return self
