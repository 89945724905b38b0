"""HTTPS (HTTP/1.1 over TLS) while writes are held per poll: order, tunnels and backpressure."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
from pathlib import Path

import h11
import pytest

from ringwall.certs_cli import ensure_dev_certificates
from tests.server.test_tls_listener import client_context
from tests.server.test_tunnel_half_close import SWITCH, UPGRADE
from tests.server.test_write_backpressure import wait_until_stalled
from tests.server.test_write_order import assert_in_order, build_requests, mixed_upstream
from tests.support.gateway_thread import proxy_config, running_gateway
from tests.support.scripted_upstream import read_head, scripted_upstream
from tests.support.tls import read_all_plain, send_and_half_close, tls_session


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls") / "certs"
    ensure_dev_certificates(directory, datetime.datetime.now(datetime.UTC))
    return directory


def https_config(certs: Path, port: int, server_extra: str = "", route_extra: str = "") -> str:
    """Return YAML for an HTTPS listener without client certificates, proxying to `port`.

    `server_extra` contains more indented lines of the `server:` section, placed before `tls:`.
    """
    server = f"""  timeouts: {{drain: 2s}}
{server_extra}  tls:
    listen: 127.0.0.1:0
    profile: intermediate
    certificates:
      - cert: {certs / "server.pem"}
        key: {certs / "server-key.pem"}
    client_auth: {{mode: none}}
"""
    return proxy_config(port, server=server, route_extra=route_extra)


def parse_responses(data: bytes) -> list[tuple[int, bytes]]:
    """Return the status and body of each response in `data`, up to the first incomplete one."""
    parser = h11.Connection(h11.CLIENT)
    parser.receive_data(data)
    parser.receive_data(b"")
    results = []
    body = bytearray()
    status = 0
    while True:
        if parser.our_state is h11.IDLE:
            parser.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
            parser.send(h11.EndOfMessage())
        try:
            event = parser.next_event()
        except h11.RemoteProtocolError:
            break
        if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            break
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            results.append((status, bytes(body)))
            body = bytearray()
            try:
                parser.start_next_cycle()
            except h11.LocalProtocolError:
                break
    return results


@pytest.mark.parametrize("close_notify", [True, False])
def test_https_pipelined_then_close(tmp_path: Path, certs: Path, close_notify: bool) -> None:
    with scripted_upstream(mixed_upstream) as port:
        config = https_config(certs, port, server_extra="  limits: {max_body_bytes: 1MiB}\n")
        with running_gateway(config, tmp_path, serve_tls=True) as gateway:
            wire, sent = build_requests(13)
            wire = wire.replace(b"Host: app", b"Host: localhost")
            data = send_and_half_close(
                gateway.tls_port, client_context(certs), wire, close_notify=close_notify
            )
    assert_in_order(sent, parse_responses(data))


def test_https_tunnel_close_notify(tmp_path: Path, certs: Path) -> None:
    seen: dict[str, bytes] = {}

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(SWITCH + b"hi")
        await writer.drain()
        seen["from_client"] = await reader.read(-1)
        writer.write(b"|bye")
        await writer.drain()

    with scripted_upstream(upstream) as port:
        config = https_config(certs, port, route_extra="    upgrades: [websocket]")
        with running_gateway(config, tmp_path, serve_tls=True) as gateway:
            raw, client, incoming, outgoing = tls_session(gateway.tls_port, client_context(certs))
            with raw:
                client.write(UPGRADE.replace(b"Host: app", b"Host: localhost") + b"abc")
                client.write(b"def")
                with contextlib.suppress(ssl.SSLWantReadError):
                    client.unwrap()
                raw.sendall(outgoing.read())
                data = read_all_plain(raw, client, incoming)
    assert seen.get("from_client") == b"abcdef"
    assert data.startswith(b"HTTP/1.1 101")
    assert data.endswith(b"hi|bye")


def test_https_slow_client_bounds_upstream(tmp_path: Path, certs: Path) -> None:
    sent = [0]

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (256 << 20))
        block = b"x" * 1000
        while sent[0] < (256 << 20):
            writer.write(block)
            await writer.drain()
            sent[0] += len(block)

    with scripted_upstream(upstream) as port:
        config = https_config(certs, port)
        with running_gateway(config, tmp_path, serve_tls=True) as gateway:
            raw, client, _incoming, outgoing = tls_session(gateway.tls_port, client_context(certs))
            with raw:
                client.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                raw.sendall(outgoing.read())
                stalled = wait_until_stalled(lambda: sent[0])
    assert stalled < 24 * 1024 * 1024
