"""Benchmark Ringwall against nginx and nginx with ModSecurity and OWASP CRS.

Everything runs on loopback: an nginx backend, each proxy in turn, and wrk.
docs/benchmarks.md describes the method. Run it with `make bench`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from auth_chain import (
    AuthChain,
    bearer_headers,
    prepare_auth_chain,
    redact_authorization,
)
from child_processes import (
    ProbeRequest,
    StartError,
    pinned,
    running,
    send_probe,
    stop_process_group,
    tail,
    wait_until_ready,
)
from jwt_cold import ColdTimings, ColdVerifyError, format_cold_report, measure_cold
from nginx_conf import (
    MissingFileError,
    write_backend_conf,
    write_modsecurity_rules,
    write_proxy_conf,
)
from proc_cpu import busy_fractions, read_cpu_times, tree_cpu_seconds
from report import (
    SystemResult,
    auth_chain_ratio,
    auth_chain_verdict,
    efficiencies,
    format_auth_chain_lines,
    format_layer_lines,
    format_table,
    layer_ratios,
    machine_facts,
    result_to_json,
    verdict,
    write_results,
)
from tls_setup import (
    HANDSHAKE_COUNTS_ENV,
    TlsSetupError,
    build_full_handshakes_library,
    client_context,
    make_certificates,
    nginx_tls_directives,
    parse_handshake_counts,
    write_ringwall_tls_config,
)
from validated import write_post_config, write_post_script, write_waf_config
from wrk_output import WrkOutputError, WrkResult, parse_wrk_output

SYSTEMS = (
    "direct",
    "nginx",
    "nginx-modsecurity",
    "ringwall",
    "ringwall-auth",
    "ringwall-limited",
    "ringwall-limited-redis",
    "ringwall-post",
    "ringwall-validated",
    "ringwall-waf",
    "nginx-modsecurity-post",
    "ringwall-waf-post",
    "nginx-tls",
    "ringwall-tls",
    "nginx-tls-handshake",
    "ringwall-tls-handshake",
)
REPO_ROOT = Path(__file__).resolve().parent.parent
RINGWALL_BIN = REPO_ROOT / ".venv" / "bin" / "ringwall"
RINGWALL_CONFIG = REPO_ROOT / "examples" / "minimal.yaml"
LOOPBACK = "127.0.0.1"
BACKEND_BODY = b'{"status":"ok"}'
# Headers of a typical API client, sent to every system. wrk sends no
# User-Agent or Accept by default. With a name in Host, OWASP CRS 3.3.4 rule
# 920350 (numeric Host, 3 anomaly points at paranoia level 1) does not match.
REQUEST_HEADERS = {
    "Host": "localhost",
    "User-Agent": "ringwall-bench/1",
    "Accept": "application/json",
}
WRK_TIMEOUT_MARGIN_S = 30
# wrk's own request timeout per system, where its default of 2 s does not fit.
# A POST through the CRS costs about 4.5 ms of CPU, so 50 connections wait
# about 230 ms on average. nginx with ModSecurity serves them unevenly: its
# p99 was 1.3 to 2.1 s, and a few requests took over 2 s. wrk counts each of those
# as a socket timeout, which made the run invalid, though wrk keeps waiting
# for the response and the CPU per request stays valid.
WRK_TIMEOUTS_S = {"nginx-modsecurity-post": 10, "ringwall-waf-post": 10}
# The headers of the *-tls-handshake systems. Each response then ends its
# connection, so wrk opens a new one, with a new handshake, for every request.
CLOSE_HEADERS = {**REQUEST_HEADERS, "Connection": "close"}
# A CPU busier than this before the run means another program competes with
# the benchmark, so the harness prints a warning.
IDLE_CHECK_BUSY_LIMIT = 0.10
IDLE_CHECK_INTERVAL_S = 1.0


class HarnessError(RuntimeError):
    """Raised when the benchmark itself cannot run, as opposed to a system under test failing."""


@dataclass(frozen=True)
class Settings:
    """Command-line settings. Durations are in seconds."""

    systems: tuple[str, ...]
    duration_s: int
    warmup_s: int
    connections: int
    threads: int
    proxy_cpu: int
    load_cpu: int
    start_timeout_s: float
    keep_temp: bool
    jwt_cold: bool


@dataclass(frozen=True)
class RejectionCheck:
    """A request that must get the response `status` from the proxy before it is measured."""

    description: str
    headers: Mapping[str, str]
    status: int


@dataclass(frozen=True)
class Launch:
    """How to start one proxy and what to send it, or why it cannot start.

    `headers` go with the probe and with every wrk request.
    """

    command: list[str] = field(default_factory=list)
    env: Mapping[str, str] | None = None
    skip_reason: str = ""
    headers: Mapping[str, str] = field(default_factory=lambda: REQUEST_HEADERS)
    rejection_checks: tuple[RejectionCheck, ...] = ()
    setup: dict[str, Any] | None = None
    # A wrk Lua script, for requests other than GET /.
    script: Path | None = None
    # For HTTPS systems: the context that the probes verify the server with.
    # wrk then requests https://, without verifying the certificate.
    tls: ssl.SSLContext | None = None
    # Environment variables for wrk, and the file in which the wrapper of
    # the *-tls-handshake systems counts wrk's full and resumed handshakes.
    wrk_env: Mapping[str, str] | None = None
    handshake_counts: Path | None = None


@dataclass(frozen=True)
class Bench:
    """State shared by all measurements of one run."""

    settings: Settings
    prefix: Path
    backend_port: int


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark Ringwall against nginx and nginx with ModSecurity and OWASP CRS "
        "on loopback, and report requests/s, latency and proxy CPU time per request.",
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated systems to measure, in order (default: {','.join(SYSTEMS)})",
    )

    parser.add_argument(
        "--duration",
        type=int,
        default=10,
        help="measured wrk run per system, in seconds (default: 10)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="unmeasured wrk run before each measurement, in seconds, or 0 for none (default: 2)",
    )
    parser.add_argument(
        "--connections", type=int, default=50, help="wrk keep-alive connections (default: 50)"
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default: 1)")

    parser.add_argument(
        "--proxy-cpu",
        type=int,
        default=0,
        help="CPU that the proxy under test is pinned to (default: 0)",
    )
    parser.add_argument(
        "--load-cpu",
        type=int,
        default=1,
        help="CPU that wrk and the backend are pinned to (default: 1)",
    )

    parser.add_argument(
        "--start-timeout",
        type=float,
        default=30.0,
        help="time allowed for a proxy to return its first response, in seconds (default: 30)",
    )
    parser.add_argument(
        "--keep-temp",
        action="store_true",
        help="keep the temp dir with configs and logs, and print its path",
    )
    parser.add_argument(
        "--jwt-cold",
        action="store_true",
        help="also time one JWT verification without the token cache (RS256, ES256, EdDSA), "
        "in-process on the proxy CPU, in microseconds",
    )
    return parser


def parse_args(argv: list[str] | None) -> Settings:
    parser = build_parser()
    args = parser.parse_args(argv)
    return Settings(
        systems=_parse_systems(parser, args.systems),
        duration_s=_positive(parser, "--duration", args.duration),
        warmup_s=max(args.warmup, 0),
        connections=_positive(parser, "--connections", args.connections),
        threads=_positive(parser, "--threads", args.threads),
        proxy_cpu=args.proxy_cpu,
        load_cpu=args.load_cpu,
        start_timeout_s=args.start_timeout,
        keep_temp=args.keep_temp,
        jwt_cold=args.jwt_cold,
    )


def _parse_systems(parser: argparse.ArgumentParser, text: str) -> tuple[str, ...]:
    systems = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in systems if name not in SYSTEMS]
    if unknown or not systems:
        parser.error(f"invalid --systems {text!r}: choose from {', '.join(SYSTEMS)}")
    return systems


def _positive(parser: argparse.ArgumentParser, option: str, value: int) -> int:
    if value <= 0:
        parser.error(f"invalid {option} {value}: must be at least 1")
    return value


def check_prerequisites(settings: Settings) -> None:
    for tool in ("nginx", "wrk", "taskset"):
        if shutil.which(tool) is None:
            raise HarnessError(f"{tool} not found on PATH. Run `make setup` to install it.")
    allowed = os.sched_getaffinity(0)
    for option, cpu in (("--proxy-cpu", settings.proxy_cpu), ("--load-cpu", settings.load_cpu)):
        if cpu not in allowed:
            raise HarnessError(f"invalid {option} {cpu}: usable CPUs are {sorted(allowed)}")
    if settings.proxy_cpu == settings.load_cpu:
        raise HarnessError("--proxy-cpu and --load-cpu must differ, or wrk competes with the proxy")


def check_cpus_idle(settings: Settings) -> dict[int, float]:
    """Return the busy fraction of the benchmark CPUs over one second, warning when it is high."""
    before = read_cpu_times()
    time.sleep(IDLE_CHECK_INTERVAL_S)
    fractions = busy_fractions(before, read_cpu_times())
    for cpu in (settings.proxy_cpu, settings.load_cpu):
        busy = fractions.get(cpu, 0.0)
        if busy > IDLE_CHECK_BUSY_LIMIT:
            print(
                f"bench: warning: CPU {cpu} was {busy:.0%} busy before the run. Another "
                "program competes with the benchmark, so the numbers are unreliable.",
                flush=True,
            )
    return fractions


def free_port() -> int:
    """Return a TCP port that is free on loopback now. Another process could take it later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def probe_request(
    port: int, headers: Mapping[str, str] = REQUEST_HEADERS, tls: ssl.SSLContext | None = None
) -> ProbeRequest:
    return ProbeRequest(host=LOOPBACK, port=port, path="/", headers=headers, tls=tls)


def wrk_command(
    settings: Settings,
    port: int,
    duration_s: int,
    request_headers: Mapping[str, str],
    script: Path | None = None,
    timeout_s: int | None = None,
    scheme: str = "http",
) -> list[str]:
    """Return the wrk command. `timeout_s` None keeps wrk's request timeout of 2 s."""
    headers: list[str] = []
    for name, value in request_headers.items():
        headers += ["-H", f"{name}: {value}"]
    command = [
        "wrk",
        f"-t{settings.threads}",
        f"-c{settings.connections}",
        f"-d{duration_s}s",
        "--latency",
        *(["--timeout", f"{timeout_s}s"] if timeout_s is not None else []),
        *headers,
        *(["-s", str(script)] if script is not None else []),
        f"{scheme}://{LOOPBACK}:{port}/",
    ]
    return pinned(settings.load_cpu, command)


def run_wrk(
    settings: Settings,
    port: int,
    duration_s: int,
    headers: Mapping[str, str] = REQUEST_HEADERS,
    script: Path | None = None,
    timeout_s: int | None = None,
    scheme: str = "http",
    env: Mapping[str, str] | None = None,
) -> tuple[WrkResult, list[str]]:
    """Run wrk against loopback `port` and return the parsed report and the command.

    `env` adds variables to wrk's environment.
    """
    command = wrk_command(settings, port, duration_s, headers, script, timeout_s, scheme)
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **env} if env is not None else None,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=duration_s + WRK_TIMEOUT_MARGIN_S)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"wrk timed out: {shlex.join(command)}") from None
    finally:
        stop_process_group(process)

    output = stdout.decode(errors="replace")
    if process.returncode != 0:
        raise HarnessError(
            f"wrk exited with status {process.returncode}: {shlex.join(command)}\n"
            + stderr.decode(errors="replace")
            + output
        )
    try:
        return parse_wrk_output(output), command
    except WrkOutputError as error:
        raise HarnessError(str(error)) from error


@contextmanager
def backend(settings: Settings, prefix: Path) -> Iterator[int]:
    """Run the nginx backend on the load CPU and yield its port."""
    port = free_port()
    conf = write_backend_conf(prefix, port)
    command = pinned(settings.load_cpu, nginx_command(prefix, conf))
    with running("backend", command, prefix) as process:
        try:
            status, body = wait_until_ready(process, probe_request(port), settings.start_timeout_s)
        except StartError as error:
            raise HarnessError(
                f"nginx backend failed to start: {error}\n{tail(prefix / 'backend.stderr')}"
            ) from error
        if status != 200 or body != BACKEND_BODY:
            raise HarnessError(
                f"nginx backend returned {status} {body!r}, expected 200 {BACKEND_BODY!r}"
            )
        yield port


def nginx_command(prefix: Path, conf: Path) -> list[str]:
    return ["nginx", "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]


def measure_direct(bench: Bench) -> SystemResult:
    settings = bench.settings
    pinning = f"wrk and backend on CPU {settings.load_cpu}, no proxy"
    if settings.warmup_s:
        run_wrk(settings, bench.backend_port, settings.warmup_s)
    wrk, command = run_wrk(settings, bench.backend_port, settings.duration_s)
    status = "ok" if wrk.is_valid else "invalid"
    return SystemResult("direct", status, pinning, wrk=wrk, wrk_command=command)


def launch_nginx(bench: Bench, name: str, port: int) -> Launch:
    """Write the config of the nginx or nginx-modsecurity system and return its command."""
    rules = None
    if name.startswith("nginx-modsecurity"):
        try:
            rules = write_modsecurity_rules(bench.prefix)
        except MissingFileError as error:
            return Launch(skip_reason=str(error))
    conf = write_proxy_conf(bench.prefix, name, port, bench.backend_port, rules)
    command = pinned(bench.settings.proxy_cpu, nginx_command(bench.prefix, conf))
    script = write_post_script(bench.prefix) if name.endswith("-post") else None
    return Launch(command=command, script=script)


def launch_ringwall(
    bench: Bench, port: int, config: Path = RINGWALL_CONFIG, https: bool = False
) -> Launch:
    """Return Ringwall's launch with one worker. With `https`, `port` is the HTTPS listener's."""
    for required in (RINGWALL_BIN, config):
        if not required.exists():
            return Launch(skip_reason=f"{required} not found")
    listen = ["--listen", f"{LOOPBACK}:{port}"]
    if https:
        listen = ["--listen", f"{LOOPBACK}:{free_port()}", "--listen-tls", f"{LOOPBACK}:{port}"]
    command = [str(RINGWALL_BIN), "run", "-c", str(config), *listen, "--workers", "1"]
    env = {"UPSTREAM_URL": f"http://{LOOPBACK}:{bench.backend_port}"}
    return Launch(command=pinned(bench.settings.proxy_cpu, command), env=env)


def launch_ringwall_auth(bench: Bench, port: int) -> Launch:
    """Generate the JWT setup in the temp dir and return Ringwall's launch with a bearer token."""
    chain = prepare_auth_chain(bench.prefix)
    print(f"bench: ringwall-auth: audit log {chain.audit_note}", flush=True)
    launch = launch_ringwall(bench, port, chain.config_path)
    if launch.skip_reason:
        return launch
    return Launch(
        command=launch.command,
        env=launch.env,
        headers=bearer_headers(REQUEST_HEADERS, chain.token),
        rejection_checks=auth_rejection_checks(chain),
        setup=chain.setup(),
    )


def write_limited_config(prefix: Path, store: str) -> Path:
    """Write Ringwall's config with a per-IP limit on `/` that the run never reaches."""
    limits = "limits:\n  store: {kind: embedded}\n"
    if store == "redis":
        limits = (
            'limits:\n  store: {kind: redis, url: "redis://127.0.0.1:6379", '
            'key_prefix: "ringwall-bench:", on_failure: fail_closed}\n'
        )
    path = prefix / f"ringwall-limited-{store}.yaml"
    path.write_text(
        limits
        + """upstreams:
  app:
    targets: ["${UPSTREAM_URL}"]
routes:
  - name: all
    path: /
    upstream: app
    auth: none
    limits:
      - {name: per-ip, key: [ip], rate: 1000000000/s}
"""
    )
    return path


def auth_rejection_checks(chain: AuthChain) -> tuple[RejectionCheck, ...]:
    """Return the requests that show the route checks the token and the role."""
    return (
        RejectionCheck("without a token", REQUEST_HEADERS, 401),
        RejectionCheck(
            "with a token without role customer",
            bearer_headers(REQUEST_HEADERS, chain.token_without_role),
            403,
        ),
    )


def launch_tls(bench: Bench, name: str, port: int) -> Launch:
    """Return the launch of an HTTPS system, making the certificates on first use."""
    if not RINGWALL_BIN.exists():
        return Launch(skip_reason=f"{RINGWALL_BIN} not found, and it makes the certificates")
    try:
        files = make_certificates(RINGWALL_BIN, bench.prefix)
    except TlsSetupError as error:
        return Launch(skip_reason=str(error))
    if name.startswith("nginx"):
        conf = write_proxy_conf(
            bench.prefix, name, port, bench.backend_port, None, nginx_tls_directives(files)
        )
        launch = Launch(command=pinned(bench.settings.proxy_cpu, nginx_command(bench.prefix, conf)))
    else:
        config = write_ringwall_tls_config(bench.prefix, files)
        launch = launch_ringwall(bench, port, config, https=True)
    if launch.skip_reason:
        return launch
    if not name.endswith("-handshake"):
        return Launch(command=launch.command, env=launch.env, tls=client_context(files))

    try:
        library = build_full_handshakes_library(bench.prefix)
    except TlsSetupError as error:
        return Launch(skip_reason=str(error))
    counts = bench.prefix / f"{name}-handshakes.txt"
    return Launch(
        command=launch.command,
        env=launch.env,
        headers=CLOSE_HEADERS,
        tls=client_context(files),
        wrk_env={"LD_PRELOAD": str(library), HANDSHAKE_COUNTS_ENV: str(counts)},
        handshake_counts=counts,
    )


def launch_proxy(bench: Bench, name: str, port: int) -> Launch:
    if "-tls" in name:
        return launch_tls(bench, name, port)
    if name == "ringwall":
        return launch_ringwall(bench, port)
    if name == "ringwall-auth":
        return launch_ringwall_auth(bench, port)
    if name in ("ringwall-post", "ringwall-validated"):
        config = write_post_config(bench.prefix, validated=name == "ringwall-validated")
        launch = launch_ringwall(bench, port, config)
        if launch.skip_reason:
            return launch
        return Launch(
            command=launch.command, env=launch.env, script=write_post_script(bench.prefix)
        )
    if name in ("ringwall-limited", "ringwall-limited-redis"):
        store = "redis" if name.endswith("redis") else "embedded"
        return launch_ringwall(bench, port, write_limited_config(bench.prefix, store))
    if name in ("ringwall-waf", "ringwall-waf-post"):
        launch = launch_ringwall(bench, port, write_waf_config(bench.prefix))
        if launch.skip_reason or name == "ringwall-waf":
            return launch
        return Launch(
            command=launch.command, env=launch.env, script=write_post_script(bench.prefix)
        )
    return launch_nginx(bench, name, port)


def measure_proxy(bench: Bench, name: str) -> SystemResult:
    """Start the proxy `name` on the proxy CPU, run wrk through it and stop it."""
    settings = bench.settings
    pinning = f"proxy on CPU {settings.proxy_cpu}, wrk and backend on CPU {settings.load_cpu}"
    port = free_port()
    launch = launch_proxy(bench, name, port)
    if launch.skip_reason:
        return SystemResult(name, "skipped", pinning, reason=launch.skip_reason)

    with running(name, launch.command, bench.prefix, launch.env) as process:
        probe = probe_request(port, launch.headers, launch.tls)
        try:
            status, body = wait_until_ready(process, probe, settings.start_timeout_s)
        except StartError as error:
            reason = f"{name} {error}\n{tail(bench.prefix / f'{name}.stderr')}".strip()
            return SystemResult(name, "skipped", pinning, reason=reason, setup=launch.setup)
        reason = _check_responses(name, port, launch, status, body)
        if reason:
            return SystemResult(name, "skipped", pinning, reason=reason, setup=launch.setup)
        return _measure_running_proxy(bench, name, process, port, pinning, launch)


def _check_responses(name: str, port: int, launch: Launch, status: int, body: bytes) -> str:
    """Return why the proxy cannot be measured, or "" when every check passes.

    `status` and `body` are the response to the probe with `launch.headers`.
    """
    if status != 200 or body != BACKEND_BODY:
        return f"{name} returned {status} {body[:200]!r}, expected 200 {BACKEND_BODY!r}"
    for check in launch.rejection_checks:
        try:
            rejected_status, rejected_body = send_probe(
                probe_request(port, check.headers, launch.tls)
            )
        except OSError as error:
            return f"{name} request {check.description} failed: {error}"
        if rejected_status != check.status:
            return (
                f"{name} returned {rejected_status} {rejected_body[:200]!r} to a request "
                f"{check.description}, expected {check.status}"
            )
    return ""


def _measure_running_proxy(
    bench: Bench,
    name: str,
    process: subprocess.Popen[bytes],
    port: int,
    pinning: str,
    launch: Launch,
) -> SystemResult:
    settings = bench.settings
    timeout_s = WRK_TIMEOUTS_S.get(name)
    scheme = "http" if launch.tls is None else "https"
    if settings.warmup_s:
        run_wrk(
            settings,
            port,
            settings.warmup_s,
            launch.headers,
            launch.script,
            timeout_s,
            scheme,
            launch.wrk_env,
        )
    if launch.handshake_counts is not None:
        # The warm-up's counts must not stand in for a measured run that wrote none.
        launch.handshake_counts.unlink(missing_ok=True)

    cpu_before = tree_cpu_seconds(process.pid)
    wrk, command = run_wrk(
        settings,
        port,
        settings.duration_s,
        launch.headers,
        launch.script,
        timeout_s,
        scheme,
        launch.wrk_env,
    )
    cpu_after = tree_cpu_seconds(process.pid)

    result = SystemResult(
        name,
        "ok",
        pinning,
        wrk=wrk,
        wrk_command=redact_authorization(command),
        proxy_cpu_s=cpu_after - cpu_before,
        setup=launch.setup,
    )
    if process.poll() is not None:
        result.status = "invalid"
        result.reason = f"{name} exited with status {process.returncode} during the run"
    elif not wrk.is_valid:
        result.status = "invalid"
        result.reason = "wrk reported socket errors or non-2xx/3xx responses"
    else:
        result.reason = _check_after_run(port, launch.headers, launch.tls)
    if launch.handshake_counts is not None:
        _check_handshakes(result, launch.handshake_counts)
    return result


def _check_handshakes(result: SystemResult, counts_path: Path) -> None:
    """Record wrk's handshake counts in `result`, and mark it invalid unless all were full."""
    try:
        counts = parse_handshake_counts(counts_path.read_text())
    except (OSError, ValueError) as error:
        _mark_invalid(result, f"wrk's handshake counts could not be read: {error}")
        return
    handshakes = {"full": counts.full, "resumed": counts.resumed}
    result.setup = {**(result.setup or {}), "handshakes": handshakes}
    if counts.resumed:
        total = counts.full + counts.resumed
        _mark_invalid(result, f"wrk resumed {counts.resumed} of {total} TLS sessions")


def _mark_invalid(result: SystemResult, reason: str) -> None:
    """Mark `result` invalid with `reason`, unless it is already skipped or invalid."""
    if result.status == "ok":
        result.status = "invalid"
        result.reason = reason


def _check_after_run(
    port: int, headers: Mapping[str, str], tls: ssl.SSLContext | None = None
) -> str:
    """Return a note when the proxy no longer returns 200 after the run, else ""."""
    try:
        status, _ = send_probe(probe_request(port, headers, tls))
    except OSError as error:
        return f"probe after the run failed: {error}"
    return "" if status == 200 else f"probe after the run returned {status}"


def measure(bench: Bench, name: str) -> SystemResult:
    print(f"bench: measuring {name} ({bench.settings.duration_s} s)...", flush=True)
    result = measure_direct(bench) if name == "direct" else measure_proxy(bench, name)
    if result.reason:
        print(f"bench: {name}: {result.status}: {result.reason}", flush=True)
    return result


@dataclass(frozen=True)
class Outcome:
    """Everything one run measured."""

    results: list[SystemResult]
    ratios: dict[str, float | None]
    auth_ratio: float | None
    cold: ColdTimings | None
    layers: dict[str, float | None] = field(default_factory=dict)


def print_summary(outcome: Outcome) -> None:
    print()
    print(format_table(outcome.results))
    print()
    for label, ratio in outcome.ratios.items():
        baseline = label.split("/")[0]
        value = "not measured" if ratio is None else f"{ratio:.2f}"
        print(f"efficiency vs {baseline} ({baseline} CPU/request / ringwall CPU/request): {value}")
    print(f"target: {verdict(outcome.ratios)}")
    print(format_auth_chain_lines(outcome.auth_ratio))
    if outcome.layers:
        print(format_layer_lines(outcome.layers))
    if outcome.cold is not None:
        print()
        print(format_cold_report(outcome.cold))


def build_document(
    settings: Settings, argv: list[str], outcome: Outcome, busy_before: dict[int, float]
) -> dict[str, Any]:
    return {
        "command": shlex.join(argv),
        "cpu_busy_before_run": {str(cpu): busy for cpu, busy in busy_before.items()},
        "settings": {
            "duration_s": settings.duration_s,
            "warmup_s": settings.warmup_s,
            "connections": settings.connections,
            "threads": settings.threads,
            "proxy_cpu": settings.proxy_cpu,
            "load_cpu": settings.load_cpu,
            "request_headers": REQUEST_HEADERS,
        },
        "machine": machine_facts(),
        "systems": [result_to_json(result) for result in outcome.results],
        "efficiency": outcome.ratios,
        "verdict": verdict(outcome.ratios),
        "auth_chain_ratio": outcome.auth_ratio,
        "auth_chain_verdict": auth_chain_verdict(outcome.auth_ratio),
        "layer_ratios": outcome.layers,
        "jwt_cold": None if outcome.cold is None else outcome.cold.to_json(),
    }


def run_benchmark(settings: Settings, argv: list[str]) -> int:
    check_prerequisites(settings)
    busy_before = check_cpus_idle(settings)
    cold = measure_jwt_cold(settings) if settings.jwt_cold else None
    prefix = Path(tempfile.mkdtemp(prefix="ringwall-bench-"))
    # nginx workers run as an unprivileged user when the harness runs as root.
    prefix.chmod(0o755)
    try:
        with backend(settings, prefix) as backend_port:
            bench = Bench(settings, prefix, backend_port)
            results = [measure(bench, name) for name in settings.systems]
    finally:
        if settings.keep_temp:
            print(f"bench: configs and logs kept in {prefix}")
        else:
            shutil.rmtree(prefix, ignore_errors=True)

    outcome = Outcome(
        results, efficiencies(results), auth_chain_ratio(results), cold, layer_ratios(results)
    )
    print_summary(outcome)
    path = write_results(build_document(settings, argv, outcome, busy_before))
    print(f"bench: results written to {path}")
    return 0


def measure_jwt_cold(settings: Settings) -> ColdTimings:
    """Time cold JWT verification before starting any server, so a broken verifier fails fast."""
    print(f"bench: timing cold JWT verification on CPU {settings.proxy_cpu}...", flush=True)
    try:
        return measure_cold(settings.proxy_cpu)
    except ColdVerifyError as error:
        raise HarnessError(f"cold JWT verification failed: {error}") from error


def _raise_on_sigterm(signal_number: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal_number}")


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    settings = parse_args(arguments)
    # SIGINT and SIGTERM unwind the stack, so every `finally` stops its child
    # processes. SIGINT is set explicitly because a shell starts background jobs
    # with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        return run_benchmark(settings, ["bench/run.py", *arguments])
    except HarnessError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted, child processes stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
