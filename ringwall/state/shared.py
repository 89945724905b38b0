"""The embedded store: rate limits, connection counts and bans in shared memory.

The supervisor is to create one `SharedStore` before it forks the workers.
Every worker then inherits the same anonymous `MAP_SHARED` mapping and the
same locks, so limits are exact across the workers of one gateway without
a server.
NOTE: ringwall/server/supervisor.py does not create the store yet, nor call
`recover_locks` and `clear_worker` when it reaps a worker.

Layout. The mapping starts with one 64-byte record per lock stripe (the
owner's pid and counters), followed by four regions: GCRA rates, sliding
windows, connection counts and bans. Each region is an array of buckets of
8 slots, an 8-way set-associative table. A key's BLAKE2b digest (16 bytes,
keyed with a secret drawn at creation, so clients cannot aim keys at one
bucket) selects the bucket and is the tag stored in the slot. A lookup
searches the 8 tags of one bucket and nothing else. A new key takes a free
or expired slot of its bucket, or else evicts the entry that matters least,
so the mapping never grows, however many keys clients make up.

Locking. Bucket `b` of every region is guarded by stripe lock `b % 64`, a
`multiprocessing` lock (a POSIX semaphore), and each operation takes one
stripe. The uncontended acquire with a timeout plus release costs about
0.05 µs, against 0.57 µs for an `fcntl` OFD lock and 0.19 to 0.28 µs for
a robust pthread mutex called through ctypes (timeit, Python 3.11, x86-64
Linux, 2 cores).
A lock that is not acquired within the lock timeout raises `StoreBusy`
instead of hanging. A semaphore stays taken when its holder dies, so each
stripe records its holder's pid, and the supervisor must call
`recover_locks(pid)` after it reaps a worker.

Keys are opaque bytes chosen by the caller, one namespace per region. Two
limits that use the same key in the same region share one state, so the
caller puts the limit's name into the key.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import multiprocessing
import multiprocessing.synchronize
import os
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from ringwall.errors import RingwallError
from ringwall.limits.gcra import Decision, Rate, decide
from ringwall.limits.window import Counts, Quota, WindowDecision, decide_window, roll

log = logging.getLogger("ringwall.state")

DEFAULT_LOCK_TIMEOUT = 0.5
# How long a ban's level is kept after the ban ends when set_ban gets no level_until.
DEFAULT_LEVEL_SECONDS = 86400.0
MAX_BAN_KEY_BYTES = 64
MAX_BAN_REASON_BYTES = 64

_WAYS = 8
_TAG_BYTES = 16
_TAGS_BYTES = _WAYS * _TAG_BYTES
_STRIPES = 64

# Stripe record: owner pid at 0, then int64 counters at these offsets.
_STRIPE_BYTES = 64
_RATE_EVICTIONS = 8
_WINDOW_EVICTIONS = 16
_BAN_EVICTIONS = 24
_CONNECTIONS_FULL = 32
_CONNECTIONS_OPEN = 40

_PID = struct.Struct("=i")
_INT64 = struct.Struct("=q")
_UINT32 = struct.Struct("=I")
_STRIPE_OPEN = struct.Struct("=" + "40xq16x" * _STRIPES)

# Rate slot: the TAT.
_RATE_SLOT_BYTES = 8
_RATE_BUCKET_BYTES = _TAGS_BYTES + _WAYS * _RATE_SLOT_BYTES
_TAT = struct.Struct("=d")
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
        hash_key: bytes,
    ) -> None:
        self._memory = memory
        self._layout = layout
        self._locks = locks
        self._acquires: list[Callable[[bool, float], bool]] = [lock.acquire for lock in locks]
        self._releases: list[Callable[[], None]] = [lock.release for lock in locks]
        self._lock_timeout = lock_timeout
        self._hasher = hashlib.blake2b(digest_size=_TAG_BYTES, key=hash_key)
        self._buckets = layout.buckets

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
        `stats()["bytes"]` bytes, 33,820,672 for the defaults.
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
        return cls(memory, layout, locks, lock_timeout, secrets.token_bytes(32))

    def close(self) -> None:
        """Unmap the shared memory in this process. Later calls in this process raise ValueError."""
        self._memory.close()

    # Rates (GCRA).

    def check_rate(self, key: bytes, rate: Rate, now: float, cost: int = 1) -> Decision:
        """Decide a request of `cost` for `key` with `decide` and store the new TAT if allowed.

        A new key is stored only when its request is allowed. It takes a
        free slot, or one whose TAT is past, or else evicts the entry with
        the smallest TAT, which then starts afresh.
        """
        digest, bucket = self._locate(key)
        stripe = bucket % _STRIPES
        base = self._layout.rate_offset + bucket * _RATE_BUCKET_BYTES
        memory = self._memory
        self._acquire(stripe)
        try:
            slot = _find_slot(memory, digest, base)
            tat = _TAT.unpack_from(memory, base + _TAGS_BYTES + slot * 8)[0] if slot >= 0 else 0.0
            decision = decide(rate, tat, now, cost)
            if decision.allowed:
                if slot < 0:
                    slot = self._claim_rate_slot(base, digest, stripe, now)
                _TAT.pack_into(memory, base + _TAGS_BYTES + slot * 8, decision.tat)
        finally:
            self._release(stripe)
        return decision

    def _claim_rate_slot(self, base: int, digest: bytes, stripe: int, now: float) -> int:
        tats = _TATS.unpack_from(self._memory, base + _TAGS_BYTES)
        oldest = min(tats)
        slot = tats.index(oldest)
        if oldest > now:
            self._count(stripe, _RATE_EVICTIONS)
        self._write_tag(base, slot, digest)
        return slot

    # Sliding windows.

    def check_window(self, key: bytes, quota: Quota, now: float, cost: int = 1) -> WindowDecision:
        """Decide a request of `cost` for `key` with `decide_window`, storing the counts if allowed.

        A new key is stored only when its request is allowed. It takes a
        free or expired slot, or else evicts the entry whose counts expire
        first.
        """
        digest, bucket = self._locate(key)
        stripe = bucket % _STRIPES
        base = self._layout.window_offset + bucket * _WINDOW_BUCKET_BYTES
        self._acquire(stripe)
        try:
            slot = _find_slot(self._memory, digest, base)
            counts = self._read_counts(base, slot)
            decision = decide_window(quota, counts, now, cost)
            if decision.allowed:
                if slot < 0:
                    slot = self._claim_window_slot(base, digest, stripe, now)
                self._write_counts(base, slot, quota, decision.counts)
        finally:
            self._release(stripe)
        return decision

    def count_event(self, key: bytes, quota: Quota, now: float) -> float:
        """Count one event for `key` and return the sliding-window estimate, this event included.

        The event is always counted, whatever `quota.limit` is. The
        estimate is the one `decide_window` compares with the limit.
        """
        digest, bucket = self._locate(key)
        stripe = bucket % _STRIPES
        base = self._layout.window_offset + bucket * _WINDOW_BUCKET_BYTES
        self._acquire(stripe)
        try:
            slot = _find_slot(self._memory, digest, base)
            counts = roll(quota, self._read_counts(base, slot), now)
            counts = Counts(counts.start, counts.current + 1, counts.previous)
            if slot < 0:
                slot = self._claim_window_slot(base, digest, stripe, now)
            self._write_counts(base, slot, quota, counts)
        finally:
            self._release(stripe)
        # The same estimate as in decide_window: the previous window's count
        # weighted by the share of it still inside the sliding window.
        weight = 1.0 - (now - counts.start) / quota.window
        return counts.previous * weight + counts.current

    def _read_counts(self, base: int, slot: int) -> Counts:
        if slot < 0:
            return _EMPTY_COUNTS
        offset = base + _TAGS_BYTES + slot * _WINDOW_SLOT_BYTES
        start, _expiry, current, previous = _WINDOW.unpack_from(self._memory, offset)
        return Counts(start, current, previous)

    def _write_counts(self, base: int, slot: int, quota: Quota, counts: Counts) -> None:
        # After two windows from its start, roll() turns any counts into zeros.
        expiry = counts.start + 2 * quota.window
        offset = base + _TAGS_BYTES + slot * _WINDOW_SLOT_BYTES
        _WINDOW.pack_into(
            self._memory, offset, counts.start, expiry, counts.current, counts.previous
        )

    def _claim_window_slot(self, base: int, digest: bytes, stripe: int, now: float) -> int:
        expiries = _WINDOW_EXPIRIES.unpack_from(self._memory, base + _TAGS_BYTES)
        oldest = min(expiries)
        slot = expiries.index(oldest)
        if oldest > now:
            self._count(stripe, _WINDOW_EVICTIONS)
        self._write_tag(base, slot, digest)
        return slot

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
        digest, bucket = self._locate(key)
        stripe = bucket % _STRIPES
        base = self._connection_bucket(bucket)
        memory = self._memory
        self._acquire(stripe)
        try:
            slot = _find_slot(memory, digest, base)
            if slot < 0:
                totals = _CONNECTION_TOTALS.unpack_from(memory, base + _TAGS_BYTES)
                if 0 not in totals:
                    self._count(stripe, _CONNECTIONS_FULL)
                    raise StoreFull(
                        "every slot of this client key's bucket in the connection table "
                        "has open connections, so increase the store capacity"
                    )
                slot = totals.index(0)
                self._write_tag(base, slot, digest)
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
        digest, bucket = self._locate(key)
        stripe = bucket % _STRIPES
        base = self._connection_bucket(bucket)
        self._acquire(stripe)
        try:
            slot = _find_slot(self._memory, digest, base)
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
        digest, bucket = self._locate(key)
        stripe = bucket % _STRIPES
        base = self._layout.ban_offset + bucket * _BAN_BUCKET_BYTES
        self._acquire(stripe)
        try:
            slot = _find_slot(self._memory, digest, base)
            if slot < 0:
                slot = self._claim_ban_slot(base, digest, stripe, now)
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
        digest, bucket = self._locate(key)
        stripe = bucket % _STRIPES
        base = self._layout.ban_offset + bucket * _BAN_BUCKET_BYTES
        self._acquire(stripe)
        try:
            slot = _find_slot(self._memory, digest, base)
            entry = self._read_ban(base, slot) if slot >= 0 else None
        finally:
            self._release(stripe)
        if entry is None or entry[1].level_until <= now:
            return None
        return entry[1]

    def remove_ban(self, key: bytes) -> bool:
        """Remove the ban of `key` and its kept level, and return whether the store had one."""
        digest, bucket = self._locate(key)
        stripe = bucket % _STRIPES
        base = self._layout.ban_offset + bucket * _BAN_BUCKET_BYTES
        self._acquire(stripe)
        try:
            slot = _find_slot(self._memory, digest, base)
            if slot < 0:
                return False
            offset = base + _TAGS_BYTES + slot * _BAN_SLOT_BYTES
            _until, level_until = struct.unpack_from("=dd", self._memory, offset)
            self._memory[offset : offset + _BAN_SLOT_BYTES] = bytes(_BAN_SLOT_BYTES)
            self._write_tag(base, slot, bytes(_TAG_BYTES))
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

    def _claim_ban_slot(self, base: int, digest: bytes, stripe: int, now: float) -> int:
        times = _BAN_TIMES.unpack_from(self._memory, base + _TAGS_BYTES)
        candidates: list[tuple[bool, float, int]] = []
        for slot in range(_WAYS):
            until, level_until = times[2 * slot], times[2 * slot + 1]
            if level_until <= now:
                self._write_tag(base, slot, digest)
                return slot
            # Ended bans go first, the one whose level expires first. After
            # them comes the active ban that ends first.
            active = until > now
            candidates.append((active, until if active else level_until, slot))
        slot = min(candidates)[2]
        self._count(stripe, _BAN_EVICTIONS)
        self._write_tag(base, slot, digest)
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
        _PID.pack_into(self._memory, stripe * _STRIPE_BYTES, 0)
        try:
            self._releases[stripe]()
        except ValueError:
            # Another process released it in the meantime, so the lock is free.
            log.warning("the shared store lock was already free", extra={"stripe": stripe})

    def _owner(self, stripe: int) -> int:
        owner: int = _PID.unpack_from(self._memory, stripe * _STRIPE_BYTES)[0]
        return owner

    def _acquire(self, stripe: int) -> None:
        if not self._acquires[stripe](True, self._lock_timeout):
            owner = self._owner(stripe)
            holder = f"pid {owner}" if owner else "a process that has not written its pid"
            raise StoreBusy(
                f"timed out after {self._lock_timeout} s waiting for shared store lock "
                f"{stripe}, which is held by {holder}. If that process died, the "
                "supervisor releases the lock with recover_locks(pid)."
            )
        try:
            _PID.pack_into(self._memory, stripe * _STRIPE_BYTES, _pid)
        except TypeError:
            # A closed mmap is no longer a writable buffer.
            self._releases[stripe]()
            self._check_open()
            raise

    def _check_open(self) -> None:
        if self._memory.closed:
            raise ValueError("the shared store is closed in this process")

    def _release(self, stripe: int) -> None:
        _PID.pack_into(self._memory, stripe * _STRIPE_BYTES, 0)
        self._releases[stripe]()

    def _locate(self, key: bytes) -> tuple[bytes, int]:
        """Return the key's tag and bucket index."""
        hasher = self._hasher.copy()
        hasher.update(key)
        digest = hasher.digest()
        return digest, int.from_bytes(digest, "little") % self._buckets

    def _write_tag(self, base: int, slot: int, digest: bytes) -> None:
        offset = base + slot * _TAG_BYTES
        self._memory[offset : offset + _TAG_BYTES] = digest

    def _count(self, stripe: int, field: int, delta: int = 1) -> None:
        """Add `delta` to one counter of the stripe record, whose lock the caller holds."""
        offset = stripe * _STRIPE_BYTES + field
        _INT64.pack_into(self._memory, offset, _INT64.unpack_from(self._memory, offset)[0] + delta)

    def _sum_counter(self, field: int) -> int:
        return sum(
            _INT64.unpack_from(self._memory, stripe * _STRIPE_BYTES + field)[0]
            for stripe in range(_STRIPES)
        )


def _find_slot(memory: mmap.mmap, digest: bytes, base: int) -> int:
    """Return the slot whose tag is `digest` in the bucket at `base`, or -1."""
    end = base + _TAGS_BYTES
    position = memory.find(digest, base, end)
    while position >= 0:
        offset = position - base
        if offset % _TAG_BYTES == 0:
            return offset // _TAG_BYTES
        # The match spans two tags, so search on.
        position = memory.find(digest, position + 1, end)
    return -1


def _truncate_utf8(text: str, limit: int) -> bytes:
    """Encode `text` as UTF-8 and cut it to at most `limit` bytes without splitting a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return encoded
    return encoded[:limit].decode("utf-8", errors="ignore").encode("utf-8")
