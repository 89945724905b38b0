"""The state of one request as it passes the layers: a plain record, no I/O."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ringwall.errors import Rejection
    from ringwall.gateway.identity import Identity
    from ringwall.gateway.routing import CompiledRoute
    from ringwall.runtime import Runtime
    from ringwall.server.body import RequestBody
    from ringwall.tls.handshake import HandshakeInfo


class Exchange:
    """One request and, once it has one, its response.

    The server fills in the request fields, layers read them and set `route`
    and `upstream_path`, and the server records the response fields for the
    access log. Immutable defaults live on the class, so creating an exchange
    sets only the few fields every request has.
    """

    # Request, as parsed and checked by the server.
    method = ""
    target = b""
    path = ""
    query = b""
    version = "1.1"
    host = ""
    host_header = b""
    request_id = ""
    content_length: int | None = None
    chunked = False
    # True for a chunked body or a Content-Length above 0.
    has_body = False
    expect_continue = False
    upgrade: bytes | None = None
    keep_alive = True
    body: RequestBody | None = None
    # The Authorization values, and where the last one is in `forward_headers`.
    authorization: tuple[bytes, ...] | list[bytes] = ()
    authorization_at = -1
    rejection: Rejection | None = None
    # The connection's TLS handshake; None over plain HTTP.
    tls: HandshakeInfo | None = None

    # Set by layers.
    route: CompiledRoute | None = None
    identity: Identity | None = None
    upstream_path = ""
    # Fields added to the response: the RateLimit fields of ringwall.limits.limiter,
    # which replace the upstream's. Empty for most requests.
    response_headers: list[tuple[bytes, bytes]] | tuple[()] = ()
    cors_added = False

    # Response, for the access log.
    close = False
    status = 0
    bytes_in = 0
    bytes_out = 0
    upstream_address = ""
    layer = ""
    reason = ""

    def __init__(self, runtime: Runtime, peer_ip: str, started: float, wall_started: float) -> None:
        self.runtime = runtime
        self.peer_ip = peer_ip
        self.client_ip = peer_ip
        self.started = started
        self.wall_started = wall_started
        self.headers: list[tuple[bytes, bytes]] = []
        # The fields sent upstream as received: `headers` without hop-by-hop,
        # framing and gateway-owned fields (see `read_request_headers`).
        self.forward_headers: list[tuple[bytes, bytes]] = []
        self.params: dict[str, str] = {}

    def header_values(self, lower_name: bytes) -> list[bytes]:
        return [value for name, value in self.headers if name.lower() == lower_name]

    def body_encoded(self) -> bool:
        """Return whether the request has a body with a Content-Encoding other than identity."""
        return self.has_body and any(
            value.strip().lower() != b"identity"
            for value in self.header_values(b"content-encoding")
        )
