"""Choose a target of an upstream: round-robin or least-connections, skipping failed targets.

Passive health: after `failures` consecutive failed connection attempts a
target is skipped for `cooldown` seconds. Active health checks, when
configured, mark a target down until it passes again. The clock is injected
so tests can move time.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from ringwall.config.model import Target, Upstream


class TargetState:
    """Health and load of one target, shared by every request of a worker."""

    __slots__ = ("active", "down_until", "failures", "index", "probe_down", "target")

    def __init__(self, target: Target, index: int) -> None:
        self.target = target
        self.index = index
        self.active = 0
        self.failures = 0
        self.down_until = 0.0
        self.probe_down = False

    def available(self, now: float) -> bool:
        return not self.probe_down and now >= self.down_until


class Balancer:
    def __init__(self, upstream: Upstream, clock: Callable[[], float]) -> None:
        self.states = tuple(TargetState(target, i) for i, target in enumerate(upstream.targets))
        self._least_connections = upstream.balance == "least_connections"
        self._health = upstream.passive_health
        self._clock = clock
        self._next = 0

    def pick(self, exclude: Collection[int] = ()) -> TargetState | None:
        """Return an available target not in `exclude` (target indexes), or None."""
        count = len(self.states)
        if count == 1 and not exclude:
            only = self.states[0]
            if not only.probe_down and (not only.down_until or self._clock() >= only.down_until):
                return only
            return None
        now = self._clock()
        best: TargetState | None = None
        for offset in range(count):
            state = self.states[(self._next + offset) % count]
            if state.index in exclude or not state.available(now):
                continue
            if not self._least_connections:
                self._next = (state.index + 1) % count
                return state
            if best is None or state.active < best.active:
                best = state
        if best is not None:
            self._next = (best.index + 1) % count
        return best

    def report_success(self, state: TargetState) -> None:
        state.failures = 0

    def report_failure(self, state: TargetState) -> bool:
        """Count a failed connection attempt; return True if the target is now skipped."""
        if not self._health.enabled:
            return False
        state.failures += 1
        if state.failures >= self._health.failures:
            state.down_until = self._clock() + self._health.cooldown
            state.failures = 0
            return True
        return False
