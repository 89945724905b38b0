"""Limits in Redis while Redis goes away and comes back: each store failure mode."""

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.client import Response, request
from tests.support.gateway_process import Gateway
from tests.support.raw_upstream import RawUpstream
from tests.support.redis_servers import RedisProcess, running_cluster, running_redis


def config_text(redis_port: int, upstream_port: int) -> str:
    routes = "\n".join(
        f"""  - name: {mode}
    path: /{mode}
    upstream: app
    auth: none
    limits:
      - {{name: per-ip, key: [ip], rate: 6/minute, on_store_failure: {mode}}}"""
        for mode in ("fail_open", "fail_closed", "local_fallback")
    )
    return f"""
server:
  timeouts: {{drain: 1s}}
limits:
  store: {{kind: redis, url: "redis://127.0.0.1:{redis_port}", timeout: 200ms, instances: 3}}
  bans:
    - {{name: not-found, rejections: [404], threshold: 3, window: 60s, ban: 30s, max_ban: 1h}}
upstreams:
  app:
    targets: ["http://127.0.0.1:{upstream_port}"]
routes:
{routes}
"""


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    with running_redis(tmp_path) as server:
        yield server


@pytest.fixture
def gateway(redis_server: RedisProcess, upstream: RawUpstream, tmp_path: Path) -> Iterator[Gateway]:
    config = tmp_path / "ringwall.yaml"
    config.write_text(config_text(redis_server.port, upstream.port))
    process = Gateway(config, workers=2)
    try:
        yield process
    finally:
        process.stop()


def get(gateway: Gateway, path: str) -> Response:
    return request(gateway.port, b"GET %b HTTP/1.1\r\nHost: a\r\n\r\n" % path.encode())


def statuses(gateway: Gateway, path: str, count: int) -> list[int]:
    return [get(gateway, path).status for _ in range(count)]


def test_redis_counts_while_up(gateway: Gateway) -> None:
    assert statuses(gateway, "/fail_closed", 8) == [200] * 6 + [429] * 2


def test_outage_modes_and_recovery(gateway: Gateway, redis_server: RedisProcess) -> None:
    workers = sorted(gateway.worker_pids())
    redis_server.stop(signal.SIGKILL)

    # fail_open: the limit is skipped while Redis is away.
    assert statuses(gateway, "/fail_open", 10) == [200] * 10
    # fail_closed: 503 with Retry-After, as a problem.
    refused = get(gateway, "/fail_closed")
    assert refused.status == 503
    assert refused.header("Retry-After") == "5"
    assert refused.json()["layer"] == "rate_limit"
    # local_fallback: limit / instances (6 / 3) in the embedded store, across both workers.
    assert statuses(gateway, "/local_fallback", 4) == [200, 200, 429, 429]

    assert sorted(gateway.worker_pids()) == workers
    redis_server.start()
    # Each worker retries Redis at most every 0.5 s after a failure.
    time.sleep(1.5)
    # Counting in Redis resumes, from an empty Redis.
    assert statuses(gateway, "/fail_closed", 7) == [200] * 6 + [429]
    assert sorted(gateway.worker_pids()) == workers
    assert gateway.log().count("the limit store is unreachable") <= 2  # once per worker


def test_limits_exact_on_redis_cluster(upstream: RawUpstream, tmp_path: Path) -> None:
    with running_cluster(tmp_path) as nodes:
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in nodes)
        config = tmp_path / "ringwall.yaml"
        text = config_text(nodes[0].port, upstream.port).replace(
            f"redis://127.0.0.1:{nodes[0].port}", f"redis+cluster://{seeds}"
        )
        config.write_text(text)
        first = Gateway(config, workers=2, name="first")
        try:
            second = Gateway(config, workers=2, name="second")
            try:
                results = [
                    get(first if n % 2 else second, "/fail_closed").status for n in range(10)
                ]
            finally:
                second.stop()
        finally:
            first.stop()
    assert results.count(200) == 6
    assert results.count(429) == 4


def test_bans_counted_locally_during_outage(gateway: Gateway, redis_server: RedisProcess) -> None:
    redis_server.stop(signal.SIGKILL)
    assert statuses(gateway, "/fail_open", 2) == [200, 200]
    # Four 404s pass the threshold of three; the shared memory of the two workers counts them.
    assert statuses(gateway, "/nowhere", 4) == [404] * 4
    deadline = time.monotonic() + 2
    while get(gateway, "/fail_open").status != 403 and time.monotonic() < deadline:
        time.sleep(0.05)
    refused = get(gateway, "/fail_open")
    assert refused.status == 403
    assert refused.json()["layer"] == "ban"
