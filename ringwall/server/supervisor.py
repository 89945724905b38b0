"""The supervisor process: binds the socket, forks workers, reloads, drains.

Signals: SIGTERM or SIGINT drains every worker and exits. SIGHUP, or a
change of the configuration file's modification time or size, reloads.
A reload validates the whole new file in the supervisor first. Only a
valid configuration is sent to the workers. An invalid one is logged with
every error, and the old one keeps serving. A worker that dies is
replaced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ringwall.config.load import load_config
from ringwall.config.model import Config
from ringwall.edge.waf import engines as waf_engines
from ringwall.errors import ConfigError
from ringwall.logs import configure_error_log
from ringwall.server.worker import run_worker, send_config
from ringwall.state.shared import SharedStore, StoreError
from ringwall.tls.context import check_tls_files, new_ticket_secret

log = logging.getLogger("ringwall.supervisor")

_HANDLED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
# Between config file checks, and the longest a worker may take past the drain timeout.
_POLL_SECONDS = 1.0
_EXIT_GRACE = 5.0
# A worker that dies sooner than this after its start is replaced only after this delay.
_CRASH_LOOP_SECONDS = 1.0
# Worker indexes in the shared store: up to 256 running workers (the
# configuration's maximum) plus as many draining after a reload.
MAX_WORKERS = 512


@dataclass
class Overrides:
    """Command-line settings that win over the configuration file."""

    listen: tuple[str, int] | None = None
    workers: int | None = None
    # Where the HTTPS listener listens, when the configuration has one.
    listen_tls: tuple[str, int] | None = None

    def apply(self, config: Config) -> Config:
        server_updates: dict[str, object] = {}
        if self.listen is not None:
            server_updates["listen"] = self.listen
        if self.listen_tls is not None and config.server.tls is not None:
            server_updates["tls"] = config.server.tls.model_copy(update={"listen": self.listen_tls})
        if self.workers is not None:
            server_updates["workers"] = self.workers
        if not server_updates:
            return config
        server = config.server.model_copy(update=server_updates)
        return config.model_copy(update={"server": server})


@dataclass
class _WorkerProcess:
    pid: int
    config_fd: int
    # The worker's index in the shared store's per-worker connection counts.
    index: int
    started: float = field(default_factory=time.monotonic)


@dataclass
class Supervisor:
    config_path: Path
    config: Config
    overrides: Overrides
    sock: socket.socket
    workers: dict[int, _WorkerProcess] = field(default_factory=dict)
    # Workers sent SIGTERM after a reload lowered the worker count.
    draining: set[int] = field(default_factory=set)
    stopping: bool = False
    _file_stamp: tuple[float, int] = (0.0, 0)
    # Limits and bans shared by all workers; made before the first fork.
    shared: SharedStore | None = None
    # The admin API's listener, bound at start like `sock`; None without `admin`.
    admin_sock: socket.socket | None = None
    # Store indexes of running and draining workers, by pid.
    indexes: dict[int, int] = field(default_factory=dict)
    # The HTTPS listener, bound at start like `sock`; None without `server.tls`.
    tls_sock: socket.socket | None = None
    # Made once before the first fork, so that every worker can resume the
    # TLS sessions of every other worker.
    ticket_secret: bytes = field(default_factory=new_ticket_secret)

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        self._file_stamp = self._stamp()
        # The store's size is read at start; reload warns about a change.
        self.shared = SharedStore.create(self.config.limits.store.max_keys, workers=MAX_WORKERS)
        # Rules load before the fork: loading is not thread-safe, and every
        # worker then shares the loaded rules.
        waf_engines.preload(self.config)
        for _ in range(self.config.server.worker_count()):
            self._spawn()
        host, port = self.sock.getsockname()[:2]
        listening = {"listen": f"{host}:{port}"}
        if self.tls_sock is not None:
            tls_host, tls_port = self.tls_sock.getsockname()[:2]
            listening["listen_tls"] = f"{tls_host}:{tls_port}"
        log.info(
            "ringwall is listening",
            extra={
                **listening,
                "workers": len(self.workers),
                "config": str(self.config_path),
            },
        )
        while self.workers or self.draining or not self.stopping:
            info = signal.sigtimedwait(_HANDLED, _POLL_SECONDS)
            if info is None:
                self._check_file()
            elif info.si_signo in (signal.SIGTERM, signal.SIGINT):
                self._stop()
            elif info.si_signo == signal.SIGHUP:
                self.reload("SIGHUP")
            self._reap()
        log.info("ringwall stopped")
        return 0

    def _spawn(self) -> None:
        used = set(self.indexes.values())
        index = next(number for number in range(MAX_WORKERS) if number not in used)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(write_fd)
            for other in self.workers.values():
                os.close(other.config_fd)
            code = 0
            try:
                run_worker(
                    self.config,
                    self.sock,
                    read_fd,
                    self.shared,
                    index,
                    self.admin_sock,
                    self.tls_sock,
                    self.ticket_secret,
                )
            except BaseException:
                log.exception("worker failed")
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        os.close(read_fd)
        self.workers[pid] = _WorkerProcess(pid, write_fd, index)
        self.indexes[pid] = index

    def reload(self, cause: str) -> bool:
        # The file as read now is the one applied, so a SIGHUP sent after an
        # edit does not cause a second reload when the poll finds the change.
        self._file_stamp = self._stamp()
        try:
            new_config = self.overrides.apply(load_config(self.config_path))
        except ConfigError as exc:
            for issue in exc.issues:
                log.error(
                    "invalid configuration, keeping the running one",
                    extra={
                        "cause": cause,
                        "file": str(self.config_path),
                        "key": issue.path,
                        "problem": issue.message,
                    },
                )
            return False
        tls_problem = check_tls_files(new_config)
        if tls_problem:
            log.error(
                "invalid TLS files, keeping the running configuration",
                extra={"cause": cause, "file": str(self.config_path), "problem": tls_problem},
            )
            return False
        if new_config.server.listen != self.config.server.listen:
            log.warning("a new listen address takes effect only after a restart")
        old_tls = self.config.server.tls.listen if self.config.server.tls else None
        new_tls = new_config.server.tls.listen if new_config.server.tls else None
        if new_tls != old_tls:
            log.warning("a change to server.tls.listen takes effect only after a restart")
        old_admin = self.config.admin.listen if self.config.admin else None
        new_admin = new_config.admin.listen if new_config.admin else None
        if new_admin != old_admin:
            log.warning("a change to admin.listen takes effect only after a restart")
        if new_config.limits.store.max_keys != self.config.limits.store.max_keys:
            log.warning("a change to limits.store.max_keys takes effect only after a restart")
        try:
            configure_error_log(new_config.logging)
        except OSError as exc:
            log.error(
                "cannot open the new error log, keeping the running configuration",
                extra={"cause": cause, "error": str(exc)},
            )
            return False
        self.config = new_config
        for worker in self.workers.values():
            try:
                send_config(worker.config_fd, new_config)
            except OSError as exc:
                log.error(
                    "cannot send the configuration to a worker",
                    extra={"pid": worker.pid, "error": str(exc)},
                )
        self._resize(new_config.server.worker_count())
        log.info("configuration reloaded", extra={"cause": cause, "workers": len(self.workers)})
        return True

    def _resize(self, count: int) -> None:
        """Start or drain workers until `count` are running."""
        while len(self.workers) < count:
            self._spawn()
        for pid in list(self.workers)[count:]:
            worker = self.workers.pop(pid)
            os.close(worker.config_fd)
            self.draining.add(pid)
            _signal(pid, signal.SIGTERM)

    def _check_file(self) -> None:
        if self._stamp() != self._file_stamp:
            self.reload("file changed")

    def _stamp(self) -> tuple[float, int]:
        try:
            status = self.config_path.stat()
        except OSError:
            return self._file_stamp
        return status.st_mtime, status.st_size

    def _stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        log.info("draining workers", extra={"drain_seconds": self.config.server.timeouts.drain})
        for worker in self.workers.values():
            _signal(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.config.server.timeouts.drain + _EXIT_GRACE
        while (self.workers or self.draining) and time.monotonic() < deadline:
            self._reap()
            if self.workers or self.draining:
                signal.sigtimedwait({signal.SIGCHLD}, 0.1)
        for pid in [*self.workers, *self.draining]:
            _signal(pid, signal.SIGKILL)
        self._reap()
        self.draining.clear()

    def _reap(self) -> None:
        while self.workers or self.draining:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.workers.clear()
                self.draining.clear()
                return
            if pid == 0:
                return
            self.draining.discard(pid)
            self._forget(pid)
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            os.close(worker.config_fd)
            if not self.stopping:
                log.error(
                    "worker exited unexpectedly, starting a new one",
                    extra={"pid": pid, "status": os.waitstatus_to_exitcode(status)},
                )
                if time.monotonic() - worker.started < _CRASH_LOOP_SECONDS:
                    time.sleep(_CRASH_LOOP_SECONDS)  # a worker that fails at start: slow down
                self._spawn()

    def _forget(self, pid: int) -> None:
        """Clear what an exited worker left in the shared store: its connections and locks."""
        index = self.indexes.pop(pid, None)
        if index is None or self.shared is None:
            return
        # Locks first: the dead worker may hold one that clearing needs.
        self.shared.recover_locks(pid)
        try:
            self.shared.clear_worker(index)
        except StoreError as exc:
            log.error(
                "cannot clear the connection counts of an exited worker",
                extra={"pid": pid, "error": str(exc)},
            )


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def bind_socket(address: tuple[str, int]) -> socket.socket:
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def serve(config_path: Path, overrides: Overrides) -> int:
    """Run the gateway until SIGTERM or SIGINT; return the process exit code."""
    try:
        config = overrides.apply(load_config(config_path))
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"{config_path}: {issue}", file=sys.stderr)
        return 2
    try:
        configure_error_log(config.logging)
    except OSError as exc:
        print(f"{config_path}: logging.destination: cannot open: {exc}", file=sys.stderr)
        return 2
    from ringwall.cli import load_waf_rules

    waf_problem = load_waf_rules(config)
    if waf_problem:
        print(f"{config_path}: {waf_problem}", file=sys.stderr)
        return 2
    tls_problem = check_tls_files(config)
    if tls_problem:
        print(f"{config_path}: {tls_problem}", file=sys.stderr)
        return 2
    try:
        sock = bind_socket(config.server.listen)
    except OSError as exc:
        host, port = config.server.listen
        print(f"cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    admin_sock = None
    if config.admin is not None:
        try:
            admin_sock = bind_socket(config.admin.listen)
        except OSError as exc:
            sock.close()
            host, port = config.admin.listen
            print(f"admin.listen: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
            return 1
    tls_sock = None
    if config.server.tls is not None:
        try:
            tls_sock = bind_socket(config.server.tls.listen)
        except OSError as exc:
            sock.close()
            if admin_sock is not None:
                admin_sock.close()
            host, port = config.server.tls.listen
            print(
                f"server.tls.listen: cannot listen on {host}:{port}: {exc.strerror}",
                file=sys.stderr,
            )
            return 1
    supervisor = Supervisor(
        config_path, config, overrides, sock, admin_sock=admin_sock, tls_sock=tls_sock
    )
    try:
        return supervisor.run()
    finally:
        sock.close()
        for extra in (admin_sock, tls_sock):
            if extra is not None:
                extra.close()
