"""One worker process: an event loop serving the shared listening socket."""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
import socket
import struct

from ringwall.config.model import Config
from ringwall.errors import BadRequest
from ringwall.logs import AccessLog, configure_error_log
from ringwall.runtime import RequestIds, Runtime
from ringwall.server.admin import AdminConnection
from ringwall.server.admission import admit, reject_connection
from ringwall.server.connection import ClientConnection
from ringwall.server.dispatch import ServedConnection
from ringwall.server.redirect import RedirectConnection
from ringwall.server.tls_transport import TlsServerProtocol
from ringwall.state.shared import SharedStore
from ringwall.tls.context import ServerTls, TlsConfigError, new_ticket_secret

log = logging.getLogger("ringwall.worker")

# How often deadlines are checked; a deadline may pass by up to this much.
SWEEP_INTERVAL = 0.25


class Worker:
    """Serves connections with the current `Runtime` and swaps it on reload."""

    def __init__(
        self,
        config: Config,
        loop: asyncio.AbstractEventLoop,
        shared: SharedStore | None = None,
        index: int = 0,
        ticket_secret: bytes | None = None,
    ) -> None:
        self.loop = loop
        # The store shared with the other workers, made by the supervisor before
        # the fork, and this worker's index in its per-worker counts.
        self.shared = shared
        self.index = index
        self.runtime = Runtime(config, loop, shared, index)
        self.retired: list[Runtime] = []
        self.connections: set[ServedConnection] = set()
        self.request_ids = RequestIds()
        self.access_log = AccessLog(loop, config.logging)
        self.server: asyncio.Server | None = None
        self.admin_server: asyncio.Server | None = None
        self.tls_server: asyncio.Server | None = None
        # The HTTPS listener's contexts; None without server.tls. The secret
        # comes from the supervisor, so every worker can resume every session.
        tls_config = config.server.tls
        self.tls = (
            ServerTls(
                tls_config,
                ticket_secret or new_ticket_secret(),
                alpn=("h2", "http/1.1") if tls_config.http2.enabled else ("http/1.1",),
            )
            if tls_config is not None
            else None
        )
        self._tls_check = 0.0
        self.admin_connections = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self._stopped = loop.create_future()
        loop.set_exception_handler(self._log_loop_error)

    async def start(
        self,
        sock: socket.socket,
        admin_sock: socket.socket | None = None,
        tls_sock: socket.socket | None = None,
    ) -> None:
        tls_config = self.runtime.config.server.tls
        if tls_config is not None and tls_config.redirect_http and tls_sock is not None:
            https_port = tls_sock.getsockname()[1]
            self.server = await self.loop.create_server(
                lambda: RedirectConnection(self, https_port), sock=sock, backlog=1024
            )
        else:
            self.server = await self.loop.create_server(
                lambda: ClientConnection(self), sock=sock, backlog=1024
            )
        if tls_sock is not None and self.tls is not None and tls_config is not None:
            context = self.tls.context
            timeout = tls_config.handshake_timeout
            self.tls_server = await self.loop.create_server(
                lambda: TlsServerProtocol(
                    self.loop,
                    context,
                    timeout,
                    lambda: ClientConnection(self),
                    lambda client: admit(self.runtime, client),
                    self._plain_http_response,
                ),
                sock=tls_sock,
                backlog=1024,
            )
        if admin_sock is not None:
            self.admin_server = await self.loop.create_server(
                lambda: AdminConnection(self), sock=admin_sock, backlog=64
            )
        self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def _plain_http_response(self, client: str) -> tuple[str, bytes]:
        """Record plain HTTP sent to the HTTPS listener, and return the request id and the 400."""
        rejection = BadRequest(
            "tls", "the request was sent as plain HTTP to the HTTPS listener: use https://"
        )
        return reject_connection(self, client, rejection)

    def reload(self, config: Config) -> None:
        """Swap in a new configuration; requests in flight finish on the old one."""
        try:
            access_log = AccessLog(self.loop, config.logging)
            configure_error_log(config.logging)
        except OSError as exc:
            log.error(
                "cannot open the new log destinations, keeping the running configuration",
                extra={"error": str(exc)},
            )
            return
        if self.tls is not None and config.server.tls is not None:
            try:
                self.tls.apply(config.server.tls)
            except TlsConfigError as exc:
                log.error(
                    "cannot use the new TLS certificates, keeping the running configuration",
                    extra={"error": str(exc)},
                )
                return
        old = self.runtime
        self.runtime = Runtime(config, self.loop, self.shared, self.index)
        old.close()
        self.retired.append(old)
        self.access_log.close()
        self.access_log = access_log
        log.info("configuration reloaded", extra={"routes": len(config.routes)})

    async def drain(self) -> None:
        """Stop accepting, let requests in flight finish, then close what is left."""
        if self.server is not None:
            self.server.close()
        if self.tls_server is not None:
            self.tls_server.close()
        if self.admin_server is not None:
            self.admin_server.close()
        for connection in list(self.connections):
            connection.closing = True
            if connection.idle():
                connection.close()
        deadline = self.loop.time() + self.runtime.timeouts.drain
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
            for connection in list(self.connections):
                if connection.idle() and connection.tunnel is None:
                    connection.close()
        for connection in list(self.connections):
            connection.abort()
        await self.runtime.shutdown()
        for runtime in self.retired:
            await runtime.shutdown()
        self.retired = []
        self.stop()

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.runtime.close()
        self.runtime.release()
        for runtime in self.retired:
            runtime.release()
        self.access_log.close()
        if not self._stopped.done():
            self._stopped.set_result(None)

    async def wait_stopped(self) -> None:
        await self._stopped

    def _log_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        """Log an error that escaped a callback, as one structured line."""
        error = context.get("exception")
        log.error(
            "unexpected error in the event loop",
            exc_info=error if isinstance(error, BaseException) else None,
            extra={"detail": str(context.get("message", ""))[:500]},
        )

    def _sweep(self) -> None:
        now = self.loop.time()
        for connection in list(self.connections):
            connection.check_deadlines(now)
        self.runtime.sweep(now)
        tls_config = self.runtime.config.server.tls
        if self.tls is not None and tls_config is not None and now >= self._tls_check:
            self._tls_check = now + tls_config.reload_interval
            self.tls.reload_changed_files()
            self.tls.rotate_ticket_keys()
        for runtime in self.retired:
            runtime.sweep(now)
        still_busy = []
        for runtime in self.retired:
            if any(pool.busy for upstream in runtime.upstreams.values() for pool in upstream.pools):
                still_busy.append(runtime)
            else:
                runtime.release()
        self.retired = still_busy
        self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)


# -- configuration messages from the supervisor --

_LENGTH = struct.Struct("!I")


def send_config(fd: int, config: Config) -> None:
    """Send a validated configuration to a worker over its pipe."""
    payload = pickle.dumps(config)
    data = _LENGTH.pack(len(payload)) + payload
    while data:
        written = os.write(fd, data)
        data = data[written:]


class ConfigReader:
    """Reads configurations sent by `send_config` from a non-blocking pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        os.set_blocking(fd, False)

    def read(self) -> list[Config]:
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        self.buffer += chunk
        configs = []
        while len(self.buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self.buffer)
            if len(self.buffer) < _LENGTH.size + length:
                break
            payload = self.buffer[_LENGTH.size : _LENGTH.size + length]
            self.buffer = self.buffer[_LENGTH.size + length :]
            # The pipe is created by the supervisor before the fork; only it writes to it.
            configs.append(pickle.loads(payload))  # noqa: S301
        return configs


def run_worker(
    config: Config,
    sock: socket.socket,
    config_fd: int,
    shared: SharedStore | None = None,
    index: int = 0,
    admin_sock: socket.socket | None = None,
    tls_sock: socket.socket | None = None,
    ticket_secret: bytes | None = None,
) -> None:
    """Entry point of a worker process after the fork."""
    import uvloop

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    worker = Worker(config, loop, shared, index, ticket_secret)
    reader = ConfigReader(config_fd)

    def on_config() -> None:
        for new_config in reader.read():
            worker.reload(new_config)

    def on_stop() -> None:
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_signal_handler(signal.SIGINT)
        loop.create_task(worker.drain())

    async def main() -> None:
        # The supervisor forks with these signals blocked; handlers go in first,
        # so a SIGTERM that arrives during start-up still drains.
        loop.add_signal_handler(signal.SIGTERM, on_stop)
        loop.add_signal_handler(signal.SIGINT, on_stop)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        await worker.start(sock, admin_sock, tls_sock)
        loop.add_reader(config_fd, on_config)
        await worker.wait_stopped()
        loop.remove_reader(config_fd)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
