"""The C rate check: the same decisions and the same mapping as SharedStore.check_rate."""

import os
import random
from collections.abc import Iterator

import pytest

from ringwall.limits.gcra import Decision, Rate
from ringwall.limits.limiter import _reset
from ringwall.state.shared import SharedStore
from tests.state.test_shared import run_children

NOW = 1_800_000_000.0
ITEM = b'"per-ip"'
POLICY = (b"RateLimit-Policy", b'"per-ip";q=10;w=1')


@pytest.fixture
def pair() -> Iterator[tuple[SharedStore, SharedStore]]:
    """Two equal stores: one checked in C, the other by the Python reference."""
    native = SharedStore.create(capacity=64, workers=1)
    reference = SharedStore.create(capacity=64, workers=1)
    if native.native_rates is None:
        pytest.fail("ringwall.state._native is not built: run `pip install -e .`")
    yield native, reference
    native.close()
    reference.close()


def rate_region(store: SharedStore) -> bytes:
    layout = store._layout
    return bytes(store._memory[layout.rate_offset : layout.window_offset])


def expected(
    decision: Decision, key: bytes
) -> list[tuple[bytes, bytes]] | tuple[float, int, float, float]:
    """Return what the C check returns for the reference's `decision`."""
    if decision.allowed:
        state = b"%b;r=%d;t=%d" % (ITEM, decision.remaining, _reset(decision.reset, key))
        return [POLICY, (b"RateLimit", state)]
    return (decision.tat, decision.remaining, decision.retry_after, decision.reset)


RATES = [
    Rate(10, 1.0, 10),
    Rate(100, 60.0, 5),
    Rate(3, 60.0, 3),
    Rate(1, 1.0, 1),
    Rate(1_000_000_000, 1.0, 1_000_000_000),
    Rate(7, 0.7, 2),
]


@pytest.mark.parametrize("seed", range(8))
def test_random_sequences_match_reference(pair: tuple[SharedStore, SharedStore], seed: int) -> None:
    native, reference = pair
    table = native.native_rates
    assert table is not None
    chooser = random.Random(seed)
    # 200 keys on 64 slots, so new keys evict old ones as well.
    keys = [b"route\x00per-ip\x00198.51.100.%d" % index for index in range(200)]
    now = NOW
    for _ in range(3000):
        now += chooser.choice([0.0, 0.0, 1e-9, 0.001, 0.05, 0.4, 3.0])
        key = chooser.choice(keys[: chooser.choice([3, 20, 200])])
        rate = chooser.choice(RATES)
        got = table.check(key, now, rate.interval, rate.capacity, ITEM, POLICY)
        want = expected(reference.check_rate(key, rate, now), key)
        assert got == want, (key, now, rate)
    assert rate_region(native) == rate_region(reference)
    assert native.stats(now)["rate_evictions"] == reference.stats(now)["rate_evictions"]


def test_python_check_reads_c_writes(pair: tuple[SharedStore, SharedStore]) -> None:
    native, _ = pair
    table = native.native_rates
    assert table is not None
    rate = Rate(3, 60.0, 3)
    key = b"k"
    for _ in range(2):
        assert isinstance(table.check(key, NOW, rate.interval, rate.capacity, ITEM, POLICY), list)
    third = native.check_rate(key, rate, NOW)
    assert third.allowed
    assert third.remaining == 0
    refused = table.check(key, NOW, rate.interval, rate.capacity, ITEM, POLICY)
    assert isinstance(refused, tuple)
    assert refused[2] == pytest.approx(20.0)


def test_item_names_remaining_and_reset(pair: tuple[SharedStore, SharedStore]) -> None:
    native, _ = pair
    table = native.native_rates
    assert table is not None
    rate = Rate(100, 60.0, 100)
    fields = table.check(b"client", NOW, rate.interval, rate.capacity, ITEM, POLICY)
    assert isinstance(fields, list)
    policy, (field_name, state) = fields
    assert policy is POLICY
    assert field_name == b"RateLimit"
    name, remaining, reset = state.split(b";")
    assert name == ITEM
    assert remaining == b"r=99"
    assert reset == b"t=1"


def test_contended_stripe_returns_none(pair: tuple[SharedStore, SharedStore]) -> None:
    native, _ = pair
    table = native.native_rates
    assert table is not None
    key = b"busy"
    _, bucket = native._locate(key)
    stripe = bucket % 64
    assert native._acquires[stripe](False)
    try:
        assert table.check(key, NOW, 1.0, 10.0, ITEM, POLICY) is None
    finally:
        native._releases[stripe]()
    assert isinstance(table.check(key, NOW, 1.0, 10.0, ITEM, POLICY), list)


def test_closed_store_raises() -> None:
    store = SharedStore.create(capacity=64, workers=1)
    table = store.native_rates
    assert table is not None
    store.close()
    with pytest.raises(ValueError, match="closed"):
        table.check(b"k", NOW, 1.0, 10.0, ITEM, POLICY)


def test_wrong_argument_types_raise(pair: tuple[SharedStore, SharedStore]) -> None:
    native, _ = pair
    table = native.native_rates
    assert table is not None
    with pytest.raises(TypeError):
        table.check("text", NOW, 1.0, 10.0, ITEM, POLICY)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        table.check(b"k", "now", 1.0, 10.0, ITEM, POLICY)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        table.check(b"k", NOW, 1.0)  # type: ignore[call-arg]


def test_forked_children_allow_exactly_the_burst() -> None:
    store = SharedStore.create(capacity=1024, workers=4)
    table = store.native_rates
    assert table is not None
    rate = Rate(100, 3600.0, 100)

    def hammer(_: int) -> int:
        allowed = 0
        for _ in range(60):
            result = table.check(b"shared", NOW, rate.interval, rate.capacity, ITEM, POLICY)
            if result is None:
                result = store.check_rate(b"shared", rate, NOW).allowed
            allowed += isinstance(result, list) or result is True
        return allowed

    try:
        assert sum(run_children(4, hammer)) == 100
    finally:
        store.close()


def test_forked_child_writes_its_own_pid() -> None:
    from ringwall.state import _native

    assert _native.owner_pid() == os.getpid()
    (reported,) = run_children(1, lambda _: _native.owner_pid() - os.getpid())
    assert reported == 0
