"""The demo over HTTPS: sslyze's Mozilla checks, the redirect, HTTP/2 and responses."""

import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringwall.config import Config
from ringwall.config.tls import CertificateFiles
from tests.support.demo_gateway import Demo, running_demo
from tests.support.tls import make_tls_files

ROOT = Path(__file__).resolve().parents[1]
SSLYZE = ROOT / ".venv-sslyze" / "bin" / "python"
TIMEOUT = 5.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with running_demo(tmp_path_factory.mktemp("demo-tls"), serve_tls=True) as running:
        yield running


def sslyze(port: int, ca: Path, profile: str) -> subprocess.CompletedProcess[str]:
    if not SSLYZE.exists():
        pytest.skip("sslyze's virtualenv is missing: `make test` creates .venv-sslyze")
    return subprocess.run(
        [
            str(SSLYZE),
            "-m",
            "sslyze",
            f"--mozilla_config={profile}",
            f"--certinfo_ca_file={ca}",
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_sslyze_intermediate_compliant(demo: Demo) -> None:
    result = sslyze(demo.gateway.tls_port, demo.certs / "ca.pem", "intermediate")
    assert "OK - Compliant" in result.stdout, result.stdout[-3000:]
    assert result.returncode == 0


def test_demo_products_over_https(demo: Demo) -> None:
    context = ssl.create_default_context(cafile=str(demo.certs / "ca.pem"))
    with (
        socket.create_connection(("127.0.0.1", demo.gateway.tls_port), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET /api/products HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := tls.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nStrict-Transport-Security: max-age=" in response


def test_demo_http_redirects(demo: Demo) -> None:
    with socket.create_connection(("127.0.0.1", demo.gateway.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /api/products HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        response = sock.recv(65536)
    assert response.startswith(b"HTTP/1.1 308 ")
    location = f"\r\nLocation: https://127.0.0.1:{demo.gateway.tls_port}/api/products\r\n"
    assert location.encode() in response


def test_sslyze_modern_compliant(tmp_path: Path) -> None:
    # Mozilla's modern configuration also wants certificates of under 90 days.
    ca, cert, key = make_tls_files(tmp_path)

    def modern(config: Config) -> Config:
        assert config.server.tls is not None
        files = CertificateFiles(cert=cert, key=key)
        tls = config.server.tls.model_copy(update={"profile": "modern", "certificates": (files,)})
        return config.model_copy(update={"server": config.server.model_copy(update={"tls": tls})})

    with running_demo(tmp_path, serve_tls=True, adjust=modern) as running:
        result = sslyze(running.gateway.tls_port, ca, "modern")
    assert "OK - Compliant" in result.stdout, result.stdout[-3000:]
    assert result.returncode == 0


def test_curl_http2_through_demo(demo: Demo) -> None:
    result = subprocess.run(
        [
            "curl",
            "--silent",
            "--http2",
            "--resolve",
            f"localhost:{demo.gateway.tls_port}:127.0.0.1",
            "--cacert",
            str(demo.certs / "ca.pem"),
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_version} %{http_code}",
            f"https://localhost:{demo.gateway.tls_port}/api/products",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.stdout == "2 200"
