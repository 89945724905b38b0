"""Benchmark results made up for the unit tests of bench/.

Import this module only from tests/bench, whose conftest.py puts bench/ on
`sys.path` for the `report` and `wrk_output` modules.
"""

from report import SystemResult
from wrk_output import SocketErrors, WrkResult


def system_result(name: str, requests: int, cpu_s: float, status: str = "ok") -> SystemResult:
    """Return a result of `requests` in a 10 s wrk run, with `cpu_s` seconds of proxy CPU."""
    wrk = WrkResult(
        requests=requests,
        duration_s=10.0,
        requests_per_s=requests / 10.0,
        latency_percentiles_us={"50": 900.0, "99": 2000.0},
        socket_errors=SocketErrors(0, 0, 0, 0),
        non_2xx_3xx=0,
    )
    return SystemResult(name, status, "pinning", wrk=wrk, proxy_cpu_s=cpu_s)
