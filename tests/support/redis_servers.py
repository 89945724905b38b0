"""Start and stop throwaway redis-server processes on 127.0.0.1 for tests.

Every helper is a context manager that terminates and waits for each process
it started, also when the test fails. Servers keep no data on disk: `--save ''`
and `--appendonly no`, with their files in the test's temporary directory.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
START_TIMEOUT = 5.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class RedisProcess:
    """One redis-server (or sentinel) process; `start` and `stop` may be called again."""

    port: int
    directory: Path
    arguments: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.directory / f"redis-{self.port}.log"

    def start(self) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed: run `make setup`")
        command = [
            REDIS_SERVER,
            *self.arguments,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.log_file),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_until_ready()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the process with `sig` (SIGKILL simulates a crash) and wait for it to exit."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()

    def client(self) -> redis.Redis:
        """Return a redis-py client for setting up and checking state."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start: {self._output()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection,
            ):
                connection.sendall(b"PING\r\n")
                reply = connection.recv(64)
                # A server still loading, or one that requires a password, is up too.
                if reply.startswith((b"+PONG", b"-NOAUTH", b"-ERR")):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not start: {self._output()}")

    def _output(self) -> str:
        text = self.log_file.read_text() if self.log_file.exists() else ""
        return text[-2000:] or "(no log)"


@contextlib.contextmanager
def running_redis(
    directory: Path, *arguments: str, port: int | None = None
) -> Iterator[RedisProcess]:
    """Run one redis-server with extra command-line `arguments`."""
    server = RedisProcess(port or free_port(), directory, list(arguments))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_sentinel(
    directory: Path, master_port: int, service: str = "mymaster"
) -> Iterator[RedisProcess]:
    """Run one Redis Sentinel that monitors the master at 127.0.0.1:`master_port` as `service`."""
    port = free_port()
    config = directory / f"sentinel-{port}.conf"
    # Sentinel rewrites its configuration file, so it must be a writable file of its own.
    config.write_text(
        f"sentinel monitor {service} 127.0.0.1 {master_port} 1\n"
        f"sentinel down-after-milliseconds {service} 5000\n"
    )
    sentinel = RedisProcess(port, directory, [str(config), "--sentinel"])
    try:
        sentinel.start()
        yield sentinel
    finally:
        sentinel.stop()


@contextlib.contextmanager
def running_cluster(directory: Path, size: int = 3) -> Iterator[list[RedisProcess]]:
    """Run a Redis Cluster of `size` masters without replicas, with all slots assigned."""
    if REDIS_CLI is None:
        raise RuntimeError("redis-cli is not installed: run `make setup`")
    nodes: list[RedisProcess] = []
    try:
        for _ in range(size):
            port = free_port()
            node = RedisProcess(port, directory, cluster_node_arguments(directory, port))
            nodes.append(node)
            node.start()
        create_cluster(nodes, [f"127.0.0.1:{node.port}" for node in nodes])
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def cluster_node_arguments(directory: Path, port: int) -> list[str]:
    """Return redis-server options for a Cluster node on `port` with its files in `directory`."""
    return [
        "--cluster-enabled", "yes",
        "--cluster-config-file", str(directory / f"nodes-{port}.conf"),
        "--cluster-node-timeout", "5000",
        # The default bus port, port + 10000, may be taken or above 65535.
        "--cluster-port", str(free_port()),
    ]  # fmt: skip


def create_cluster(
    nodes: list[RedisProcess], addresses: list[str], cli_options: Sequence[str] = ()
) -> None:
    """Join the started `nodes` at `addresses` into one cluster and wait until it is ok.

    `redis-cli --cluster create` assigns all slots, without replicas. `cli_options`
    go before `--cluster`, for example the TLS options of redis-cli.
    """
    if REDIS_CLI is None:
        raise RuntimeError("redis-cli is not installed: run `make setup`")
    subprocess.run(
        [
            REDIS_CLI,
            *cli_options,
            "--cluster",
            "create",
            *addresses,
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    _wait_for_cluster(nodes)


def _wait_for_cluster(nodes: list[RedisProcess]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        states = []
        for node in nodes:
            with node.client() as client:
                info = client.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            states.append("cluster_state:ok" in text)
        if all(states):
            return
        time.sleep(0.05)
    raise RuntimeError("the Redis Cluster did not reach cluster_state:ok within 20 s")


SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"


@contextlib.contextmanager
def shared_redis_prefix() -> Iterator[str]:
    """Yield a random key prefix on the shared Redis at 127.0.0.1:6379; delete its keys after."""
    name = f"ringwall-test:{uuid.uuid4().hex}:"
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        client.close()
        raise RuntimeError(
            "Redis is not running at 127.0.0.1:6379: run scripts/ensure-redis"
        ) from None
    try:
        yield name
    finally:
        keys = list(client.scan_iter(match=f"{name}*"))
        if keys:
            client.delete(*keys)
        client.close()
