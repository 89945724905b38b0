"""Tests for ringwall.demo.idp through real loopback sockets."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from ringwall.demo.idp import JWKS_PATH, DemoIdentityProvider
from ringwall.demo.issuer import KEY_FILE_NAME, load_issuer, load_or_create_issuer
from ringwall.gateway.auth.jwk import parse_jwks
from tests.support.loop_thread import running_loop

TIMEOUT = 5.0


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def provider(state_dir: Path) -> Iterator[DemoIdentityProvider]:
    with running_loop("demo-idp") as loop_thread:
        started = DemoIdentityProvider(state_dir)
        loop_thread.run(started.start())
        try:
            yield started
        finally:
            loop_thread.run(started.stop())


def fetch(
    port: int, path: str = JWKS_PATH, method: str = "GET", body: bytes | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


def kids(document: bytes) -> list[str]:
    return [key["kid"] for key in json.loads(document)["keys"]]


def test_start_creates_issuer_key(provider: DemoIdentityProvider, state_dir: Path) -> None:
    assert (state_dir / KEY_FILE_NAME).is_file()
    assert provider.port > 0


def test_jwks_served(provider: DemoIdentityProvider, state_dir: Path) -> None:
    response, body = fetch(provider.port)

    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("Cache-Control") == "max-age=300"
    assert body == load_issuer(state_dir).jwks()
    (key,) = parse_jwks(body).keys
    assert key.kid == load_issuer(state_dir).kid
    assert provider.jwks_request_count == 1


def test_jwks_query_string_ignored(provider: DemoIdentityProvider) -> None:
    response, _ = fetch(provider.port, JWKS_PATH + "?refresh=1")
    assert response.status == 200


def test_jwks_head_has_no_body(provider: DemoIdentityProvider, state_dir: Path) -> None:
    response, body = fetch(provider.port, method="HEAD")
    assert response.status == 200
    assert body == b""
    assert response.getheader("Content-Length") == str(len(load_issuer(state_dir).jwks()))


def test_existing_key_served(tmp_path: Path) -> None:
    issuer = load_or_create_issuer(tmp_path)
    with running_loop("demo-idp") as loop_thread:
        provider = DemoIdentityProvider(tmp_path)
        loop_thread.run(provider.start())
        try:
            _, body = fetch(provider.port)
        finally:
            loop_thread.run(provider.stop())
    assert kids(body) == [issuer.kid]


def test_other_path_not_found(provider: DemoIdentityProvider) -> None:
    for path in ("/", "/jwks.json", "/.well-known/jwks.json/", "/.well-known/openid-configuration"):
        response, body = fetch(provider.port, path)
        assert response.status == 404, path
        assert response.getheader("Content-Type") == "application/problem+json"
        problem = json.loads(body)
        assert problem["status"] == 404
        assert problem["title"] == "Not Found"
        assert JWKS_PATH in problem["detail"]
    assert provider.jwks_request_count == 0


def test_other_method_not_allowed(provider: DemoIdentityProvider) -> None:
    response, body = fetch(provider.port, method="POST", body=b"{}")
    assert response.status == 405
    assert response.getheader("Allow") == "GET, HEAD"
    assert json.loads(body)["status"] == 405


def test_rotation_visible_without_restart(provider: DemoIdentityProvider, state_dir: Path) -> None:
    _, before = fetch(provider.port)
    issuer = load_issuer(state_dir)
    old_kid = issuer.kid

    issuer.rotate()
    _, after = fetch(provider.port)

    assert kids(before) == [old_kid]
    assert kids(after) == [issuer.kid, old_kid]
    assert len(parse_jwks(after).keys) == 2


def test_missing_key_gives_503(provider: DemoIdentityProvider, state_dir: Path) -> None:
    (state_dir / KEY_FILE_NAME).unlink()
    response, body = fetch(provider.port)
    assert response.status == 503
    assert json.loads(body)["status"] == 503
    assert provider.jwks_request_count == 0


def test_keep_alive_serves_several_requests(provider: DemoIdentityProvider) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", provider.port, timeout=TIMEOUT)
    try:
        for path, status in ((JWKS_PATH, 200), ("/missing", 404), (JWKS_PATH, 200)):
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            assert response.status == status
    finally:
        connection.close()
    assert provider.jwks_request_count == 2


def test_request_body_discarded(provider: DemoIdentityProvider) -> None:
    response, _ = fetch(provider.port, method="GET", body=b"x" * 1000)
    assert response.status == 200


def test_request_body_too_large(provider: DemoIdentityProvider) -> None:
    response, body = fetch(provider.port, method="POST", body=b"x" * (64 * 1024 + 1))
    assert response.status == 413
    assert response.getheader("Connection") == "close"
    assert "65536 bytes" in json.loads(body)["detail"]


def test_invalid_request_gets_400(provider: DemoIdentityProvider) -> None:
    with socket.create_connection(("127.0.0.1", provider.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /.well-known/jwks.json HTTP/1.1\r\nno colon here\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    assert response.startswith(b"HTTP/1.1 400 ")
    assert b"application/problem+json" in response


def test_stop_closes_open_connections(state_dir: Path) -> None:
    with running_loop("demo-idp") as loop_thread:
        provider = DemoIdentityProvider(state_dir)
        loop_thread.run(provider.start())
        connection = http.client.HTTPConnection("127.0.0.1", provider.port, timeout=TIMEOUT)
        try:
            connection.request("GET", "/missing")
            response = connection.getresponse()
            response.read()
            assert response.status == 404
            assert connection.sock is not None

            loop_thread.run(provider.stop())

            assert connection.sock.recv(65536) == b""
        finally:
            connection.close()


def read_listening_port(log: IO[str]) -> int:
    """Read log lines until the one that names the bound port, and return the port."""
    lines = []
    while line := log.readline():
        lines.append(line)
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if match is not None:
            return int(match[1])
    raise AssertionError(f"no listening line in the log: {lines}")


def test_module_runs_until_sigterm(state_dir: Path) -> None:
    command = [sys.executable, "-m", "ringwall.demo.idp", "--listen", "127.0.0.1:0"]
    process = subprocess.Popen(
        [*command, "--state", str(state_dir)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stderr is not None
        port = read_listening_port(process.stderr)
        response, body = fetch(port)
        assert response.status == 200
        assert kids(body) == [load_issuer(state_dir).kid]
    finally:
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(TIMEOUT)
        if process.stderr is not None:
            process.stderr.close()
    assert exit_code == 0


def test_module_reports_invalid_key(state_dir: Path) -> None:
    state_dir.mkdir()
    (state_dir / KEY_FILE_NAME).write_text("garbage")
    command = [sys.executable, "-m", "ringwall.demo.idp", "--listen", "127.0.0.1:0"]
    result = subprocess.run(
        [*command, "--state", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        check=False,
    )
    assert result.returncode == 1
    assert "failed to start" in result.stderr
    assert str(state_dir / KEY_FILE_NAME) in result.stderr
