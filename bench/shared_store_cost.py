"""Measure the time of one `SharedStore.check_rate` call, uncontended, in one process.

Each pass checks 1,000 distinct keys once. The rate is high enough that
every check is allowed, so every call writes a TAT. The store has the
default 65,536 slots, and the keys take 1,000 of them after the first pass.
For comparison the script also times the `decide` call that `check_rate`
makes. Each printed number is the best of `--repeat` runs of `--passes`
passes, divided by the number of calls, in microseconds.

    .venv/bin/python bench/shared_store_cost.py [--passes N] [--repeat R]
"""

from __future__ import annotations

import argparse
import timeit

from ringwall.limits.gcra import Rate, decide
from ringwall.state.shared import SharedStore

KEYS = [f"203.0.{index // 256}.{index % 256}".encode() for index in range(1000)]
RATE = Rate(limit=1_000_000_000, period=1.0, burst=1_000_000_000)
NOW = 1_800_000_000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=50, help="passes over the keys per run")
    parser.add_argument(
        "--repeat", type=int, default=7, help="number of runs, of which the fastest is printed"
    )
    args = parser.parse_args()

    store = SharedStore.create()

    def check_keys() -> None:
        for key in KEYS:
            store.check_rate(key, RATE, NOW)

    def decide_keys() -> None:
        for _key in KEYS:
            decide(RATE, NOW, NOW)

    calls = args.passes * len(KEYS)
    for name, function in (("check_rate", check_keys), ("decide alone", decide_keys)):
        best = min(timeit.repeat(function, number=args.passes, repeat=args.repeat))
        print(f"{name:<14}{best / calls * 1e6:6.2f} µs per call")
    store.close()


if __name__ == "__main__":
    main()
