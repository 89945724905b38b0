"""The `ringwall run` process: workers, reload and graceful stop, as a real subprocess."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringwall.demo.backend import DemoBackend
from tests.support.backend_thread import running_backend
from tests.support.client import RawClient
from tests.support.gateway_process import Gateway
from tests.support.waiting import wait_for


def write_config(path: Path, backend_port: int, route_path: str = "/") -> None:
    path.write_text(
        f"""
server:
  timeouts: {{drain: 5s}}
logging:
  access: {{destination: "{path.parent / "access.log"}"}}
upstreams:
  app:
    targets: ["http://127.0.0.1:{backend_port}"]
routes:
  - path: {route_path}
    upstream: app
    auth: none
"""
    )


@pytest.fixture
def backend() -> Iterator[DemoBackend]:
    with running_backend() as server:
        yield server


@pytest.fixture
def config_path(tmp_path: Path, backend: DemoBackend) -> Path:
    path = tmp_path / "ringwall.yaml"
    write_config(path, backend.port)
    return path


@pytest.fixture
def gateway(config_path: Path) -> Iterator[Gateway]:
    process = Gateway(config_path, workers=2)
    try:
        yield process
    finally:
        process.stop()


def test_workers_serve(gateway: Gateway) -> None:
    # The socket accepts before the workers are forked, so wait for them.
    assert wait_for(lambda: len(gateway.worker_pids()) == 2)
    assert [gateway.status(b"/health") for _ in range(10)] == [200] * 10


def test_sighup_reloads(gateway: Gateway, config_path: Path, backend: DemoBackend) -> None:
    write_config(config_path, backend.port, route_path="/health")
    gateway.process.send_signal(signal.SIGHUP)
    assert wait_for(lambda: gateway.status(b"/api/products") == 404)
    assert gateway.status(b"/health") == 200


def test_file_change_reloads(gateway: Gateway, config_path: Path, backend: DemoBackend) -> None:
    time.sleep(1.1)  # a new modification time even on coarse file systems
    write_config(config_path, backend.port, route_path="/health")
    assert wait_for(lambda: gateway.status(b"/api/products") == 404)


def test_bad_reload_keeps_serving(gateway: Gateway, config_path: Path) -> None:
    config_path.write_text("server:\n  lisen: 1\nroutes:\n  - path: /\n    upstream: nowhere\n")
    gateway.process.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "server.lisen" in gateway.log())
    assert "routes[0].upstream" in gateway.log()
    assert gateway.status(b"/api/products") == 200


def test_dead_worker_replaced(gateway: Gateway) -> None:
    victim = gateway.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: victim not in gateway.worker_pids())
    assert wait_for(lambda: len(gateway.worker_pids()) == 2)
    assert gateway.status(b"/health") == 200


def test_sigterm_drains_in_flight(gateway: Gateway) -> None:
    with RawClient(gateway.port) as client:
        client.send(b"GET /api/slow?delay=1 HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.3)
        gateway.process.send_signal(signal.SIGTERM)
        response = client.response()
    assert response.status == 200
    assert response.header("Connection") == "close"
    assert gateway.process.wait(10) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", gateway.port), timeout=1).close()


def test_invalid_config_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("routes:\n  - path: /\n    upstream: missing\n")
    result = subprocess.run(
        [sys.executable, "-m", "ringwall", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "routes[0].upstream" in result.stderr


def test_reload_changes_worker_count(config_path: Path) -> None:
    text = config_path.read_text()
    config_path.write_text(text.replace("server:\n", "server:\n  workers: 2\n"))
    gateway = Gateway(config_path, workers=None)  # no --workers, which would win over the file
    try:
        assert wait_for(lambda: len(gateway.worker_pids()) == 2)
        config_path.write_text(text.replace("server:\n", "server:\n  workers: 3\n"))
        gateway.process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: len(gateway.worker_pids()) == 3)
        config_path.write_text(text.replace("server:\n", "server:\n  workers: 1\n"))
        gateway.process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: len(gateway.worker_pids()) == 1)
        assert gateway.status(b"/health") == 200
    finally:
        assert gateway.stop() == 0


def test_reload_unwritable_log_keeps_serving(gateway: Gateway, config_path: Path) -> None:
    text = config_path.read_text()
    missing = config_path.parent / "missing-dir" / "access.log"
    config_path.write_text(text.replace(str(config_path.parent / "access.log"), str(missing)))
    gateway.process.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "logging.access.destination" in gateway.log())
    assert gateway.status(b"/health") == 200
    assert len(gateway.worker_pids()) == 2
