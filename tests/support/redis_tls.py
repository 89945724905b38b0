"""Throwaway redis-server processes that serve TLS on 127.0.0.1, for tests of `rediss://`.

Each server also listens on a plain port. The helpers in
`tests.support.redis_servers` use it to wait until the server is ready, and
tests may use it to check state. The client under test connects to `tls_port`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ringwall.config.tls import CertificateFiles
from tests.support.redis_servers import (
    REDIS_CLI,
    RedisProcess,
    cluster_node_arguments,
    create_cluster,
    free_port,
)


@dataclass(frozen=True)
class TlsFiles:
    """What a TLS redis-server needs: its certificate and the CA that signs client certificates."""

    server: CertificateFiles
    # Verifies client certificates, and the other node's certificate on replication
    # and Cluster bus links.
    ca_file: Path
    require_client_certificate: bool = False
    # Presented on the links this server opens: Cluster bus links always
    # require a client certificate, and `server` is issued for server use only.
    client: CertificateFiles | None = None

    def arguments(self, tls_port: int) -> list[str]:
        arguments = [
            "--tls-port", str(tls_port),
            "--tls-cert-file", str(self.server.cert),
            "--tls-key-file", str(self.server.key),
            "--tls-ca-cert-file", str(self.ca_file),
            "--tls-auth-clients", "yes" if self.require_client_certificate else "no",
        ]  # fmt: skip
        if self.client is not None:
            arguments += ["--tls-client-cert-file", str(self.client.cert)]
            arguments += ["--tls-client-key-file", str(self.client.key)]
        return arguments


@dataclass
class TlsRedis:
    """A redis-server with a plain `process.port` and a TLS `tls_port`."""

    process: RedisProcess
    tls_port: int


@contextlib.contextmanager
def running_tls_redis(directory: Path, files: TlsFiles, *arguments: str) -> Iterator[TlsRedis]:
    """Run one redis-server that serves TLS on a free port, with extra `arguments`."""
    tls_port = free_port()
    server = RedisProcess(free_port(), directory, [*files.arguments(tls_port), *arguments])
    try:
        server.start()
        yield TlsRedis(server, tls_port)
    finally:
        server.stop()


@contextlib.contextmanager
def running_tls_sentinel(
    directory: Path, files: TlsFiles, master_tls_port: int, service: str = "mymaster"
) -> Iterator[TlsRedis]:
    """Run one Sentinel that serves TLS and monitors the master over TLS at `master_tls_port`."""
    port = free_port()
    tls_port = free_port()
    config = directory / f"sentinel-{port}.conf"
    # Sentinel rewrites its configuration file, so it must be a writable file of its own.
    # tls-replication makes it connect to the master over TLS.
    config.write_text(
        f"sentinel monitor {service} 127.0.0.1 {master_tls_port} 1\n"
        f"sentinel down-after-milliseconds {service} 5000\n"
        "tls-replication yes\n"
    )
    sentinel = RedisProcess(
        port, directory, [str(config), "--sentinel", *files.arguments(tls_port)]
    )
    try:
        sentinel.start()
        yield TlsRedis(sentinel, tls_port)
    finally:
        sentinel.stop()


@contextlib.contextmanager
def running_tls_cluster(
    directory: Path, files: TlsFiles, size: int = 3
) -> Iterator[list[TlsRedis]]:
    """Run a Redis Cluster of `size` masters whose client and bus links use TLS.

    With `tls-cluster yes`, CLUSTER SLOTS and redirections name the TLS ports.
    """
    if REDIS_CLI is None:
        raise RuntimeError("redis-cli is not installed: run `make setup`")
    nodes: list[TlsRedis] = []
    try:
        for _ in range(size):
            port = free_port()
            tls_port = free_port()
            arguments = [
                *files.arguments(tls_port),
                "--tls-cluster", "yes",
                *cluster_node_arguments(directory, port),
            ]  # fmt: skip
            node = TlsRedis(RedisProcess(port, directory, arguments), tls_port)
            nodes.append(node)
            node.process.start()
        addresses = [f"127.0.0.1:{node.tls_port}" for node in nodes]
        cli_options = ["--tls", "--cacert", str(files.ca_file)]
        if files.client is not None:
            cli_options += ["--cert", str(files.client.cert), "--key", str(files.client.key)]
        create_cluster([node.process for node in nodes], addresses, cli_options)
        yield nodes
    finally:
        for node in nodes:
            node.process.stop()
