"""Parse the text report that wrk 4.x prints when run with --latency."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# wrk formats times with these units (src/units.c in wrk 4.1.0).
_TIME_UNITS_US = {
    "us": 1.0,
    "ms": 1_000.0,
    "s": 1_000_000.0,
    "m": 60_000_000.0,
    "h": 3_600_000_000.0,
}
# wrk formats counts with these metric suffixes, base 1000.
_METRIC_SUFFIXES = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}

_PERCENTILE_LINE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+(\S+)\s*$", re.MULTILINE)
_REQUESTS_LINE = re.compile(r"^\s*(\d+) requests in (\S+?),", re.MULTILINE)
_RATE_LINE = re.compile(r"^Requests/sec:\s+(\S+)\s*$", re.MULTILINE)
_SOCKET_ERRORS_LINE = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)
_NON_2XX_LINE = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_TIME_VALUE = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s|m|h)$")
_METRIC_VALUE = re.compile(r"^(\d+(?:\.\d+)?)([kMGTP]?)$")


class WrkOutputError(ValueError):
    """Raised when wrk output lacks a line that the report needs."""


@dataclass(frozen=True)
class SocketErrors:
    """Socket error counts from wrk's "Socket errors:" line (all zero when absent)."""

    connect: int = 0
    read: int = 0
    write: int = 0
    timeout: int = 0

    @property
    def total(self) -> int:
        return self.connect + self.read + self.write + self.timeout


@dataclass(frozen=True)
class WrkResult:
    """Numbers from one wrk run. Latencies are in microseconds."""

    requests: int
    duration_s: float
    requests_per_s: float
    latency_percentiles_us: dict[str, float] = field(default_factory=dict)
    socket_errors: SocketErrors = SocketErrors()
    non_2xx_3xx: int = 0

    @property
    def is_valid(self) -> bool:
        """Whether every request succeeded: no socket errors and no 4xx or 5xx responses."""
        return self.socket_errors.total == 0 and self.non_2xx_3xx == 0

    def percentile_us(self, percent: str) -> float:
        """Return the latency at `percent` ("50", "99", ...) in microseconds."""
        try:
            return self.latency_percentiles_us[percent]
        except KeyError:
            raise WrkOutputError(
                f"wrk output has no {percent}% latency line. Run wrk with --latency."
            ) from None


def parse_time_us(text: str) -> float:
    """Convert a wrk time such as "812.00us", "1.25ms" or "2.00s" to microseconds."""
    match = _TIME_VALUE.match(text.strip())
    if match is None:
        raise WrkOutputError(f"invalid wrk time value {text!r}: expected a number and us/ms/s/m/h")
    number, unit = match.groups()
    return float(number) * _TIME_UNITS_US[unit]


def parse_metric(text: str) -> float:
    """Convert a wrk count such as "9.87k" or "1.20M" to a plain number."""
    match = _METRIC_VALUE.match(text.strip())
    if match is None:
        raise WrkOutputError(f"invalid wrk count {text!r}: expected a number and k/M/G suffix")
    number, suffix = match.groups()
    return float(number) * _METRIC_SUFFIXES[suffix]


def parse_wrk_output(output: str) -> WrkResult:
    """Parse the report that wrk prints to stdout at the end of a run."""
    requests_match = _REQUESTS_LINE.search(output)
    rate_match = _RATE_LINE.search(output)
    if requests_match is None or rate_match is None:
        raise WrkOutputError(
            "wrk output has no 'N requests in T' or 'Requests/sec:' line:\n" + output
        )

    return WrkResult(
        requests=int(requests_match.group(1)),
        duration_s=parse_time_us(requests_match.group(2)) / 1_000_000.0,
        requests_per_s=parse_metric(rate_match.group(1)),
        latency_percentiles_us=_parse_percentiles(output),
        socket_errors=_parse_socket_errors(output),
        non_2xx_3xx=_parse_non_2xx(output),
    )


def _parse_percentiles(output: str) -> dict[str, float]:
    _, marker, distribution = output.partition("Latency Distribution")
    if not marker:
        return {}
    percentiles: dict[str, float] = {}
    for percent, value in _PERCENTILE_LINE.findall(distribution):
        # "50.000" and "50" name the same percentile, so both are keyed as "50".
        key = f"{float(percent):g}"
        percentiles[key] = parse_time_us(value)
    return percentiles


def _parse_socket_errors(output: str) -> SocketErrors:
    match = _SOCKET_ERRORS_LINE.search(output)
    if match is None:
        return SocketErrors()
    connect, read, write, timeout = (int(value) for value in match.groups())
    return SocketErrors(connect=connect, read=read, write=write, timeout=timeout)


def _parse_non_2xx(output: str) -> int:
    match = _NON_2XX_LINE.search(output)
    return int(match.group(1)) if match else 0
