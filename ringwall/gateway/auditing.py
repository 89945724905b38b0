"""The audit layer: who did what, when, from where, for every audited decision.

A route is audited when its `audit` setting is true, or, when it is unset,
when the route is not public. Allowed requests are recorded here, as the last layer, so a
record that cannot be written can still stop the request (503) when the
audit log's `on_failure` is `reject`. Refusals are recorded by
`record_denial` when the rejection is sent: on audited routes, and for
every authentication or authorization failure on any route.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ringwall.audit import AuditLog, AuditRecord, Decision
from ringwall.errors import Rejection, ServiceUnavailable

if TYPE_CHECKING:
    from ringwall.exchange import Exchange
    from ringwall.gateway.routing import CompiledRoute

LAYER = "audit"
_AUTH_LAYERS = frozenset({"authentication", "authorization"})


def audited(exchange: Exchange) -> bool:
    return exchange.route is not None and route_audited(exchange.route)


def route_audited(route: CompiledRoute) -> bool:
    setting = route.route.audit
    return not route.route.auth.public if setting is None else setting


_ANONYMOUS = (None, None, None, None)


def _record(
    exchange: Exchange, decision: Decision, layer: str, reason: str | None, status: int
) -> AuditRecord:
    identity = exchange.identity
    route = exchange.route
    return AuditRecord.of_request(
        time.time(),
        exchange.request_id,
        identity.audit_fields if identity is not None else _ANONYMOUS,
        exchange.client_ip,
        exchange.method,
        exchange.path,
        route.name if route is not None else None,
        decision,
        layer,
        reason,
        status,
    )


class AuditLayer:
    name = LAYER

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def applies_to(self, route: CompiledRoute) -> bool:
        return route_audited(route)

    def check_head(self, exchange: Exchange) -> None:
        stored = self.log.record(_record(exchange, "allow", "authorization", None, 0))
        if not stored and self.log.reject_on_failure:
            raise ServiceUnavailable(
                LAYER,
                "the audit record could not be written",
                headers=(("Retry-After", "5"),),
                detail="the request cannot be served right now",
            )


def record_denial(log: AuditLog, exchange: Exchange, rejection: Rejection) -> None:
    """Record a refused request if its route is audited or an auth layer refused it."""
    if rejection.layer in _AUTH_LAYERS or audited(exchange):
        log.record(_record(exchange, "deny", rejection.layer, rejection.reason, rejection.status))
