"""The admin API: manage the gateway's state over HTTP on a separate listener.

Every request needs `Authorization: Bearer TOKEN` with the configured
token, compared in constant time. Requests and responses are JSON; errors
are problem+json. Endpoints:

    GET    /bans             the bans in force
    PUT    /bans/{client}    ban a client IP: {"duration": "10m", "reason": "..."}
    DELETE /bans/{client}    lift a ban
    GET    /metrics          counters in the Prometheus text format

Each worker serves the listener. The workers share the state store, so a
change made through any worker applies to the whole gateway. Bans and unbans are audited
with the subject "admin-api".
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import ipaddress
import json
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import unquote

import h11

from ringwall.config.types import parse_duration
from ringwall.errors import RingwallError
from ringwall.server import metrics

if TYPE_CHECKING:
    from ringwall.edge.bans import BanEntry, Bans
    from ringwall.server.worker import Worker

log = logging.getLogger("ringwall.admin")

MAX_BODY_BYTES = 4096
# An admin connection idle this long is closed, and each worker keeps at most
# MAX_CONNECTIONS open, so the admin port cannot hold the worker's descriptors.
IDLE_SECONDS = 10.0
MAX_CONNECTIONS = 32
MAX_BAN_SECONDS = 366 * 86400.0
ADMIN_SUBJECT = "admin-api"
_T = TypeVar("_T")


class _Problem(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


class AdminConnection(asyncio.Protocol):
    """One admin API connection, which serves its requests one at a time."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.connection = h11.Connection(h11.SERVER, max_incomplete_event_size=16384)
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self._request: h11.Request | None = None
        self._body = b""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.worker.admin_connections += 1
        if self.worker.admin_connections > MAX_CONNECTIONS:
            log.warning(
                "admin connection rejected: too many open connections",
                extra={"layer": "admin", "open": self.worker.admin_connections},
            )
            self.transport.abort()
            return
        self._timer = self.worker.loop.call_later(IDLE_SECONDS, self._idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.admin_connections -= 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _idle(self) -> None:
        self._timer = None
        if self.busy:
            self._timer = self.worker.loop.call_later(IDLE_SECONDS, self._idle)
            return
        self._close()

    def data_received(self, data: bytes) -> None:
        self.connection.receive_data(data)
        if not self.busy:
            self._next()

    def eof_received(self) -> bool | None:
        self.connection.receive_data(b"")
        if not self.busy:
            self._next()
        return None

    def _next(self) -> None:
        """Read events until a whole request is in, then serve it."""
        while True:
            try:
                event = self.connection.next_event()
            except h11.RemoteProtocolError:
                self._close()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._request = event
                self._body = b""
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > MAX_BODY_BYTES:
                    self._close()
                    return
            elif isinstance(event, h11.EndOfMessage):
                request, body = self._request, self._body
                self._request, self._body = None, b""
                if request is None:
                    self._close()
                    return
                self.busy = True
                self.worker.loop.create_task(self._serve(request, body))
                return
            else:  # ConnectionClosed
                self._close()
                return

    async def _serve(self, request: h11.Request, body: bytes) -> None:
        try:
            status, document = await self._handle(request, body)
            if isinstance(document, str):
                self._send_data(status, metrics.CONTENT_TYPE, document.encode())
            else:
                self._send(status, "application/json", document)
        except _Problem as problem:
            self._send(
                problem.status,
                "application/problem+json",
                {"title": problem.title, "status": problem.status, "detail": problem.detail},
            )
        except RingwallError as exc:
            # The state store (Redis) is unreachable or refused the command.
            log.error("admin request failed: %s", exc, extra={"layer": "admin"})
            self._send(
                503,
                "application/problem+json",
                {
                    "title": "Service Unavailable",
                    "status": 503,
                    "detail": "the state store cannot be reached; try again",
                },
            )
        except Exception:
            log.exception("admin request failed with an internal error")
            self._send(
                500,
                "application/problem+json",
                {"title": "Internal Server Error", "status": 500, "detail": "internal error"},
            )
        finally:
            self.busy = False
        if self.connection.our_state is h11.MUST_CLOSE:
            self._close()
            return
        try:
            self.connection.start_next_cycle()
        except h11.LocalProtocolError:
            self._close()
            return
        self._next()

    async def _handle(self, request: h11.Request, body: bytes) -> tuple[int, dict[str, Any] | str]:
        runtime = self.worker.runtime
        admin = runtime.config.admin
        if admin is None:
            raise _Problem(404, "Not Found", "the admin API is not configured")
        if not _authorized(request, admin.token.reveal()):
            log.warning(
                "admin request rejected: missing or invalid bearer token",
                extra={"layer": "admin", "peer": _peer(self.transport)},
            )
            raise _Problem(401, "Unauthorized", "a valid bearer token is required")
        method = request.method.decode("ascii")
        path = request.target.decode("ascii", "replace").split("?", 1)[0]
        bans = runtime.bans
        if path == "/metrics" and method == "GET":
            counters = runtime.shared.counters() if runtime.shared is not None else {}
            return 200, metrics.render(counters)
        if path == "/bans" and method == "GET":
            entries = await _resolve(self._bans(bans).backend.entries(self._bans(bans).clock()))
            return 200, {"bans": [_entry_json(entry) for entry in entries]}
        if path.startswith("/bans/") and method in ("PUT", "DELETE"):
            client = _client(self._bans(bans), unquote(path[len("/bans/") :]))
            if method == "DELETE":
                return await self._unban(self._bans(bans), client)
            return await self._ban(self._bans(bans), client, body)
        raise _Problem(404, "Not Found", f"no admin endpoint {method} {path}")

    @staticmethod
    def _bans(bans: Bans | None) -> Bans:
        if bans is None:
            raise _Problem(404, "Not Found", "bans need limits.bans rules or the admin API")
        return bans

    async def _ban(self, bans: Bans, client: str, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            document = json.loads(body or b"{}")
            if not isinstance(document, dict):
                raise ValueError("expected a JSON object")
            seconds = parse_duration(document.get("duration", "1h"))
            reason = str(document.get("reason", "banned by an administrator"))[:64]
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Problem(400, "Bad Request", f"invalid ban request: {exc}") from None
        if not 1 <= seconds <= MAX_BAN_SECONDS:
            raise _Problem(400, "Bad Request", "duration: expected from 1 s to 366 days")
        if not bans.record("ban.added", client, reason, subject=ADMIN_SUBJECT):
            raise _Problem(503, "Service Unavailable", "the audit record could not be written")
        entry = await _resolve(bans.backend.add(client, seconds, reason, bans.clock()))
        log.warning("client banned by the admin API", extra={"layer": "ban", "client": client})
        return 200, {"ban": _entry_json(entry)}

    async def _unban(self, bans: Bans, client: str) -> tuple[int, dict[str, Any]]:
        if not bans.record(
            "ban.removed", client, "lifted by an administrator", subject=ADMIN_SUBJECT
        ):
            raise _Problem(503, "Service Unavailable", "the audit record could not be written")
        removed = await _resolve(bans.backend.remove(client, bans.rules))
        if not removed:
            raise _Problem(404, "Not Found", f"{client} is not banned")
        log.warning("ban lifted by the admin API", extra={"layer": "ban", "client": client})
        return 200, {"removed": client}

    def _send(self, status: int, content_type: str, document: dict[str, Any]) -> None:
        self._send_data(status, content_type, json.dumps(document).encode() + b"\n")

    def _send_data(self, status: int, content_type: str, data: bytes) -> None:
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ]
        try:
            output = self.connection.send(h11.Response(status_code=status, headers=headers))
            output = (output or b"") + (self.connection.send(h11.Data(data=data)) or b"")
            output += self.connection.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            self._close()
            return
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(output)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _peer(transport: asyncio.Transport | None) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unknown"


def _authorized(request: h11.Request, token: str) -> bool:
    expected = b"Bearer " + token.encode("utf-8")
    values = [value for name, value in request.headers if name == b"authorization"]
    return len(values) == 1 and hmac.compare_digest(values[0], expected)


def _client(bans: Bans, text: str) -> str:
    """Return the ban key of `text`: an IP address, or a network exactly as `GET /bans` lists it."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError:
            raise _Problem(400, "Bad Request", "expected a client IP address") from None
        return str(network)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return bans.client(str(address))


async def _resolve(value: Awaitable[_T] | _T) -> _T:
    if inspect.isawaitable(value):
        return cast(_T, await value)
    return value


def _entry_json(entry: BanEntry) -> dict[str, Any]:
    return {
        "client": entry.client,
        "until": round(entry.until, 3),
        "level": entry.level,
        "reason": entry.reason,
    }
