"""Measure whether WAF load slows a route without the WAF: p99 with and without that load.

One Ringwall worker (CPU 0) serves two routes to the nginx backend: `/waf`
with the CRS at paranoia level 1 in block mode, and `/plain` without the WAF.
wrk (CPU 1) first measures `/plain` alone with 4 connections, then again
while a second wrk keeps 32 connections busy on `/waf`. The target: the
p99 of `/plain` under WAF load is at most twice its p99 alone.

    .venv/bin/python bench/waf_isolation.py [--duration 10]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from child_processes import pinned, running, wait_until_ready
from run import (
    LOOPBACK,
    REQUEST_HEADERS,
    RINGWALL_BIN,
    Settings,
    backend,
    free_port,
    probe_request,
)
from wrk_output import parse_wrk_output

TARGET_FACTOR = 2.0


def write_config(prefix: Path, backend_port: int) -> Path:
    config = {
        "logging": {"security": str(prefix / "security.log"), "access": {"enabled": False}},
        "upstreams": {"app": {"targets": [f"http://{LOOPBACK}:{backend_port}"]}},
        "routes": [
            {
                "name": "waf",
                "path": "/waf",
                "upstream": "app",
                "auth": "none",
                "waf": {"mode": "block", "paranoia": 1},
            },
            {"name": "plain", "path": "/plain", "upstream": "app", "auth": "none"},
        ],
    }
    path = prefix / "ringwall-waf-isolation.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def wrk(port: int, path: str, connections: int, duration_s: int) -> list[str]:
    headers = [
        argument
        for name, value in REQUEST_HEADERS.items()
        for argument in ("-H", f"{name}: {value}")
    ]
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--latency",
        *headers,
        f"http://{LOOPBACK}:{port}{path}",
    ]
    return pinned(1, command)


def p99_of(output: str) -> float:
    return parse_wrk_output(output).latency_percentiles_us["99"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    arguments = parser.parse_args()
    settings = Settings((), arguments.duration, 0, 4, 1, 0, 1, 30.0, False, False)
    with tempfile.TemporaryDirectory(prefix="ringwall-waf-isolation-") as temp:
        prefix = Path(temp)
        prefix.chmod(0o755)
        with backend(settings, prefix) as backend_port:
            port = free_port()
            command = pinned(
                0,
                [
                    str(RINGWALL_BIN),
                    "run",
                    "-c",
                    str(write_config(prefix, backend_port)),
                    "--listen",
                    f"{LOOPBACK}:{port}",
                    "--workers",
                    "1",
                ],
            )
            with running("ringwall", command, prefix) as process:
                wait_until_ready(process, probe_request(port), 30.0)
                alone = subprocess.run(
                    wrk(port, "/plain", 4, arguments.duration),
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                load = subprocess.Popen(
                    wrk(port, "/waf", 32, arguments.duration + 2),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
                try:
                    loaded = subprocess.run(
                        wrk(port, "/plain", 4, arguments.duration),
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                finally:
                    load.communicate(timeout=arguments.duration + 30)
    alone_p99, loaded_p99 = p99_of(alone), p99_of(loaded)
    factor = loaded_p99 / alone_p99
    verdict = "PASS" if factor <= TARGET_FACTOR else "FAIL"
    print(f"/plain p99 alone: {alone_p99:.0f} µs; under WAF load: {loaded_p99:.0f} µs")
    print(f"factor {factor:.2f}: {verdict}, target <= {TARGET_FACTOR:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
