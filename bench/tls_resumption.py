"""Measure how often Ringwall's workers resume a TLS session that another worker started.

Ringwall derives its session ticket keys from one secret that the supervisor
makes before forking, so a ticket issued by one worker should resume on any
other. This script starts Ringwall with two workers and an HTTPS listener,
then opens connections one after another with Python's ssl client. Each
connection offers the session of the connection before it and sends one
`GET /` with `Connection: close`. The worker that accepted each connection
is found from /proc (the socket's inode in /proc/net/tcp, then the worker's
file descriptors), so the report splits the connections by whether the same
worker or another one issued the offered ticket.

    .venv/bin/python bench/tls_resumption.py [--connections 200]
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml
from child_processes import running, wait_until_ready
from proc_cpu import find_descendants
from run import LOOPBACK, REQUEST_HEADERS, RINGWALL_BIN, Settings, backend, free_port, probe_request
from tls_setup import TlsFiles, client_context, make_certificates, ringwall_tls_config

PROC = Path("/proc")
WORKERS = 2
# TCP state 01 in /proc/net/tcp: ESTABLISHED.
TCP_ESTABLISHED = "01"


@dataclass(frozen=True)
class Attempt:
    """One connection: the worker that served it, the worker whose ticket it offered, the outcome.

    `ticket_worker` is None for a connection that offered no session, and a
    worker is None when /proc did not show which process held the socket.
    """

    protocol: str
    worker: int | None
    ticket_worker: int | None
    resumed: bool


@dataclass(frozen=True)
class ResumptionSummary:
    """Counts of connections that offered a session, split by the ticket's worker."""

    offered: int
    resumed: int
    cross_worker_offered: int
    cross_worker_resumed: int
    unknown_worker: int

    @property
    def rate(self) -> float | None:
        return self.resumed / self.offered if self.offered else None

    @property
    def cross_worker_rate(self) -> float | None:
        if not self.cross_worker_offered:
            return None
        return self.cross_worker_resumed / self.cross_worker_offered


def summarize(attempts: Iterable[Attempt]) -> ResumptionSummary:
    """Count the attempts that offered a session, and those with another worker's ticket."""
    offered = resumed = cross_offered = cross_resumed = unknown = 0
    for attempt in attempts:
        if attempt.ticket_worker is None:
            continue
        offered += 1
        resumed += attempt.resumed
        if attempt.worker is None:
            unknown += 1
        elif attempt.worker != attempt.ticket_worker:
            cross_offered += 1
            cross_resumed += attempt.resumed
    return ResumptionSummary(offered, resumed, cross_offered, cross_resumed, unknown)


def ipv4_socket_address(host: str, port: int) -> str:
    """Return `host`:`port` as /proc/net/tcp writes it: hex in host byte order (little-endian)."""
    octets = [int(part) for part in host.split(".")]
    return f"{''.join(f'{octet:02X}' for octet in reversed(octets))}:{port:04X}"


def find_socket_inode(proc_net_tcp: str, local: str, remote: str) -> int | None:
    """Return the inode of the established socket from `local` to `remote`.

    Both addresses are in the form of /proc/net/tcp (see ipv4_socket_address).
    """
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        if fields[1] == local and fields[2] == remote and fields[3] == TCP_ESTABLISHED:
            return int(fields[9])
    return None


def worker_of_socket(inode: int, workers: Iterable[int], proc: Path = PROC) -> int | None:
    """Return the pid among `workers` that has a file descriptor for socket `inode`."""
    target = f"socket:[{inode}]"
    for pid in workers:
        try:
            descriptors = list((proc / str(pid) / "fd").iterdir())
        except FileNotFoundError:
            continue
        for descriptor in descriptors:
            try:
                if os.readlink(descriptor) == target:
                    return pid
            except FileNotFoundError:
                continue
    return None


def serving_worker(connection: ssl.SSLSocket, port: int, workers: list[int]) -> int | None:
    """Return the worker pid that accepted `connection`, found while it is still open."""
    client_port = connection.getsockname()[1]
    inode = find_socket_inode(
        (PROC / "net" / "tcp").read_text(),
        ipv4_socket_address(LOOPBACK, port),
        ipv4_socket_address(LOOPBACK, client_port),
    )
    return None if inode is None else worker_of_socket(inode, workers)


def request_bytes() -> bytes:
    headers = {**REQUEST_HEADERS, "Connection": "close"}
    lines = ["GET / HTTP/1.1", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def response_status(response: bytes) -> int:
    """Return the status code of an HTTP/1.1 response, or 0 when there is no status line."""
    parts = response.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return 0
    return int(parts[1])


def connect_once(
    context: ssl.SSLContext, port: int, session: ssl.SSLSession | None, workers: list[int]
) -> tuple[ssl.SSLSession | None, int | None, bool]:
    """Send one request on a new connection and return (session, worker pid, resumed).

    Raises RuntimeError when the response is not 200.
    """
    with (
        socket.create_connection((LOOPBACK, port), timeout=5.0) as raw,
        context.wrap_socket(raw, server_hostname=LOOPBACK, session=session) as connection,
    ):
        worker = serving_worker(connection, port, workers)
        connection.sendall(request_bytes())
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
        status = response_status(response)
        if status == 0:
            raise RuntimeError(f"Ringwall sent no HTTP status line: {response[:100]!r}")
        if status != 200:
            raise RuntimeError(f"Ringwall returned {status}, expected 200")
        # TLS 1.3 sends tickets after the handshake, so the session is read after the response.
        return connection.session, worker, bool(connection.session_reused)


def measure(
    files: TlsFiles, port: int, workers: list[int], version: ssl.TLSVersion, connections: int
) -> list[Attempt]:
    """Open `connections` connections in turn, each offering the session of the one before."""
    context = client_context(files)
    context.minimum_version = version
    context.maximum_version = version
    attempts = []
    session, ticket_worker = None, None
    for _ in range(connections):
        new_session, worker, resumed = connect_once(context, port, session, workers)
        attempts.append(Attempt(version.name, worker, ticket_worker, resumed))
        session, ticket_worker = new_session, worker
    return attempts


def format_summary(version: str, summary: ResumptionSummary) -> str:
    def percent(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    return (
        f"{version}: {summary.resumed} of {summary.offered} offered sessions resumed "
        f"({percent(summary.rate)}); ticket from the other worker: "
        f"{summary.cross_worker_resumed} of {summary.cross_worker_offered} resumed "
        f"({percent(summary.cross_worker_rate)}); worker not found for {summary.unknown_worker}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--connections",
        type=int,
        default=200,
        help="connections per TLS version, one after another (default: 200)",
    )
    parser.add_argument(
        "--without-tickets",
        action="store_true",
        help="set server.tls.session_tickets to false, so each worker resumes only "
        "the sessions in its own cache: a check that the script sees failures",
    )
    arguments = parser.parse_args()
    settings = Settings((), 1, 0, 1, 1, 0, 1, 30.0, False, False)
    with tempfile.TemporaryDirectory(prefix="ringwall-tls-resumption-") as temp:
        prefix = Path(temp)
        prefix.chmod(0o755)
        files = make_certificates(RINGWALL_BIN, prefix)
        config = prefix / "ringwall-tls.yaml"
        document = ringwall_tls_config(files, session_tickets=not arguments.without_tickets)
        config.write_text(yaml.safe_dump(document, sort_keys=False))
        with backend(settings, prefix) as backend_port:
            port = free_port()
            command = [
                str(RINGWALL_BIN),
                "run",
                "-c",
                str(config),
                "--listen",
                f"{LOOPBACK}:{free_port()}",
                "--listen-tls",
                f"{LOOPBACK}:{port}",
                "--workers",
                str(WORKERS),
            ]
            env = {"UPSTREAM_URL": f"http://{LOOPBACK}:{backend_port}"}
            with running("ringwall", command, prefix, env) as process:
                probe = probe_request(port, tls=client_context(files))
                wait_until_ready(process, probe, 30.0)
                workers = find_descendants(process.pid)
                print(f"Ringwall workers: {workers}")
                for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
                    attempts = measure(files, port, workers, version, arguments.connections)
                    served = {worker: 0 for worker in workers}
                    for attempt in attempts:
                        if attempt.worker is not None:
                            served[attempt.worker] += 1
                    print(f"{version.name}: connections per worker: {served}")
                    print(format_summary(version.name, summarize(attempts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
