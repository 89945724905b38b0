"""Measure the Python cost of one proxied request, without sockets or a kernel.

Feeds a request into a client connection and a canned response into a
pooled upstream connection, both on in-memory transports, so the number
is the gateway's own work per request: parsing, layers, header rewriting,
response relay and access logging. Use it to compare changes to the hot
path; `make bench` measures the whole system against nginx.

    .venv/bin/python bench/micro.py [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import uvloop

from ringwall.config import parse_config
from ringwall.server.connection import ClientConnection
from ringwall.server.upstream import UpstreamConnection
from ringwall.server.worker import Worker
from ringwall.server.write_batch import write_batch

CONFIG = """
server:
  limits: {max_requests_per_connection: 100000000}
logging:
  access: {destination: /dev/null}
upstreams:
  app:
    targets: ["http://127.0.0.1:9"]
routes:
  - name: all
    path: /
    upstream: app
    auth: none
"""

REQUEST = (
    b"GET /api/products?page=2 HTTP/1.1\r\nHost: localhost:8080\r\n"
    b"User-Agent: wrk\r\nAccept: application/json\r\n\r\n"
)
# Requests handled per loop iteration, as with wrk's 50 connections in `make bench`.
POLL_EVENTS = 16
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 04 Dec 2026 20:00:00 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: 15\r\nConnection: keep-alive\r\n\r\n"
    b'{"status":"ok"}'
)


class MemoryTransport:
    """Enough of asyncio.Transport for the connection classes, writing to a list."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def measure(requests: int) -> float:
    """Return the mean microseconds of Python work per request."""
    loop = uvloop.new_event_loop()
    worker = Worker(parse_config(CONFIG), loop)
    pool = worker.runtime.upstreams["app"].pools[0]
    upstream = UpstreamConnection(pool)
    upstream_transport = MemoryTransport()
    upstream.connection_made(upstream_transport)  # type: ignore[arg-type]
    pool.idle.append(upstream)
    client = ClientConnection(worker)
    client_transport = MemoryTransport()
    client.connection_made(client_transport)  # type: ignore[arg-type]

    batch = write_batch(loop)
    started = time.perf_counter()
    for count in range(requests):
        if count % POLL_EVENTS == 0:
            # The loop sends held writes after a poll's events; it does not run here.
            batch.flush()
        client.data_received(REQUEST)
        upstream.data_received(RESPONSE)
        if len(client_transport.written) > 1000:
            client_transport.written.clear()
            upstream_transport.written.clear()
            worker.access_log.flush()
    batch.flush()
    elapsed = time.perf_counter() - started
    if client.closing or not client_transport.written[-1].endswith(b'{"status":"ok"}'):
        raise RuntimeError("the gateway stopped responding during the measurement")
    worker.stop()
    loop.close()
    return elapsed / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200_000, help="requests per run")
    arguments = parser.parse_args()
    best = min(measure(arguments.requests) for _ in range(3))
    print(f"python work per proxied request: {best:.2f} µs (best of 3 runs)")


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
