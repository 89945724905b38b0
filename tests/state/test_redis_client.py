"""The pipelining Redis client against real redis-server processes on 127.0.0.1.

Most tests use the shared Redis at 127.0.0.1:6379 (started by `make test`)
with keys under a random `ringwall-test:` prefix that is deleted afterwards.
Tests that stop, restart, flush or reconfigure a server start their own.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from ringwall.state.redis_client import (
    RETRY_INTERVAL,
    RedisClient,
    RedisReplyError,
    RedisUnavailable,
    Script,
    _Connection,
    _parse_url,
    encode_arguments,
    key_slot,
)
from tests.support.redis_servers import (
    free_port,
    running_cluster,
    running_redis,
    running_sentinel,
    shared_redis_prefix,
)
from tests.support.tls import make_tls_files

SHARED_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def prefix() -> Iterator[bytes]:
    """A random key prefix on the shared Redis; its keys are deleted afterwards."""
    with shared_redis_prefix() as name:
        yield name.encode()


def run(
    scenario: Callable[[RedisClient], Awaitable[Any]], url: str = SHARED_URL, **options: Any
) -> Any:
    """Run `scenario` with a new client in a new event loop and close the client."""

    async def main() -> Any:
        client = RedisClient.from_url(url, **options)
        try:
            return await scenario(client)
        finally:
            await client.close()

    return asyncio.run(main())


# --- Commands and replies -----------------------------------------------------------------


def test_reply_types(prefix: bytes) -> None:
    async def scenario(client: RedisClient) -> None:
        assert await client.execute("PING") == b"PONG"
        assert await client.execute("SET", prefix + b"s", "value") == b"OK"
        assert await client.execute("GET", prefix + b"s") == b"value"
        assert await client.execute("GET", prefix + b"missing") is None
        assert await client.execute("INCRBY", prefix + b"n", 41) == 41
        assert await client.execute("INCRBYFLOAT", prefix + b"f", 0.5) == b"0.5"
        assert await client.execute("RPUSH", prefix + b"l", b"a", b"", 3) == 3
        assert await client.execute("LRANGE", prefix + b"l", 0, -1) == [b"a", b"", b"3"]
        assert await client.execute("LRANGE", prefix + b"missing", 0, -1) == []
        assert await client.execute("EVAL", "return {1, {2, 'x'}, false}", 0) == [
            1,
            [2, b"x"],
            None,
        ]

    run(scenario)


def test_error_reply_raises_reply_error(prefix: bytes) -> None:
    async def scenario(client: RedisClient) -> None:
        await client.execute("SET", prefix + b"s", "text")
        with pytest.raises(RedisReplyError, match="WRONGTYPE"):
            await client.execute("LPUSH", prefix + b"s", "x")
        with pytest.raises(RedisReplyError, match="unknown command"):
            await client.execute("NO-SUCH-COMMAND")
        # The connection stays usable after error replies.
        assert await client.execute("GET", prefix + b"s") == b"text"

    run(scenario)


def test_large_value_round_trip(prefix: bytes) -> None:
    value = bytes(range(256)) * 8192  # 2 MiB, read in many chunks

    async def scenario(client: RedisClient) -> None:
        await client.execute("SET", prefix + b"big", value)
        replies = await asyncio.gather(
            client.execute("GET", prefix + b"big"),
            client.execute("STRLEN", prefix + b"big"),
        )
        assert replies[0] == value
        assert replies[1] == len(value)

    run(scenario)


def test_concurrent_commands_keep_order(prefix: bytes) -> None:
    async def scenario(client: RedisClient) -> list[object]:
        return await asyncio.gather(*(client.execute("INCR", prefix + b"n") for _ in range(1000)))

    assert run(scenario) == list(range(1, 1001))


class CountingProxy:
    """A TCP relay to the shared Redis that counts the reads from the client side."""

    def __init__(self) -> None:
        self.reads = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop accepting and wait for open relays, which end when their client disconnects."""
        if self._server is not None:
            self._server.close()
        async with asyncio.timeout(5):
            await asyncio.gather(*self._relays)
            if self._server is not None:
                await self._server.wait_closed()

    async def _relay(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", 6379)

        async def copy(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool
        ) -> None:
            while data := await reader.read(1 << 20):
                self.reads += count
                writer.write(data)
            writer.close()
            await writer.wait_closed()

        await asyncio.gather(
            copy(client_reader, server_writer, True),
            copy(server_reader, client_writer, False),
        )


def test_commands_of_one_iteration_share_a_write(prefix: bytes) -> None:
    async def scenario() -> tuple[list[object], int]:
        proxy = CountingProxy()
        await proxy.start()
        client = RedisClient.from_url(f"redis://127.0.0.1:{proxy.port}")
        try:
            await client.execute("PING")
            reads_before = proxy.reads
            replies = await asyncio.gather(
                *(client.execute("INCR", prefix + b"n") for _ in range(1000))
            )
            return replies, proxy.reads - reads_before
        finally:
            await client.close()
            await proxy.stop()

    replies, reads = asyncio.run(scenario())
    assert replies == list(range(1, 1001))
    # One write of about 40 KB; the relay may read it in a few pieces.
    assert reads <= 5


def test_cancelled_command_keeps_reply_order(prefix: bytes) -> None:
    async def scenario(client: RedisClient) -> None:
        blocked = asyncio.ensure_future(client.execute("BLPOP", prefix + b"empty", 0.2))
        await asyncio.sleep(0.05)
        blocked.cancel()
        # ECHO runs after BLPOP on the same connection and must get its own reply.
        assert await client.execute("ECHO", "after") == b"after"

    run(scenario, timeout=2.0)


def test_argument_types_encoded(prefix: bytes) -> None:
    async def scenario(client: RedisClient) -> None:
        await client.execute("SET", prefix + b"i", -17)
        await client.execute("SET", "str-key-ignored-" + prefix.decode(), "ü")
        await client.execute("SET", prefix + b"f", 0.1)
        assert await client.execute("GET", prefix + b"i") == b"-17"
        assert await client.execute("GET", "str-key-ignored-" + prefix.decode()) == "ü".encode()
        assert await client.execute("GET", prefix + b"f") == b"0.1"
        await client.execute("DEL", "str-key-ignored-" + prefix.decode())
        with pytest.raises(TypeError, match="list"):
            await client.execute("SET", prefix + b"x", [1])  # type: ignore[arg-type]

    run(scenario)


# --- Scripts ----------------------------------------------------------------------------------

ECHO_SCRIPT = Script("return {KEYS[1], ARGV[1], ARGV[2]}")


def test_evalsha_loads_unknown_script(prefix: bytes) -> None:
    script = Script(f"return '{uuid.uuid4().hex}'")  # not in any script cache yet

    async def scenario(client: RedisClient) -> None:
        assert await client.evalsha(script, [], []) == script.source.split(b"'")[1]
        assert await client.evalsha(ECHO_SCRIPT, [prefix + b"k"], ["a", 2]) == [
            prefix + b"k",
            b"a",
            b"2",
        ]
        encoded = encode_arguments(["a", 2])
        assert await client.evalsha(ECHO_SCRIPT, [prefix + b"k"], encoded) == [
            prefix + b"k",
            b"a",
            b"2",
        ]

    run(scenario)


def test_evalsha_recovers_after_script_flush(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:

        async def scenario(client: RedisClient) -> None:
            assert await client.evalsha(ECHO_SCRIPT, [b"k"], [b"1", b"2"]) == [b"k", b"1", b"2"]
            await client.execute("SCRIPT", "FLUSH")
            replies = await asyncio.gather(
                *(client.evalsha(ECHO_SCRIPT, [b"k"], [b"%d" % n, b"x"]) for n in range(20))
            )
            assert replies == [[b"k", b"%d" % n, b"x"] for n in range(20)]

        run(scenario, f"redis://127.0.0.1:{server.port}")


def test_script_error_is_reply_error(prefix: bytes) -> None:
    script = Script("return redis.call('NO-SUCH-COMMAND')")

    async def scenario(client: RedisClient) -> None:
        with pytest.raises(RedisReplyError) as raised:
            await client.evalsha(script, [prefix + b"k"], [])
        assert not isinstance(raised.value, RedisUnavailable)

    run(scenario)


# --- Timeouts and outages ---------------------------------------------------------------------


def test_timeout_fails_then_client_reconnects(prefix: bytes) -> None:
    async def scenario(client: RedisClient) -> None:
        started = time.monotonic()
        with pytest.raises(RedisUnavailable, match=re.escape("timed out: no reply within 0.2 s")):
            await client.execute("BLPOP", prefix + b"empty", 2)
        assert 0.15 < time.monotonic() - started < 0.6

        # The node is marked down: the next command fails without waiting.
        started = time.monotonic()
        with pytest.raises(RedisUnavailable, match="unavailable"):
            await client.execute("PING")
        assert time.monotonic() - started < 0.05

        # A new connection after the retry interval; the late BLPOP reply is not mixed in.
        await asyncio.sleep(RETRY_INTERVAL + 0.05)
        assert await client.execute("ECHO", "fresh") == b"fresh"

    run(scenario, timeout=0.2)


def test_pending_commands_fail_together_on_timeout(prefix: bytes) -> None:
    async def scenario(client: RedisClient) -> None:
        replies = await asyncio.gather(
            client.execute("BLPOP", prefix + b"empty", 2),
            client.execute("PING"),
            return_exceptions=True,
        )
        assert all(isinstance(reply, RedisUnavailable) for reply in replies)

    run(scenario, timeout=0.2)


def test_connection_refused_fails_fast() -> None:
    port = free_port()

    async def scenario(client: RedisClient) -> None:
        with pytest.raises(RedisUnavailable, match="cannot connect"):
            await client.execute("PING")
        started = time.monotonic()
        for _ in range(100):
            with pytest.raises(RedisUnavailable, match="next connection attempt"):
                await client.execute("PING")
        assert time.monotonic() - started < 0.1

    run(scenario, f"redis://127.0.0.1:{port}")


def test_server_killed_then_restarted(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:

        async def scenario(client: RedisClient) -> None:
            assert await client.execute("SET", "k", "before") == b"OK"
            server.stop(signal.SIGKILL)

            started = time.monotonic()
            for _ in range(3):
                with pytest.raises(RedisUnavailable):
                    await client.execute("GET", "k")
            assert time.monotonic() - started < 0.1

            server.start()
            deadline = time.monotonic() + 3
            while True:
                try:
                    reply = await client.execute("SET", "k", "after")
                    break
                except RedisUnavailable:
                    assert time.monotonic() < deadline, "the client did not reconnect within 3 s"
                    await asyncio.sleep(0.05)
            assert reply == b"OK"
            assert time.monotonic() - started < RETRY_INTERVAL + 1.5

        run(scenario, f"redis://127.0.0.1:{server.port}")


def test_outage_replies_raise_unavailable(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:
        server.client().execute_command("CONFIG", "SET", "maxmemory", "1")
        server.client().execute_command("CONFIG", "SET", "maxmemory-policy", "noeviction")

        async def scenario(client: RedisClient) -> None:
            with pytest.raises(RedisUnavailable, match="OOM"):
                await client.execute("SET", "k", "v" * 1000)

        run(scenario, f"redis://127.0.0.1:{server.port}")


def test_closed_client_raises_unavailable(prefix: bytes) -> None:
    async def scenario() -> None:
        client = RedisClient.from_url(SHARED_URL)
        assert await client.execute("PING") == b"PONG"
        await client.close()
        with pytest.raises(RedisUnavailable, match="closed"):
            await client.execute("PING")

    asyncio.run(scenario())


# --- Login, database and TLS --------------------------------------------------------------------


def test_password_user_and_database(tmp_path: Path) -> None:
    with running_redis(tmp_path, "--requirepass", "default-secret") as server:
        admin = redis.Redis(host="127.0.0.1", port=server.port, password="default-secret")
        admin.execute_command("ACL", "SETUSER", "gateway", "on", ">p@ss:word", "~*", "&*", "+@all")

        async def check(client: RedisClient) -> None:
            await client.execute("SET", "k", "in-db-3")

        run(check, f"redis://:default-secret@127.0.0.1:{server.port}/3")
        run(check, f"redis://gateway:p%40ss%3Aword@127.0.0.1:{server.port}/3")
        in_db_3 = redis.Redis(host="127.0.0.1", port=server.port, password="default-secret", db=3)
        assert in_db_3.get("k") == b"in-db-3"
        assert admin.get("k") is None

        async def rejected(client: RedisClient) -> None:
            with pytest.raises(RedisUnavailable, match="WRONGPASS"):
                await client.execute("PING")

        run(rejected, f"redis://:wrong@127.0.0.1:{server.port}")


def test_tls_with_ca_file(tmp_path: Path) -> None:
    ca_path, cert_path, key_path = make_tls_files(tmp_path)
    tls_port = free_port()
    arguments = [
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(cert_path),
        "--tls-key-file", str(key_path),
        "--tls-ca-cert-file", str(ca_path),
        "--tls-auth-clients", "no",
    ]  # fmt: skip
    with running_redis(tmp_path, *arguments):

        async def trusted(client: RedisClient) -> None:
            assert await client.execute("PING") == b"PONG"

        run(trusted, f"rediss://127.0.0.1:{tls_port}", ca_file=str(ca_path))

        async def untrusted(client: RedisClient) -> None:
            with pytest.raises(RedisUnavailable, match="certificate verify failed"):
                await client.execute("PING")

        # Without the CA file the system trust store does not know the throwaway CA.
        run(untrusted, f"rediss://127.0.0.1:{tls_port}")


# --- Sentinel ---------------------------------------------------------------------------------


def test_sentinel_finds_master(tmp_path: Path) -> None:
    with running_redis(tmp_path) as master, running_sentinel(tmp_path, master.port) as sentinel:
        url = f"redis+sentinel://127.0.0.1:{free_port()},127.0.0.1:{sentinel.port}/mymaster/2"

        async def scenario(client: RedisClient) -> None:
            assert await client.execute("CONFIG", "GET", "port") == [
                b"port",
                str(master.port).encode(),
            ]
            assert await client.execute("SET", "k", "v") == b"OK"

        run(scenario, url)
        assert redis.Redis(host="127.0.0.1", port=master.port, db=2).get("k") == b"v"


def test_sentinel_asked_again_after_master_fails(tmp_path: Path) -> None:
    with (
        running_redis(tmp_path) as first,
        running_redis(tmp_path) as second,
        running_sentinel(tmp_path, first.port) as sentinel,
    ):
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster"

        async def scenario(client: RedisClient) -> None:
            assert await client.execute("CONFIG", "GET", "port") == [
                b"port",
                str(first.port).encode(),
            ]
            # Point the sentinel at the second server, as a failover would, and stop the first.
            with sentinel.client() as admin:
                admin.execute_command("SENTINEL", "REMOVE", "mymaster")
                admin.execute_command(
                    "SENTINEL", "MONITOR", "mymaster", "127.0.0.1", second.port, 1
                )
            first.stop(signal.SIGKILL)
            with pytest.raises(RedisUnavailable):
                await client.execute("PING")
            deadline = time.monotonic() + 3
            while True:
                try:
                    reply = await client.execute("CONFIG", "GET", "port")
                    break
                except RedisUnavailable:
                    assert time.monotonic() < deadline, "the client did not find the new master"
                    await asyncio.sleep(0.05)
            assert reply == [b"port", str(second.port).encode()]

        run(scenario, url)


def test_sentinel_unknown_service(tmp_path: Path) -> None:
    with running_redis(tmp_path) as master, running_sentinel(tmp_path, master.port) as sentinel:

        async def scenario(client: RedisClient) -> None:
            with pytest.raises(RedisUnavailable, match="does not monitor 'other'"):
                await client.execute("PING")
            with pytest.raises(RedisUnavailable, match="does not monitor 'other'"):
                await client.execute("PING")

        run(scenario, f"redis+sentinel://127.0.0.1:{sentinel.port}/other")


# --- Cluster ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as nodes:
        yield [node.port for node in nodes]


def node_ids(ports: list[int]) -> dict[int, str]:
    """Return the node id of each cluster node by port."""
    with redis.Redis(host="127.0.0.1", port=ports[0]) as admin:
        lines = admin.execute_command("CLUSTER", "NODES").decode().splitlines()
    ids = {}
    for line in lines:
        fields = line.split()
        ids[int(fields[1].split("@")[0].rsplit(":", 1)[1])] = fields[0]
    return ids


def slot_owner(ports: list[int], slot: int) -> int:
    with redis.Redis(host="127.0.0.1", port=ports[0]) as admin:
        for first, last, master, *_ in admin.execute_command("CLUSTER", "SLOTS"):
            if first <= slot <= last:
                return int(master[1])
    raise AssertionError(f"slot {slot} has no owner")


def test_key_slot_matches_cluster_keyslot(cluster: list[int]) -> None:
    keys = [
        b"",
        b"a",
        b"123456789",
        b"{user1000}.following",
        b"foo{}{bar}",
        b"foo{{bar}}zap",
        b"x{a}{b}",
    ]
    keys += [uuid.uuid4().bytes for _ in range(50)]
    with redis.Redis(host="127.0.0.1", port=cluster[0]) as admin:
        for key in keys:
            assert key_slot(key) == admin.execute_command("CLUSTER", "KEYSLOT", key), key
    assert key_slot(b"123456789") == 0x31C3


def test_cluster_routes_keys_to_owners(cluster: list[int]) -> None:
    keys = [f"ringwall-test:{uuid.uuid4().hex}".encode() for _ in range(30)]
    owners = {slot_owner(cluster, key_slot(key)) for key in keys}
    assert len(owners) == 3  # 30 random keys miss one of three nodes with chance (2/3)**30

    async def scenario(client: RedisClient) -> None:
        await asyncio.gather(*(client.execute("SET", key, key) for key in keys))
        assert await asyncio.gather(*(client.execute("GET", key) for key in keys)) == keys
        assert await client.execute("PING") == b"PONG"
        script = Script("return redis.call('INCR', KEYS[1])")
        assert await client.evalsha(script, [keys[0] + b":n"], []) == 1

    run(scenario, f"redis+cluster://127.0.0.1:{cluster[0]}")
    for key in keys:
        with redis.Redis(host="127.0.0.1", port=slot_owner(cluster, key_slot(key))) as owner:
            assert owner.get(key) == key


def test_cluster_follows_moved_slot(cluster: list[int]) -> None:
    ids = node_ids(cluster)
    key = f"ringwall-test:{uuid.uuid4().hex}:moved".encode()
    slot = key_slot(key)

    async def scenario(client: RedisClient) -> None:
        assert await client.execute("SET", key, "first") == b"OK"
        # Move the slot (no keys in it now) to another node behind the client's back.
        source = slot_owner(cluster, slot)
        with redis.Redis(host="127.0.0.1", port=source) as owner:
            owner.delete(key)
        target = next(port for port in cluster if port != source)
        for port in [target, source, *cluster]:
            with redis.Redis(host="127.0.0.1", port=port) as node:
                node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        # The client still sends to the old owner, gets MOVED and retries at the new one.
        assert await client.execute("SET", key, "second") == b"OK"
        assert await client.execute("GET", key) == b"second"
        with redis.Redis(host="127.0.0.1", port=target) as node:
            assert node.get(key) == b"second"

    run(scenario, f"redis://127.0.0.1:{cluster[0]}", cluster=True)


def test_cluster_follows_ask_during_migration(cluster: list[int]) -> None:
    ids = node_ids(cluster)
    key = f"ringwall-test:{uuid.uuid4().hex}:ask".encode()
    slot = key_slot(key)

    async def scenario(client: RedisClient) -> None:
        assert await client.execute("GET", key) is None  # loads the slot map
        source = slot_owner(cluster, slot)
        target = next(port for port in cluster if port != source)
        with redis.Redis(host="127.0.0.1", port=target) as node:
            node.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        with redis.Redis(host="127.0.0.1", port=source) as node:
            node.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        try:
            # The key is not on the source, so the source replies ASK with the target.
            assert await client.execute("SET", key, "migrating") == b"OK"
            direct = RedisClient.from_url(f"redis://127.0.0.1:{target}")
            try:
                await direct.execute("ASKING")
                assert await direct.execute("GET", key) == b"migrating"
            finally:
                await direct.close()
        finally:
            for port in (source, target):
                with redis.Redis(host="127.0.0.1", port=port) as node:
                    node.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")

    run(scenario, f"redis+cluster://127.0.0.1:{cluster[1]}")


def test_cluster_unreachable_seeds() -> None:
    async def scenario(client: RedisClient) -> None:
        with pytest.raises(RedisUnavailable, match="CLUSTER SLOTS"):
            await client.execute("GET", "k")
        with pytest.raises(RedisUnavailable):
            await client.execute("GET", "k")

    run(scenario, f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}")


# --- URLs -------------------------------------------------------------------------------------


def test_url_forms() -> None:
    single = _parse_url("redis://127.0.0.1")
    assert (single.tls, single.kind, single.hosts, single.db) == (
        False,
        "",
        [("127.0.0.1", 6379)],
        0,
    )
    login = _parse_url("rediss://user:p%40ss@redis.internal:6380/4")
    assert (login.tls, login.username, login.password, login.db) == (True, "user", "p@ss", 4)
    assert _parse_url("redis://:secret@[::1]:7000").hosts == [("::1", 7000)]
    assert _parse_url("redis://:secret@h").username is None
    sentinel = _parse_url("redis+sentinel://s1,s2:5000/cache/1")
    assert sentinel.hosts == [("s1", 26379), ("s2", 5000)]
    assert (sentinel.service, sentinel.db) == ("cache", 1)
    cluster = _parse_url("REDIS+CLUSTER://n1:7000,n2:7001")
    assert (cluster.kind, cluster.hosts) == ("cluster", [("n1", 7000), ("n2", 7001)])


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://host", "use redis://"),
        ("host:6379", "use redis://"),
        ("redis://", "host is missing"),
        ("redis://host:0", "port must be"),
        ("redis://host:port", "port must be"),
        ("redis://host/db1", "database must be a number"),
        ("redis://host?timeout=1", "query parameters"),
        ("redis://a:1,b:2", "only with redis+sentinel"),
        ("redis+sentinel://host:26379", "name the Sentinel service"),
        ("redis+cluster://host/2", "only database 0"),
        ("redis://secret@host", "after a colon"),
        ("redis://user:hunter2@host:x", "port must be"),
    ],
)
def test_invalid_url_rejected(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)) as raised:
        RedisClient.from_url(url)
    assert "hunter2" not in str(raised.value)


def test_repr_hides_password() -> None:
    client = RedisClient.from_url("redis://user:hunter2@127.0.0.1:6379/0")
    assert "hunter2" not in repr(client)
    assert "user:***@127.0.0.1" in repr(client)


# --- Parser -----------------------------------------------------------------------------------

replies = st.recursive(
    st.none() | st.integers(-(2**63), 2**63 - 1) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=5),
    max_leaves=20,
)


def resp(value: object) -> bytes:
    """Encode a reply as the server would, in RESP2."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    assert isinstance(value, list)
    return b"*%d\r\n" % len(value) + b"".join(resp(item) for item in value)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(replies, min_size=1, max_size=8),
    cuts=st.lists(st.integers(0, 400), max_size=10),
)
def test_parser_any_chunking(values: list[object], cuts: list[int]) -> None:
    """Replies split at any byte positions resolve the pending commands in order."""
    stream = b"".join(resp(value) for value in values)
    bounds = sorted({0, len(stream), *(cut for cut in cuts if cut < len(stream))})

    async def scenario() -> list[object]:
        loop = asyncio.get_running_loop()
        connection = _Connection(loop, 5.0, "test", lambda *_: None)
        futures = [connection.send(b"") for _ in values]
        for start, end in itertools.pairwise(bounds):
            connection.data_received(stream[start:end])
        results = [future.result() for future in futures]
        connection.close("test done")
        return results

    assert asyncio.run(scenario()) == values


def test_parser_error_and_status_replies() -> None:
    async def scenario() -> tuple[object, BaseException | None, BaseException | None]:
        loop = asyncio.get_running_loop()
        connection = _Connection(loop, 5.0, "test", lambda *_: None)
        futures = [connection.send(b"") for _ in range(3)]
        connection.data_received(b"+OK\r\n-ERR bad thing\r\n-LOADING Redis is loading\r\n")
        results = (futures[0].result(), futures[1].exception(), futures[2].exception())
        connection.close("test done")
        return results

    status, error, outage = asyncio.run(scenario())
    assert status == b"OK"
    assert isinstance(error, RedisReplyError)
    assert str(error) == "ERR bad thing"
    assert isinstance(outage, RedisUnavailable)


def test_parser_garbage_fails_connection() -> None:
    async def scenario() -> BaseException | None:
        loop = asyncio.get_running_loop()
        connection = _Connection(loop, 5.0, "test", lambda *_: None)
        future = connection.send(b"")
        connection.data_received(b"!not resp\r\n")
        assert connection.closed
        return future.exception()

    assert isinstance(asyncio.run(scenario()), RedisUnavailable)


def test_rediss_url_verifies_certificates() -> None:
    client = RedisClient.from_url("rediss://127.0.0.1:6380")
    tls = client._single._settings.tls if client._single else None
    context = tls.context if tls else None
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
