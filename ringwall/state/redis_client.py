"""A small asyncio Redis client that pipelines commands over RESP2.

All commands issued during one event-loop iteration go out in one socket
write per connection, and replies are matched to commands in the order they
were sent. Each Redis node gets one connection, opened on first use.

    RingwallError
    ├── RedisUnavailable   connection failed or lost, reply timed out, client closed,
    │                      or an outage reply (LOADING, CLUSTERDOWN, READONLY, ...)
    └── RedisReplyError    any other error reply, such as a script error

Callers turn RedisUnavailable into their fail-open, fail-closed or fallback
decision, so every outage raises it and never OSError or TimeoutError.

Deployments: one server (`redis://`, `rediss://`), the master that Redis
Sentinel names (`redis+sentinel://`), and Redis Cluster (`redis+cluster://`
or `cluster=True`). See `RedisClient.from_url` for the URL forms.

With TLS, every node of a deployment (sentinels and Cluster nodes included)
is verified with the same `ClientTls`: CA bundle, server name, pins and
client certificate. Pins are checked before AUTH, so the password never
reaches a server whose key is not pinned.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import hashlib
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import unquote

from ringwall.config.tls import ClientTlsConfig
from ringwall.errors import RingwallError
from ringwall.tls.client_context import ClientTls, build_client_tls, describe_tls_error

log = logging.getLogger("ringwall.redis")

Argument = bytes | str | int | float

# After a failed connection attempt, a node fails fast for this long before the
# next attempt. Sentinel lookups and Cluster slot-map refreshes use the same spacing.
RETRY_INTERVAL = 0.5

CLUSTER_SLOTS = 16384
# Redirections (MOVED or ASK) followed for one command before it fails.
MAX_REDIRECTIONS = 5


class RedisUnavailable(RingwallError):
    """Redis cannot serve commands now: connection failure, timeout, closed client or outage."""


class RedisReplyError(RingwallError):
    """An error reply that is not an outage, such as a script error or WRONGTYPE."""


class _NoScript(RedisReplyError):
    """NOSCRIPT: the server's script cache does not contain the SHA1."""


class _Redirect(RedisReplyError):
    """A Cluster MOVED or ASK reply. An empty `host` means the host of the node that replied."""

    def __init__(self, message: str, ask: bool, slot: int, host: str, port: int) -> None:
        super().__init__(message)
        self.ask = ask
        self.slot = slot
        self.host = host
        self.port = port


# Error codes that mean the server cannot serve the command now, whatever the command is.
_OUTAGE_CODES = frozenset(
    {
        "LOADING",  # the server is loading its data set after a restart
        "BUSY",  # a script or function runs longer than busy-reply-threshold
        "CLUSTERDOWN",
        "TRYAGAIN",  # a multi-key command during slot migration
        "MASTERDOWN",  # a replica lost its master
        "READONLY",  # the node became a replica, for example after a failover
        "NOREPLICAS",  # min-replicas-to-write is not met
        "MISCONF",  # writes stopped because the last RDB save failed
        "OOM",
        "NOAUTH",
        "WRONGPASS",
    }
)


def _error_reply(message: bytes) -> RingwallError:
    text = message.decode("utf-8", "replace")
    code = text.split(" ", 1)[0]
    if code in _OUTAGE_CODES:
        return RedisUnavailable(f"Redis replied with an outage error: {text[:200]}")
    if code == "NOSCRIPT":
        return _NoScript(text)
    if code in ("MOVED", "ASK"):
        return _redirect(text)
    return RedisReplyError(text[:500])


def _redirect(text: str) -> RingwallError:
    """Parse `MOVED 3999 127.0.0.1:6381` or `ASK 3999 :6381`."""
    parts = text.split(" ")
    if len(parts) != 3:
        return RedisReplyError(text[:500])
    host, _, port = parts[2].rpartition(":")
    try:
        slot = int(parts[1])
        if 0 <= slot < CLUSTER_SLOTS:
            return _Redirect(text, parts[0] == "ASK", slot, host, int(port))
    except ValueError:
        pass
    return RedisReplyError(text[:500])


class Script:
    """A Lua script and the hex SHA1 that EVALSHA names it by."""

    __slots__ = ("load_command", "sha1", "source")

    def __init__(self, source: str) -> None:
        self.source = source.encode()
        self.sha1 = hashlib.sha1(self.source, usedforsecurity=False).hexdigest().encode()
        self.load_command = encode_command((b"SCRIPT", b"LOAD", self.source))

    def __repr__(self) -> str:
        return f"Script(sha1={self.sha1.decode()})"


# --- RESP2 ----------------------------------------------------------------------------


def encode_command(args: Sequence[Argument]) -> bytes:
    """Encode a command as a RESP array of bulk strings, with floats as their exact repr."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int):
            data = b"%d" % arg
        elif isinstance(arg, float):
            data = repr(arg).encode()
        else:
            raise TypeError(
                f"Redis arguments are bytes, str, int or float, not {type(arg).__name__}"
            )
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(b"\r\n")
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class EncodedArguments:
    """Command arguments encoded as RESP bulk strings once, for calls that repeat them."""

    count: int
    data: bytes


def encode_arguments(args: Sequence[Argument]) -> EncodedArguments:
    return EncodedArguments(len(args), encode_command(args).split(b"\r\n", 1)[1])


def _encode_evalsha(script: Script, keys: Sequence[bytes], args: EncodedArguments) -> bytes:
    if len(keys) == 1:
        key = keys[0]
        return b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n1\r\n$%d\r\n%s\r\n%s" % (
            args.count + 4,
            script.sha1,
            len(key),
            key,
            args.data,
        )
    head = encode_command((b"EVALSHA", script.sha1, len(keys), *keys))
    count = 3 + len(keys) + args.count
    return b"*%d\r\n" % count + head.split(b"\r\n", 1)[1] + args.data


class _Incomplete:
    """The marker `_parse` returns when `data` ends inside a reply."""


_INCOMPLETE = _Incomplete()


def _parse(data: bytes, pos: int) -> tuple[object, int]:
    """Parse one reply at `pos` and return it with the position after it.

    An error reply is returned as an exception instance. When `data` ends
    inside the reply, return `_INCOMPLETE` and the length `data` must reach
    before parsing again can succeed, so a large bulk string arriving in many
    reads is not parsed again after each one.

    NOTE: an array of many small items that spans many reads is parsed from
    its start after each read, which is quadratic in the number of reads.
    """
    end = data.find(b"\r\n", pos)
    if end < 0:
        return _INCOMPLETE, len(data) + 1
    kind = data[pos]
    if kind == 36:  # $ bulk string
        length = int(data[pos + 1 : end])
        if length < 0:
            return None, end + 2
        start = end + 2
        stop = start + length
        if stop + 2 > len(data):
            return _INCOMPLETE, stop + 2
        return data[start:stop], stop + 2
    if kind == 58:  # : integer
        return int(data[pos + 1 : end]), end + 2
    if kind == 43:  # + simple string
        return data[pos + 1 : end], end + 2
    if kind == 45:  # - error
        return _error_reply(data[pos + 1 : end]), end + 2
    if kind == 42:  # * array
        count = int(data[pos + 1 : end])
        if count < 0:
            return None, end + 2
        pos = end + 2
        items: list[object] = []
        for _ in range(count):
            item, pos = _parse(data, pos)
            if item is _INCOMPLETE:
                return item, pos
            items.append(item)
        return items, pos
    raise ValueError(f"unexpected RESP type byte {kind:#04x}")


# --- One connection --------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One socket to one node, which writes commands in batches and resolves futures in order.

    A command that gets no reply within `timeout` seconds fails every pending
    command with RedisUnavailable and closes the connection, because a late
    reply would otherwise be matched to the next command.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        label: str,
        on_failure: Callable[[_Connection, str, bool], None],
    ) -> None:
        self._loop = loop
        self._timeout = timeout
        self._label = label
        self._on_failure = on_failure
        self._transport: asyncio.Transport | None = None
        self._pending: deque[tuple[asyncio.Future[object], float]] = deque()
        self._outgoing: list[bytes] = []
        self._partial = bytearray()
        self._needed = 0
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.lost: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def ssl_object(self) -> ssl.SSLObject | None:
        """Return the TLS state of the connection, or None without TLS."""
        if self._transport is None:
            return None
        ssl_object: ssl.SSLObject | None = self._transport.get_extra_info("ssl_object")
        return ssl_object

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"connection to Redis at {self._label} was lost"
        if exc is not None:
            reason = f"{reason}: {exc}"
        self._fail(reason, timed_out=False)
        if not self.lost.done():
            self.lost.set_result(None)

    def send(self, payload: bytes) -> asyncio.Future[object]:
        """Queue one encoded command, which is written when the current loop iteration ends."""
        if self.closed:
            raise RedisUnavailable(f"connection to Redis at {self._label} is closed")
        loop = self._loop
        future = loop.create_future()
        deadline = loop.time() + self._timeout
        self._pending.append((future, deadline))
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(payload)
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._check_deadline)
        return future

    def close(self, reason: str) -> None:
        self._fail(reason, timed_out=False)

    def _flush(self) -> None:
        outgoing = self._outgoing
        if self.closed or not outgoing or self._transport is None:
            return
        data = outgoing[0] if len(outgoing) == 1 else b"".join(outgoing)
        outgoing.clear()
        self._transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self._partial:
            self._partial += data
            if len(self._partial) < self._needed:
                return
            data = bytes(self._partial)
            self._partial.clear()
        pending = self._pending
        pos = 0
        size = len(data)
        while pos < size:
            start = pos
            try:
                reply, pos = _parse(data, start)
            except ValueError as exc:
                self._fail(f"Redis at {self._label} sent an invalid reply: {exc}", timed_out=False)
                return
            if reply is _INCOMPLETE:
                self._partial += data[start:]
                self._needed = pos - start
                return
            if not pending:
                self._fail(f"Redis at {self._label} sent a reply to no command", timed_out=False)
                return
            future = pending.popleft()[0]
            if future.done():
                continue  # the caller was cancelled, so the reply is only dropped
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def _check_deadline(self) -> None:
        self._timer = None
        if not self._pending or self.closed:
            return
        deadline = self._pending[0][1]
        if deadline <= self._loop.time():
            reason = f"Redis at {self._label} timed out: no reply within {self._timeout:g} s"
            self._fail(reason, timed_out=True)
        else:
            self._timer = self._loop.call_at(deadline, self._check_deadline)

    def _fail(self, reason: str, *, timed_out: bool) -> None:
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, deque()
        for future, _ in pending:
            if not future.done():
                future.set_exception(RedisUnavailable(reason))
        self._outgoing.clear()
        self._partial.clear()
        if self._transport is not None:
            self._transport.abort()
        self._on_failure(self, reason, timed_out)


# --- One node ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Settings:
    """Connection settings shared by the nodes of one client."""

    timeout: float
    tls: ClientTls | None
    username: str | None
    password: str | None
    db: int


_ASKING = encode_command((b"ASKING",))


class _Node:
    """One Redis server: a lazily opened connection, reopened after failures.

    After a failed connection attempt or a timeout, calls fail fast with
    RedisUnavailable for RETRY_INTERVAL seconds instead of each waiting for
    the timeout. A connection that is lost is reopened by the next call.
    """

    def __init__(self, host: str, port: int, settings: _Settings) -> None:
        self.host = host
        self.port = port
        self.label = f"{host}:{port}"
        self._settings = settings
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._down_until = 0.0
        self._down_reason = ""
        self._closed = False

    def call(self, payload: bytes) -> Awaitable[object]:
        """Send one encoded command and return an awaitable of its reply.

        On an open connection this returns the reply's future itself, which
        saves a coroutine per command.
        """
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection.send(payload)
        return self._connect_and_call(payload)

    async def _connect_and_call(self, payload: bytes) -> object:
        connection = await self._connect()
        return await connection.send(payload)

    async def call_asking(self, payload: bytes) -> object:
        """Send ASKING and the command back to back on one connection, as ASK requires."""
        connection = self._connection
        if connection is None or connection.closed:
            connection = await self._connect()
        asking = connection.send(_ASKING)
        reply = connection.send(payload)
        try:
            await asking
        except BaseException:
            reply.cancel()
            raise
        return await reply

    def abort(self) -> None:
        """Close the connection now; pending commands fail with RedisUnavailable."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._connection is not None:
            self._connection.close("the Redis client was closed")

    async def close(self) -> None:
        connection = self._connection
        connecting = self._connecting
        self.abort()
        if connecting is not None:
            with contextlib.suppress(asyncio.CancelledError, RedisUnavailable):
                await connecting
        if connection is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await connection.lost

    async def _connect(self) -> _Connection:
        """Return the open connection, or open one, sharing one attempt among concurrent callers."""
        if self._closed:
            raise RedisUnavailable("the Redis client is closed")
        task = self._connecting
        if task is None:
            loop = asyncio.get_running_loop()
            if loop.time() < self._down_until:
                raise RedisUnavailable(
                    f"Redis at {self.label} is unavailable ({self._down_reason}); "
                    f"the next connection attempt is at most {RETRY_INTERVAL:g} s away"
                )
            task = loop.create_task(self._open(loop))
            task.add_done_callback(self._opened)
            self._connecting = task
        return await asyncio.shield(task)

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        settings = self._settings
        tls = settings.tls
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(settings.timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, settings.timeout, self.label, self._failed),
                    self.host,
                    self.port,
                    ssl=None if tls is None else tls.context,
                    server_hostname=None if tls is None else tls.server_hostname(self.host),
                )
                if tls is not None:
                    tls.check_pins(connection.ssl_object())
                await self._handshake(connection)
        except TimeoutError as exc:
            self._discard(connection)
            raise RedisUnavailable(
                f"connecting to Redis at {self.label} timed out after {settings.timeout:g} s"
            ) from exc
        except ssl.SSLError as exc:
            self._discard(connection)
            raise RedisUnavailable(
                f"cannot connect to Redis at {self.label}: {describe_tls_error(exc)}"
            ) from exc
        except OSError as exc:
            self._discard(connection)
            raise RedisUnavailable(f"cannot connect to Redis at {self.label}: {exc}") from exc
        except RedisReplyError as exc:
            self._discard(connection)
            raise RedisUnavailable(f"Redis at {self.label} rejected AUTH or SELECT: {exc}") from exc
        except BaseException:
            self._discard(connection)
            raise
        return connection

    async def _handshake(self, connection: _Connection) -> None:
        settings = self._settings
        replies = []
        if settings.password is not None:
            credentials: tuple[str, ...] = (settings.password,)
            if settings.username is not None:
                credentials = (settings.username, settings.password)
            replies.append(connection.send(encode_command(("AUTH", *credentials))))
        if settings.db:
            replies.append(connection.send(encode_command(("SELECT", settings.db))))
        for reply in replies:
            await reply

    def _discard(self, connection: _Connection | None) -> None:
        if connection is not None:
            connection.close(f"connecting to Redis at {self.label} failed")

    def _opened(self, task: asyncio.Task[_Connection]) -> None:
        self._connecting = None
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._mark_down(str(error))
            return
        connection = task.result()
        if self._closed:
            connection.close("the Redis client was closed")
            return
        if connection.closed:
            return  # lost before this callback ran; the next call connects again
        if self._down_reason:
            log.info("Redis at %s is reachable again", self.label)
            self._down_reason = ""
        self._connection = connection

    def _failed(self, connection: _Connection, reason: str, timed_out: bool) -> None:
        if self._connection is connection:
            self._connection = None
        if timed_out:
            self._mark_down(reason)

    def _mark_down(self, reason: str) -> None:
        if not self._down_reason:
            log.warning("Redis at %s is unavailable: %s", self.label, reason)
        self._down_reason = reason
        self._down_until = asyncio.get_running_loop().time() + RETRY_INTERVAL


# --- Deployments ---------------------------------------------------------------------


class _Router:
    """The node selection of one deployment: one server, Sentinel or Cluster."""

    async def call(self, key: bytes | None, payload: bytes) -> object:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _SingleRouter(_Router):
    """One server."""

    def __init__(self, node: _Node) -> None:
        self.node = node

    async def call(self, key: bytes | None, payload: bytes) -> object:
        return await self.node.call(payload)

    async def close(self) -> None:
        await self.node.close()


class _SentinelRouter(_Router):
    """The master that Redis Sentinel names for a service.

    The client sends SENTINEL get-master-addr-by-name to the sentinels in
    turn and moves the one that replied to the front of the list. After the
    master fails it sends the query again, at most once per RETRY_INTERVAL.
    """

    def __init__(
        self,
        sentinels: list[tuple[str, int]],
        service: str,
        settings: _Settings,
        sentinel_settings: _Settings,
    ) -> None:
        self._sentinels = [_Node(host, port, sentinel_settings) for host, port in sentinels]
        self._service = service
        self._settings = settings
        self._query = encode_command((b"SENTINEL", b"get-master-addr-by-name", service))
        self._master: _Node | None = None
        self._stale = True
        self._resolving: asyncio.Task[_Node] | None = None
        self._next_lookup = 0.0
        self._lookup_error = ""  # empty while the last lookup succeeded

    async def call(self, key: bytes | None, payload: bytes) -> object:
        master = self._master
        if master is None or self._stale:
            master = await self._current_master()
        try:
            return await master.call(payload)
        except RedisUnavailable:
            self._stale = True
            raise

    async def close(self) -> None:
        if self._resolving is not None:
            self._resolving.cancel()
        nodes = list(self._sentinels)
        if self._master is not None:
            nodes.append(self._master)
        for node in nodes:
            await node.close()

    async def _current_master(self) -> _Node:
        task = self._resolving
        if task is None:
            loop = asyncio.get_running_loop()
            if loop.time() < self._next_lookup:
                if self._master is not None:
                    return self._master
                raise RedisUnavailable(self._lookup_error or "no Sentinel lookup succeeded yet")
            self._next_lookup = loop.time() + RETRY_INTERVAL
            task = loop.create_task(self._look_up())
            task.add_done_callback(self._looked_up)
            self._resolving = task
        return await asyncio.shield(task)

    async def _look_up(self) -> _Node:
        errors = []
        for index, sentinel in enumerate(self._sentinels):
            try:
                reply = await sentinel.call(self._query)
            except (RedisUnavailable, RedisReplyError) as exc:
                errors.append(f"{sentinel.label}: {exc}")
                continue
            if not (isinstance(reply, list) and len(reply) == 2):
                errors.append(f"{sentinel.label} does not monitor {self._service!r}")
                continue
            host, port = _address(reply[0], reply[1])
            if index:
                self._sentinels.insert(0, self._sentinels.pop(index))
            return self._use_master(host, port)
        reason = "; ".join(errors)
        raise RedisUnavailable(f"no Sentinel returned the master of {self._service!r}: {reason}")

    def _use_master(self, host: str, port: int) -> _Node:
        master = self._master
        if master is None or (master.host, master.port) != (host, port):
            if master is not None:
                log.warning(
                    "Sentinel names %s:%d as the master of %r instead of %s",
                    host,
                    port,
                    self._service,
                    master.label,
                )
                master.abort()
            master = _Node(host, port, self._settings)
            self._master = master
        self._stale = False
        return master

    def _looked_up(self, task: asyncio.Task[_Node]) -> None:
        self._resolving = None
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            if self._lookup_error:
                log.info("Sentinel returned the master of %r again", self._service)
            self._lookup_error = ""
        else:
            if not self._lookup_error:
                log.warning("%s", error)
            self._lookup_error = str(error)


def _address(host: object, port: object) -> tuple[str, int]:
    if isinstance(host, bytes) and isinstance(port, bytes | int):
        with contextlib.suppress(ValueError):
            return host.decode(), int(port)
    raise RedisUnavailable(f"invalid node address in a Redis reply: {host!r:.100}:{port!r:.20}")


def key_slot(key: bytes) -> int:
    """Return the Cluster hash slot of `key`: CRC16 (XModem) of its hash tag or of all of it."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return binascii.crc_hqx(key, 0) % CLUSTER_SLOTS


class _ClusterRouter(_Router):
    """Redis Cluster: each command goes to the master that serves its key's slot.

    The slot map comes from CLUSTER SLOTS on first use. After a MOVED reply
    the client updates the slot, starts a refresh of the whole map and sends
    the command to the named node. After an ASK reply it sends ASKING and the
    command to the named node and leaves the map as it is. A failed node also
    starts a refresh, so a failover is picked up. Refreshes run at most once
    per RETRY_INTERVAL.
    """

    def __init__(self, seeds: list[tuple[str, int]], settings: _Settings) -> None:
        self._settings = settings
        self._nodes: dict[tuple[str, int], _Node] = {}
        self._seeds = [self._node(host, port) for host, port in seeds]
        self._slots: list[_Node | None] = [None] * CLUSTER_SLOTS
        self._refreshing: asyncio.Task[None] | None = None
        self._next_refresh = 0.0
        self._refresh_error = ""  # empty while the last refresh succeeded

    async def call(self, key: bytes | None, payload: bytes) -> object:
        node = await self._route(key)
        asking = False
        for _ in range(MAX_REDIRECTIONS):
            try:
                if asking:
                    return await node.call_asking(payload)
                return await node.call(payload)
            except _Redirect as redirect:
                target = self._node(redirect.host or node.host, redirect.port)
                asking = redirect.ask
                if not asking:
                    self._slots[redirect.slot] = target
                    self._start_refresh()
                node = target
            except RedisUnavailable:
                self._start_refresh()
                raise
        raise RedisUnavailable(f"Redis Cluster redirected a command {MAX_REDIRECTIONS} times")

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        for node in list(self._nodes.values()):
            await node.close()

    async def _route(self, key: bytes | None) -> _Node:
        node = self._lookup(key)
        if node is None:
            task = self._start_refresh()
            if task is not None:
                await asyncio.shield(task)
            node = self._lookup(key)
        if node is None:
            reason = self._refresh_error or "the slot map has no master for it"
            raise RedisUnavailable(f"no Redis Cluster node serves the key: {reason}")
        return node

    def _lookup(self, key: bytes | None) -> _Node | None:
        if key is not None:
            return self._slots[key_slot(key)]
        for node in self._slots:
            if node is not None:
                return node
        return None

    def _node(self, host: str, port: int) -> _Node:
        node = self._nodes.get((host, port))
        if node is None:
            node = _Node(host, port, self._settings)
            self._nodes[(host, port)] = node
        return node

    def _start_refresh(self) -> asyncio.Task[None] | None:
        if self._refreshing is not None:
            return self._refreshing
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_refresh:
            return None
        self._next_refresh = loop.time() + RETRY_INTERVAL
        task = loop.create_task(self._refresh())
        task.add_done_callback(self._refreshed)
        self._refreshing = task
        return task

    async def _refresh(self) -> None:
        known = list(dict.fromkeys(node for node in self._slots if node is not None))
        errors = []
        for node in dict.fromkeys([*known, *self._seeds]):
            try:
                reply = await node.call(_CLUSTER_SLOTS_COMMAND)
            except (RedisUnavailable, RedisReplyError) as exc:
                errors.append(f"{node.label}: {exc}")
                continue
            self._slots = self._slot_map(reply, node)
            self._drop_unused_nodes()
            return
        raise RedisUnavailable("no node returned CLUSTER SLOTS: " + "; ".join(errors))

    def _slot_map(self, reply: object, source: _Node) -> list[_Node | None]:
        """Build the slot table from a CLUSTER SLOTS reply sent by `source`.

        An empty host in the reply means the host of `source`.
        """
        if not isinstance(reply, list):
            raise RedisUnavailable(f"invalid CLUSTER SLOTS reply from {source.label}")
        slots: list[_Node | None] = [None] * CLUSTER_SLOTS
        for entry in reply:
            if not (isinstance(entry, list) and len(entry) >= 3 and isinstance(entry[2], list)):
                raise RedisUnavailable(f"invalid CLUSTER SLOTS entry from {source.label}")
            first, last, master = entry[0], entry[1], entry[2]
            if not (isinstance(first, int) and isinstance(last, int) and len(master) >= 2):
                raise RedisUnavailable(f"invalid CLUSTER SLOTS entry from {source.label}")
            host, port = _address(master[0], master[1])
            node = self._node(host or source.host, port)
            for slot in range(max(first, 0), min(last, CLUSTER_SLOTS - 1) + 1):
                slots[slot] = node
        return slots

    def _drop_unused_nodes(self) -> None:
        """Close the nodes that serve no slot any more, except the seeds."""
        used = {*self._slots, *self._seeds}
        for address, node in list(self._nodes.items()):
            if node not in used:
                node.abort()
                del self._nodes[address]

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        self._refreshing = None
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            if self._refresh_error:
                log.info("Redis Cluster slot map refreshed again")
            self._refresh_error = ""
        else:
            if not self._refresh_error:
                log.warning("Redis Cluster slot map refresh failed: %s", error)
            self._refresh_error = str(error)


_CLUSTER_SLOTS_COMMAND = encode_command((b"CLUSTER", b"SLOTS"))

# Commands that take no key: in a cluster they go to any master. Every other
# command is routed by its first argument, and EVAL-like commands by their first key.
_KEYLESS_COMMANDS = frozenset(
    b"ACL AUTH BGSAVE CLIENT CLUSTER COMMAND CONFIG DBSIZE DEBUG ECHO FLUSHALL FLUSHDB "
    b"FUNCTION HELLO INFO KEYS LASTSAVE LATENCY MEMORY MODULE PING QUIT RANDOMKEY ROLE "
    b"SAVE SCAN SCRIPT SELECT SENTINEL SLOWLOG TIME WAIT".split()
)
_SCRIPT_COMMANDS = frozenset(b"EVAL EVALSHA EVAL_RO EVALSHA_RO FCALL FCALL_RO".split())


def _as_bytes(value: Argument) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int):
        return b"%d" % value
    return repr(value).encode()


def _routing_key(args: Sequence[Argument]) -> bytes | None:
    if len(args) < 2:
        return None
    name = _as_bytes(args[0]).upper()
    if name in _KEYLESS_COMMANDS:
        return None
    if name in _SCRIPT_COMMANDS:
        if len(args) < 4 or int(_as_bytes(args[2])) < 1:
            return None
        return _as_bytes(args[3])
    return _as_bytes(args[1])


# --- URLs --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Url:
    """The parts of a Redis URL."""

    tls: bool
    kind: str  # "", "sentinel" or "cluster"
    hosts: list[tuple[str, int]]
    username: str | None
    password: str | None
    service: str
    db: int


def _redact(url: str) -> str:
    """Return `url` with the password replaced by ***, for error messages."""
    scheme, separator, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    username = userinfo.partition(":")[0]
    return f"{scheme}{separator}{username}:***@{hosts}"


def _parse_url(url: str) -> _Url:
    def invalid(problem: str) -> ValueError:
        return ValueError(f"invalid Redis URL {_redact(url)!r}: {problem}")

    scheme, separator, rest = url.partition("://")
    base, _, kind = scheme.lower().partition("+")
    if not separator or base not in ("redis", "rediss") or kind not in ("", "sentinel", "cluster"):
        raise invalid("use redis://, rediss://, redis+sentinel:// or redis+cluster://")
    if "?" in rest or "#" in rest:
        raise invalid("query parameters and fragments are not supported")
    netloc, _, path = rest.partition("/")
    userinfo, at, host_list = netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if at:
        user_part, colon, password_part = userinfo.partition(":")
        if not colon:
            raise invalid("write the password after a colon, as in redis://:password@host")
        username = unquote(user_part) or None
        password = unquote(password_part)
    default_port = 26379 if kind == "sentinel" else 6379
    hosts = [_parse_host(item, default_port, invalid) for item in host_list.split(",")]
    if kind == "" and len(hosts) > 1:
        raise invalid("list several hosts only with redis+sentinel:// or redis+cluster://")
    service = ""
    if kind == "sentinel":
        service, _, path = path.partition("/")
        if not service:
            raise invalid("name the Sentinel service, as in redis+sentinel://host:26379/mymaster")
    if path and not path.isdigit():
        raise invalid(f"the database must be a number, not {path!r}")
    db = int(path or "0")
    if kind == "cluster" and db:
        raise invalid("Redis Cluster has only database 0")
    return _Url(base == "rediss", kind, hosts, username, password, unquote(service), db)


def _parse_host(
    item: str, default_port: int, invalid: Callable[[str], ValueError]
) -> tuple[str, int]:
    if item.startswith("["):
        host, bracket, after = item[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise invalid(f"unclosed IPv6 address in {item!r}")
        port_text = after[1:]
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise invalid("a host is missing")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise invalid(f"the port must be a number from 1 to 65535, not {port_text!r}")
    return host, int(port_text)


# --- The client ----------------------------------------------------------------------------


class RedisClient:
    """A pipelining Redis client for one server, a Sentinel-managed master or a Cluster.

    Create it with `from_url`. It connects on first use, must be used from one
    event loop, and is closed with `close`.
    """

    def __init__(self, router: _Router, *, cluster: bool, description: str) -> None:
        self._router = router
        self._single = router.node if isinstance(router, _SingleRouter) else None
        self._cluster = cluster
        self._description = description

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = 0.5,
        ca_file: str | None = None,
        tls: ClientTlsConfig | None = None,
        cluster: bool = False,
    ) -> RedisClient:
        """Create a client. `timeout`, in seconds, bounds each connection attempt and each reply.

        A command that has to wait for a new connection can take up to twice `timeout`.

        URL forms (`rediss` in place of `redis` turns on TLS, verified with
        `tls`, or with `ca_file` or the system CAs when `tls` is None):

            redis://[user:password@]host[:port][/db]
            redis+sentinel://[user:password@]host[:port][,host[:port]...]/service[/db]
            redis+cluster://[user:password@]host[:port][,host[:port]...]

        The user and password log in to the data nodes; the sentinels are
        contacted without them. `cluster=True` reads a redis:// URL as a list
        of Cluster seed nodes.
        """
        if not timeout > 0:
            raise ValueError(f"the Redis timeout must be more than 0 seconds, not {timeout!r}")
        parsed = _parse_url(url)
        description = _redact(url)
        if tls is not None and ca_file is not None:
            raise ValueError("set the CA bundle once: ca_file is the same as tls.ca")
        if tls is not None and not parsed.tls:
            raise ValueError(
                f"TLS settings need a rediss:// URL, not {description!r}: write rediss:// "
                "(or rediss+sentinel://, rediss+cluster://), or remove the TLS settings"
            )
        if tls is None and ca_file is not None:
            # NOTE: with a redis:// URL, ca_file is ignored, as it always was,
            # so that configurations written before `tls` still load.
            # Not validated here, because build_client_tls reports a file without a CA.
            tls = ClientTlsConfig.model_construct(ca=Path(ca_file))
        client_tls = build_client_tls(tls) if parsed.tls else None
        settings = _Settings(timeout, client_tls, parsed.username, parsed.password, parsed.db)
        if parsed.kind == "sentinel":
            sentinel_settings = _Settings(timeout, client_tls, None, None, 0)
            sentinel = _SentinelRouter(parsed.hosts, parsed.service, settings, sentinel_settings)
            return cls(sentinel, cluster=False, description=description)
        if parsed.kind == "cluster" or cluster:
            if parsed.db:
                raise ValueError(f"invalid Redis URL {description!r}: Redis Cluster has only db 0")
            return cls(
                _ClusterRouter(parsed.hosts, settings), cluster=True, description=description
            )
        host, port = parsed.hosts[0]
        return cls(
            _SingleRouter(_Node(host, port, settings)), cluster=False, description=description
        )

    def __repr__(self) -> str:
        return f"RedisClient({self._description!r})"

    async def execute(self, *args: Argument) -> object:
        """Send one command and return its reply: bytes, int, None or a list of those.

        Raises RedisUnavailable for an outage and RedisReplyError for any other
        error reply. An error nested in an array reply (from EXEC, or a script
        that returns one) stays in the list as an exception instance. In a
        cluster the command goes to the master of its key.
        """
        payload = encode_command(args)
        key = _routing_key(args) if self._cluster else None
        return await self._call(key, payload)

    async def evalsha(
        self,
        script: Script,
        keys: Sequence[bytes],
        args: Sequence[Argument] | EncodedArguments,
    ) -> object:
        """Run `script` by its SHA1, and after NOSCRIPT load it on that node and run it again.

        `args` may be encoded once with `encode_arguments` when a caller
        repeats them, which saves most of the encoding time.
        """
        if isinstance(args, EncodedArguments):
            payload = _encode_evalsha(script, keys, args)
        else:
            payload = encode_command((b"EVALSHA", script.sha1, len(keys), *keys, *args))
        key = keys[0] if keys else None
        try:
            return await self._call(key, payload)
        except _NoScript:
            await self._call(key, script.load_command)
            return await self._call(key, payload)

    async def close(self) -> None:
        """Close every connection; later calls raise RedisUnavailable."""
        await self._router.close()

    def _call(self, key: bytes | None, payload: bytes) -> Awaitable[object]:
        node = self._single
        if node is not None:
            return node.call(payload)
        return self._router.call(key, payload)
