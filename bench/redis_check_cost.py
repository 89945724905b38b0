"""Measure the client CPU time of one Redis rate-limit check.

Runs `--checks` calls of `RedisLimits.check_rate` from `--tasks` concurrent
tasks against a Redis server and prints the process CPU time (user + system,
from time.process_time) per check. Redis runs in another process, so its
time is not counted. The keys live under a random `ringwall-bench:` prefix
and are deleted at the end.

    .venv/bin/python bench/redis_check_cost.py [--url redis://127.0.0.1:6379/0]
        [--checks 20000] [--tasks 50] [--keys 1000] [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import uvloop

from ringwall.limits.gcra import Rate
from ringwall.state.redis_client import RedisClient
from ringwall.state.redis_limits import RedisLimits


async def run_checks(url: str, checks: int, tasks: int, keys: int) -> tuple[float, float, int]:
    """Return the CPU seconds, wall seconds and allowed count of `checks` checks."""
    client = RedisClient.from_url(url)
    prefix = f"ringwall-bench:{uuid.uuid4().hex}:".encode()
    limits = RedisLimits(client, prefix)
    rate = Rate(limit=100, period=1.0, burst=100)
    names = [b"client-%d" % index for index in range(keys)]
    allowed = 0

    async def worker(first: int, count: int) -> None:
        nonlocal allowed
        for index in range(first, first + count):
            decision = await limits.check_rate(names[index % keys], rate)
            allowed += decision.allowed

    try:
        await limits.check_rate(names[0], rate)  # connect and load the script first
        share = checks // tasks
        cpu_start = time.process_time()
        wall_start = time.perf_counter()
        await asyncio.gather(*(worker(task * share, share) for task in range(tasks)))
        cpu = time.process_time() - cpu_start
        wall = time.perf_counter() - wall_start
        for start in range(0, keys, 500):
            await client.execute(b"DEL", *(prefix + name for name in names[start : start + 500]))
    finally:
        await client.close()
    return cpu, wall, allowed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument("--checks", type=int, default=20_000, help="number of checks")
    parser.add_argument("--tasks", type=int, default=50, help="concurrent tasks")
    parser.add_argument("--keys", type=int, default=1000, help="distinct limit keys")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    options = parser.parse_args()
    checks = options.checks // options.tasks * options.tasks
    if options.loop == "uvloop":
        cpu, wall, allowed = uvloop.run(
            run_checks(options.url, checks, options.tasks, options.keys)
        )
    else:
        cpu, wall, allowed = asyncio.run(
            run_checks(options.url, checks, options.tasks, options.keys)
        )
    print(
        f"{checks} checks, {options.tasks} tasks, {options.loop}: "
        f"{cpu / checks * 1e6:.2f} µs client CPU per check, "
        f"{checks / wall:,.0f} checks/s, {allowed} allowed"
    )


if __name__ == "__main__":
    main()
