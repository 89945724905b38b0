"""Run a gateway worker in a background thread, for synchronous socket tests."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvloop

from ringwall.config import Config, parse_config
from ringwall.server.supervisor import bind_socket
from ringwall.server.worker import Worker


class GatewayThread:
    """A `Worker` serving 127.0.0.1 on a free port, with its access log in a file."""

    def __init__(self, config: Config, access_log: Path, serve_tls: bool = False) -> None:
        self.access_log_path = access_log
        self.config = _with_access_log(config, access_log)
        self.loop = uvloop.new_event_loop()
        self.sock = bind_socket(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        # The admin API on its own free port, when the config has `admin`.
        self.admin_sock = bind_socket(("127.0.0.1", 0)) if config.admin is not None else None
        self.admin_port: int = self.admin_sock.getsockname()[1] if self.admin_sock else 0
        # With `serve_tls`, the HTTPS listener on its own free port, and `port`
        # only redirects to it (unless the config turns redirect_http off).
        self.tls_sock = (
            bind_socket(("127.0.0.1", 0)) if serve_tls and config.server.tls is not None else None
        )
        self.tls_port: int = self.tls_sock.getsockname()[1] if self.tls_sock else 0
        self.worker: Worker | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the gateway thread did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.worker = Worker(self.config, self.loop)
            await self.worker.start(self.sock, self.admin_sock, self.tls_sock)
            self._ready.set()
            await self.worker.wait_stopped()

        try:
            self.loop.run_until_complete(main())
        finally:
            self.loop.close()

    def call(self, function: Any, *args: Any) -> Any:
        """Run `function(*args)` on the gateway's loop and return its result."""
        result: list[Any] = []
        done = threading.Event()

        def run() -> None:
            try:
                result.append(function(*args))
            finally:
                done.set()

        self.loop.call_soon_threadsafe(run)
        if not done.wait(10):
            raise TimeoutError("the gateway loop did not run the call")
        return result[0] if result else None

    def reload(self, config: Config) -> None:
        assert self.worker is not None
        self.call(self.worker.reload, _with_access_log(config, self.access_log_path))

    def access_records(self) -> list[dict[str, Any]]:
        """Flush the access log and return its records, oldest first."""
        assert self.worker is not None
        self.call(self.worker.access_log.flush)
        text = self.access_log_path.read_text(encoding="ascii")
        return [json.loads(line) for line in text.splitlines() if line]

    def stop(self) -> None:
        worker = self.worker
        if worker is not None:
            future = asyncio.run_coroutine_threadsafe(worker.drain(), self.loop)
            future.result(15)
        self._thread.join(15)
        self.sock.close()
        for extra in (self.admin_sock, self.tls_sock):
            if extra is not None:
                extra.close()


def _with_access_log(config: Config, path: Path) -> Config:
    access = config.logging.access.model_copy(update={"destination": str(path)})
    audit = config.logging.audit.model_copy(
        update={"destination": str(path.with_name("audit.log"))}
    )
    logging = config.logging.model_copy(update={"access": access, "audit": audit})
    return config.model_copy(update={"logging": logging})


@contextmanager
def running_gateway(
    config: Config | str, tmp_path: Path, serve_tls: bool = False
) -> Iterator[GatewayThread]:
    """Yield a started gateway for `config` (a `Config` or YAML text); drain it on exit."""
    if isinstance(config, str):
        config = parse_config(config)
    gateway = GatewayThread(config, tmp_path / "access.log", serve_tls)
    try:
        yield gateway
    finally:
        gateway.stop()


def gateway_config(
    upstream_port: int, routes: str, server: str = "  timeouts: {drain: 2s}", sections: str = ""
) -> str:
    """Return YAML for the upstream `app` at 127.0.0.1:`upstream_port` and the given routes.

    `server` is the indented body of the `server:` section, `routes` the
    indented items of `routes:`, and `sections` extra top-level YAML.
    """
    return f"""
server:
{server}
{sections}upstreams:
  app:
    targets: ["http://127.0.0.1:{upstream_port}"]
routes:
{routes}
"""


CATCH_ALL_ROUTE = """\
  - name: all
    path: /
    upstream: app
    auth: none"""

# POST /orders, which takes only a JSON object with an integer `quantity` of at least 1.
VALIDATED_ORDERS_ROUTE = """\
  - name: orders
    path: /orders
    methods: [POST]
    upstream: app
    auth: none
    validate:
      content_types: [application/json]
      json:
        schema:
          type: object
          required: [quantity]
          properties:
            quantity: {type: integer, minimum: 1}"""


def proxy_config(
    upstream_port: int, server: str = "  timeouts: {drain: 2s}", route_extra: str = ""
) -> str:
    """Return YAML for one catch-all route to 127.0.0.1:`upstream_port`.

    `server` is the indented body of the `server:` section.
    """
    return gateway_config(upstream_port, f"{CATCH_ALL_ROUTE}\n{route_extra}", server)
