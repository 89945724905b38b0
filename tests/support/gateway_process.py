"""A `ringwall run` subprocess on a free loopback port, for tests of whole processes."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.client import request

STARTUP_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Gateway:
    """`ringwall run -c CONFIG` listening on a free port; `env` adds environment variables."""

    def __init__(
        self,
        config: Path,
        workers: int | None,
        env: dict[str, str] | None = None,
        name: str = "gateway",
        log_dir: Path | None = None,
    ) -> None:
        self.port = free_port()
        # The error log goes next to the config unless `log_dir` is given.
        self.stderr_path = (log_dir or config.parent) / f"{name}-stderr.log"
        self.stderr = self.stderr_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ringwall",
                "run",
                "-c",
                str(config),
                "--listen",
                f"127.0.0.1:{self.port}",
                *(["--workers", str(workers)] if workers is not None else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            env={**os.environ, **(env or {})},
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        # The supervisor binds the port before it forks the workers.
        while time.monotonic() < deadline:
            if self.worker_pids():
                return
            time.sleep(0.05)
        raise RuntimeError(f"gateway did not start: {self.log()}")

    def status(self, path: bytes) -> int:
        return request(self.port, b"GET %b HTTP/1.1\r\nHost: a\r\n\r\n" % path).status

    def log(self) -> str:
        self.stderr.flush()
        return self.stderr_path.read_text()

    def worker_pids(self) -> list[int]:
        output = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return [int(pid) for pid in output.split()]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.stderr.close()
        return code
