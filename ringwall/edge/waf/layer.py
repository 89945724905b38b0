"""The WAF layer: runs each request through ModSecurity and the OWASP CRS.

The engine runs on the inspection thread of `ringwall.edge.waf.worker`, so
the event loop keeps serving routes without a WAF while a request is
inspected. A request with matches gets a security-log record, in detect mode
too. A block is a 403 whose detail names no rule.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from ringwall.edge.waf.engine import WafEngine, WafRequest, WafVerdict
from ringwall.edge.waf.security_log import SecurityLog, SecurityRecord
from ringwall.edge.waf.worker import InspectionWorker
from ringwall.errors import (
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    Rejection,
    UnsupportedMediaType,
)

if TYPE_CHECKING:
    from ringwall.exchange import Exchange
    from ringwall.gateway.routing import CompiledRoute

LAYER = "waf"
log = logging.getLogger("ringwall.waf")
BLOCKED_DETAIL = "The request was rejected by the gateway's security policy."
UNINSPECTABLE_DETAIL = "The request could not be inspected by the gateway's security policy."


def _inspected_uri(exchange: Exchange) -> bytes:
    """Return the canonical path that routing and the upstream see, with the raw query.

    Before the path is made canonical (an exchange built by hand), the target as received.
    """
    if not exchange.path:
        return exchange.target
    path = exchange.path.encode("ascii")
    return path + b"?" + exchange.query if exchange.query else path


class WafLayer:
    """Inspect requests with the WAF policy of their route, or the listener's default policy.

    Before routing, every request gets `default`. After routing, a route in
    `routes` (by route name) gets its own engine and any other route `default`.
    """

    name = LAYER

    def __init__(
        self,
        security_log: SecurityLog,
        default: WafEngine | None = None,
        routes: Mapping[str, WafEngine] | None = None,
        *,
        disabled: frozenset[str] = frozenset(),
        server_address: tuple[str, int] = ("127.0.0.1", 0),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.security_log = security_log
        self.default = default
        self.routes = dict(routes or {})
        # Routes that turned the WAF off; the default policy does not apply to them.
        self.disabled = disabled
        self.server_address = server_address
        self.clock = clock
        # Created on first use, so that a supervisor can build the layer before
        # forking: threads do not survive fork().
        self._worker: InspectionWorker | None = None

    def applies_to(self, route: CompiledRoute) -> bool:
        return self._engine_for(route.name) is not None

    def check_head(self, exchange: Exchange) -> Awaitable[None] | None:
        route = exchange.route
        engine = self._engine_for(route.name if route is not None else None)
        if engine is None:
            return None
        # Fail before reading a body that could not be inspected whole.
        max_body = engine.config.max_body_bytes
        if exchange.content_length is not None and exchange.content_length > max_body:
            raise PayloadTooLarge(
                LAYER,
                f"request body of {exchange.content_length} bytes is above the WAF "
                f"inspection limit of {max_body} bytes",
            )
        if exchange.body_encoded():
            # The engine reads bodies as sent; a compressed one would pass uninspected.
            raise UnsupportedMediaType(LAYER, "compressed request bodies cannot be inspected")
        return self._inspect(engine, exchange)

    def close(self) -> None:
        """Stop the inspection thread after the inspections already queued, if any."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def _engine_for(self, route_name: str | None) -> WafEngine | None:
        if route_name in self.disabled:
            return None
        engine = self.routes.get(route_name, self.default) if route_name else self.default
        if engine is None or not engine.config.enabled:
            return None
        return engine

    async def judge_rejected(self, exchange: Exchange, rejection: Rejection) -> None:
        """Inspect a request an earlier check rejected, record the matches, then raise `rejection`.

        Attacks stopped by framing, path or routing checks are still recorded,
        under the listener's default policy, so they feed bans and reports.
        The body of such a request is not read.
        """
        engine = self._engine_for(None)
        if engine is not None:
            try:
                verdict = await self._verdict(engine, exchange, b"")
            except Exception:
                log.exception(
                    "WAF inspection of a rejected request failed",
                    extra={"request_id": exchange.request_id},
                )
            else:
                if verdict.rules:
                    self._log(exchange, verdict)
        raise rejection

    async def _verdict(self, engine: WafEngine, exchange: Exchange, body: bytes) -> WafVerdict:
        request = WafRequest(
            client_ip=exchange.client_ip,
            client_port=0,
            server_ip=self.server_address[0],
            server_port=self.server_address[1],
            method=exchange.method,
            uri=_inspected_uri(exchange),
            version=exchange.version,
            headers=exchange.headers,
            body=body,
        )
        return await self._worker_for(asyncio.get_running_loop()).submit(engine, request)

    def _worker_for(self, loop: asyncio.AbstractEventLoop) -> InspectionWorker:
        # One loop per worker process; a new loop (tests) gets a new thread.
        if self._worker is not None and self._worker.loop is not loop:
            self.close()
        if self._worker is None:
            self._worker = InspectionWorker(loop)
        return self._worker

    async def _inspect(self, engine: WafEngine, exchange: Exchange) -> None:
        body = b""
        if exchange.has_body and exchange.body is not None:
            body = await exchange.body.collect()
            if len(body) > engine.config.max_body_bytes:
                raise PayloadTooLarge(
                    LAYER,
                    f"request body is above the WAF inspection limit of "
                    f"{engine.config.max_body_bytes} bytes",
                )
        verdict = await self._verdict(engine, exchange, body)
        if verdict.rules:
            self._log(exchange, verdict)
        if verdict.blocked:
            raise _rejection(verdict)

    def _log(self, exchange: Exchange, verdict: WafVerdict) -> None:
        route = exchange.route
        self.security_log.write(
            SecurityRecord(
                time=self.clock(),
                request_id=exchange.request_id,
                client_ip=exchange.client_ip,
                route=route.name if route is not None else None,
                rules=verdict.rules,
                anomaly_score=verdict.anomaly_score,
                blocked=verdict.blocked,
                status=verdict.status if verdict.blocked else 0,
            )
        )


def _rejection(verdict: WafVerdict) -> Rejection:
    # The reason goes to the access log. The detail goes to the client and
    # names no rule, so an attacker cannot tune a payload against it.
    reason = f"blocked by WAF rule {verdict.blocking_rule}, anomaly score {verdict.anomaly_score}"
    if verdict.status == 400:
        return BadRequest(LAYER, reason, detail=UNINSPECTABLE_DETAIL)
    if verdict.status == 413:
        return PayloadTooLarge(LAYER, reason, detail=UNINSPECTABLE_DETAIL)
    return Forbidden(LAYER, reason, detail=BLOCKED_DETAIL)
