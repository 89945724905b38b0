"""Start, probe and stop the servers and load generator that the benchmark runs."""

from __future__ import annotations

import http.client
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

STOP_TIMEOUT_S = 10.0
PROBE_INTERVAL_S = 0.1


class StartError(RuntimeError):
    """Raised when a server exits or sends no response before its start timeout."""


@dataclass(frozen=True)
class ProbeRequest:
    """The request that readiness probes send, with the headers that wrk sends.

    With `tls` set, the probe uses HTTPS and verifies the server with that context.
    """

    host: str
    port: int
    path: str
    headers: Mapping[str, str]
    tls: ssl.SSLContext | None = None


def pinned(cpu: int, command: list[str]) -> list[str]:
    """Return `command` prefixed with taskset, so it and its children run on `cpu` only."""
    return ["taskset", "-c", str(cpu), *command]


@contextmanager
def running(
    name: str,
    command: list[str],
    log_dir: Path,
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` in its own process group for the duration of the block.

    Stdout goes to LOG_DIR/NAME.stdout and stderr to LOG_DIR/NAME.stderr. On
    exit, including on KeyboardInterrupt and other exceptions, the whole
    process group gets SIGTERM and, after STOP_TIMEOUT_S, SIGKILL.
    """
    with (
        (log_dir / f"{name}.stdout").open("wb") as stdout,
        (log_dir / f"{name}.stderr").open("wb") as stderr,
    ):
        process = _spawn(command, stdout, stderr, env)
        try:
            yield process
        finally:
            stop_process_group(process)


def _spawn(
    command: list[str], stdout: IO[bytes], stderr: IO[bytes], env: Mapping[str, str] | None
) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **env} if env is not None else None
    # A new session keeps Ctrl-C in the terminal away from the children, so
    # the harness decides when and how they stop.
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=full_env,
        start_new_session=True,
    )


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Send SIGTERM to the process group of `process`, then SIGKILL if it does not exit."""
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
    # Workers can outlive a leader that exited on its own, so signal the group
    # even when the leader is gone.
    _signal_group(process.pid, signal.SIGKILL)


def _signal_group(process_group: int, signal_number: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process_group, signal_number)


def wait_until_ready(
    process: subprocess.Popen[bytes], probe: ProbeRequest, timeout_s: float
) -> tuple[int, bytes]:
    """Send the probe request until it gets a response, and return its status and body.

    Raises StartError when the process exits or no response arrives within `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    last_error: OSError | http.client.HTTPException | None = None
    while time.monotonic() < deadline:
        exit_code = process.poll()
        if exit_code is not None:
            raise StartError(f"exited with status {exit_code} before it sent a response")
        try:
            return send_probe(probe)
        except (OSError, http.client.HTTPException) as error:
            last_error = error
        time.sleep(PROBE_INTERVAL_S)
    raise StartError(
        f"no response on {probe.host}:{probe.port} within {timeout_s:g} s "
        f"(last error: {last_error})"
    )


def send_probe(probe: ProbeRequest) -> tuple[int, bytes]:
    """Send one GET request and return the status code and body."""
    connection = (
        http.client.HTTPConnection(probe.host, probe.port, timeout=2.0)
        if probe.tls is None
        else http.client.HTTPSConnection(probe.host, probe.port, timeout=2.0, context=probe.tls)
    )
    try:
        connection.request("GET", probe.path, headers=dict(probe.headers))
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def tail(path: Path, max_lines: int = 15) -> str:
    """Return the last lines of a log file, or "" when it is missing."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join(lines[-max_lines:])
