"""TLS from the gateway to https:// upstreams on 127.0.0.1, with certificates made per test."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509

from ringwall.config.model import ActiveHealth, Target
from ringwall.config.tls import CertificateFiles, ClientTlsConfig
from ringwall.proxy.balancer import TargetState
from ringwall.server.health import HealthChecker
from ringwall.tls.client_context import ClientTls, build_client_tls
from tests.support.client import RawClient, request
from tests.support.gateway_thread import running_gateway
from tests.support.loop_thread import running_loop
from tests.support.tls_upstream import (
    TestPki,
    pin_of,
    running_tls_upstream,
    server_context,
)

GET = b"GET / HTTP/1.1\r\nHost: app\r\n\r\n"
UPSTREAM_NAME = x509.DNSName("upstream.ringwall.localhost")


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path)


def tls_config(port: int, tls: str = "", extra: str = "") -> str:
    """Return YAML for one catch-all route to https://127.0.0.1:`port`; `tls` is a flow mapping."""
    tls_line = f"    tls: {tls}\n" if tls else ""
    return f"""
server:
  timeouts: {{drain: 2s}}
upstreams:
  app:
    targets: ["https://127.0.0.1:{port}"]
    passive_health: {{failures: 1, cooldown: 30s}}
{tls_line}{extra}
routes:
  - name: all
    path: /
    upstream: app
    auth: none
    upgrades: [echo]
"""


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured(logger_name: str) -> Iterator[list[logging.LogRecord]]:
    """Collect the records of `logger_name`, whatever the propagation settings are."""
    handler = _ListHandler()
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def connect_errors(records: list[logging.LogRecord]) -> list[str]:
    return [
        str(getattr(record, "error", ""))
        for record in records
        if record.getMessage() == "connect to upstream target failed"
    ]


def test_https_upstream_verified_by_ca(pki: TestPki, tmp_path: Path) -> None:
    context = server_context(pki.server("upstream"))
    with running_tls_upstream(context) as upstream:
        config = tls_config(upstream.port, f"{{ca: '{pki.ca_file}'}}")
        with running_gateway(config, tmp_path) as gateway, RawClient(gateway.port) as client:
            for _ in range(3):
                client.send(GET)
                response = client.response()
                assert response.status == 200
                assert response.body == b"ok"
    # The three requests share one kept-alive TLS connection.
    assert len(upstream.connections) == 1
    assert len(upstream.requests) == 3
    assert upstream.requests[0].request.target == b"/"


def unverified_upstream_errors(context: ssl.SSLContext, ca_file: Path, tmp_path: Path) -> list[str]:
    """Send GET through a gateway that verifies the upstream with `ca_file` and expect a 502.

    Return the errors of the logged upstream connect failures.
    """
    with running_tls_upstream(context) as upstream, captured("ringwall.proxy") as records:
        config = tls_config(upstream.port, f"{{ca: '{ca_file}'}}")
        with running_gateway(config, tmp_path) as gateway:
            response = request(gateway.port, GET)
    assert response.status == 502
    assert response.header("Content-Type") == "application/problem+json"
    assert response.json()["layer"] == "proxy"
    assert upstream.requests == []
    return connect_errors(records)


def test_wrong_ca_gets_502(pki: TestPki, tmp_path: Path) -> None:
    other = TestPki(tmp_path, "other-ca")
    context = server_context(pki.server("upstream"))
    errors = unverified_upstream_errors(context, other.ca_file, tmp_path)
    assert len(errors) == 1
    assert "certificate verify failed" in errors[0]


def test_hostname_mismatch_gets_502(pki: TestPki, tmp_path: Path) -> None:
    context = server_context(pki.server("named", UPSTREAM_NAME))
    errors = unverified_upstream_errors(context, pki.ca_file, tmp_path)
    assert len(errors) == 1
    assert "IP address mismatch" in errors[0]


def test_server_name_checked_instead_of_host(pki: TestPki, tmp_path: Path) -> None:
    context = server_context(pki.server("named", UPSTREAM_NAME))
    with running_tls_upstream(context) as upstream:
        tls = f"{{ca: '{pki.ca_file}', server_name: upstream.ringwall.localhost}}"
        with running_gateway(tls_config(upstream.port, tls), tmp_path) as gateway:
            response = request(gateway.port, GET)
    assert response.status == 200


def test_pin_match_passes(pki: TestPki, tmp_path: Path) -> None:
    certificate = pki.server("upstream")
    other_pin = pin_of(pki.server("unused"))
    with running_tls_upstream(server_context(certificate)) as upstream:
        tls = f"{{ca: '{pki.ca_file}', pins: ['{other_pin}', '{pin_of(certificate)}']}}"
        with running_gateway(tls_config(upstream.port, tls), tmp_path) as gateway:
            response = request(gateway.port, GET)
    assert response.status == 200


def test_pin_mismatch_gets_502(pki: TestPki, tmp_path: Path) -> None:
    context = server_context(pki.server("upstream"))
    other_pin = pin_of(pki.server("unused"))
    with running_tls_upstream(context) as upstream, captured("ringwall.proxy") as records:
        tls = f"{{ca: '{pki.ca_file}', pins: ['{other_pin}']}}"
        with running_gateway(tls_config(upstream.port, tls), tmp_path) as gateway:
            first = request(gateway.port, GET)
            # Passive health skips the target for its cooldown, as after a refused connection.
            second = request(gateway.port, GET)
    assert first.status == 502
    assert first.header("Content-Type") == "application/problem+json"
    assert second.status == 503
    assert upstream.requests == []
    errors = connect_errors(records)
    assert len(errors) == 1
    assert "certificate pin mismatch" in errors[0]
    skipped = [r for r in records if r.getMessage() == "connect to upstream target failed"]
    assert getattr(skipped[0], "target_skipped", None) is True


def test_upstream_requires_client_certificate(pki: TestPki, tmp_path: Path) -> None:
    clients = TestPki(tmp_path, "client-ca")
    gateway_certificate = clients.client("gateway")
    context = server_context(pki.server("upstream"), client_ca=clients.ca_file)
    with running_tls_upstream(context) as upstream:
        tls = (
            f"{{ca: '{pki.ca_file}', client_certificate: "
            f"{{cert: '{gateway_certificate.cert}', key: '{gateway_certificate.key}'}}}}"
        )
        with running_gateway(tls_config(upstream.port, tls), tmp_path) as gateway:
            response = request(gateway.port, GET)
        assert response.status == 200
        assert len(upstream.requests) == 1

        # A direct client gets a response with the certificate and is rejected without it.
        assert direct_request(upstream.port, pki.ca_file, gateway_certificate).startswith(
            b"HTTP/1.1 200 "
        )
        # With TLS 1.3 the server checks the client's certificate after the
        # client has finished its side of the handshake, so the rejection may
        # show only on the first read, as an alert or an EOF without close_notify.
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            direct_request(upstream.port, pki.ca_file, None)
        assert len(upstream.requests) == 2


def direct_request(port: int, ca_file: Path, certificate: CertificateFiles | None) -> bytes:
    """Send GET / over a direct TLS connection to 127.0.0.1:`port`; return the first bytes read."""
    context = ssl.create_default_context(cafile=ca_file)
    if certificate is not None:
        context.load_cert_chain(certificate.cert, certificate.key)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(
            raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False
        ) as tls_socket,
    ):
        tls_socket.sendall(GET)
        return tls_socket.recv(1024)


def test_upstream_without_client_certificate_gets_502(pki: TestPki, tmp_path: Path) -> None:
    clients = TestPki(tmp_path, "client-ca")
    context = server_context(pki.server("upstream"), client_ca=clients.ca_file)
    with running_tls_upstream(context) as upstream:
        config = tls_config(upstream.port, f"{{ca: '{pki.ca_file}'}}")
        with running_gateway(config, tmp_path) as gateway:
            response = request(gateway.port, GET)
    assert response.status == 502
    assert upstream.requests == []


def test_health_probe_over_tls(pki: TestPki) -> None:
    certificate = pki.server("upstream")
    pinned = build_client_tls(ClientTlsConfig(ca=pki.ca_file, pins=(pin_of(certificate),)))
    pinned_elsewhere = build_client_tls(
        ClientTlsConfig(ca=pki.ca_file, pins=(pin_of(pki.server("unused")),))
    )
    untrusted = build_client_tls(ClientTlsConfig(ca=TestPki(pki.directory, "other-ca").ca_file))
    with (
        running_tls_upstream(server_context(certificate)) as upstream,
        running_loop("probe") as loop_thread,
    ):
        state = TargetState(Target(host="127.0.0.1", port=upstream.port, scheme="https"), 0)

        async def probe(tls: ClientTls) -> tuple[bool, str]:
            loop = asyncio.get_running_loop()
            checker = HealthChecker("app", (), ActiveHealth(path="/health"), loop, tls)
            return await checker.probe(state)

        assert loop_thread.run(probe(pinned)) == (True, "status 200")
        healthy, detail = loop_thread.run(probe(pinned_elsewhere))
        assert not healthy
        assert detail.startswith("certificate pin mismatch")
        healthy, detail = loop_thread.run(probe(untrusted))
        assert not healthy
        assert detail.startswith("certificate verify failed")
    assert [r.request.target for r in upstream.requests] == [b"/health"]


async def _echo_after_upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    )
    while data := await reader.read(4096):
        writer.write(data)
    writer.close()


def test_upgrade_tunnel_over_tls(pki: TestPki, tmp_path: Path) -> None:
    context = server_context(pki.server("upstream"))
    with running_loop("tls-echo") as loop:

        async def start() -> asyncio.Server:
            return await asyncio.start_server(_echo_after_upgrade, "127.0.0.1", 0, ssl=context)

        server = loop.run(start())
        port = server.sockets[0].getsockname()[1]
        try:
            config = tls_config(port, f"{{ca: '{pki.ca_file}'}}")
            with running_gateway(config, tmp_path) as gateway, RawClient(gateway.port) as client:
                client.send(
                    b"GET / HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
                )
                head = b""
                while b"\r\n\r\n" not in head:
                    head += client.sock.recv(4096)
                assert head.startswith(b"HTTP/1.1 101 ")
                client.send(b"through the tunnel")
                echoed = b""
                while len(echoed) < len(b"through the tunnel"):
                    echoed += client.sock.recv(4096)
                assert echoed == b"through the tunnel"
        finally:
            server.close()
