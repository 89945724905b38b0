"""Collect machine facts, print the results table and write the results JSON."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wrk_output import WrkResult

EFFICIENCY_TARGET = 0.40
# The JWT chain (warm token cache) may add at most a third to Ringwall's CPU per request.
AUTH_CHAIN_TARGET = 0.75
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class SystemResult:
    """The outcome of benchmarking one system.

    status is "ok", "invalid" (wrk saw errors) or "skipped" (see reason).
    proxy_cpu_s is None for the direct system, which has no proxy. setup
    describes generated inputs, such as the token of ringwall-auth.
    """

    name: str
    status: str
    pinning: str
    reason: str = ""
    wrk: WrkResult | None = None
    wrk_command: list[str] | None = None
    proxy_cpu_s: float | None = None
    setup: dict[str, Any] | None = None

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.proxy_cpu_s is None or self.wrk is None or self.wrk.requests == 0:
            return None
        return self.proxy_cpu_s * 1_000_000.0 / self.wrk.requests

    @property
    def proxy_cpu_utilization(self) -> float | None:
        """Proxy CPU seconds per second of wrk run time (1.0 is one core fully busy)."""
        if self.proxy_cpu_s is None or self.wrk is None or self.wrk.duration_s == 0:
            return None
        return self.proxy_cpu_s / self.wrk.duration_s


def machine_facts() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": tool_version(["nginx", "-v"]),
        "wrk": tool_version(["wrk", "-v"]),
    }


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """Return the first "model name" from /proc/cpuinfo, or "unknown" when there is none."""
    for line in cpuinfo.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown"


def tool_version(command: list[str]) -> str:
    """Return the first line that `command` prints to stdout or stderr (nginx -v uses stderr)."""
    # wrk -v prints its version with the usage text and exits with status 1.
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    output = (completed.stdout + completed.stderr).strip()
    return output.splitlines()[0] if output else "unknown"


def efficiencies(results: list[SystemResult]) -> dict[str, float | None]:
    """Return baseline CPU/request divided by Ringwall CPU/request for each nginx baseline."""
    by_name = {result.name: result for result in results}
    ringwall = _valid_cpu_per_request(by_name.get("ringwall"))
    ratios: dict[str, float | None] = {}
    for baseline in ("nginx", "nginx-modsecurity"):
        base = _valid_cpu_per_request(by_name.get(baseline))
        ratios[f"{baseline}/ringwall"] = base / ringwall if base and ringwall else None
    return ratios


def auth_chain_ratio(results: list[SystemResult]) -> float | None:
    """Return ringwall CPU/request divided by ringwall-auth CPU/request, if both runs are valid."""
    by_name = {result.name: result for result in results}
    plain = _valid_cpu_per_request(by_name.get("ringwall"))
    chain = _valid_cpu_per_request(by_name.get("ringwall-auth"))
    return plain / chain if plain and chain else None


def auth_chain_verdict(ratio: float | None) -> str:
    if ratio is None:
        return "not measured: needs valid ringwall and ringwall-auth runs"
    outcome = "PASS" if ratio >= AUTH_CHAIN_TARGET else "FAIL"
    return f"{outcome}: ratio {ratio:.2f}, target >= {AUTH_CHAIN_TARGET:.2f}"


# Systems that add one layer to a base system, with the least ratio of the
# base's CPU/request to theirs that the layer may cost.
LAYER_TARGETS = {
    "ringwall-limited": 0.90,
    "ringwall-limited-redis": 0.75,
    "ringwall-validated": 0.85,
    # The WAF route may spend no more CPU per request than nginx with ModSecurity.
    "ringwall-waf": 1.0,
    "ringwall-waf-post": 1.0,
    # Ringwall's HTTPS listener may spend at most 2.5 times nginx's CPU per
    # keep-alive request, and at most 2 times per request with a full handshake.
    "ringwall-tls": 0.40,
    "ringwall-tls-handshake": 0.50,
}
LAYER_BASES = {
    "ringwall-validated": "ringwall-post",
    "ringwall-waf": "nginx-modsecurity",
    "ringwall-waf-post": "nginx-modsecurity-post",
    "ringwall-tls": "nginx-tls",
    "ringwall-tls-handshake": "nginx-tls-handshake",
}


def layer_ratios(results: list[SystemResult]) -> dict[str, float | None]:
    """Return each layer system's base CPU/request divided by its own CPU/request."""
    by_name = {result.name: result for result in results}
    ratios: dict[str, float | None] = {}
    for name in LAYER_TARGETS:
        if name not in by_name:
            continue
        base = _valid_cpu_per_request(by_name.get(LAYER_BASES.get(name, "ringwall")))
        layered = _valid_cpu_per_request(by_name[name])
        ratios[name] = base / layered if base and layered else None
    return ratios


def format_layer_lines(ratios: dict[str, float | None]) -> str:
    lines = []
    for name, ratio in ratios.items():
        target = LAYER_TARGETS[name]
        base = LAYER_BASES.get(name, "ringwall")
        label = f"{name} ({base} CPU/request / {name} CPU/request)"
        if ratio is None:
            lines.append(f"{label}: not measured")
            continue
        outcome = "PASS" if ratio >= target else "FAIL"
        lines.append(f"{label}: {ratio:.2f}: {outcome}, target >= {target:.2f}")
    return "\n".join(lines)


def format_auth_chain_lines(ratio: float | None) -> str:
    value = "not measured" if ratio is None else f"{ratio:.2f}"
    return (
        f"auth chain (ringwall CPU/request / ringwall-auth CPU/request): {value}\n"
        f"auth chain target: {auth_chain_verdict(ratio)}"
    )


def _valid_cpu_per_request(result: SystemResult | None) -> float | None:
    if result is None or result.status != "ok":
        return None
    return result.cpu_us_per_request


def verdict(ratios: dict[str, float | None]) -> str:
    efficiency = ratios.get("nginx/ringwall")
    if efficiency is None:
        return "not measured: needs valid nginx and ringwall runs"
    outcome = "PASS" if efficiency >= EFFICIENCY_TARGET else "FAIL"
    return f"{outcome}: efficiency {efficiency:.2f}, target >= {EFFICIENCY_TARGET:.2f}"


def format_table(results: list[SystemResult]) -> str:
    header = ("system", "status", "req/s", "p50", "p99", "CPU µs/req", "CPU use", "errors")
    rows = [header, *(_table_row(result) for result in results)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def _table_row(result: SystemResult) -> tuple[str, ...]:
    wrk = result.wrk
    if wrk is None:
        return (result.name, result.status, "-", "-", "-", "-", "-", "-")
    cpu = result.cpu_us_per_request
    utilization = result.proxy_cpu_utilization
    errors = f"{wrk.socket_errors.total} socket, {wrk.non_2xx_3xx} non-2xx/3xx"
    return (
        result.name,
        result.status,
        f"{wrk.requests_per_s:,.0f}",
        _format_latency(wrk.latency_percentiles_us.get("50")),
        _format_latency(wrk.latency_percentiles_us.get("99")),
        "-" if cpu is None else f"{cpu:.1f}",
        "-" if utilization is None else f"{utilization:.0%}",
        errors,
    )


def _format_latency(microseconds: float | None) -> str:
    if microseconds is None:
        return "-"
    if microseconds >= 1000:
        return f"{microseconds / 1000:.2f} ms"
    return f"{microseconds:.0f} µs"


def result_to_json(result: SystemResult) -> dict[str, Any]:
    record: dict[str, Any] = {
        "name": result.name,
        "status": result.status,
        "reason": result.reason,
        "pinning": result.pinning,
        "wrk_command": result.wrk_command,
    }
    wrk = result.wrk
    if wrk is not None:
        record.update(
            {
                "requests": wrk.requests,
                "duration_s": wrk.duration_s,
                "requests_per_s": wrk.requests_per_s,
                "latency_p50_us": wrk.latency_percentiles_us.get("50"),
                "latency_p99_us": wrk.latency_percentiles_us.get("99"),
                "latency_percentiles_us": wrk.latency_percentiles_us,
                "socket_errors": {
                    "connect": wrk.socket_errors.connect,
                    "read": wrk.socket_errors.read,
                    "write": wrk.socket_errors.write,
                    "timeout": wrk.socket_errors.timeout,
                },
                "non_2xx_3xx_responses": wrk.non_2xx_3xx,
            }
        )
    record["proxy_cpu_s"] = result.proxy_cpu_s
    record["proxy_cpu_us_per_request"] = result.cpu_us_per_request
    record["proxy_cpu_utilization"] = result.proxy_cpu_utilization
    if result.setup is not None:
        record["setup"] = result.setup
    return record


def write_results(document: dict[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
    """Write `document` to RESULTS_DIR/<UTC timestamp>.json and return the path.

    The file is written as .tmp and renamed, so a results file is never partial.
    """
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = results_dir / f"{stamp}.json"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n")
    temporary.replace(path)
    return path
