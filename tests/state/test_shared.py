"""The shared-memory store: GCRA and window decisions, forked workers, eviction, bans, locks."""

import logging
import os
import random
import signal
import struct
import threading
import time
import traceback
from collections.abc import Callable, Iterator

import pytest

from ringwall.limits.gcra import Rate, decide
from ringwall.limits.window import Counts, Quota, decide_window
from ringwall.state.shared import Ban, SharedStore, StoreBusy, StoreFull

# A fixed clock: these tests never read the real time.
NOW = 1_800_000_000.0


@pytest.fixture
def store() -> Iterator[SharedStore]:
    shared = SharedStore.create(capacity=1024, workers=4)
    yield shared
    shared.close()


def run_children(count: int, body: Callable[[int], int]) -> list[int]:
    """Fork `count` children that start together, run `body(index)` and return its results.

    Each child writes its result to a pipe as one int64. A child that
    raises prints the traceback and exits with status 1, which fails the test.
    """
    gate_read, gate_write = os.pipe()
    results_read, results_write = os.pipe()
    pids = []
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                os.close(gate_write)
                os.read(gate_read, 1)  # returns at EOF, when the parent closes the gate
                os.write(results_write, struct.pack("=qq", index, body(index)))
                status = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)
        pids.append(pid)
    os.close(gate_read)
    os.close(results_write)
    os.close(gate_write)
    statuses = [os.waitpid(pid, 0)[1] for pid in pids]
    data = b""
    while chunk := os.read(results_read, 4096):
        data += chunk
    os.close(results_read)
    assert statuses == [0] * count
    results = dict(struct.iter_unpack("=qq", data))
    return [results[index] for index in range(count)]


GCRA_CASES = [
    # (rate, [(seconds after NOW, cost), ...])
    (Rate(limit=10, period=1.0, burst=1), [(0.0, 1), (0.0, 1), (0.05, 1), (0.1, 1), (0.15, 1)]),
    (Rate(limit=5, period=60.0, burst=3), [(0.0, 1)] * 5 + [(12.0, 1), (20.0, 1), (100.0, 1)]),
    (Rate(limit=100, period=1.0, burst=10), [(0.001 * i, 1) for i in range(30)]),
    (Rate(limit=4, period=1.0, burst=4), [(0.0, 3), (0.0, 2), (0.25, 1), (0.3, 2), (10.0, 4)]),
    (Rate(limit=1, period=3600.0, burst=1), [(0.0, 1), (1800.0, 1), (3600.0, 1), (3600.0, 1)]),
    (Rate(limit=2, period=1.0, burst=2), [(0.0, 5), (0.0, 2), (0.0, 1)]),
]


@pytest.mark.parametrize(("rate", "steps"), GCRA_CASES)
def test_check_rate_matches_decide(
    store: SharedStore, rate: Rate, steps: list[tuple[float, int]]
) -> None:
    tat = 0.0
    for offset, cost in steps:
        now = NOW + offset
        expected = decide(rate, tat, now, cost)
        if expected.allowed:
            tat = expected.tat
        assert store.check_rate(b"client", rate, now, cost) == expected


def test_check_rate_allowed_after_retry_after(store: SharedStore) -> None:
    rate = Rate(limit=3, period=10.0, burst=2)
    assert store.check_rate(b"client", rate, NOW).allowed
    assert store.check_rate(b"client", rate, NOW).allowed

    denied = store.check_rate(b"client", rate, NOW + 1.0)
    assert not denied.allowed
    assert denied.retry_after == pytest.approx(10.0 / 3 - 1.0)

    early = store.check_rate(b"client", rate, NOW + 1.0 + denied.retry_after - 0.01)
    assert not early.allowed
    later = store.check_rate(b"client", rate, NOW + 1.0 + denied.retry_after)
    assert later.allowed


RANDOM_RATES = [
    Rate(limit=10, period=1.0, burst=1),
    Rate(limit=3, period=10.0, burst=2),
    Rate(limit=7, period=0.3, burst=5),
    Rate(limit=1000, period=60.0, burst=50),
]


@pytest.mark.parametrize("rate", RANDOM_RATES)
def test_check_rate_matches_decide_random(store: SharedStore, rate: Rate) -> None:
    # check_rate writes decide out inline, so it must agree with decide on
    # every field, for allowed and denied requests, new and known keys.
    generator = random.Random(7)
    tats: dict[bytes, float] = {}
    now = NOW
    for _ in range(2000):
        now += generator.choice([0.0, 0.0, 1e-3, rate.interval / 3, rate.interval, 5.0])
        key = b"client-%d" % generator.randrange(20)
        cost = generator.choice([0, 1, 1, 1, 2, 3])
        expected = decide(rate, tats.get(key, 0.0), now, cost)
        if expected.allowed:
            tats[key] = expected.tat
        assert store.check_rate(key, rate, now, cost) == expected


def test_check_rate_keys_are_independent(store: SharedStore) -> None:
    rate = Rate(limit=1, period=60.0, burst=1)
    assert store.check_rate(b"first", rate, NOW).allowed
    assert not store.check_rate(b"first", rate, NOW).allowed
    assert store.check_rate(b"second", rate, NOW).allowed


def test_denied_new_key_is_not_stored(store: SharedStore) -> None:
    rate = Rate(limit=1, period=60.0, burst=1)
    assert not store.check_rate(b"client", rate, NOW, cost=2).allowed
    assert store.stats(NOW)["rate_entries"] == 0


WINDOW_CASES = [
    (Quota(limit=3, window=60.0), [(0.0, 1), (1.0, 1), (2.0, 1), (3.0, 1), (61.0, 1), (90.0, 1)]),
    (Quota(limit=10, window=10.0), [(0.0, 4), (5.0, 4), (9.0, 4), (12.0, 2), (25.0, 6), (50.0, 1)]),
    (Quota(limit=2, window=3600.0), [(0.0, 2), (0.0, 1), (3600.0, 1), (7200.0, 2)]),
]


@pytest.mark.parametrize(("quota", "steps"), WINDOW_CASES)
def test_check_window_matches_decide_window(
    store: SharedStore, quota: Quota, steps: list[tuple[float, int]]
) -> None:
    counts = Counts(0.0, 0, 0)
    for offset, cost in steps:
        now = NOW + offset
        expected = decide_window(quota, counts, now, cost)
        if expected.allowed:
            counts = expected.counts
        assert store.check_window(b"client", quota, now, cost) == expected


@pytest.mark.parametrize(
    "quota", [Quota(limit=5, window=10.0), Quota(limit=100, window=0.7), Quota(limit=1, window=3.0)]
)
def test_check_window_matches_decide_window_random(store: SharedStore, quota: Quota) -> None:
    # check_window writes roll and decide_window out inline, so it must agree
    # with decide_window, within a window, in the next one and after a gap.
    generator = random.Random(11)
    states: dict[bytes, Counts] = {}
    now = NOW
    for _ in range(2000):
        now += generator.choice([0.0, 1e-3, quota.window / 7, quota.window / 2, 2.5 * quota.window])
        key = b"client-%d" % generator.randrange(20)
        cost = generator.choice([0, 1, 1, 2, 4])
        expected = decide_window(quota, states.get(key, Counts(0.0, 0, 0)), now, cost)
        if expected.allowed:
            states[key] = expected.counts
        assert store.check_window(key, quota, now, cost) == expected


def test_check_window_cost_above_limit(store: SharedStore) -> None:
    decision = store.check_window(b"client", Quota(limit=2, window=60.0), NOW, cost=3)
    assert not decision.allowed
    assert decision.retry_after == 60.0


def lock_is_free(store: SharedStore, key: bytes) -> bool:
    """Return whether the stripe lock of `key` is free and has no recorded owner."""
    stripe = store._locate(key)[1] % 64
    if store._owner(stripe) != 0:
        return False
    if not store._locks[stripe].acquire(False):
        return False
    store._locks[stripe].release()
    return True


def test_check_rate_releases_lock_after_error(
    store: SharedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A new key claims its slot while the lock is held, so the error is raised there.
    def fail(*_args: object) -> int:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(SharedStore, "_claim_rate_slot", fail)
    with pytest.raises(RuntimeError, match="injected failure"):
        store.check_rate(b"client", Rate(limit=1, period=1.0, burst=1), NOW)
    assert lock_is_free(store, b"client")

    monkeypatch.undo()
    assert store.check_rate(b"client", Rate(limit=1, period=1.0, burst=1), NOW).allowed
    assert lock_is_free(store, b"client")


def test_check_window_releases_lock_after_error(
    store: SharedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_args: object) -> int:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(SharedStore, "_claim_window_slot", fail)
    with pytest.raises(RuntimeError, match="injected failure"):
        store.check_window(b"client", Quota(limit=1, window=60.0), NOW)
    assert lock_is_free(store, b"client")

    monkeypatch.undo()
    assert store.check_window(b"client", Quota(limit=1, window=60.0), NOW).allowed
    assert lock_is_free(store, b"client")


def test_check_rate_waits_for_held_lock() -> None:
    # The first, non-blocking acquire fails, so check_rate waits with the
    # lock timeout until the other holder releases.
    store = SharedStore.create(capacity=1024, workers=1, lock_timeout=5.0)
    stripe = store._locate(b"client")[1] % 64
    store._locks[stripe].acquire()
    releaser = threading.Timer(0.05, store._locks[stripe].release)
    releaser.start()

    started = time.monotonic()
    assert store.check_rate(b"client", Rate(limit=1, period=1.0, burst=1), NOW).allowed
    assert time.monotonic() - started >= 0.04
    releaser.join()
    assert lock_is_free(store, b"client")
    store.close()


def test_empty_key_is_stored(store: SharedStore) -> None:
    # hash(b"") is 0, the tag of a free slot, so the empty key gets tag 1.
    assert hash(b"") == 0
    rate = Rate(limit=1, period=60.0, burst=1)
    assert store.check_rate(b"", rate, NOW).allowed
    assert not store.check_rate(b"", rate, NOW).allowed
    assert store.stats(NOW)["rate_entries"] == 1

    quota = Quota(limit=1, window=60.0)
    assert store.check_window(b"", quota, NOW).allowed
    assert not store.check_window(b"", quota, NOW).allowed
    assert store.stats(NOW)["window_entries"] == 1


def test_count_event_counts_every_event(store: SharedStore) -> None:
    quota = Quota(limit=1, window=10.0)
    start = NOW - NOW % 10.0
    estimates = [store.count_event(b"client", quota, start + 1.0) for _ in range(5)]
    assert estimates == [1.0, 2.0, 3.0, 4.0, 5.0]

    # A quarter into the next window, three quarters of the previous count remain.
    assert store.count_event(b"client", quota, start + 12.5) == pytest.approx(5 * 0.75 + 1)
    # Two windows later nothing remains.
    assert store.count_event(b"client", quota, start + 30.0) == 1.0


def test_forget_events_drops_counts(store: SharedStore) -> None:
    quota = Quota(100, 10.0)
    for _ in range(3):
        store.count_event(b"client", quota, NOW)
    store.count_event(b"other", quota, NOW)
    assert store.forget_events(b"client") is True
    assert store.forget_events(b"client") is False
    assert store.count_event(b"client", quota, NOW) == 1.0
    assert store.count_event(b"other", quota, NOW) == 2.0


def test_count_event_and_check_window_share_state(store: SharedStore) -> None:
    quota = Quota(limit=2, window=60.0)
    store.count_event(b"client", quota, NOW)
    store.count_event(b"client", quota, NOW)
    assert not store.check_window(b"client", quota, NOW).allowed


def test_rate_exact_across_processes() -> None:
    store = SharedStore.create(capacity=1024, workers=4)
    rate = Rate(limit=50, period=3600.0, burst=50)
    # The parent uses the store before forking, and the children see what it wrote.
    assert store.check_rate(b"warm-up", rate, NOW).allowed

    def allowed_count(_index: int) -> int:
        return sum(store.check_rate(b"shared-key", rate, NOW).allowed for _ in range(200))

    counts = run_children(4, allowed_count)

    assert sum(counts) == 50
    assert not store.check_rate(b"shared-key", rate, NOW).allowed
    store.close()


def test_rate_exact_under_contention() -> None:
    # The runs are long enough for the children to overlap. In one run
    # without the locks, lost updates let all 80,000 requests through.
    store = SharedStore.create(capacity=1024, workers=4)
    rate = Rate(limit=40_000, period=3600.0, burst=40_000)

    def allowed_count(_index: int) -> int:
        return sum(store.check_rate(b"shared-key", rate, NOW).allowed for _ in range(20_000))

    assert sum(run_children(4, allowed_count)) == 40_000
    store.close()


def test_window_exact_across_processes() -> None:
    store = SharedStore.create(capacity=1024, workers=4)
    quota = Quota(limit=70, window=60.0)

    def allowed_count(_index: int) -> int:
        return sum(store.check_window(b"shared-key", quota, NOW).allowed for _ in range(100))

    assert sum(run_children(4, allowed_count)) == 70
    store.close()


def test_connections_across_processes() -> None:
    store = SharedStore.create(capacity=1024, workers=4)

    def open_connections(worker: int) -> int:
        for _ in range(worker + 1):
            store.connection_opened(b"client", worker)
        store.connection_opened(b"other", worker)
        return 0

    run_children(4, open_connections)

    assert store.connections_total() == 1 + 2 + 3 + 4 + 4
    assert store.connection_opened(b"client", 0) == 1 + 2 + 3 + 4 + 1
    store.connection_closed(b"client", 0)

    store.clear_worker(2)
    assert store.connections_total() == 1 + 2 + 4 + 3
    assert store.connection_opened(b"client", 2) == 1 + 2 + 4 + 1
    store.connection_closed(b"client", 2)

    for worker in range(4):
        store.clear_worker(worker)
    assert store.connections_total() == 0
    assert store.stats(NOW)["connection_entries"] == 0
    store.close()


def test_connection_closed_never_goes_below_zero(store: SharedStore) -> None:
    store.connection_opened(b"client", 1)
    store.connection_closed(b"client", 1)
    store.connection_closed(b"client", 1)
    store.connection_closed(b"unknown", 1)
    assert store.connections_total() == 0
    assert store.connection_opened(b"client", 1) == 1


def test_connection_worker_index_checked(store: SharedStore) -> None:
    with pytest.raises(ValueError, match="worker index 4 is out of range"):
        store.connection_opened(b"client", 4)
    with pytest.raises(ValueError, match="worker index -1 is out of range"):
        store.clear_worker(-1)


def test_connections_full_bucket_raises() -> None:
    # Capacity 8 is one bucket of 8 slots, so every key competes for it.
    store = SharedStore.create(capacity=8, workers=2)
    for index in range(8):
        assert store.connection_opened(b"client-%d" % index, 0) == 1

    with pytest.raises(StoreFull):
        store.connection_opened(b"client-8", 0)
    assert store.stats(NOW)["connections_full"] == 1
    assert store.connections_total() == 8

    store.connection_closed(b"client-3", 0)
    assert store.connection_opened(b"client-8", 1) == 1
    assert store.connection_opened(b"client-0", 1) == 2
    store.close()


def test_rate_eviction_keeps_memory_fixed() -> None:
    store = SharedStore.create(capacity=64, workers=1)
    before = store.stats(NOW)
    rate = Rate(limit=1, period=3600.0, burst=1)
    keys = [b"client-%d" % index for index in range(640)]
    for index, key in enumerate(keys):
        assert store.check_rate(key, rate, NOW + index * 0.001).allowed

    now = NOW + 1.0
    after = store.stats(now)
    assert after["bytes"] == before["bytes"]
    assert after["rate_entries"] <= after["slots"]
    assert after["rate_evictions"] > 0
    assert after["rate_entries"] + after["rate_evictions"] == len(keys)
    # The newest key of each bucket is never the one evicted.
    assert not store.check_rate(keys[-1], rate, now).allowed
    store.close()


def test_rate_eviction_removes_smallest_tat() -> None:
    store = SharedStore.create(capacity=8, workers=1)
    rate = Rate(limit=1, period=3600.0, burst=1)
    for index in range(9):
        assert store.check_rate(b"client-%d" % index, rate, NOW + index).allowed

    assert store.stats(NOW + 9)["rate_evictions"] == 1
    # client-0 had the smallest TAT, so it was evicted and starts afresh.
    assert store.check_rate(b"client-0", rate, NOW + 9).allowed
    # That insertion evicted client-1, and client-2 to client-8 are still limited.
    for index in range(2, 9):
        assert not store.check_rate(b"client-%d" % index, rate, NOW + 9).allowed


def test_expired_rate_entries_are_reused_without_eviction() -> None:
    store = SharedStore.create(capacity=8, workers=1)
    rate = Rate(limit=1, period=1.0, burst=1)
    for index in range(80):
        assert store.check_rate(b"client-%d" % index, rate, NOW + index * 2.0).allowed
    assert store.stats(NOW + 200)["rate_evictions"] == 0
    store.close()


def test_check_window_eviction_removes_first_expiry() -> None:
    store = SharedStore.create(capacity=8, workers=1)
    quota = Quota(limit=1, window=3600.0)
    start = NOW - NOW % 3600.0
    # client-0's counts are from the window before the others', so they expire first.
    assert store.check_window(b"client-0", quota, start + 1.0).allowed
    now = start + 3601.0
    for index in range(1, 9):
        assert store.check_window(b"client-%d" % index, quota, now).allowed

    assert store.stats(now)["window_evictions"] == 1
    # Remembered, client-0's previous count would deny it. Evicted, it starts afresh.
    assert store.check_window(b"client-0", quota, now).allowed
    # Its return evicted one of the others, which all expire together.
    assert store.stats(now)["window_evictions"] == 2
    denied = [
        not store.check_window(b"client-%d" % index, quota, now).allowed for index in range(1, 9)
    ]
    assert sum(denied) == 7
    store.close()


def test_window_eviction_keeps_memory_fixed() -> None:
    store = SharedStore.create(capacity=64, workers=1)
    before = store.stats(NOW)
    quota = Quota(limit=5, window=3600.0)
    keys = [b"client-%d" % index for index in range(640)]
    for index, key in enumerate(keys):
        assert store.count_event(key, quota, NOW + index * 0.001) == 1.0

    after = store.stats(NOW + 1.0)
    assert after["bytes"] == before["bytes"]
    assert after["window_evictions"] > 0
    assert after["window_entries"] + after["window_evictions"] == len(keys)
    assert store.count_event(keys[-1], quota, NOW + 1.0) == 2.0
    store.close()


def test_set_and_get_ban(store: SharedStore) -> None:
    store.set_ban(b"198.51.100.7", NOW + 600, 1, "too many 401 responses", now=NOW)

    ban = store.get_ban(b"198.51.100.7", NOW)
    assert ban == Ban(
        until=NOW + 600, level=1, reason="too many 401 responses", level_until=NOW + 600 + 86400
    )
    assert ban.active(NOW)
    assert store.get_ban(b"198.51.100.8", NOW) is None


def test_ban_level_kept_after_ban_ends(store: SharedStore) -> None:
    store.set_ban(b"198.51.100.7", NOW + 600, 2, "scan", level_until=NOW + 3600, now=NOW)

    ended = store.get_ban(b"198.51.100.7", NOW + 601)
    assert ended is not None
    assert not ended.active(NOW + 601)
    assert ended.level == 2

    store.set_ban(b"198.51.100.7", NOW + 1800, ended.level + 1, "scan", now=NOW + 601)
    again = store.get_ban(b"198.51.100.7", NOW + 700)
    assert again is not None
    assert again.level == 3
    assert again.active(NOW + 700)


def test_ban_forgotten_after_level_until(store: SharedStore) -> None:
    store.set_ban(b"198.51.100.7", NOW + 600, 1, "scan", level_until=NOW + 900, now=NOW)
    assert store.get_ban(b"198.51.100.7", NOW + 899) is not None
    assert store.get_ban(b"198.51.100.7", NOW + 900) is None


def test_level_until_never_before_until(store: SharedStore) -> None:
    store.set_ban(b"198.51.100.7", NOW + 600, 1, "scan", level_until=NOW, now=NOW)
    ban = store.get_ban(b"198.51.100.7", NOW + 1)
    assert ban is not None
    assert ban.level_until == NOW + 600


def test_remove_ban(store: SharedStore) -> None:
    store.set_ban(b"198.51.100.7", NOW + 600, 1, "scan", now=NOW)
    assert store.remove_ban(b"198.51.100.7")
    assert store.get_ban(b"198.51.100.7", NOW) is None
    assert not store.remove_ban(b"198.51.100.7")
    assert store.list_bans(NOW, include_ended=True) == []


def test_list_bans(store: SharedStore) -> None:
    store.set_ban(b"198.51.100.7", NOW + 600, 1, "scan", now=NOW)
    store.set_ban(b"2001:db8::1", NOW + 60, 2, "credential stuffing", now=NOW)
    store.set_ban(b"203.0.113.9", NOW + 10, 1, "flood", level_until=NOW + 20, now=NOW)

    active = sorted(store.list_bans(NOW + 30))
    assert [key for key, _ban in active] == [b"198.51.100.7", b"2001:db8::1"]
    assert active[1][1].reason == "credential stuffing"

    remembered = sorted(key for key, _ban in store.list_bans(NOW + 90, include_ended=True))
    assert remembered == [b"198.51.100.7", b"2001:db8::1"]


def test_ban_reason_truncated_on_character_boundary(store: SharedStore) -> None:
    store.set_ban(b"198.51.100.7", NOW + 600, 1, "é" * 40, now=NOW)
    ban = store.get_ban(b"198.51.100.7", NOW)
    assert ban is not None
    assert ban.reason == "é" * 32


def test_ban_key_length_checked(store: SharedStore) -> None:
    with pytest.raises(ValueError, match="1 to 64 bytes"):
        store.set_ban(b"x" * 65, NOW + 600, 1, "scan", now=NOW)
    with pytest.raises(ValueError, match="1 to 64 bytes"):
        store.set_ban(b"", NOW + 600, 1, "scan", now=NOW)
    store.set_ban(b"x" * 64, NOW + 600, 1, "scan", now=NOW)
    assert store.list_bans(NOW)[0][0] == b"x" * 64


def test_ban_eviction_prefers_ended_bans() -> None:
    store = SharedStore.create(capacity=8, workers=1)
    store.set_ban(b"ended", NOW + 10, 1, "scan", level_until=NOW + 5000, now=NOW)
    for index in range(7):
        store.set_ban(b"active-%d" % index, NOW + 1000 + index, 1, "scan", now=NOW)

    store.set_ban(b"new", NOW + 2000, 1, "scan", now=NOW + 20)
    assert store.get_ban(b"ended", NOW + 20) is None
    assert store.stats(NOW + 20)["ban_evictions"] == 1

    store.set_ban(b"newer", NOW + 1000, 1, "scan", now=NOW + 20)
    # Only active bans are left, so the one that ends first goes.
    assert store.get_ban(b"active-0", NOW + 20) is None
    assert store.get_ban(b"active-1", NOW + 20) is not None
    assert store.stats(NOW + 20)["ban_evictions"] == 2
    store.close()


def test_create_checks_arguments() -> None:
    with pytest.raises(ValueError, match="capacity must be at least 8"):
        SharedStore.create(capacity=7)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        SharedStore.create(workers=0)
    with pytest.raises(ValueError, match="lock_timeout must be a positive"):
        SharedStore.create(lock_timeout=0)


def test_create_warns_about_fixed_hash_seed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    with caplog.at_level(logging.WARNING, logger="ringwall.state"):
        SharedStore.create(capacity=8, workers=1).close()
    assert caplog.records == []

    monkeypatch.setenv("PYTHONHASHSEED", "42")
    with caplog.at_level(logging.WARNING, logger="ringwall.state"):
        SharedStore.create(capacity=8, workers=1).close()
    assert len(caplog.records) == 1
    assert "PYTHONHASHSEED is set" in caplog.records[0].getMessage()


def test_stats_counts_entries(store: SharedStore) -> None:
    store.check_rate(b"a", Rate(limit=1, period=60.0, burst=1), NOW)
    store.check_window(b"a", Quota(limit=5, window=60.0), NOW)
    store.connection_opened(b"a", 0)
    store.set_ban(b"a", NOW + 60, 1, "scan", now=NOW)

    stats = store.stats(NOW)
    assert stats["slots"] == 1024
    assert stats["rate_entries"] == 1
    assert stats["window_entries"] == 1
    assert stats["connection_entries"] == 1
    assert stats["connections"] == 1
    assert stats["ban_entries"] == 1


def hold_lock_and_die(store: SharedStore, key: bytes, *, record_owner: bool) -> int:
    """Fork a child that takes the stripe lock of `key` and is killed holding it; return its pid."""
    stripe = store._locate(key)[1] % 64
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            if record_owner:
                store._acquire(stripe)
            else:
                store._locks[stripe].acquire()
            os.write(ready_write, b"x")
            time.sleep(60)
        finally:
            os._exit(0)
    os.read(ready_read, 1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(ready_read)
    os.close(ready_write)
    return pid


def test_dead_lock_holder_raises_store_busy_until_recovered() -> None:
    store = SharedStore.create(capacity=1024, workers=1, lock_timeout=0.05)
    rate = Rate(limit=10, period=1.0, burst=10)
    pid = hold_lock_and_die(store, b"client", record_owner=True)

    with pytest.raises(StoreBusy, match=f"held by pid {pid}"):
        store.check_rate(b"client", rate, NOW)

    assert store.recover_locks(pid) == 1
    assert store.check_rate(b"client", rate, NOW).allowed
    store.close()


def test_recover_locks_releases_lock_without_owner() -> None:
    store = SharedStore.create(capacity=1024, workers=1, lock_timeout=0.05)
    rate = Rate(limit=10, period=1.0, burst=10)
    pid = hold_lock_and_die(store, b"client", record_owner=False)

    with pytest.raises(StoreBusy, match="held by a process that has not written its pid"):
        store.check_rate(b"client", rate, NOW)

    assert store.recover_locks(pid) == 1
    assert store.check_rate(b"client", rate, NOW).allowed
    assert store.recover_locks(pid) == 0
    store.close()


def test_closed_store_raises() -> None:
    store = SharedStore.create(capacity=8, workers=1)
    store.close()
    with pytest.raises(ValueError, match="closed"):
        store.check_rate(b"client", Rate(limit=1, period=1.0, burst=1), NOW)
    with pytest.raises(ValueError, match="closed"):
        store.check_window(b"client", Quota(limit=1, window=60.0), NOW)
    with pytest.raises(ValueError, match="closed"):
        store.count_event(b"client", Quota(limit=1, window=60.0), NOW)
    with pytest.raises(ValueError, match="closed"):
        store.connections_total()
    # The lock taken before the store found itself closed is released again.
    stripe = store._locate(b"client")[1] % 64
    assert store._locks[stripe].acquire(False)
