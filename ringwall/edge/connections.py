"""Open connections per client IP and in total, counted from accept.

nginx's limit_conn counts a connection only once its request head is
complete, which does nothing against a client that opens many connections
and sends nothing (slowloris). Here a connection counts from accept, in
the store shared by all workers, so the limits hold for the whole gateway.
A refused connection gets one problem response and is closed before any
request on it is read.
"""

from __future__ import annotations

import logging

from ringwall.errors import Rejection, ServiceUnavailable, TooManyRequests
from ringwall.limits.limiter import KeyBuilder
from ringwall.state.shared import SharedStore, StoreError

LAYER = "connection_limit"
log = logging.getLogger("ringwall.limits")


class ConnectionLimits:
    """Admit or refuse new connections by the open connections of their IP and of all IPs."""

    def __init__(
        self,
        store: SharedStore,
        worker: int,
        keys: KeyBuilder,
        per_ip: int | None,
        total: int | None,
    ) -> None:
        self.store = store
        self.worker = worker
        self.keys = keys
        self.per_ip = per_ip
        self.total = total

    def admit(self, peer_ip: str) -> tuple[bytes, Rejection | None]:
        """Count a new connection from `peer_ip`.

        Returns the key to pass to `release` when the connection closes
        (empty when nothing was counted) and the rejection to send, if any.
        A refused connection is not counted.
        """
        if self.total is not None and self.store.connections_total() >= self.total:
            return b"", ServiceUnavailable(
                LAYER,
                f"the gateway has {self.total} open connections, its limit",
                headers=(("Retry-After", "1"),),
                close=True,
                detail="the gateway is at its connection limit",
            )
        key = b"conn\x00" + self.keys.client(peer_ip).encode("ascii")
        try:
            count = self.store.connection_opened(key, self.worker)
        except StoreError as exc:
            # A full or busy table must not lock every client out: admit uncounted.
            log.warning("connection not counted", extra={"layer": LAYER, "error": str(exc)})
            return b"", None
        if self.per_ip is not None and count > self.per_ip:
            self.release(key)
            return b"", TooManyRequests(
                LAYER,
                f"more than {self.per_ip} open connections from this IP",
                headers=(("Retry-After", "1"),),
                close=True,
                detail="too many open connections from this address",
            )
        return key, None

    def release(self, key: bytes) -> None:
        """Count a connection admitted with `key` as closed."""
        if not key:
            return
        try:
            self.store.connection_closed(key, self.worker)
        except StoreError as exc:
            log.warning("connection close not counted", extra={"layer": LAYER, "error": str(exc)})
