"""Sliding-window counter arithmetic, with the clock passed in."""

import pytest

from ringwall.limits.window import Counts, Quota, decide_window, roll

EMPTY = Counts(0.0, 0, 0)


def run(quota: Quota, times: list[float]) -> list[bool]:
    counts = EMPTY
    results = []
    for now in times:
        decision = decide_window(quota, counts, now)
        counts = decision.counts
        results.append(decision.allowed)
    return results


def test_limit_within_one_window() -> None:
    assert run(Quota(3, 60.0), [60.0, 61.0, 62.0, 63.0]) == [True, True, True, False]


def test_previous_window_weighs_by_overlap() -> None:
    # 4 requests late in window [0, 60); at 90 s half of them still count.
    quota = Quota(4, 60.0)
    assert run(quota, [50.0, 51.0, 52.0, 53.0, 90.0, 91.0, 92.0]) == [
        True,
        True,
        True,
        True,
        True,
        True,
        False,
    ]


def test_roll_forgets_after_two_windows() -> None:
    assert roll(Quota(3, 60.0), Counts(0.0, 3, 3), 125.0) == Counts(120.0, 0, 0)


def test_refused_requests_not_counted() -> None:
    quota = Quota(1, 60.0)
    counts = decide_window(quota, EMPTY, 10.0).counts
    refused = decide_window(quota, counts, 20.0)
    assert not refused.allowed
    assert refused.counts == counts


def test_retry_after_full_current_window() -> None:
    decision = decide_window(Quota(2, 60.0), Counts(0.0, 2, 0), 30.0)
    assert not decision.allowed
    # Next window starts at 60; 2 * (1 - e/60) + 1 <= 2 needs e >= 30.
    assert decision.retry_after == pytest.approx(60.0)


def test_cost_above_limit_waits_a_window() -> None:
    decision = decide_window(Quota(2, 60.0), EMPTY, 30.0, cost=3)
    assert not decision.allowed
    assert decision.retry_after == 60.0
