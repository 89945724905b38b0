"""Limits in the embedded store are exact across the worker processes of one gateway."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ringwall.demo.backend import DemoBackend
from tests.support.backend_thread import running_backend
from tests.support.client import Response, request
from tests.support.gateway_process import Gateway

WORKERS = 4
LIMIT = 50
REQUESTS = 80


@pytest.fixture
def backend() -> Iterator[DemoBackend]:
    with running_backend() as server:
        yield server


def test_four_workers_allow_exactly_the_limit(tmp_path: Path, backend: DemoBackend) -> None:
    config = tmp_path / "ringwall.yaml"
    config.write_text(
        f"""
server:
  timeouts: {{drain: 2s}}
logging:
  access: {{destination: "{tmp_path / "access.log"}"}}
upstreams:
  app:
    targets: ["http://127.0.0.1:{backend.port}"]
routes:
  - name: limited
    path: /
    upstream: app
    auth: none
    limits:
      - {{name: per-ip, key: [ip], rate: "{LIMIT}/60s"}}
"""
    )
    gateway = Gateway(config, workers=WORKERS)
    try:
        # A new connection per request, from 16 threads, spreads them over the workers.
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(lambda _: get(gateway.port), range(REQUESTS)))
    finally:
        gateway.stop()
    statuses = [response.status for response in responses]
    assert statuses.count(200) == LIMIT
    assert statuses.count(429) == REQUESTS - LIMIT
    # Each worker's request ids share a prefix of their own.
    workers = {(response.header("X-Request-Id") or "").split("-")[0] for response in responses}
    assert len(workers) > 1


def get(port: int) -> Response:
    return request(port, b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
