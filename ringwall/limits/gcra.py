"""The generic cell rate algorithm (GCRA): a rate limit kept as one timestamp per key.

A limit of `limit` requests per `period` seconds, with up to `burst`
requests at once, spaces requests `interval = period / limit` apart. The
state of a key is its theoretical arrival time (TAT): when the key would be
back to an empty bucket. A request of cost 1 moves the TAT `interval` into
the future; it is allowed while the TAT stays within `burst * interval` of
now. Only allowed requests move the TAT, so a client that keeps sending
while limited is allowed again as soon as it slows down.

A TAT at or before now is the same as no state, so a store may forget such
a key at any time without changing a decision.

Every store (shared memory, Redis) applies `decide` or its exact
translation, so decisions agree everywhere. Times are seconds as floats;
the caller supplies `now` (the store's clock).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class Rate:
    """`limit` requests per `period` seconds, at most `burst` at once.

    `interval` (seconds between requests) and `capacity` (how far past now
    the TAT may be after an allowed request) are computed once, at creation.
    """

    limit: int
    period: float
    burst: int
    interval: float = field(init=False, compare=False)
    capacity: float = field(init=False, compare=False)

    def __post_init__(self) -> None:
        interval = self.period / self.limit
        object.__setattr__(self, "interval", interval)
        object.__setattr__(self, "capacity", self.burst * interval)


class Decision(NamedTuple):
    """The outcome of one check.

    `tat` is the state to store: the new TAT when allowed, the old one
    otherwise. `remaining` is how many more requests of cost 1 would be
    allowed right now. `retry_after` is 0 when allowed, else the seconds
    until this request would be allowed. `reset` is the seconds until the
    whole burst is available again.
    """

    allowed: bool
    tat: float
    remaining: int
    retry_after: float
    reset: float


def decide(rate: Rate, tat: float, now: float, cost: int = 1) -> Decision:
    """Decide a request of `cost` against a key whose stored TAT is `tat` (0 for none)."""
    interval = rate.interval
    capacity = rate.capacity
    base = tat if tat > now else now
    new_tat = base + cost * interval
    ahead = new_tat - now
    if ahead <= capacity + _EPSILON:
        return Decision(True, new_tat, _remaining(capacity - ahead, interval), 0.0, ahead)
    current = base - now
    return Decision(False, tat, _remaining(capacity - current, interval), ahead - capacity, current)


# Sums of epoch seconds drift by a few ulps (one ulp is about 2.4e-7 s in
# 2026), so a request that fits exactly must not be refused for that.
_EPSILON = 1e-6


def _remaining(room: float, interval: float) -> int:
    left = math.floor(room / interval + _EPSILON)
    return left if left > 0 else 0
