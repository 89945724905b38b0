"""Tests for ringwall.proxy.balancer: target selection and passive health, on a fake clock."""

from typing import Any

import pytest

from ringwall.config import Upstream
from ringwall.proxy.balancer import Balancer, TargetState


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_balancer(
    count: int = 3, clock: FakeClock | None = None, **fields: Any
) -> tuple[Balancer, FakeClock]:
    clock = clock or FakeClock()
    targets = [f"http://127.0.0.1:{9000 + index}" for index in range(count)]
    return Balancer(Upstream(targets=targets, **fields), clock), clock


def picked(balancer: Balancer, times: int, exclude: tuple[int, ...] = ()) -> list[int | None]:
    indexes: list[int | None] = []
    for _ in range(times):
        state = balancer.pick(exclude)
        indexes.append(None if state is None else state.index)
    return indexes


def test_states_match_targets() -> None:
    balancer, _ = make_balancer(3)

    assert [state.index for state in balancer.states] == [0, 1, 2]
    assert [state.target.port for state in balancer.states] == [9000, 9001, 9002]


def test_round_robin_order() -> None:
    balancer, _ = make_balancer(3)

    assert picked(balancer, 7) == [0, 1, 2, 0, 1, 2, 0]


def test_round_robin_single_target() -> None:
    balancer, _ = make_balancer(1)

    assert picked(balancer, 3) == [0, 0, 0]


def test_round_robin_skips_down_target() -> None:
    balancer, _ = make_balancer(3)
    balancer.states[1].probe_down = True

    assert picked(balancer, 4) == [0, 2, 0, 2]


def test_round_robin_ignores_active() -> None:
    balancer, _ = make_balancer(3)
    balancer.states[0].active = 50

    assert picked(balancer, 3) == [0, 1, 2]


def test_least_connections_picks_min() -> None:
    balancer, _ = make_balancer(3, balance="least_connections")
    balancer.states[0].active = 5
    balancer.states[1].active = 2
    balancer.states[2].active = 7

    assert picked(balancer, 3) == [1, 1, 1]


def test_least_connections_follows_load() -> None:
    balancer, _ = make_balancer(3, balance="least_connections")
    counts = []

    for _ in range(6):
        state = balancer.pick()
        assert state is not None
        state.active += 1
        counts.append(state.index)

    assert sorted(counts) == [0, 0, 1, 1, 2, 2]
    assert [state.active for state in balancer.states] == [2, 2, 2]


def test_least_connections_ties_rotate() -> None:
    balancer, _ = make_balancer(3, balance="least_connections")

    assert picked(balancer, 4) == [0, 1, 2, 0]


def test_least_connections_skips_down() -> None:
    balancer, _ = make_balancer(3, balance="least_connections")
    balancer.states[0].active = 0
    balancer.states[0].probe_down = True
    balancer.states[1].active = 4
    balancer.states[2].active = 3

    assert picked(balancer, 2) == [2, 2]


@pytest.mark.parametrize("balance", ["round_robin", "least_connections"])
def test_exclude_set(balance: str) -> None:
    balancer, _ = make_balancer(3, balance=balance)

    assert picked(balancer, 4, exclude=(0, 2)) == [1, 1, 1, 1]


@pytest.mark.parametrize("balance", ["round_robin", "least_connections"])
def test_exclude_all(balance: str) -> None:
    balancer, _ = make_balancer(3, balance=balance)

    assert balancer.pick(exclude={0, 1, 2}) is None


@pytest.mark.parametrize("balance", ["round_robin", "least_connections"])
def test_all_probe_down(balance: str) -> None:
    balancer, _ = make_balancer(3, balance=balance)
    for state in balancer.states:
        state.probe_down = True

    assert balancer.pick() is None


@pytest.mark.parametrize("balance", ["round_robin", "least_connections"])
def test_all_passively_down(balance: str) -> None:
    balancer, _ = make_balancer(2, balance=balance)
    for state in balancer.states:
        balancer.report_failure(state)

    assert balancer.pick() is None


def test_probe_down_recovers() -> None:
    balancer, _ = make_balancer(2)
    balancer.states[0].probe_down = True
    assert picked(balancer, 2) == [1, 1]

    balancer.states[0].probe_down = False

    assert sorted(picked(balancer, 2)) == [0, 1]


def test_failure_threshold() -> None:
    balancer, clock = make_balancer(2, passive_health={"failures": 3, "cooldown": 10})
    state = balancer.states[0]

    assert balancer.report_failure(state) is False
    assert balancer.report_failure(state) is False
    assert balancer.report_failure(state) is True
    assert state.available(clock.now) is False


def test_cooldown_skips_then_returns() -> None:
    balancer, clock = make_balancer(2, passive_health={"failures": 1, "cooldown": 10})
    balancer.report_failure(balancer.states[0])

    assert picked(balancer, 3) == [1, 1, 1]

    clock.now += 9.999
    assert picked(balancer, 1) == [1]

    clock.now += 0.001
    assert sorted(picked(balancer, 2)) == [0, 1]


def test_down_until_from_clock() -> None:
    balancer, clock = make_balancer(2, passive_health={"failures": 1, "cooldown": 30})
    state = balancer.states[0]

    balancer.report_failure(state)

    assert state.down_until == clock.now + 30


def test_failures_reset_after_skip() -> None:
    balancer, _ = make_balancer(2, passive_health={"failures": 2, "cooldown": 5})
    state = balancer.states[0]
    balancer.report_failure(state)
    balancer.report_failure(state)

    assert state.failures == 0
    assert balancer.report_failure(state) is False


def test_success_resets_failures() -> None:
    balancer, _ = make_balancer(2, passive_health={"failures": 2, "cooldown": 5})
    state = balancer.states[0]
    balancer.report_failure(state)

    balancer.report_success(state)

    assert state.failures == 0
    assert balancer.report_failure(state) is False


def test_passive_health_disabled() -> None:
    balancer, _ = make_balancer(2, passive_health={"enabled": False, "failures": 1})
    state = balancer.states[0]

    for _ in range(5):
        assert balancer.report_failure(state) is False

    assert state.failures == 0
    assert picked(balancer, 2) == [0, 1]


def test_probe_down_beats_cooldown_end() -> None:
    balancer, clock = make_balancer(2, passive_health={"failures": 1, "cooldown": 1})
    state = balancer.states[0]
    balancer.report_failure(state)
    state.probe_down = True

    clock.now += 100

    assert picked(balancer, 2) == [1, 1]


@pytest.mark.parametrize(
    ("probe_down", "down_until", "now", "available"),
    [
        (False, 0.0, 0.0, True),
        (False, 10.0, 9.0, False),
        (False, 10.0, 10.0, True),
        (True, 0.0, 100.0, False),
    ],
)
def test_state_available(probe_down: bool, down_until: float, now: float, available: bool) -> None:
    balancer, _ = make_balancer(1)
    state: TargetState = balancer.states[0]
    state.probe_down = probe_down
    state.down_until = down_until

    assert state.available(now) is available
