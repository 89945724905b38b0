"""Automatic bans through a real gateway, and the admin API that lists and lifts them."""

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ringwall.cli import main
from ringwall.server import admin as admin_api
from ringwall.server.dispatch import BAN_RECHECK
from tests.support.client import RawClient, request
from tests.support.gateway_thread import GatewayThread, running_gateway
from tests.support.raw_upstream import RawUpstream

TOKEN = "t" * 40


def config_text(upstream_port: int) -> str:
    return f"""
server:
  timeouts: {{drain: 1s}}
auth:
  issuers:
    main:
      issuer: "https://issuer.test"
      hmac_secret: "{"s" * 32}"
      algorithms: [HS256]
      audiences: [api]
limits:
  bans:
    - {{name: repeated-401, rejections: [401], threshold: 3, window: 60s, ban: 30s, max_ban: 1h}}
admin:
  token: "{TOKEN}"
upstreams:
  app:
    targets: ["http://127.0.0.1:{upstream_port}"]
routes:
  - {{name: private, path: /private, upstream: app, auth: jwt}}
  - {{name: public, path: /public, upstream: app, auth: none}}
"""


@pytest.fixture
def gateway(upstream: RawUpstream, tmp_path: Path) -> Iterator[GatewayThread]:
    with running_gateway(config_text(upstream.port), tmp_path) as gw:
        yield gw


def get(gateway: GatewayThread, path: str) -> int:
    return request(gateway.port, b"GET %b HTTP/1.1\r\nHost: a\r\n\r\n" % path.encode()).status


def admin(
    gateway: GatewayThread, method: str, path: str, body: Any = None, token: str = TOKEN
) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.admin_port, timeout=5)
    try:
        payload = json.dumps(body) if body is not None else None
        connection.request(method, path, payload, {"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def audit_actions(tmp_path: Path, count: int) -> list[tuple[str, str]]:
    """Return the actions in the audit log once there are `count`, or after 2 s."""
    # The test gateway writes its audit log next to its access log, once per
    # event-loop iteration.
    deadline = time.monotonic() + 2
    while True:
        lines = (tmp_path / "audit.log").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        actions = [(r["action"], r["target"]) for r in records if r["action"]]
        if len(actions) >= count or time.monotonic() > deadline:
            return actions
        time.sleep(0.02)


def trip_rule(gateway: GatewayThread) -> None:
    for _ in range(4):
        assert get(gateway, "/private") == 401


def test_repeated_401_bans_the_client(gateway: GatewayThread, upstream: RawUpstream) -> None:
    trip_rule(gateway)
    response = request(gateway.port, b"GET /public HTTP/1.1\r\nHost: a\r\n\r\n")
    assert response.status == 403
    assert response.json()["layer"] == "ban"
    assert upstream.requests == []


def test_admin_lists_and_lifts_ban(gateway: GatewayThread, tmp_path: Path) -> None:
    trip_rule(gateway)
    status, listed = admin(gateway, "GET", "/bans")
    assert status == 200
    assert [ban["client"] for ban in listed["bans"]] == ["127.0.0.1"]
    assert listed["bans"][0]["reason"] == "repeated-401"
    status, _ = admin(gateway, "DELETE", "/bans/127.0.0.1")
    assert status == 200
    assert get(gateway, "/public") == 200
    assert audit_actions(tmp_path, 2) == [("ban.added", "127.0.0.1"), ("ban.removed", "127.0.0.1")]


def test_lifted_ban_starts_counting_afresh(gateway: GatewayThread) -> None:
    trip_rule(gateway)
    status, _ = admin(gateway, "DELETE", "/bans/127.0.0.1")
    assert status == 200
    # The rule's count was dropped with the ban: three 401s are within the threshold again.
    for _ in range(3):
        assert get(gateway, "/private") == 401
    assert get(gateway, "/public") == 200
    assert get(gateway, "/private") == 401
    assert get(gateway, "/public") == 403


def test_admin_serves_metrics(gateway: GatewayThread) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.admin_port, timeout=5)
    try:
        connection.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        response = connection.getresponse()
        text = response.read().decode()
    finally:
        connection.close()
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    assert "ringwall_limit_store_failures_total 0" in text.splitlines()
    assert "ringwall_ban_evictions_total 0" in text.splitlines()


def test_admin_metrics_needs_the_token(gateway: GatewayThread) -> None:
    status, _ = admin(gateway, "GET", "/metrics", token="x" * 40)
    assert status == 401


def test_admin_adds_ban(gateway: GatewayThread) -> None:
    status, body = admin(gateway, "PUT", "/bans/127.0.0.1", {"duration": "1m", "reason": "test"})
    assert status == 200
    assert body["ban"]["client"] == "127.0.0.1"
    assert get(gateway, "/public") == 403
    admin(gateway, "DELETE", "/bans/127.0.0.1")


def test_admin_needs_the_token(gateway: GatewayThread) -> None:
    status, body = admin(gateway, "GET", "/bans", token="x" * 40)
    assert status == 401
    assert body["status"] == 401


def test_admin_rejects_bad_client(gateway: GatewayThread) -> None:
    status, _ = admin(gateway, "PUT", "/bans/not-an-ip", {"duration": "1m"})
    assert status == 400


def test_unban_unknown_client_404(gateway: GatewayThread) -> None:
    status, _ = admin(gateway, "DELETE", "/bans/10.1.2.3")
    assert status == 404


def test_bans_command_adds_lists_and_removes(
    upstream: RawUpstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_gateway(config_text(upstream.port), tmp_path) as gateway:
        config = tmp_path / "ringwall.yaml"
        text = config_text(upstream.port).replace(
            "admin:\n", f'admin:\n  listen: "127.0.0.1:{gateway.admin_port}"\n'
        )
        config.write_text(text)
        assert main(["bans", "add", "127.0.0.1", "-c", str(config), "--duration", "5m"]) == 0
        assert get(gateway, "/public") == 403
        assert main(["bans", "list", "-c", str(config)]) == 0
        assert main(["bans", "remove", "127.0.0.1", "-c", str(config)]) == 0
        assert get(gateway, "/public") == 200
        assert main(["bans", "remove", "127.0.0.1", "-c", str(config)]) == 1
    output = capsys.readouterr().out
    assert "banned 127.0.0.1 for 300 s" in output
    assert "127.0.0.1\t" in output
    assert "lifted the ban of 127.0.0.1" in output


def test_ban_reaches_open_keep_alive_connection(gateway: GatewayThread) -> None:
    with RawClient(gateway.port) as client:
        client.send(b"GET /public HTTP/1.1\r\nHost: a\r\n\r\n")
        assert client.response().status == 200
        status, _ = admin(gateway, "PUT", "/bans/127.0.0.1", {"duration": "1m"})
        assert status == 200
        time.sleep(BAN_RECHECK + 0.1)
        client.send(b"GET /public HTTP/1.1\r\nHost: a\r\n\r\n")
        assert client.response().status == 403
    admin(gateway, "DELETE", "/bans/127.0.0.1")


def test_trusted_proxy_not_banned(upstream: RawUpstream, tmp_path: Path) -> None:
    text = config_text(upstream.port).replace(
        "  timeouts: {drain: 1s}\n", "  timeouts: {drain: 1s}\n  trusted_proxies: [127.0.0.1/32]\n"
    )
    with running_gateway(text, tmp_path) as gateway:
        for _ in range(4):
            response = request(
                gateway.port,
                b"GET /private HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n",
            )
            assert response.status == 401
        banned = request(
            gateway.port,
            b"GET /public HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n",
        )
        assert banned.status == 403
        other = request(
            gateway.port,
            b"GET /public HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 198.51.100.8\r\n\r\n",
        )
        assert other.status == 200
        _, listed = admin(gateway, "GET", "/bans")
        assert [ban["client"] for ban in listed["bans"]] == ["198.51.100.7"]


def test_zone_id_in_forwarded_address_is_dropped(upstream: RawUpstream, tmp_path: Path) -> None:
    text = config_text(upstream.port).replace(
        "  timeouts: {drain: 1s}\n", "  timeouts: {drain: 1s}\n  trusted_proxies: [127.0.0.1/32]\n"
    )
    with running_gateway(text, tmp_path) as gateway:
        for zone in (b"a" * 70, b"\xe9"):
            response = request(
                gateway.port,
                b"GET /private HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: fe80::1%%%b\r\n\r\n" % zone,
            )
            assert response.status == 401


def test_idle_admin_connection_closed(
    gateway: GatewayThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin_api, "IDLE_SECONDS", 0.3)
    with socket.create_connection(("127.0.0.1", gateway.admin_port), timeout=5) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - started < 2


def test_admin_maps_ipv4_in_ipv6(gateway: GatewayThread) -> None:
    status, body = admin(gateway, "PUT", "/bans/::ffff:10.9.9.9", {"duration": "1m"})
    assert status == 200
    assert body["ban"]["client"] == "10.9.9.9"
    assert admin(gateway, "DELETE", "/bans/10.9.9.9")[0] == 200


def test_admin_removes_listed_network(gateway: GatewayThread) -> None:
    status, body = admin(gateway, "PUT", "/bans/2001:db8::7", {"duration": "1m"})
    assert status == 200
    listed = body["ban"]["client"]
    assert listed == "2001:db8::/64"
    assert admin(gateway, "DELETE", "/bans/" + listed.replace("/", "%2F"))[0] == 200


def test_admin_refuses_tiny_duration(gateway: GatewayThread) -> None:
    assert admin(gateway, "PUT", "/bans/10.1.1.1", {"duration": 1e-300})[0] == 400
