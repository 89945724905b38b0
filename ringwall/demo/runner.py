"""`ringwall demo`: the demo backend plus the gateway in front of it, on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from ringwall.config.types import format_listen_address
from ringwall.server.supervisor import Overrides, bind_socket, serve

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "demo" / "ringwall.yaml"
_BACKEND_START_SECONDS = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + _BACKEND_START_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _banner(gateway: str, backend_url: str) -> str:
    base = f"http://{gateway}"
    return f"""
Ringwall demo
  gateway:  {base}  (config {DEMO_CONFIG})
  backend:  {backend_url}  (demo fintech API)
  access log: JSON lines on stdout; errors on stderr

Try:
  curl -i {base}/api/products
  curl -i {base}/api/accounts/acc-1001/transactions
  curl -i {base}/api/nowhere                                # 404, problem+json
  curl -i '{base}/api/echo?q=1' -H 'X-Forwarded-For: 203.0.113.9'
  head -c 2000000 /dev/zero | curl -i --data-binary @- {base}/api/orders   # 413
  curl -i --path-as-is '{base}/api/../etc/passwd'           # 400

Press Ctrl-C to stop.
"""


def run_demo(listen: tuple[str, int], workers: int) -> int:
    """Start the demo backend on a free loopback port, then the gateway; return the exit code."""
    if not DEMO_CONFIG.is_file():
        print(f"demo configuration not found at {DEMO_CONFIG}", file=sys.stderr)
        return 1
    try:
        bind_socket(listen).close()
    except OSError as exc:
        address = format_listen_address(listen)
        print(
            f"cannot listen on {address}: {exc.strerror}. "
            "Stop what uses it, or pick another address: ringwall demo --listen 127.0.0.1:8081",
            file=sys.stderr,
        )
        return 1
    port = _free_port()
    backend_url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "ringwall.demo.backend", "--listen", f"127.0.0.1:{port}"]
    backend = subprocess.Popen(command)  # noqa: S603 - fixed arguments, no user input
    try:
        if not _wait_for_port(port, backend):
            print("the demo backend did not start", file=sys.stderr)
            return 1
        os.environ["DEMO_BACKEND_URL"] = backend_url
        print(_banner(format_listen_address(listen), backend_url), flush=True)
        return serve(DEMO_CONFIG, Overrides(listen=listen, workers=workers))
    finally:
        backend.terminate()
        try:
            backend.wait(5)
        except subprocess.TimeoutExpired:
            backend.kill()
