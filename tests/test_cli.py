"""The `ringwall` command line: check, version, demo."""

import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ringwall import __version__
from ringwall.cli import main
from tests.support.client import request

VALID = """
upstreams:
  app:
    targets: ["http://127.0.0.1:9"]
routes:
  - path: /
    upstream: app
    auth: none
"""

BROKEN = """
server:
  listen: 127.0.0.1:8080
  tiemouts: {head: 5s}
upstreams:
  app:
    targets: ["http://127.0.0.1:9"]
routes:
  - path: /
    upstream: app
    auth: none
  - path: /orders
    upstream: orders
    auth: none
"""


def test_check_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(VALID)
    assert main(["check", "-c", str(path)]) == 0
    assert "valid" in capsys.readouterr().out


def test_check_names_every_key_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    assert main(["check", "-c", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    unknown = next(line for line in lines if "server.tiemouts" in line)
    missing = next(line for line in lines if "routes[1].upstream" in line)
    assert "did you mean 'timeouts'" in unknown
    assert "'orders' is not defined" in missing


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(tmp_path / "absent.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"ringwall {__version__}"


def test_invalid_listen_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "-c", "x.yaml", "--listen", "nowhere"])
    assert exit_info.value.code == 2
    assert "HOST:PORT" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def https_get(
    port: int, path: str, ca: Path, client: tuple[Path, Path] | None = None
) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(*client)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while chunk := tls.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_demo_serves(tmp_path: Path) -> None:
    port, tls_port = free_port(), free_port()
    stdout = (tmp_path / "stdout").open("wb")
    command = [sys.executable, "-m", "ringwall", "demo", "--listen", f"127.0.0.1:{port}"]
    process = subprocess.Popen(
        [*command, "--listen-tls", f"127.0.0.1:{tls_port}"],
        stdout=stdout,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,  # the demo keeps its state in .ringwall/ here
    )
    certs = tmp_path / ".ringwall" / "certs"
    try:
        deadline = time.monotonic() + 15
        response = None
        while time.monotonic() < deadline:
            try:
                response = request(port, b"GET /api/products HTTP/1.1\r\nHost: a\r\n\r\n")
                break
            except OSError:
                time.sleep(0.1)
        assert response is not None
        assert response.status == 308
        assert response.header("location") == f"https://a:{tls_port}/api/products"

        assert https_get(tls_port, "/api/products", certs / "ca.pem")[0] == 200
        client = (certs / "client.pem", certs / "client-key.pem")
        status, body = https_get(tls_port, "/api/internal/status", certs / "ca.pem", client)
        assert status == 200
        caller = json.loads(body)["caller"]
        assert caller["x-ringwall-subject"] == "cert:dns:demo-client.ringwall.localhost"
        assert https_get(tls_port, "/api/internal/status", certs / "ca.pem")[0] == 401
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        stdout.close()
    output = (tmp_path / "stdout").read_text()
    assert (tmp_path / ".ringwall" / "issuer-key.pem").is_file()
    assert "curl" in output
    assert '"route":"products"' in output
