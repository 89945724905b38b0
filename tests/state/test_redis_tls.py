"""The Redis client over TLS against real redis-server processes on 127.0.0.1.

Debian's redis-server 7.0 is built with TLS, so each test starts servers
with `--tls-port` and certificates made for the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from ringwall.config.tls import ClientTlsConfig
from ringwall.state.redis_client import RedisClient, RedisUnavailable
from tests.support.redis_tls import (
    TlsFiles,
    running_tls_cluster,
    running_tls_redis,
    running_tls_sentinel,
)
from tests.support.tls_upstream import TestPki, pin_of, running_tls_upstream, server_context
from tests.support.waiting import wait_for


def run(scenario: Callable[[RedisClient], Awaitable[Any]], url: str, **options: Any) -> Any:
    """Run `scenario` with a new client in a new event loop and close the client."""

    async def main() -> Any:
        client = RedisClient.from_url(url, timeout=2.0, **options)
        try:
            return await scenario(client)
        finally:
            await client.close()

    return asyncio.run(main())


async def ping(client: RedisClient) -> None:
    assert await client.execute("PING") == b"PONG"


def unavailable(match: str) -> Callable[[RedisClient], Awaitable[None]]:
    async def scenario(client: RedisClient) -> None:
        with pytest.raises(RedisUnavailable, match=match):
            await client.execute("PING")

    return scenario


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path)


def test_ca_verifies_server(pki: TestPki, tmp_path: Path) -> None:
    other = TestPki(tmp_path, "other-ca")
    with running_tls_redis(tmp_path, TlsFiles(pki.server("redis"), pki.ca_file)) as server:
        url = f"rediss://127.0.0.1:{server.tls_port}"
        run(ping, url, tls=ClientTlsConfig(ca=pki.ca_file))
        # The older ca_file setting keeps working.
        run(ping, url, ca_file=str(pki.ca_file))
        run(unavailable("certificate verify failed"), url, tls=ClientTlsConfig(ca=other.ca_file))


def test_server_name_checked(pki: TestPki, tmp_path: Path) -> None:
    certificate = pki.server("redis", x509.DNSName("redis.ringwall.localhost"))
    with running_tls_redis(tmp_path, TlsFiles(certificate, pki.ca_file)) as server:
        url = f"rediss://127.0.0.1:{server.tls_port}"
        run(unavailable("IP address mismatch"), url, tls=ClientTlsConfig(ca=pki.ca_file))
        named = ClientTlsConfig(ca=pki.ca_file, server_name="redis.ringwall.localhost")
        run(ping, url, tls=named)


def test_pins_checked(pki: TestPki, tmp_path: Path) -> None:
    certificate = pki.server("redis")
    other_pin = pin_of(pki.server("unused"))
    with running_tls_redis(tmp_path, TlsFiles(certificate, pki.ca_file)) as server:
        url = f"rediss://127.0.0.1:{server.tls_port}"
        pinned = ClientTlsConfig(ca=pki.ca_file, pins=(other_pin, pin_of(certificate)))
        run(ping, url, tls=pinned)
        pinned_elsewhere = ClientTlsConfig(ca=pki.ca_file, pins=(other_pin,))
        run(unavailable("certificate pin mismatch"), url, tls=pinned_elsewhere)


def test_password_not_sent_on_pin_mismatch(pki: TestPki) -> None:
    # The fake Redis is a TLS server that records the bytes it receives.
    with running_tls_upstream(server_context(pki.server("fake-redis"))) as fake:
        url = f"rediss://:secret-password@127.0.0.1:{fake.port}"
        pinned_elsewhere = ClientTlsConfig(ca=pki.ca_file, pins=(pin_of(pki.server("unused")),))
        run(unavailable("certificate pin mismatch"), url, tls=pinned_elsewhere)
        # Once the server's connection task ends, it has read up to the end of the stream.
        assert wait_for(lambda: fake.connections and not fake._connection_tasks)
        assert fake.connections == [b""]


def test_client_certificate_presented(pki: TestPki, tmp_path: Path) -> None:
    clients = TestPki(tmp_path, "client-ca")
    gateway = clients.client("gateway")
    files = TlsFiles(pki.server("redis"), clients.ca_file, require_client_certificate=True)
    with running_tls_redis(tmp_path, files) as server:
        url = f"rediss://127.0.0.1:{server.tls_port}"
        run(ping, url, tls=ClientTlsConfig(ca=pki.ca_file, client_certificate=gateway))
        # Redis ends the handshake of a client without a certificate, which
        # with TLS 1.3 the client sees only when it reads the reply.
        run(unavailable("certificate required"), url, tls=ClientTlsConfig(ca=pki.ca_file))


def test_sentinel_over_tls(pki: TestPki, tmp_path: Path) -> None:
    certificate = pki.server("redis")
    files = TlsFiles(certificate, pki.ca_file)
    with (
        running_tls_redis(tmp_path, files) as master,
        running_tls_sentinel(tmp_path, files, master.tls_port) as sentinel,
    ):
        url = f"rediss+sentinel://127.0.0.1:{sentinel.tls_port}/mymaster"

        async def scenario(client: RedisClient) -> None:
            port = await client.execute("CONFIG", "GET", "tls-port")
            assert port == [b"tls-port", str(master.tls_port).encode()]

        pinned = ClientTlsConfig(ca=pki.ca_file, pins=(pin_of(certificate),))
        run(scenario, url, tls=pinned)
        run(unavailable("certificate verify failed"), url)


def test_cluster_over_tls(pki: TestPki, tmp_path: Path) -> None:
    certificate = pki.server("redis")
    files = TlsFiles(certificate, pki.ca_file, client=pki.client("node"))
    with running_tls_cluster(tmp_path, files) as nodes:
        url = f"rediss+cluster://127.0.0.1:{nodes[0].tls_port}"

        async def scenario(client: RedisClient) -> None:
            # Keys in every slot range, so each node is reached over TLS.
            for index in range(30):
                assert await client.execute("SET", f"key-{index}", index) == b"OK"
            for index in range(30):
                assert await client.execute("GET", f"key-{index}") == str(index).encode()

        pinned = ClientTlsConfig(ca=pki.ca_file, pins=(pin_of(certificate),))
        run(scenario, url, tls=pinned)
        pinned_elsewhere = ClientTlsConfig(ca=pki.ca_file, pins=(pin_of(pki.server("unused")),))
        run(unavailable("certificate pin mismatch"), url, tls=pinned_elsewhere)


def test_tls_settings_need_rediss_url(pki: TestPki) -> None:
    with pytest.raises(ValueError, match="need a rediss:// URL"):
        RedisClient.from_url("redis://127.0.0.1:6379", tls=ClientTlsConfig(ca=pki.ca_file))
    with pytest.raises(ValueError, match=r"ca_file is the same as tls\.ca"):
        RedisClient.from_url(
            "rediss://127.0.0.1:6379",
            ca_file=str(pki.ca_file),
            tls=ClientTlsConfig(ca=pki.ca_file),
        )
