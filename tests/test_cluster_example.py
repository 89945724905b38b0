"""examples/cluster/ringwall.yaml: two gateway instances sharing limits and bans in Redis."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringwall.cli import main
from tests.support.client import request
from tests.support.gateway_process import Gateway, free_port
from tests.support.raw_upstream import RawUpstream
from tests.support.redis_servers import shared_redis_prefix
from tests.support.waiting import wait_for

CONFIG = Path(__file__).parent.parent / "examples" / "cluster" / "ringwall.yaml"
REDIS_URL = "redis://127.0.0.1:6379"


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test alone in the shared Redis, deleted afterwards."""
    with shared_redis_prefix() as value:
        yield value


def environment(upstream: RawUpstream, prefix: str, admin_port: int) -> dict[str, str]:
    return {
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": prefix,
        "UPSTREAM_URL": f"http://127.0.0.1:{upstream.port}",
        "ADMIN_TOKEN": "a" * 64,
        "ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
        "JWT_SECRET": "j" * 32,
    }


@pytest.fixture
def instances(
    upstream: RawUpstream, prefix: str, tmp_path: Path
) -> Iterator[tuple[Gateway, Gateway, dict[str, str]]]:
    first_env = environment(upstream, prefix, free_port())
    second_env = environment(upstream, prefix, free_port())
    first = Gateway(CONFIG, workers=2, env=first_env, name="first", log_dir=tmp_path)
    try:
        second = Gateway(CONFIG, workers=2, env=second_env, name="second", log_dir=tmp_path)
        try:
            yield first, second, first_env
        finally:
            second.stop()
    finally:
        first.stop()


def status(gateway: Gateway, path: bytes) -> int:
    return request(gateway.port, b"GET %b HTTP/1.1\r\nHost: a\r\n\r\n" % path).status


def test_two_instances_allow_exactly_50(
    instances: tuple[Gateway, Gateway, dict[str, str]],
) -> None:
    first, second, _ = instances
    statuses = [status(first if n % 2 else second, b"/limited") for n in range(80)]
    assert statuses.count(200) == 50
    assert statuses.count(429) == 30


def test_ban_reaches_both_instances_and_is_lifted(
    instances: tuple[Gateway, Gateway, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second, first_env = instances
    for _ in range(11):
        assert status(first, b"/private") == 401
    # Each worker of each instance reads the ban list in Redis twice a second.
    assert wait_for(lambda: status(first, b"/limited") == 403, seconds=1.0)
    assert wait_for(lambda: status(second, b"/limited") == 403, seconds=1.0)

    for name, value in first_env.items():
        monkeypatch.setenv(name, value)
    assert main(["bans", "remove", "127.0.0.1", "-c", str(CONFIG)]) == 0
    assert wait_for(lambda: status(first, b"/limited") == 200, seconds=1.0)
    assert wait_for(lambda: status(second, b"/limited") == 200, seconds=1.0)
    time.sleep(0.6)  # every worker of both instances has polled the ban list again

    # The rule's count in Redis went with the ban, so one more 401 does not ban again.
    assert status(second, b"/private") == 401
    time.sleep(0.6)  # longer than a ban list poll
    assert status(first, b"/limited") == 200
    assert status(second, b"/limited") == 200
