"""The sliding-window counter, for long windows such as daily and monthly quotas.

Time is cut into fixed windows of `window` seconds, counted from the epoch.
A key keeps two counts: the current window's and the previous window's.
The estimate of requests in the last `window` seconds weighs the previous
count by the share of it still inside the sliding window. A request of
`cost` is allowed while the estimate plus `cost` stays within `limit`;
only allowed requests are counted.

This is the estimate Cloudflare and others use: two integers per key
instead of a timestamp per request, at the price of assuming the previous
window's requests were spread evenly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class Quota:
    """At most `limit` requests in any `window` seconds."""

    limit: int
    window: float


class Counts(NamedTuple):
    """The stored state of a key: the start of the current window and two counts."""

    start: float
    current: int
    previous: int


class WindowDecision(NamedTuple):
    """The outcome of one check; `counts` is the state to store."""

    allowed: bool
    counts: Counts
    remaining: int
    retry_after: float
    reset: float


def roll(quota: Quota, counts: Counts, now: float) -> Counts:
    """Return `counts` moved to the window that contains `now`."""
    start = math.floor(now / quota.window) * quota.window
    if counts.start == start:
        return counts
    if counts.start == start - quota.window:
        return Counts(start, 0, counts.current)
    return Counts(start, 0, 0)


def decide_window(quota: Quota, counts: Counts, now: float, cost: int = 1) -> WindowDecision:
    """Decide a request of `cost` against a key's stored `counts` (Counts(0, 0, 0) for none)."""
    counts = roll(quota, counts, now)
    elapsed = now - counts.start
    weight = 1.0 - elapsed / quota.window
    estimate = counts.previous * weight + counts.current
    reset = counts.start + quota.window - now
    if estimate + cost <= quota.limit:
        stored = Counts(counts.start, counts.current + cost, counts.previous)
        left = quota.limit - (estimate + cost)
        return WindowDecision(True, stored, max(0, math.floor(left)), 0.0, reset)
    left = max(0, math.floor(quota.limit - estimate))
    return WindowDecision(False, counts, left, _wait(quota, counts, now, cost), reset)


def _wait(quota: Quota, counts: Counts, now: float, cost: int) -> float:
    """Seconds until a request of `cost` fits, if nothing else is allowed meanwhile."""
    if cost > quota.limit:
        # Never allowed: the client learns to wait a whole window.
        return quota.window
    room = quota.limit - cost - counts.current
    if room < 0:
        # The current window alone is full: wait for the next one, where the
        # current count becomes the previous one and decays from there.
        share = (quota.limit - cost) / counts.current
        return counts.start + quota.window + (1.0 - share) * quota.window - now
    if counts.previous == 0:
        return 0.0
    # previous * (1 - (t - start) / window) <= room  gives the time t.
    elapsed_needed = (1.0 - room / counts.previous) * quota.window
    return max(0.0, counts.start + elapsed_needed - now)
