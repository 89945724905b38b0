"""GCRA arithmetic against a table of cases, with the clock passed in."""

import pytest

from ringwall.limits.gcra import Rate, decide

NOW = 1_000.0


@pytest.mark.parametrize(
    ("rate", "times", "allowed"),
    [
        # 3 per minute, burst 3: three at once, then one every 20 s.
        (Rate(3, 60.0, 3), [0, 0, 0, 0], [True, True, True, False]),
        (Rate(3, 60.0, 3), [0, 0, 0, 19.9, 20.0], [True, True, True, False, True]),
        # Burst 1: evenly spaced only.
        (Rate(10, 1.0, 1), [0, 0.05, 0.1, 0.2], [True, False, True, True]),
        # Refused requests do not count: hammering does not push the next slot away.
        (Rate(1, 10.0, 1), [0, 1, 2, 3, 9.9, 10.0], [True, False, False, False, False, True]),
        # A long pause refills the whole burst, and no more.
        (Rate(2, 2.0, 2), [0, 0, 100, 100, 100], [True, True, True, True, False]),
    ],
)
def test_decisions_follow_table(rate: Rate, times: list[float], allowed: list[bool]) -> None:
    tat = 0.0
    results = []
    for offset in times:
        decision = decide(rate, tat, NOW + offset)
        tat = decision.tat
        results.append(decision.allowed)
    assert results == allowed


def test_remaining_counts_down() -> None:
    rate = Rate(5, 5.0, 5)
    tat = 0.0
    remaining = []
    for _ in range(5):
        decision = decide(rate, tat, NOW)
        tat = decision.tat
        remaining.append(decision.remaining)
    assert remaining == [4, 3, 2, 1, 0]


def test_retry_after_then_allowed() -> None:
    rate = Rate(2, 10.0, 2)
    tat = decide(rate, decide(rate, 0.0, NOW).tat, NOW).tat
    refused = decide(rate, tat, NOW + 1.0)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(4.0)
    assert refused.tat == tat
    assert decide(rate, tat, NOW + 1.0 + refused.retry_after + 1e-6).allowed


def test_reset_is_time_to_full_burst() -> None:
    decision = decide(Rate(4, 4.0, 4), 0.0, NOW)
    assert decision.reset == pytest.approx(1.0)
