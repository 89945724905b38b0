"""The request handling that HTTP/1.1 connections and HTTP/2 streams share.

`ExchangeDriver` applies the head rules, runs the layers and forwards one
exchange at a time. The subclass parses requests and renders responses in
its protocol, and implements `_reject`, `_respond_locally` and `_finish`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, ClassVar, Protocol

from ringwall.edge.cors import add_response_fields
from ringwall.errors import (
    BadRequest,
    LocalResponse,
    MisdirectedRequest,
    Rejection,
    excerpt,
)
from ringwall.exchange import Exchange
from ringwall.gateway.auditing import record_denial
from ringwall.gateway.routing import normalize_host
from ringwall.http.headers import RequestHeaders, read_request_headers
from ringwall.runtime import valid_request_id
from ringwall.server.forward import Forwarder

if TYPE_CHECKING:
    from ringwall.server.upstream import UpstreamConnection
    from ringwall.server.worker import Worker

log = logging.getLogger("ringwall.server")

LAYER = "protocol"

# Rejections made before the WAF layer runs: such requests still get a WAF verdict.
_WAF_JUDGED = frozenset({LAYER, "target", "routing"})
# Seconds between ban lookups for the requests of one keep-alive connection.
BAN_RECHECK = 0.5


class ServedConnection(Protocol):
    """A client connection as the worker's drain and deadline sweep see it."""

    closing: bool
    tunnel: UpstreamConnection | None

    def idle(self) -> bool: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def check_deadlines(self, now: float) -> None: ...


class ExchangeDriver:
    """Check the head of an exchange, run the layers on it, and forward it or reject it."""

    # The subclass sets these.
    worker: Worker
    loop: asyncio.AbstractEventLoop
    peer_ip: str
    active: Exchange | None
    forwarder: Forwarder | None
    tunnel: UpstreamConnection | None
    # Loop time after which a keep-alive client's ban is looked up again.
    _ban_recheck: float
    closing: bool
    forwarder_type: ClassVar[type[Forwarder]] = Forwarder

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def start_tunnel(self, upstream: UpstreamConnection, leftover_from_upstream: bytes) -> None:
        raise NotImplementedError

    def _reject(self, exchange: Exchange, rejection: Rejection) -> None:
        raise NotImplementedError

    def _respond_locally(self, exchange: Exchange, local: LocalResponse) -> None:
        raise NotImplementedError

    def _finish(self, exchange: Exchange) -> None:
        raise NotImplementedError

    # -- the request head --

    def _read_fields(self, exchange: Exchange) -> RequestHeaders:
        """Read the header fields of `exchange` and set the request id and client address."""
        runtime = exchange.runtime
        found = read_request_headers(
            exchange.headers, runtime.request_id_lower, runtime.owned_headers
        )
        exchange.forward_headers = found.forward
        if found.authorization:
            exchange.authorization = found.authorization
            exchange.authorization_at = found.authorization_at
        exchange.content_length = found.content_length
        self._identify_client(exchange, found)
        return found

    def _check_fields(self, exchange: Exchange, found: RequestHeaders) -> None:
        """Reject field names with variant spellings and repeated single-value fields."""
        if found.odd_name and exchange.runtime.reject_header_name_variants:
            raise BadRequest(
                LAYER, f"header name {excerpt(found.odd_name, 40)} contains '_' or '.'"
            )
        if len(found.authorization) > 1:
            raise BadRequest(LAYER, "more than one Authorization header")
        if found.content_types > 1:
            raise BadRequest(LAYER, "more than one Content-Type header")

    def _set_host(self, exchange: Exchange, value: bytes) -> None:
        """Set the host the request names (Host or `:authority`), if this gateway serves it."""
        exchange.host_header = value
        exchange.host = normalize_host(value)
        served_hosts = exchange.runtime.served_hosts
        if served_hosts is not None and not served_hosts(exchange.host):
            raise MisdirectedRequest(LAYER, "this gateway does not serve that host")
        if exchange.tls is not None and self.worker.tls is not None:
            misdirected = self.worker.tls.misdirected(exchange.host, exchange.tls)
            if misdirected:
                raise MisdirectedRequest(LAYER, misdirected)

    def _identify_client(self, exchange: Exchange, found: RequestHeaders) -> None:
        """Set the client address and request id, taken from a trusted proxy if there is one."""
        addresses = exchange.runtime.client_addresses
        if addresses.has_trusted and addresses.is_trusted(exchange.peer_ip):
            if found.forwarded_for:
                exchange.client_ip = addresses.resolve(exchange.peer_ip, found.forwarded_for)
            if valid_request_id(found.request_id):
                exchange.request_id = found.request_id.decode("ascii")
        if not exchange.request_id:
            exchange.request_id = self.worker.request_ids.next()

    # -- the layers and forwarding --

    def _check_ban(self, exchange: Exchange) -> None:
        """Refuse a banned client on a connection opened before its ban.

        A direct client is checked again at most every BAN_RECHECK seconds per
        connection; each request a trusted proxy forwards is checked.
        """
        bans = exchange.runtime.bans
        assert bans is not None
        proxied = exchange.client_ip != self.peer_ip
        now = self.loop.time()
        if not proxied and now < self._ban_recheck:
            return
        if not proxied:
            self._ban_recheck = now + BAN_RECHECK
        refusal = bans.check(exchange.client_ip)
        if refusal is not None:
            raise refusal

    def _start(self, exchange: Exchange) -> None:
        """Run the layers on `exchange`, then forward it or send its rejection."""
        self.active = exchange
        try:
            if exchange.rejection is not None:
                raise exchange.rejection
            if exchange.runtime.bans is not None:
                self._check_ban(exchange)
            pending = exchange.runtime.pipeline.check_head(exchange)
        except Rejection as rejection:
            waf = exchange.runtime.waf
            if waf is not None and waf.default is not None and rejection.layer in _WAF_JUDGED:
                # Still judged by the WAF, so the attack is recorded and can feed bans.
                self.loop.create_task(self._run(exchange, waf.judge_rejected(exchange, rejection)))
                return
            self._reject(exchange, rejection)
            self._finish(exchange)
            return
        except LocalResponse as local:
            self._respond_locally(exchange, local)
            self._finish(exchange)
            return
        except Exception:
            log.exception(
                "request check failed with an internal error",
                extra={"request_id": exchange.request_id},
            )
            self._reject(exchange, InternalError("proxy", "internal error", close=True))
            self._finish(exchange)
            return
        body = exchange.body
        if pending is None and exchange.upgrade is None and (body is None or body.complete):
            route = exchange.route
            assert route is not None
            upstream = exchange.runtime.upstreams[route.upstream]
            forwarder = self.forwarder_type(self, exchange, upstream)
            if forwarder.try_start():
                self.forwarder = forwarder
                return
            # `run` connects to the target that `try_start` picked, if it picked one.
            self.loop.create_task(self._run(exchange, None, forwarder))
            return
        self.loop.create_task(self._run(exchange, pending))

    def forward_in_task(self, exchange: Exchange) -> None:
        self.forwarder = None
        self.loop.create_task(self._run(exchange, None))

    def forward_finished(self, exchange: Exchange, failure: Rejection | None) -> None:
        """Finish an exchange forwarded without a coroutine (see `Forwarder.try_start`)."""
        if failure is not None:
            self._reject(exchange, failure)
        self.forwarder = None
        self._finish(exchange)

    async def _run(
        self, exchange: Exchange, pending: object, forwarder: Forwarder | None = None
    ) -> None:
        # False once the exchange went out without a coroutine: then the
        # response callbacks finish it (see `forward_finished`).
        finish = True
        try:
            if pending is not None:
                await pending  # type: ignore[misc]
            route = exchange.route
            assert route is not None
            body = exchange.body
            if body is not None:
                body.mark_needed()  # sends 100 Continue if the client waits for it
            if forwarder is None:
                upstream = exchange.runtime.upstreams[route.upstream]
                forwarder = self.forwarder_type(self, exchange, upstream)
                # Once a waiting layer (a Redis limit, say) is done, send the
                # request as `_start` does. A retry from `forward_in_task` takes `run`.
                if pending is not None and exchange.upgrade is None and forwarder.try_start():
                    self.forwarder = forwarder
                    finish = False
                    return
            self.forwarder = forwarder
            await forwarder.run()
        except Rejection as rejection:
            self._reject(exchange, rejection)
        except LocalResponse as local:
            self._respond_locally(exchange, local)
        except Exception:
            log.exception(
                "request failed with an internal error",
                extra={"request_id": exchange.request_id},
            )
            self._reject(exchange, InternalError("proxy", "internal error", close=True))
        finally:
            if finish:
                self.forwarder = None
                if self.tunnel is None:
                    self._finish(exchange)

    def _note_rejection(self, exchange: Exchange, rejection: Rejection) -> bool:
        """Record `rejection` for the logs, the audit and bans, and set the response status.

        Returns False when the response has already started, so it can only be cut off.
        """
        exchange.layer = rejection.layer
        exchange.reason = rejection.reason
        audit = exchange.runtime.audit
        if audit is not None:
            record_denial(audit, exchange, rejection)
        bans = exchange.runtime.bans
        if bans is not None:
            bans.observe(exchange.client_ip, rejection, exchange)
        route = exchange.route
        if route is not None and route.name in exchange.runtime.cors:
            # A browser may read the refusal only with the CORS fields.
            add_response_fields(exchange, exchange.runtime.cors[route.name])
        if self.forwarder is not None and self.forwarder.head_sent:
            return False
        if not exchange.request_id:
            exchange.request_id = self.worker.request_ids.next()
        exchange.status = rejection.status
        hsts = exchange.runtime.hsts_field
        if exchange.tls is not None and hsts:
            exchange.response_headers = [*exchange.response_headers, *hsts]
        return True


class InternalError(Rejection):
    status = 500
    title = "Internal Server Error"


class ExpectationFailed(Rejection):
    status = 417
    title = "Expectation Failed"


def peer_ip(peer: object) -> str:
    """Return the client's address from `peername`, with an IPv4-mapped IPv6 address as IPv4."""
    if isinstance(peer, tuple) and peer:
        host = str(peer[0])
        return host.removeprefix("::ffff:") if host.startswith("::ffff:") and "." in host else host
    return "unix"
