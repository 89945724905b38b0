"""Rate-limit scripts in the shared Redis at 127.0.0.1:6379 against the pure functions.

The scripts must return exactly what `decide` and `decide_window` return for
the same state and time. Tests that replay exact times use the script
variants built with ARGUMENT_CLOCK, which read `now` from the last argument;
RedisLimits itself always uses the server's clock.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringwall.limits.gcra import Decision, Rate, decide
from ringwall.limits.window import Counts, Quota, WindowDecision, decide_window
from ringwall.state.redis_client import RedisClient, RedisUnavailable
from ringwall.state.redis_limits import (
    ARGUMENT_CLOCK,
    DEFAULT_PREFIX,
    RedisLimits,
    parse_rate_reply,
    parse_window_reply,
    rate_arguments,
    rate_script,
    window_arguments,
    window_script,
)
from tests.support.redis_servers import free_port, shared_redis_prefix

REDIS_URL = "redis://127.0.0.1:6379/0"
FIXED_CLOCK_RATE = rate_script(ARGUMENT_CLOCK)
FIXED_CLOCK_WINDOW = window_script(ARGUMENT_CLOCK)


@pytest.fixture(scope="module")
def prefix() -> Iterator[bytes]:
    """A random key prefix on the shared Redis; its keys are deleted afterwards."""
    with shared_redis_prefix() as name:
        yield name.encode()


def run(scenario: Callable[[RedisClient], Awaitable[Any]], url: str = REDIS_URL) -> Any:
    async def main() -> Any:
        client = RedisClient.from_url(url)
        try:
            return await scenario(client)
        finally:
            await client.close()

    return asyncio.run(main())


def unique(prefix: bytes) -> bytes:
    return prefix + uuid.uuid4().hex.encode()


async def rate_at(client: RedisClient, key: bytes, rate: Rate, now: float, cost: int) -> Decision:
    arguments = (*rate_arguments(rate, cost), repr(now))
    return parse_rate_reply(await client.evalsha(FIXED_CLOCK_RATE, [key], arguments))


async def window_at(
    client: RedisClient, key: bytes, quota: Quota, now: float, cost: int
) -> WindowDecision:
    arguments = (*window_arguments(quota, cost), repr(now))
    return parse_window_reply(await client.evalsha(FIXED_CLOCK_WINDOW, [key], arguments))


# --- GCRA with the server's clock ---------------------------------------------------------------


def test_concurrent_burst_allows_exactly_burst(prefix: bytes) -> None:
    rate = Rate(limit=50, period=60.0, burst=50)

    async def scenario(client: RedisClient) -> list[Decision]:
        limits = RedisLimits(client, prefix)
        return await asyncio.gather(*(limits.check_rate(b"burst", rate) for _ in range(80)))

    decisions = run(scenario)
    assert sum(decision.allowed for decision in decisions) == 50
    assert [decision.allowed for decision in decisions] == [True] * 50 + [False] * 30
    assert all(decision.remaining == 0 for decision in decisions[50:])
    # The 51st request fits once one interval (1.2 s) has passed since the burst.
    assert decisions[50].retry_after == pytest.approx(1.2, abs=0.05)


def test_rate_matches_decide_with_server_clock(prefix: bytes) -> None:
    """Each reply equals `decide` at the server time that the reply itself implies.

    For an allowed request `reset` is `tat - now`, and for a rejected one it is
    `stored tat - now`. Both subtractions are exact, so `tat - reset` is the
    server's `now` to the bit.
    """
    rate = Rate(limit=10, period=1.0, burst=5)
    costs = [1, 1, 2, 1, 1, 3, 1, 1, 1, 2, 1, 1]

    async def scenario(client: RedisClient) -> list[tuple[int, Decision, float]]:
        limits = RedisLimits(client, prefix)
        results = []
        for cost in costs:
            results.append((cost, await limits.check_rate(b"sequence", rate, cost), time.time()))
            await asyncio.sleep(0.02)
        return results

    model_tat = 0.0
    for cost, decision, local_now in run(scenario):
        now = decision.tat - decision.reset
        assert abs(now - local_now) < 0.05, "the server clock differs from the local clock"
        expected = decide(rate, model_tat, now, cost)
        assert decision == expected
        model_tat = expected.tat


def test_rate_key_has_ttl_until_tat(prefix: bytes) -> None:
    rate = Rate(limit=10, period=60.0, burst=10)

    async def scenario(client: RedisClient) -> tuple[Decision, object]:
        limits = RedisLimits(client, prefix)
        decision = await limits.check_rate(b"ttl", rate, cost=3)
        return decision, await client.execute("PTTL", prefix + b"ttl")

    decision, ttl = run(scenario)
    assert decision.reset == pytest.approx(18.0, abs=0.05)
    assert isinstance(ttl, int)
    assert 17_900 < ttl <= math.ceil(decision.reset * 1000) + 1


def test_rate_key_expires_after_tat(prefix: bytes) -> None:
    rate = Rate(limit=20, period=1.0, burst=1)  # TAT 50 ms ahead

    async def scenario(client: RedisClient) -> tuple[object, object]:
        limits = RedisLimits(client, prefix)
        await limits.check_rate(b"expiry", rate)
        exists_now = await client.execute("EXISTS", prefix + b"expiry")
        await asyncio.sleep(0.2)
        return exists_now, await client.execute("EXISTS", prefix + b"expiry")

    assert run(scenario) == (1, 0)


def test_default_prefix_applied(prefix: bytes) -> None:
    key = b"ringwall-test-default-prefix:" + uuid.uuid4().hex.encode()

    async def scenario(client: RedisClient) -> object:
        await RedisLimits(client).check_rate(key, Rate(1, 60.0, 1))
        exists = await client.execute("EXISTS", DEFAULT_PREFIX + key)
        await client.execute("DEL", DEFAULT_PREFIX + key)
        return exists

    assert run(scenario) == 1


def test_negative_cost_rejected(prefix: bytes) -> None:
    async def scenario(client: RedisClient) -> None:
        with pytest.raises(ValueError, match="0 or more"):
            await RedisLimits(client, prefix).check_rate(b"k", Rate(1, 1.0, 1), cost=-1)

    run(scenario)


def test_unreachable_redis_raises_unavailable() -> None:
    async def scenario(client: RedisClient) -> None:
        limits = RedisLimits(client)
        with pytest.raises(RedisUnavailable):
            await limits.check_rate(b"k", Rate(1, 1.0, 1))
        with pytest.raises(RedisUnavailable):
            await limits.check_window(b"k", Quota(1, 60.0))

    run(scenario, f"redis://127.0.0.1:{free_port()}")


# --- GCRA with replayed times -------------------------------------------------------------------

EPOCH = 1_796_400_000.0  # seconds since the epoch, the magnitude TIME returns


@pytest.mark.parametrize(
    ("rate", "steps"),
    [
        # A burst at one instant: exactly `burst` fit, then refusals with retry_after.
        (Rate(50, 60.0, 50), [(0.0, 1)] * 52),
        # Spaced requests at the interval never run out.
        (Rate(10, 1.0, 1), [(0.1 * n, 1) for n in range(8)]),
        # Costs above 1, refusals, and requests after partial waits.
        (Rate(10, 1.0, 5), [(0.0, 3), (0.0, 3), (0.1, 2), (0.3, 3), (0.25, 1)]),
        # A cost larger than the burst is always refused.
        (Rate(10, 1.0, 5), [(0.0, 6), (10.0, 6)]),
        # Cost 0 reads the state without changing it.
        (Rate(5, 1.0, 2), [(0.0, 1), (0.0, 0), (0.05, 0)]),
        # A long idle gap returns the full burst.
        (Rate(100, 3600.0, 100), [(0.0, 40), (0.0, 70), (7200.0, 100)]),
    ],
)
def test_rate_script_equals_decide(
    prefix: bytes, rate: Rate, steps: list[tuple[float, int]]
) -> None:
    key = unique(prefix)

    async def scenario(client: RedisClient) -> None:
        now = EPOCH + 0.123456
        tat = 0.0
        for offset, cost in steps:
            now += offset
            decision = await rate_at(client, key, rate, now, cost)
            expected = decide(rate, tat, now, cost)
            assert decision == expected, (offset, cost)
            tat = expected.tat

    run(scenario)


@settings(max_examples=40, deadline=None)
@given(
    limit=st.integers(1, 200),
    period=st.sampled_from([60.0, 3600.0, 86400.0, 90.5]),
    burst=st.integers(1, 200),
    start=st.floats(0.0, 1e6),
    # Cost 0 is left out: a key written with a TAT a few ms ahead expires in real
    # time while the replayed clock does not move, and the model would not see that.
    steps=st.lists(st.tuples(st.floats(0.0, 120.0), st.integers(1, 10)), min_size=1, max_size=15),
)
def test_rate_script_equals_decide_property(
    prefix: bytes,
    limit: int,
    period: float,
    burst: int,
    start: float,
    steps: list[tuple[float, int]],
) -> None:
    rate = Rate(limit, period, burst)
    key = unique(prefix)

    async def scenario(client: RedisClient) -> None:
        now = EPOCH + start
        tat = 0.0
        for offset, cost in steps:
            now += offset
            expected = decide(rate, tat, now, cost)
            assert await rate_at(client, key, rate, now, cost) == expected
            tat = expected.tat
        await client.execute("DEL", key)

    run(scenario)


# --- Sliding window -------------------------------------------------------------------------------

DAY = 86400.0
WINDOW_START = 20_791 * DAY  # a window boundary near EPOCH


@pytest.mark.parametrize(
    ("quota", "steps"),
    [
        # Fill one window, then refusals until the next window.
        (Quota(3, 60.0), [(1.0, 1), (1.0, 1), (1.0, 1), (1.0, 1), (50.0, 1)]),
        # The previous window's count decays across the next window.
        (Quota(10, 60.0), [(5.0, 10), (60.0, 1), (0.0, 1), (6.0, 1), (30.0, 3), (20.0, 2)]),
        # Refused with room in the current window: waiting for the previous count to decay.
        (Quota(10, 60.0), [(0.0, 8), (60.0, 2), (1.0, 1), (30.0, 1)]),
        # A gap of two or more windows drops both counts.
        (Quota(5, 60.0), [(10.0, 5), (130.0, 5), (0.0, 1)]),
        # Costs above 1, a cost equal to the limit.
        (Quota(100, DAY), [(3600.0, 40), (0.0, 60), (0.0, 1), (DAY, 100), (DAY / 2, 50)]),
        # A cost above the limit never fits, with or without earlier requests.
        (Quota(4, 10.0), [(0.0, 5), (0.0, 2), (1.0, 5)]),
        # Cost 0 reads the state.
        (Quota(2, 10.0), [(0.5, 2), (0.0, 0), (9.0, 0)]),
    ],
)
def test_window_script_equals_decide_window(
    prefix: bytes, quota: Quota, steps: list[tuple[float, int]]
) -> None:
    key = unique(prefix)

    async def scenario(client: RedisClient) -> None:
        now = WINDOW_START
        counts = Counts(0, 0, 0)
        for offset, cost in steps:
            now += offset
            decision = await window_at(client, key, quota, now, cost)
            expected = decide_window(quota, counts, now, cost)
            assert decision == expected, (offset, cost)
            counts = expected.counts

    run(scenario)


@settings(max_examples=40, deadline=None)
@given(
    limit=st.integers(1, 50),
    window=st.sampled_from([10.0, 60.0, 3600.0, DAY, 7.5]),
    start=st.floats(0.0, 1e6),
    steps=st.lists(st.tuples(st.floats(0.0, 40.0), st.integers(0, 6)), min_size=1, max_size=15),
)
def test_window_script_equals_decide_window_property(
    prefix: bytes,
    limit: int,
    window: float,
    start: float,
    steps: list[tuple[float, int]],
) -> None:
    quota = Quota(limit, window)
    key = unique(prefix)

    async def scenario(client: RedisClient) -> None:
        now = EPOCH + start
        counts = Counts(0, 0, 0)
        for offset, cost in steps:
            now += offset
            expected = decide_window(quota, counts, now, cost)
            assert await window_at(client, key, quota, now, cost) == expected
            counts = expected.counts
        await client.execute("DEL", key)

    run(scenario)


def test_window_with_server_clock(prefix: bytes) -> None:
    quota = Quota(limit=10, window=60.0)

    async def scenario(client: RedisClient) -> tuple[list[WindowDecision], object, float]:
        limits = RedisLimits(client, prefix)
        decisions = [await limits.check_window(b"window", quota) for _ in range(12)]
        return decisions, await client.execute("PTTL", prefix + b"window"), time.time()

    decisions, ttl, local_now = run(scenario)
    # All 12 fall in one window unless the test crosses a minute boundary (about 1 in 10,000).
    assert [decision.allowed for decision in decisions] == [True] * 10 + [False] * 2
    assert [decision.remaining for decision in decisions] == [*range(9, -1, -1), 0, 0]
    last = decisions[-1]
    now = last.counts.start + quota.window - last.reset
    assert abs(now - local_now) < 0.05, "the server clock differs from the local clock"
    expected = decide_window(quota, last.counts, now, 1)
    assert last.retry_after == pytest.approx(expected.retry_after, abs=1e-6)
    assert last.reset == pytest.approx(expected.reset, abs=1e-6)
    assert isinstance(ttl, int)
    assert 60_000 < ttl <= 120_001
