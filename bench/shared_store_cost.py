"""Measure the time of one `SharedStore.check_rate` or `check_window` call, uncontended.

Each pass checks 1,000 distinct keys once, in one process. The store has
the default 65,536 slots per region, and the keys take 1,000 of them after
the first pass. The rate and the quota are high enough that every check is
allowed, so every call writes the key's state. The "denied" lines check a
rate and a quota of one request per hour, so every call after the first of
each key is denied and writes nothing. For comparison the script also times `decide`
and `decide_window` alone. Each printed number is the best of `--repeat`
runs of `--passes` passes, divided by the number of calls, in microseconds.

The keys are the same bytes objects in every pass, and a bytes object
caches its hash, so the numbers leave out hashing a new key. The
"hash(new key)" line measures that cost for keys of the same length.

    .venv/bin/python bench/shared_store_cost.py [--passes N] [--repeat R]
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

from ringwall.limits.gcra import Rate, decide
from ringwall.limits.window import Counts, Quota, decide_window
from ringwall.state.shared import SharedStore

KEYS = [f"203.0.{index // 256}.{index % 256}".encode() for index in range(1000)]
RATE = Rate(limit=1_000_000_000, period=1.0, burst=1_000_000_000)
DENYING_RATE = Rate(limit=1, period=3600.0, burst=1)
QUOTA = Quota(limit=1_000_000_000, window=3600.0)
DENYING_QUOTA = Quota(limit=1, window=3600.0)
NOW = 1_800_000_000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=50, help="passes over the keys per run")
    parser.add_argument(
        "--repeat", type=int, default=7, help="number of runs, of which the fastest is printed"
    )
    args = parser.parse_args()

    store = SharedStore.create()
    # The denying rate and quota get their own store, so that they never see
    # the state that the allowed checks write for the same keys.
    denied_store = SharedStore.create()
    empty_counts = Counts(0.0, 0, 0)
    texts = [key.decode() for key in KEYS]

    def check_rate() -> None:
        for key in KEYS:
            store.check_rate(key, RATE, NOW)

    def check_rate_denied() -> None:
        for key in KEYS:
            denied_store.check_rate(key, DENYING_RATE, NOW)

    def check_window() -> None:
        for key in KEYS:
            store.check_window(key, QUOTA, NOW)

    def check_window_denied() -> None:
        for key in KEYS:
            denied_store.check_window(key, DENYING_QUOTA, NOW)

    def decide_alone() -> None:
        for _key in KEYS:
            decide(RATE, NOW, NOW)

    def decide_window_alone() -> None:
        for _key in KEYS:
            decide_window(QUOTA, empty_counts, NOW)

    def hash_new_key() -> None:
        # str.encode makes a new bytes object, whose hash is not cached yet.
        for text in texts:
            hash(text.encode())

    def encode_alone() -> None:
        for text in texts:
            text.encode()

    calls = args.passes * len(KEYS)
    timings: dict[str, float] = {}
    cases: list[tuple[str, Callable[[], None]]] = [
        ("check_rate", check_rate),
        ("check_rate denied", check_rate_denied),
        ("check_window", check_window),
        ("check_window denied", check_window_denied),
        ("decide alone", decide_alone),
        ("decide_window alone", decide_window_alone),
        ("encode", encode_alone),
        ("encode and hash", hash_new_key),
    ]
    for name, function in cases:
        best = min(timeit.repeat(function, number=args.passes, repeat=args.repeat))
        timings[name] = best / calls * 1e6
        print(f"{name:<22}{timings[name]:6.2f} µs per call")
    hashing = timings["encode and hash"] - timings["encode"]
    print(f"{'hash(new key)':<22}{hashing:6.2f} µs per call")
    store.close()
    denied_store.close()


if __name__ == "__main__":
    main()
