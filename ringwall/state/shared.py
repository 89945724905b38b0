"""The embedded store: rate limits, connection counts and bans in shared memory.

The supervisor is to create one `SharedStore` before it forks the workers.
Every worker then inherits the same anonymous `MAP_SHARED` mapping and the
same locks, so limits are exact across the workers of one gateway without
a server. When the supervisor reaps a worker, it calls `recover_locks`
and `clear_worker` with the worker's pid and index.

Layout. The mapping starts with one 64-byte record per lock stripe (the
owner's pid and counters), followed by four regions: GCRA rates, sliding
windows, connection counts and bans. Each region is an array of buckets of
8 slots, an 8-way set-associative table. A bucket starts with the 8 slots'
64-bit tags, and the slots' state follows. A key's tag is its built-in
`hash()`, which also selects the bucket. A lookup searches the 8 tags of
one bucket and nothing else. A new key takes a free or expired slot of its
bucket, or else evicts the entry that matters least, so the mapping never
grows, however many keys clients make up.

Hashing. For bytes, CPython's `hash()` is SipHash-1-3 (`sys.hash_info`,
CPython 3.11) keyed with a random seed drawn at interpreter start, so
clients cannot aim keys at one bucket or at another key's tag. Two keys
share a tag with probability 2**-64, and keys in one bucket already agree
on the bucket index, so a lookup mistakes one key for another with
probability about slots / 2**64 (2**-48 for the default 65,536 slots). Tag
0 marks a free slot, so a key whose hash is 0 gets tag 1. Forked workers
inherit the seed, so every process agrees on every key's tag. For the same
reason, all processes that use one store must be forked from the process
that created it, as the supervisor does. A process started separately,
even with the same mapping, hashes differently and cannot share the table.
With PYTHONHASHSEED set to a fixed value the seed is no longer secret, and
`create` logs a warning. `hash()` of a new 11-byte key costs about 0.03 µs,
against 0.48 µs for a keyed BLAKE2b digest and the bucket index computed
from it (timeit, Python 3.11, x86-64 Linux, 2 cores).

Locking. Bucket `b` of every region is guarded by stripe lock `b % 64`, a
`multiprocessing` lock (a POSIX semaphore), and each operation takes one
stripe. An uncontended non-blocking acquire plus release costs about
0.03 µs, and one with a timeout about 0.06 µs. An `fcntl` OFD lock costs
0.57 µs, and a robust pthread mutex called through ctypes 0.19 to 0.28 µs
(timeit, Python 3.11, x86-64 Linux, 2 cores). So each operation first
tries to acquire without blocking, and only then waits.
A lock that is not acquired within the lock timeout raises `StoreBusy`
instead of hanging. A semaphore stays taken when its holder dies, so each
stripe records its holder's pid, and the supervisor must call
`recover_locks(pid)` after it reaps a worker.

The C extension `ringwall.state._native` runs `check_rate`'s common case
(`native_rates`), on the same mapping and locks, with equal results. The
Python version stays as the reference and as the path for a contended lock.

Keys are opaque bytes chosen by the caller, one namespace per region. Two
limits that use the same key in the same region share one state, so the
caller puts the limit's name into the key.
"""

from __future__ import annotations

import logging
import mmap
import multiprocessing
import multiprocessing.synchronize
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from math import floor

from ringwall.errors import RingwallError
from ringwall.limits.gcra import _EPSILON, Decision, Rate
from ringwall.limits.window import Counts, Quota, WindowDecision, decide_window, roll

try:
    from ringwall.state._native import RateTable
except ImportError:  # not built: `pip install -e .` compiles it
    RateTable = None  # type: ignore[assignment,misc]

log = logging.getLogger("ringwall.state")

DEFAULT_LOCK_TIMEOUT = 0.5
# How long a ban's level is kept after the ban ends when set_ban gets no level_until.
DEFAULT_LEVEL_SECONDS = 86400.0
MAX_BAN_KEY_BYTES = 64
MAX_BAN_REASON_BYTES = 64

_WAYS = 8
_TAG_BYTES = 8
_TAGS_BYTES = _WAYS * _TAG_BYTES
_STRIPES = 64

# Stripe record: owner pid at 0, then int64 counters at these offsets.
_STRIPE_BYTES = 64
# The distance between two owner pids in the int32 view of the records.
_OWNER_STEP = _STRIPE_BYTES // 4
_RATE_EVICTIONS = 8
_WINDOW_EVICTIONS = 16
_BAN_EVICTIONS = 24
_CONNECTIONS_FULL = 32
_CONNECTIONS_OPEN = 40
_STORE_FAILURES = 48

_TAG = struct.Struct("=q")
_TAGS = struct.Struct("=8q")
_INT64 = struct.Struct("=q")
_UINT32 = struct.Struct("=I")
_STRIPE_OPEN = struct.Struct("=" + "40xq16x" * _STRIPES)

# Rate slot: the TAT.
_RATE_SLOT_BYTES = 8
_RATE_BUCKET_BYTES = _TAGS_BYTES + _WAYS * _RATE_SLOT_BYTES
_TATS = struct.Struct("=8d")

# Window slot: window start, the time after which the counts are all zero,
# the current and the previous window's counts.
_WINDOW_SLOT_BYTES = 32
_WINDOW_BUCKET_BYTES = _TAGS_BYTES + _WAYS * _WINDOW_SLOT_BYTES
_WINDOW = struct.Struct("=ddqq")
_WINDOW_EXPIRIES = struct.Struct("=" + "8xd16x" * _WAYS)

# Connection bucket: 8 tags, 8 totals, then 8 arrays of one count per worker.
_CONNECTION_TOTALS = struct.Struct("=8I")

# Ban slot: until, level_until, level, key length, reason length, key, reason.
_BAN = struct.Struct(f"=ddIHH{MAX_BAN_KEY_BYTES}s{MAX_BAN_REASON_BYTES}s")
_BAN_SLOT_BYTES = _BAN.size
_BAN_BUCKET_BYTES = _TAGS_BYTES + _WAYS * _BAN_SLOT_BYTES
_BAN_TIMES = struct.Struct("=" + f"dd{_BAN_SLOT_BYTES - 16}x" * _WAYS)

_EMPTY_COUNTS = Counts(0.0, 0, 0)


class StoreError(RingwallError):
    """Base class of the shared store's exceptions."""


class StoreBusy(StoreError):
    """A stripe lock was not acquired within the lock timeout.

    Either another process has kept it longer than the timeout, or a process
    died while holding it and `recover_locks` has not run yet. The caller chooses
    whether the request passes (fail open) or is rejected (fail closed).
    """


class StoreFull(StoreError):
    """A new key found every slot of its bucket in use by entries that must not be evicted."""


@dataclass(frozen=True, slots=True)
class Ban:
    """A ban of one key, active while now < `until`.

    `level` counts the key's bans in a row, and the store keeps it until
    `level_until`, which is never before `until`, so the caller can give a
    repeat offender a longer ban.
    """

    until: float
    level: int
    reason: str
    level_until: float

    def active(self, now: float) -> bool:
        """Return whether the ban is in force at `now`."""
        return now < self.until


@dataclass(frozen=True, slots=True)
class _Layout:
    buckets: int
    workers: int
    rate_offset: int
    window_offset: int
    connection_offset: int
    connection_bucket_bytes: int
    ban_offset: int
    size: int

    @classmethod
    def plan(cls, capacity: int, workers: int) -> _Layout:
        buckets = -(-capacity // _WAYS)
        connection_bucket_bytes = _TAGS_BYTES + _WAYS * 4 + _WAYS * workers * 4
        rate_offset = _STRIPES * _STRIPE_BYTES
        window_offset = rate_offset + buckets * _RATE_BUCKET_BYTES
        connection_offset = window_offset + buckets * _WINDOW_BUCKET_BYTES
        ban_offset = connection_offset + buckets * connection_bucket_bytes
        size = ban_offset + buckets * _BAN_BUCKET_BYTES
        return cls(
            buckets,
            workers,
            rate_offset,
            window_offset,
            connection_offset,
            connection_bucket_bytes,
            ban_offset,
            size,
        )


# The pid that a lock holder writes into the stripe record. A forked child updates it.
_pid = os.getpid()


def _update_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_update_pid)


class SharedStore:
    """Rate limits, sliding windows, connection counts and bans shared by forked workers.

    Create it with `SharedStore.create` in the process that forks the
    workers, before the fork. Every method that depends on time takes
    `now` in seconds since the epoch (the caller passes `time.time()`).
    Every method that takes a lock raises `StoreBusy` when the lock is not
    acquired within the lock timeout.
    """

    def __init__(
        self,
        memory: mmap.mmap,
        layout: _Layout,
        locks: list[multiprocessing.synchronize.Lock],
        lock_timeout: float,
    ) -> None:
        self._memory = memory
        self._layout = layout
        self._locks = locks
        self._acquires: list[Callable[..., bool]] = [lock.acquire for lock in locks]
        self._releases: list[Callable[[], None]] = [lock.release for lock in locks]
        self._lock_timeout = lock_timeout
        self._buckets = layout.buckets
        self._rate_offset = layout.rate_offset
        self._window_offset = layout.window_offset
        # Views of the mapping as int32 (the stripe records) and as float64.
        # Indexing one costs about 0.02 µs, against 0.05 µs for a struct
        # call. close() releases them, because mmap.close() raises
        # BufferError while a view exists.
        self._owners = memoryview(memory)[: _STRIPES * _STRIPE_BYTES].cast("i")
        self._floats = memoryview(memory).cast("d")
        # The C version of check_rate's common case, or None when the
        # extension is not built. It shares this mapping and these locks.
        self.native_rates: RateTable | None = None
        if RateTable is not None:
            self.native_rates = RateTable(
                memory,
                layout.buckets,
                layout.rate_offset,
                # The POSIX semaphores behind the locks, which the C check takes itself.
                tuple(lock._semlock.handle for lock in locks),  # type: ignore[attr-defined]
            )

    @classmethod
    def create(
        cls,
        capacity: int = 65536,
        workers: int = 64,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> SharedStore:
        """Allocate the shared memory and the locks. Call it before forking the workers.

        Each of the four regions gets `capacity` slots, rounded up to a
        multiple of 8. `workers` is the number of worker indexes that
        connection counts accept (0 to workers - 1). The mapping takes
        `stats()["bytes"]` bytes, 31,723,520 for the defaults.
        Only processes forked from this one can use the store, because
        keys are placed by the interpreter's seeded `hash()`.
        """
        if capacity < _WAYS:
            raise ValueError(f"capacity must be at least {_WAYS} slots, got {capacity}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if not lock_timeout > 0:
            raise ValueError(
                f"lock_timeout must be a positive number of seconds, got {lock_timeout}"
            )
        layout = _Layout.plan(capacity, workers)
        memory = mmap.mmap(
            -1, layout.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE
        )
        # The fork context unlinks each semaphore's name at once, so no
        # resource tracker process is started and nothing is left in /dev/shm.
        context = multiprocessing.get_context("fork")
        locks = [context.Lock() for _ in range(_STRIPES)]
        if os.environ.get("PYTHONHASHSEED", "random") != "random":
            log.warning(
                "PYTHONHASHSEED is set, so clients who learn the seed can aim keys at one "
                "bucket of the shared store and evict other keys' limits. Unset it in "
                "production."
            )
        if RateTable is None:
            log.warning(
                "the C extension ringwall.state._native is not built, so rate limits use the "
                "slower Python check. Reinstall with `pip install -e .` to build it."
            )
        return cls(memory, layout, locks, lock_timeout)

    def close(self) -> None:
        """Unmap the shared memory in this process. Later calls in this process raise ValueError."""
        if self.native_rates is not None:
            self.native_rates.release()
        self._owners.release()
        self._floats.release()
        self._memory.close()

    # Rates (GCRA).

    def check_rate(self, key: bytes, rate: Rate, now: float, cost: int = 1) -> Decision:
        """Decide a request of `cost` for `key` as `decide` does, and store the new TAT if allowed.

        A new key is stored only when its request is allowed. It takes a
        free slot, or one whose TAT is past, or else evicts the entry with
        the smallest TAT, which then starts afresh.
        """
        # Every call of every worker runs this, so the lookup, the locking
        # and `decide` are written out here. The arithmetic is `decide`'s,
        # in the same order, so the results are equal to the last bit.
        tag = hash(key) or 1
        bucket = tag % self._buckets
        stripe = bucket % _STRIPES
        owner = stripe * _OWNER_STEP
        base = self._rate_offset + bucket * _RATE_BUCKET_BYTES
        owners = self._owners
        floats = self._floats
        interval = rate.interval
        capacity = rate.capacity
        step = cost * interval
        if not self._acquires[stripe](False):
            self._wait_for_lock(stripe)
        try:
            owners[owner] = _pid
        except ValueError:
            # close() released the view.
            self._releases[stripe]()
            self._check_open()
            raise
        try:
            tags = _TAGS.unpack_from(self._memory, base)
            if tag in tags:
                # The index of the slot's TAT in the float64 view.
                tat_index = (base + _TAGS_BYTES) // 8 + tags.index(tag)
                tat = floats[tat_index]
            else:
                tat_index = 0  # no TAT is at index 0, so 0 marks a new key
                tat = 0.0
            start = tat if tat > now else now
            new_tat = start + step
            ahead = new_tat - now
            allowed = ahead <= capacity + _EPSILON
            if allowed:
                if not tat_index:
                    tat_index = self._claim_rate_slot(base, tag, stripe, now)
                floats[tat_index] = new_tat
        finally:
            owners[owner] = 0
            self._releases[stripe]()

        if allowed:
            left = floor((capacity - ahead) / interval + _EPSILON)
            return _new_tuple(Decision, (True, new_tat, left if left > 0 else 0, 0.0, ahead))
        current = start - now
        left = floor((capacity - current) / interval + _EPSILON)
        return _new_tuple(
            Decision, (False, tat, left if left > 0 else 0, ahead - capacity, current)
        )

    def _claim_rate_slot(self, base: int, tag: int, stripe: int, now: float) -> int:
        """Give a slot of the bucket at `base` to `tag` and return its TAT's float64 index."""
        tats = _TATS.unpack_from(self._memory, base + _TAGS_BYTES)
        oldest = min(tats)
        slot = tats.index(oldest)
        if oldest > now:
            self._count(stripe, _RATE_EVICTIONS)
        self._write_tag(base, slot, tag)
        return (base + _TAGS_BYTES) // 8 + slot

    # Sliding windows.

    def check_window(self, key: bytes, quota: Quota, now: float, cost: int = 1) -> WindowDecision:
        """Decide a request of `cost` for `key` like `decide_window`, storing the counts if allowed.

        A new key is stored only when its request is allowed. It takes a
        free or expired slot, or else evicts the entry whose counts expire
        first.
        """
        # As in check_rate, `roll` and the allowed case of `decide_window`
        # are written out here, with the same arithmetic in the same order.
        tag = hash(key) or 1
        bucket = tag % self._buckets
        stripe = bucket % _STRIPES
        owner = stripe * _OWNER_STEP
        base = self._window_offset + bucket * _WINDOW_BUCKET_BYTES
        memory = self._memory
        owners = self._owners
        window = quota.window
        window_start = floor(now / window) * window
        if not self._acquires[stripe](False):
            self._wait_for_lock(stripe)
        try:
            owners[owner] = _pid
        except ValueError:
            # close() released the view.
            self._releases[stripe]()
            self._check_open()
            raise
        try:
            tags = _TAGS.unpack_from(memory, base)
            if tag in tags:
                slot_offset = base + _TAGS_BYTES + _WINDOW_SLOT_BYTES * tags.index(tag)
                start, _expiry, current, previous = _WINDOW.unpack_from(memory, slot_offset)
                if start != window_start:
                    previous = current if start == window_start - window else 0
                    current = 0
            else:
                slot_offset = 0  # no slot is at offset 0, so 0 marks a new key
                current = previous = 0
            estimate = previous * (1.0 - (now - window_start) / window) + current
            allowed = estimate + cost <= quota.limit
            if allowed:
                if not slot_offset:
                    slot_offset = self._claim_window_slot(base, tag, stripe, now)
                # After two windows from its start, roll() turns any counts into zeros.
                _WINDOW.pack_into(
                    memory,
                    slot_offset,
                    window_start,
                    window_start + 2 * window,
                    current + cost,
                    previous,
                )
        finally:
            owners[owner] = 0
            self._releases[stripe]()

        if not allowed:
            return decide_window(quota, Counts(window_start, current, previous), now, cost)
        left = quota.limit - (estimate + cost)
        return WindowDecision(
            True,
            Counts(window_start, current + cost, previous),
            max(0, floor(left)),
            0.0,
            window_start + window - now,
        )

    def count_event(self, key: bytes, quota: Quota, now: float) -> float:
        """Count one event for `key` and return the sliding-window estimate, this event included.

        The event is always counted, whatever `quota.limit` is. The
        estimate is the one `decide_window` compares with the limit.
        """
        tag, bucket = self._locate(key)
        stripe = bucket % _STRIPES
        base = self._window_offset + bucket * _WINDOW_BUCKET_BYTES
        self._acquire(stripe)
        try:
            slot = _find_slot(self._memory, tag, base)
            counts = roll(quota, self._read_counts(base, slot), now)
            counts = Counts(counts.start, counts.current + 1, counts.previous)
            if slot < 0:
                offset = self._claim_window_slot(base, tag, stripe, now)
            else:
                offset = base + _TAGS_BYTES + slot * _WINDOW_SLOT_BYTES
            # After two windows from its start, roll() turns any counts into zeros.
            expiry = counts.start + 2 * quota.window
            _WINDOW.pack_into(
                self._memory, offset, counts.start, expiry, counts.current, counts.previous
            )
        finally:
            self._release(stripe)
        # The same estimate as in decide_window: the previous window's count
        # weighted by the share of it still inside the sliding window.
        weight = 1.0 - (now - counts.start) / quota.window
        return counts.previous * weight + counts.current

    def forget_events(self, key: bytes) -> bool:
        """Drop the window counts of `key`, and return whether the store had them."""
        tag, bucket = self._locate(key)
        stripe = bucket % _STRIPES
        base = self._window_offset + bucket * _WINDOW_BUCKET_BYTES
        self._acquire(stripe)
        try:
            slot = _find_slot(self._memory, tag, base)
            if slot < 0:
                return False
            self._free_slot(base, slot, _WINDOW_SLOT_BYTES)
        finally:
            self._release(stripe)
        return True

    def _read_counts(self, base: int, slot: int) -> Counts:
        if slot < 0:
            return _EMPTY_COUNTS
        offset = base + _TAGS_BYTES + slot * _WINDOW_SLOT_BYTES
        start, _expiry, current, previous = _WINDOW.unpack_from(self._memory, offset)
        return Counts(start, current, previous)

    def _claim_window_slot(self, base: int, tag: int, stripe: int, now: float) -> int:
        """Give a slot of the bucket at `base` to `tag` and return the slot's offset."""
        expiries = _WINDOW_EXPIRIES.unpack_from(self._memory, base + _TAGS_BYTES)
        oldest = min(expiries)
        slot = expiries.index(oldest)
        if oldest > now:
            self._count(stripe, _WINDOW_EVICTIONS)
        self._write_tag(base, slot, tag)
        return base + _TAGS_BYTES + slot * _WINDOW_SLOT_BYTES

    # Connection counts.

    def connection_opened(self, key: bytes, worker: int) -> int:
        """Count one open connection of `key` in `worker` and return the key's total.

        The total is the key's open connections over all workers.
        Raises StoreFull, and counts it in `stats()["connections_full"]`,
        when the key is new and all 8 slots of its bucket hold keys with
        open connections. Such slots are never evicted, so the caller is
        expected to reject the connection instead.
        """
        self._check_worker(worker)
        tag, bucket = self._locate(key)
        stripe = bucket % _STRIPES
        base = self._connection_bucket(bucket)
        memory = self._memory
        self._acquire(stripe)
        try:
            slot = _find_slot(memory, tag, base)
            if slot < 0:
                totals = _CONNECTION_TOTALS.unpack_from(memory, base + _TAGS_BYTES)
                if 0 not in totals:
                    self._count(stripe, _CONNECTIONS_FULL)
                    raise StoreFull(
                        "every slot of this client key's bucket in the connection table "
                        "has open connections, so increase the store capacity"
                    )
                slot = totals.index(0)
                self._write_tag(base, slot, tag)
            total = self._add_connection(base, slot, worker, 1)
            self._count(stripe, _CONNECTIONS_OPEN)
        finally:
            self._release(stripe)
        return total

    def connection_closed(self, key: bytes, worker: int) -> None:
        """Count one closed connection of `key` in `worker`.

        Does nothing when `worker` has no open connection of `key`, as after
        `clear_worker` or a StoreFull from `connection_opened`.
        """
        self._check_worker(worker)
        tag, bucket = self._locate(key)
        stripe = bucket % _STRIPES
        base = self._connection_bucket(bucket)
        self._acquire(stripe)
        try:
            slot = _find_slot(self._memory, tag, base)
            if slot >= 0 and self._worker_count(base, slot, worker) > 0:
                self._add_connection(base, slot, worker, -1)
                self._count(stripe, _CONNECTIONS_OPEN, -1)
        finally:
            self._release(stripe)

    def clear_worker(self, worker: int) -> None:
        """Remove every connection counted for `worker`.

        The supervisor must call it when the worker exits, after
        `recover_locks`, and before it starts another worker with the same
        index. It takes each stripe lock in turn and visits every bucket.
        """
        self._check_worker(worker)
        for stripe in range(min(_STRIPES, self._buckets)):
            self._acquire(stripe)
            try:
                for bucket in range(stripe, self._buckets, _STRIPES):
                    self._clear_bucket(self._connection_bucket(bucket), stripe, worker)
            finally:
                self._release(stripe)

    def _clear_bucket(self, base: int, stripe: int, worker: int) -> None:
        for slot in range(_WAYS):
            count = self._worker_count(base, slot, worker)
            if count:
                self._add_connection(base, slot, worker, -count)
                self._count(stripe, _CONNECTIONS_OPEN, -count)

    def connections_total(self) -> int:
        """Return the open connections over all keys and workers.

        The sum is read without locks, so it may miss an update that is in
        progress.
        """
        self._check_open()
        return sum(_STRIPE_OPEN.unpack_from(self._memory, 0))

    def _connection_bucket(self, bucket: int) -> int:
        return self._layout.connection_offset + bucket * self._layout.connection_bucket_bytes

    def _worker_count_offset(self, base: int, slot: int, worker: int) -> int:
        return base + _TAGS_BYTES + _WAYS * 4 + (slot * self._layout.workers + worker) * 4

    def _worker_count(self, base: int, slot: int, worker: int) -> int:
        offset = self._worker_count_offset(base, slot, worker)
        count: int = _UINT32.unpack_from(self._memory, offset)[0]
        return count

    def _add_connection(self, base: int, slot: int, worker: int, delta: int) -> int:
        """Add `delta` to one worker's count and to the slot total, and return the new total."""
        memory = self._memory
        total_offset = base + _TAGS_BYTES + slot * 4
        count_offset = self._worker_count_offset(base, slot, worker)
        total: int = _UINT32.unpack_from(memory, total_offset)[0] + delta
        _UINT32.pack_into(memory, total_offset, total)
        _UINT32.pack_into(
            memory, count_offset, _UINT32.unpack_from(memory, count_offset)[0] + delta
        )
        return total

    def _check_worker(self, worker: int) -> None:
        if not 0 <= worker < self._layout.workers:
            raise ValueError(
                f"worker index {worker} is out of range, because the store was created "
                f"for workers 0 to {self._layout.workers - 1}"
            )

    # Bans.

    def set_ban(
        self,
        key: bytes,
        until: float,
        level: int,
        reason: str,
        *,
        level_until: float | None = None,
        now: float | None = None,
    ) -> None:
        """Ban `key` until `until`, replacing any ban of it.

        The store keeps `level` until `level_until`, by default
        DEFAULT_LEVEL_SECONDS after `until`, and never before `until`.
        `key` is stored as given, so it must be 1 to 64 bytes. `reason` is
        cut to 64 bytes of UTF-8. When the key is new and its bucket has no
        slot whose level expired at `now` (default `time.time()`), the store
        evicts the ended ban whose level expires first, or else the active
        ban that ends first, and counts the eviction.
        """
        if not 0 < len(key) <= MAX_BAN_KEY_BYTES:
            raise ValueError(
                f"a ban key must be 1 to {MAX_BAN_KEY_BYTES} bytes long, got {len(key)} bytes"
            )
        if not 0 <= level < 2**32:
            raise ValueError(f"a ban level must be between 0 and 2**32 - 1, got {level}")
        if level_until is None:
            level_until = until + DEFAULT_LEVEL_SECONDS
        level_until = max(level_until, until)
        if now is None:
            now = time.time()
        reason_bytes = _truncate_utf8(reason, MAX_BAN_REASON_BYTES)
        tag, bucket = self._locate(key)
        stripe = bucket % _STRIPES
        base = self._layout.ban_offset + bucket * _BAN_BUCKET_BYTES
        self._acquire(stripe)
        try:
            slot = _find_slot(self._memory, tag, base)
            if slot < 0:
                slot = self._claim_ban_slot(base, tag, stripe, now)
            _BAN.pack_into(
                self._memory,
                base + _TAGS_BYTES + slot * _BAN_SLOT_BYTES,
                until,
                level_until,
                level,
                len(key),
                len(reason_bytes),
                key,
                reason_bytes,
            )
        finally:
            self._release(stripe)

    def get_ban(self, key: bytes, now: float) -> Ban | None:
        """Return the ban of `key`, or None when it has none or its level expired by `now`.

        The returned ban may have ended (`ban.active(now)` is false) while
        its level is still kept. The caller then computes the next ban's
        length from `ban.level`.
        """
        tag, bucket = self._locate(key)
        stripe = bucket % _STRIPES
        base = self._layout.ban_offset + bucket * _BAN_BUCKET_BYTES
        self._acquire(stripe)
        try:
            slot = _find_slot(self._memory, tag, base)
            entry = self._read_ban(base, slot) if slot >= 0 else None
        finally:
            self._release(stripe)
        if entry is None or entry[1].level_until <= now:
            return None
        return entry[1]

    def remove_ban(self, key: bytes) -> bool:
        """Remove the ban of `key` and its kept level, and return whether the store had one."""
        tag, bucket = self._locate(key)
        stripe = bucket % _STRIPES
        base = self._layout.ban_offset + bucket * _BAN_BUCKET_BYTES
        self._acquire(stripe)
        try:
            slot = _find_slot(self._memory, tag, base)
            if slot < 0:
                return False
            offset = base + _TAGS_BYTES + slot * _BAN_SLOT_BYTES
            _until, level_until = struct.unpack_from("=dd", self._memory, offset)
            self._free_slot(base, slot, _BAN_SLOT_BYTES)
        finally:
            self._release(stripe)
        return bool(level_until > 0)

    def list_bans(self, now: float, *, include_ended: bool = False) -> list[tuple[bytes, Ban]]:
        """Return the bans active at `now`, with their keys, in no particular order.

        With `include_ended`, also return ended bans whose level is still kept.
        """
        bans: list[tuple[bytes, Ban]] = []
        for stripe in range(min(_STRIPES, self._buckets)):
            self._acquire(stripe)
            try:
                for bucket in range(stripe, self._buckets, _STRIPES):
                    base = self._layout.ban_offset + bucket * _BAN_BUCKET_BYTES
                    for slot in range(_WAYS):
                        entry = self._read_ban(base, slot)
                        if entry is None or entry[1].level_until <= now:
                            continue
                        if include_ended or entry[1].active(now):
                            bans.append(entry)
            finally:
                self._release(stripe)
        return bans

    def _read_ban(self, base: int, slot: int) -> tuple[bytes, Ban] | None:
        offset = base + _TAGS_BYTES + slot * _BAN_SLOT_BYTES
        until, level_until, level, key_length, reason_length, key, reason = _BAN.unpack_from(
            self._memory, offset
        )
        if key_length == 0:
            return None
        text = reason[:reason_length].decode("utf-8", errors="replace")
        return key[:key_length], Ban(until, level, text, level_until)

    def _claim_ban_slot(self, base: int, tag: int, stripe: int, now: float) -> int:
        times = _BAN_TIMES.unpack_from(self._memory, base + _TAGS_BYTES)
        candidates: list[tuple[bool, float, int]] = []
        for slot in range(_WAYS):
            until, level_until = times[2 * slot], times[2 * slot + 1]
            if level_until <= now:
                self._write_tag(base, slot, tag)
                return slot
            # Ended bans go first, the one whose level expires first. After
            # them comes the active ban that ends first.
            active = until > now
            candidates.append((active, until if active else level_until, slot))
        slot = min(candidates)[2]
        self._count(stripe, _BAN_EVICTIONS)
        self._write_tag(base, slot, tag)
        return slot

    # Statistics.

    def stats(self, now: float | None = None) -> dict[str, int]:
        """Return the live entries of each region, the evictions and the mapping's size in bytes.

        An entry is live when its state still matters at `now` (default
        `time.time()`). The numbers are read without locks.
        """
        self._check_open()
        if now is None:
            now = time.time()
        layout = self._layout
        memory = self._memory
        rate_entries = window_entries = connection_entries = ban_entries = 0
        for bucket in range(layout.buckets):
            rate_base = layout.rate_offset + bucket * _RATE_BUCKET_BYTES
            rate_entries += sum(
                tat > now for tat in _TATS.unpack_from(memory, rate_base + _TAGS_BYTES)
            )
            window_base = layout.window_offset + bucket * _WINDOW_BUCKET_BYTES
            window_entries += sum(
                expiry > now
                for expiry in _WINDOW_EXPIRIES.unpack_from(memory, window_base + _TAGS_BYTES)
            )
            connection_base = self._connection_bucket(bucket)
            connection_entries += sum(
                total > 0
                for total in _CONNECTION_TOTALS.unpack_from(memory, connection_base + _TAGS_BYTES)
            )
            ban_base = layout.ban_offset + bucket * _BAN_BUCKET_BYTES
            ban_times = _BAN_TIMES.unpack_from(memory, ban_base + _TAGS_BYTES)
            ban_entries += sum(level_until > now for level_until in ban_times[1::2])
        slots = layout.buckets * _WAYS
        return {
            "slots": slots,
            "rate_entries": rate_entries,
            "rate_evictions": self._sum_counter(_RATE_EVICTIONS),
            "window_entries": window_entries,
            "window_evictions": self._sum_counter(_WINDOW_EVICTIONS),
            "connection_entries": connection_entries,
            "connections_full": self._sum_counter(_CONNECTIONS_FULL),
            "connections": self.connections_total(),
            "ban_entries": ban_entries,
            "ban_evictions": self._sum_counter(_BAN_EVICTIONS),
            "bytes": layout.size,
        }

    def count_store_failure(self) -> None:
        """Count one limit check that could not reach the remote store (Redis)."""
        stripe = _pid % _STRIPES  # spreads the workers of one outage over the stripes
        self._acquire(stripe)
        try:
            self._count(stripe, _STORE_FAILURES)
        finally:
            self._release(stripe)

    def counters(self) -> dict[str, int]:
        """Return the counters of all workers: evictions, full tables, failures, open connections.

        Unlike `stats`, it reads 64 records and no table, so it is cheap enough
        for a metrics scrape. The numbers are read without locks.
        """
        self._check_open()
        return {
            "rate_evictions": self._sum_counter(_RATE_EVICTIONS),
            "window_evictions": self._sum_counter(_WINDOW_EVICTIONS),
            "ban_evictions": self._sum_counter(_BAN_EVICTIONS),
            "connections_full": self._sum_counter(_CONNECTIONS_FULL),
            "store_failures": self._sum_counter(_STORE_FAILURES),
            "connections": self.connections_total(),
        }

    # Locks and shared helpers.

    def recover_locks(self, pid: int) -> int:
        """Release the stripe locks that the dead process `pid` held and return how many.

        The supervisor must call it after it reaps a worker. A process that died
        between taking a lock and writing its pid, or between clearing its
        pid and releasing, leaves a lock taken with no owner. Such a lock is
        released too when it stays taken for a whole lock timeout, which a
        live process holding it could only cause by stalling that long.
        """
        self._check_open()
        released = 0
        for stripe in range(_STRIPES):
            owner = self._owner(stripe)
            if owner == pid:
                self._force_release(stripe, f"held by the dead process {pid}")
                released += 1
            elif owner == 0:
                if self._acquires[stripe](True, self._lock_timeout):
                    self._releases[stripe]()
                elif self._owner(stripe) == 0:
                    self._force_release(stripe, "taken without an owner pid for a lock timeout")
                    released += 1
        return released

    def _force_release(self, stripe: int, cause: str) -> None:
        log.warning("releasing a shared store lock", extra={"stripe": stripe, "cause": cause})
        self._owners[stripe * _OWNER_STEP] = 0
        try:
            self._releases[stripe]()
        except ValueError:
            # Another process released it in the meantime, so the lock is free.
            log.warning("the shared store lock was already free", extra={"stripe": stripe})

    def _owner(self, stripe: int) -> int:
        owner: int = self._owners[stripe * _OWNER_STEP]
        return owner

    def _acquire(self, stripe: int) -> None:
        """Take stripe lock `stripe` and record this process as its owner."""
        if not self._acquires[stripe](False):
            self._wait_for_lock(stripe)
        try:
            self._owners[stripe * _OWNER_STEP] = _pid
        except ValueError:
            # close() released the view.
            self._releases[stripe]()
            self._check_open()
            raise

    def _wait_for_lock(self, stripe: int) -> None:
        """Wait up to the lock timeout for stripe lock `stripe`, or raise StoreBusy."""
        if not self._acquires[stripe](True, self._lock_timeout):
            owner = self._owner(stripe)
            holder = f"pid {owner}" if owner else "a process that has not written its pid"
            raise StoreBusy(
                f"timed out after {self._lock_timeout} s waiting for shared store lock "
                f"{stripe}, which is held by {holder}. If that process died, the "
                "supervisor releases the lock with recover_locks(pid)."
            )

    def _check_open(self) -> None:
        if self._memory.closed:
            raise ValueError("the shared store is closed in this process")

    def _release(self, stripe: int) -> None:
        self._owners[stripe * _OWNER_STEP] = 0
        self._releases[stripe]()

    def _locate(self, key: bytes) -> tuple[int, int]:
        """Return the key's tag and bucket index, as check_rate computes them."""
        tag = hash(key) or 1
        return tag, tag % self._buckets

    def _free_slot(self, base: int, slot: int, slot_bytes: int) -> None:
        """Zero slot `slot` of the bucket at `base` and its tag, which marks it free."""
        offset = base + _TAGS_BYTES + slot * slot_bytes
        self._memory[offset : offset + slot_bytes] = bytes(slot_bytes)
        self._write_tag(base, slot, 0)

    def _write_tag(self, base: int, slot: int, tag: int) -> None:
        _TAG.pack_into(self._memory, base + slot * _TAG_BYTES, tag)

    def _count(self, stripe: int, field: int, delta: int = 1) -> None:
        """Add `delta` to one counter of the stripe record, whose lock the caller holds."""
        offset = stripe * _STRIPE_BYTES + field
        _INT64.pack_into(self._memory, offset, _INT64.unpack_from(self._memory, offset)[0] + delta)

    def _sum_counter(self, field: int) -> int:
        return sum(
            _INT64.unpack_from(self._memory, stripe * _STRIPE_BYTES + field)[0]
            for stripe in range(_STRIPES)
        )


def _find_slot(memory: mmap.mmap, tag: int, base: int) -> int:
    """Return the slot whose tag is `tag` in the bucket at `base`, or -1."""
    tags = _TAGS.unpack_from(memory, base)
    return tags.index(tag) if tag in tags else -1


# tuple.__new__(Decision, fields) builds the NamedTuple without calling its
# Python-level __new__, in about 0.09 µs against 0.21 µs.
_new_tuple = tuple.__new__


def _truncate_utf8(text: str, limit: int) -> bytes:
    """Encode `text` as UTF-8 and cut it to at most `limit` bytes without splitting a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return encoded
    return encoded[:limit].decode("utf-8", errors="ignore").encode("utf-8")
