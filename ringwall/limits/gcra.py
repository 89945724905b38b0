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
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rate:
    """`limit` requests per `period` seconds, at most `burst` at once."""

    limit: int
    period: float
    burst: int

    @property
    def interval(self) -> float:
        return self.period / self.limit

    @property
    def capacity(self) -> float:
        """How far past now the TAT may be after an allowed request, in seconds."""
        return self.burst * self.interval


@dataclass(frozen=True, slots=True)
class Decision:
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
    base = max(tat, now)
    new_tat = base + cost * interval
    ahead = new_tat - now
    if ahead <= capacity + _EPSILON:
        return Decision(
            allowed=True,
            tat=new_tat,
            remaining=_remaining(capacity - ahead, interval),
            retry_after=0.0,
            reset=ahead,
        )
    current = base - now
    return Decision(
        allowed=False,
        tat=tat,
        remaining=_remaining(capacity - current, interval),
        retry_after=ahead - capacity,
        reset=current,
    )


# Float sums of `interval` drift by a few ulps; a request that fits exactly
# must not be refused for that.
_EPSILON = 1e-9


def _remaining(room: float, interval: float) -> int:
    return max(0, math.floor(room / interval + _EPSILON))
