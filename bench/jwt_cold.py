"""Measure cold JWT verification in-process: one `verify_compact` call per algorithm.

"Cold" means the gateway's token cache is not consulted, so every call decodes
the token and checks its signature. `bench/jwt_verify.py` generates the keys
and does the timing: the best of REPEAT runs of NUMBER calls, divided by NUMBER.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

COLD_ALGORITHMS = ("RS256", "ES256", "EdDSA")
CALLS_PER_RUN = 2000
RUNS = 5


class ColdVerifyError(RuntimeError):
    """Raised when Ringwall's verifier cannot be imported or rejects a generated token."""


@dataclass(frozen=True)
class ColdTimings:
    """Microseconds per `verify_compact` call, by algorithm, measured on CPU `cpu`."""

    cpu: int
    us_per_verification: Mapping[str, float]

    def to_json(self) -> dict[str, object]:
        return {
            "cpu": self.cpu,
            "function": "ringwall.gateway.auth.jws.verify_compact",
            "calls_per_run": CALLS_PER_RUN,
            "runs": RUNS,
            "statistic": "fastest run, divided by calls_per_run",
            "us_per_verification": dict(self.us_per_verification),
        }


def measure_cold(cpu: int) -> ColdTimings:
    """Time `verify_compact` for each of COLD_ALGORITHMS with this process pinned to `cpu`."""
    try:
        from jwt_verify import measure

        from ringwall.gateway.auth.jws import TokenInvalid
    except ImportError as error:
        raise ColdVerifyError(f"cannot import Ringwall's JWS verifier: {error}") from error

    timings: dict[str, float] = {}
    with pinned_to(cpu):
        for algorithm in COLD_ALGORITHMS:
            try:
                timings[algorithm] = measure(algorithm, CALLS_PER_RUN, RUNS)
            except TokenInvalid as error:
                raise ColdVerifyError(f"{algorithm} token rejected: {error}") from error
    return ColdTimings(cpu, timings)


@contextmanager
def pinned_to(cpu: int) -> Iterator[None]:
    """Run the block with this process on `cpu` only, then restore its CPU affinity."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def format_cold_report(timings: ColdTimings) -> str:
    """Return one line per algorithm, such as `  RS256    38.2 µs`, under a heading."""
    lines = [
        f"cold JWT verification (verify_compact in-process on CPU {timings.cpu}, "
        f"best of {RUNS} runs of {CALLS_PER_RUN} calls):"
    ]
    for algorithm, microseconds in timings.us_per_verification.items():
        lines.append(f"  {algorithm:<6} {microseconds:7.1f} µs")
    return "\n".join(lines)
