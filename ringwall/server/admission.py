"""Admission of a new client connection: bans, then per-IP and total connection limits.

The plain listener admits a connection when it is accepted. The HTTPS
listener admits it at accept too, before the handshake, so a connection
that never finishes its handshake still counts against the limits. The
rejection, if any, is sent once HTTP can be spoken on the connection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ringwall.exchange import Exchange
from ringwall.http.problem import problem_response

if TYPE_CHECKING:
    import asyncio

    from ringwall.edge.connections import ConnectionLimits
    from ringwall.errors import Rejection
    from ringwall.runtime import Runtime
    from ringwall.server.worker import Worker
    from ringwall.tls.handshake import HandshakeInfo


@dataclass(slots=True)
class Admission:
    """The outcome of admitting one connection, and its place in the connection counts."""

    rejection: Rejection | None = None
    counted: tuple[ConnectionLimits, bytes] | None = None
    # A trusted proxy carries many clients, so each of its requests is checked instead.
    trusted: bool = False

    def release(self) -> None:
        """Count the connection as closed. Later calls do nothing."""
        if self.counted is not None:
            limits, key = self.counted
            self.counted = None
            limits.release(key)


def admit(runtime: Runtime, client: str) -> Admission:
    """Check a new connection from `client` against bans and connection limits, and count it."""
    if runtime.client_addresses.is_trusted(client):
        return Admission(trusted=True)
    if runtime.bans is not None:
        banned = runtime.bans.check(client)
        if banned is not None:
            return Admission(banned)
    limits = runtime.connection_limits
    if limits is None:
        return Admission()
    key, rejection = limits.admit(client)
    return Admission(rejection, (limits, key) if key else None)


# The get_extra_info key of the admission that an HTTPS connection got at accept.
ADMISSION_INFO = "ringwall_admission"


def connection_admission(
    transport: asyncio.BaseTransport, runtime: Runtime, client: str
) -> Admission:
    """Return the admission of a connection that HTTP starts on, made now unless made at accept."""
    at_accept: Admission | None = transport.get_extra_info(ADMISSION_INFO)
    return at_accept if at_accept is not None else admit(runtime, client)


def reject_connection(
    worker: Worker, client: str, rejection: Rejection, handshake: HandshakeInfo | None = None
) -> tuple[str, bytes]:
    """Record a connection refused before any request was read, and return its response.

    The rejection gets an access line and counts against the ban rules, like a
    rejected request. Returns the request id and the problem response.
    """
    runtime = worker.runtime
    exchange = Exchange(runtime, client, worker.loop.time(), time.time())
    exchange.request_id = worker.request_ids.next()
    exchange.tls = handshake
    exchange.status = rejection.status
    exchange.layer = rejection.layer
    exchange.reason = rejection.reason
    exchange.close = True
    response = problem_response(
        rejection, exchange.request_id, runtime.config.server.request_id_header, close=True
    )
    exchange.bytes_out = len(response)
    worker.access_log.record(exchange)
    if runtime.bans is not None:
        runtime.bans.observe(client, rejection, None)
    return exchange.request_id, response
