"""Connection limits per client IP and in total, counted from accept."""

import socket
import time
from pathlib import Path

from tests.support.client import request
from tests.support.gateway_thread import GatewayThread, running_gateway
from tests.support.raw_upstream import RawUpstream


def config_text(upstream_port: int, connections: str) -> str:
    return f"""
server:
  timeouts: {{drain: 1s}}
limits:
  connections: {{{connections}}}
upstreams:
  app:
    targets: ["http://127.0.0.1:{upstream_port}"]
routes:
  - {{name: all, path: /, upstream: app, auth: none}}
"""


def idle_connection(gateway: GatewayThread) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
    return sock


def read_refusal(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_per_ip_limit_refuses_extra_connection(upstream: RawUpstream, tmp_path: Path) -> None:
    with running_gateway(config_text(upstream.port, "per_ip: 2"), tmp_path) as gateway:
        first, second = idle_connection(gateway), idle_connection(gateway)
        time.sleep(0.1)
        third = idle_connection(gateway)
        refusal = read_refusal(third)
        assert refusal.startswith(b"HTTP/1.1 429 ")
        assert b"application/problem+json" in refusal
        assert b"connection_limit" in refusal
        third.close()
        first.close()
        time.sleep(0.1)
        assert request(gateway.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").status == 200
        second.close()
        assert upstream.requests and len(upstream.requests) == 1


def test_total_limit_refuses_with_503(upstream: RawUpstream, tmp_path: Path) -> None:
    with running_gateway(config_text(upstream.port, "total: 1"), tmp_path) as gateway:
        first = idle_connection(gateway)
        time.sleep(0.1)
        second = idle_connection(gateway)
        refusal = read_refusal(second)
        assert refusal.startswith(b"HTTP/1.1 503 ")
        assert b"Retry-After: 1" in refusal
        second.close()
        first.close()
        time.sleep(0.1)
        assert request(gateway.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").status == 200


def test_slow_client_counted_before_its_head(upstream: RawUpstream, tmp_path: Path) -> None:
    with running_gateway(config_text(upstream.port, "per_ip: 1"), tmp_path) as gateway:
        slow = idle_connection(gateway)
        slow.sendall(b"GET / HTTP/1.1\r\n")  # an unfinished head
        time.sleep(0.1)
        assert request(gateway.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").status == 429
        slow.close()
