"""CORS decisions: the header fields of preflight and actual responses.

The policy follows the CORS protocol of the Fetch standard
(https://fetch.spec.whatwg.org/#http-cors-protocol). It only decides which
fields a response carries. The browser enforces the result, and the
gateway's own checks (routing, authentication, limits) apply to
cross-origin requests exactly as to any other.

An Origin value is allowed only in the exact form browsers serialize it:
`scheme://host[:port]` with a lowercase scheme and host, no default port,
no path, no user info. Exact origins are compared byte for byte, so
`https://app.example.test.evil.test` never matches `https://app.example.test`.
Patterns run only on values that pass that strict parse, so a pattern's
`.*` cannot reach into a path or user info.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ringwall.errors import LocalResponse, MethodNotAllowed

if TYPE_CHECKING:
    from ringwall.exchange import Exchange
    from ringwall.gateway.routing import CompiledRoute

from ringwall.config.response import (
    ANY_ORIGIN,
    DEFAULT_PORTS,
    MAX_HOST_LENGTH,
    NULL_ORIGIN,
    CorsConfig,
)

Fields = tuple[tuple[bytes, bytes], ...]

VARY_ORIGIN = (b"Vary", b"Origin")
# Preflight responses depend on the two request fields as well as on Origin.
_VARY_PREFLIGHT = (
    b"Vary",
    b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
)

# Lowercase names of the response fields this policy writes. An upstream's
# copies should be dropped so the client sees one decision, the gateway's.
RESPONSE_FIELD_NAMES = frozenset(
    {
        b"access-control-allow-origin",
        b"access-control-allow-credentials",
        b"access-control-allow-methods",
        b"access-control-allow-headers",
        b"access-control-expose-headers",
        b"access-control-max-age",
    }
)

# Longer than any real origin: a 253-byte host plus scheme and port.
_MAX_ORIGIN_LENGTH = 512
_LABEL = rb"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_SERIALIZED_ORIGIN = re.compile(
    rb"(?P<scheme>[a-z][a-z0-9+.\-]*)://"
    rb"(?P<host>\[[0-9a-f:.]+\]|" + _LABEL + rb"(?:\." + _LABEL + rb")*)"
    rb"(?::(?P<port>[1-9][0-9]{0,4}))?"
)
_NUMERIC_LABEL = re.compile(rb"\d+|0x[0-9a-f]*")
# Decisions remembered for origins outside the exact list, so a pattern runs
# once per origin. The cache is emptied when full, which bounds the memory a
# client can fill by sending many different Origin values.
_CACHE_SIZE = 1024


def parse_serialized_origin(origin: bytes) -> str | None:
    """Return the origin as text if it is exactly as a browser serializes it, else None.

    Rejected: uppercase letters, a default port (80 for http, 443 for https),
    and a port outside 1-65535 or with leading zeros. Also rejected: a path,
    query, fragment or user info, and a trailing dot. A bracketed IPv6 address
    must be in compressed form, and a host ending in a number must be a
    dotted-quad IPv4 address.
    """
    if len(origin) > _MAX_ORIGIN_LENGTH:
        return None
    match = _SERIALIZED_ORIGIN.fullmatch(origin)
    if match is None:
        return None
    scheme, host, port = match.group("scheme", "host", "port")
    if port is not None:
        port_number = int(port)
        if port_number > 65535 or DEFAULT_PORTS.get(scheme.decode("ascii")) == port_number:
            return None
    if host.startswith(b"["):
        try:
            address6 = ipaddress.IPv6Address(host[1:-1].decode("ascii"))
        except ValueError:
            return None
        if address6.compressed.encode("ascii") != host[1:-1]:
            return None
    elif len(host) > MAX_HOST_LENGTH:
        return None
    elif _NUMERIC_LABEL.fullmatch(host.rpartition(b".")[2]):
        try:
            address4 = ipaddress.IPv4Address(host.decode("ascii"))
        except ValueError:
            return None
        if str(address4).encode("ascii") != host:
            return None
    return origin.decode("ascii")


class CorsPolicy:
    """The CORS decisions of one route, with every response field encoded in advance.

    Returned lists are new on each call, so a caller may extend them.
    """

    __slots__ = (
        "_allow_headers",
        "_allow_methods",
        "_any_origin",
        "_cache",
        "_credentials",
        "_exact",
        "_expose",
        "_patterns",
        "_preflight_fields",
    )

    def __init__(self, config: CorsConfig) -> None:
        self._credentials: Fields = (
            ((b"Access-Control-Allow-Credentials", b"true"),) if config.allow_credentials else ()
        )
        self._expose: Fields = (
            ((b"Access-Control-Expose-Headers", ", ".join(config.expose_headers).encode()),)
            if config.expose_headers
            else ()
        )
        self._allow_methods = frozenset(method.encode() for method in config.allow_methods)
        self._allow_headers = frozenset(name.lower().encode() for name in config.allow_headers)
        preflight: list[tuple[bytes, bytes]] = [
            (b"Access-Control-Allow-Methods", ", ".join(config.allow_methods).encode())
        ]
        if config.allow_headers:
            preflight.append(
                (b"Access-Control-Allow-Headers", ", ".join(config.allow_headers).encode())
            )
        preflight.append((b"Access-Control-Max-Age", str(int(config.max_age)).encode()))
        preflight.append(_VARY_PREFLIGHT)
        self._preflight_fields: Fields = tuple(preflight)

        self._any_origin = ANY_ORIGIN in config.allow_origins
        self._patterns = config.allow_origin_patterns
        # Allowed origin -> its Access-Control-Allow-Origin and Allow-Credentials fields.
        self._exact: dict[bytes, Fields] = {}
        for origin in config.allow_origins:
            if origin != ANY_ORIGIN:
                self._exact[origin.encode()] = self._allow_fields(origin.encode())
        # Other origins -> their fields, or None when not allowed.
        self._cache: dict[bytes, Fields | None] = {}

    @staticmethod
    def is_preflight(method: str, origin: bytes | None, request_method: bytes | None) -> bool:
        """Return whether a request is a CORS preflight: OPTIONS with both fields present."""
        return method == "OPTIONS" and origin is not None and request_method is not None

    def preflight(
        self,
        method: str,
        origin: bytes | None,
        request_method: bytes | None,
        request_headers: bytes | None,
    ) -> list[tuple[bytes, bytes]] | None:
        """Return the fields of the 204 response to an allowed preflight, or None.

        None means the request is not a preflight, or its origin, its
        Access-Control-Request-Method or one of its
        Access-Control-Request-Headers is not allowed. The gateway then
        responds to a preflight without CORS fields, and the browser blocks
        the actual request.
        """
        if method != "OPTIONS" or origin is None or request_method is None:
            return None
        allowed = self._allowed(origin)
        if allowed is None or request_method not in self._allow_methods:
            return None
        if request_headers and not self._headers_allowed(request_headers):
            return None
        return [*allowed, *self._preflight_fields]

    def response_fields(self, origin: bytes | None) -> list[tuple[bytes, bytes]]:
        """Return the CORS fields of an actual (non-preflight) response.

        An allowed origin is reflected with the credentials and expose
        fields as configured. `Vary: Origin` is always included, because a
        cached response for one origin must not be served to another.
        """
        if origin is None:
            return [VARY_ORIGIN]
        allowed = self._allowed(origin)
        if allowed is None:
            return [VARY_ORIGIN]
        return [*allowed, *self._expose, VARY_ORIGIN]

    def _allowed(self, origin: bytes) -> Fields | None:
        fields = self._exact.get(origin)
        if fields is not None:
            return fields
        try:
            return self._cache[origin]
        except KeyError:
            pass
        fields = self._decide(origin)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[origin] = fields
        return fields

    def _decide(self, origin: bytes) -> Fields | None:
        """Return the fields for an origin outside the exact list, or None if not allowed."""
        if origin == NULL_ORIGIN.encode():
            return None  # allowed only when listed, so found in the exact list
        text = parse_serialized_origin(origin)
        if text is None:
            return None
        if self._any_origin:
            return ((b"Access-Control-Allow-Origin", b"*"),)
        for pattern in self._patterns:
            if pattern.fullmatch(text):
                return self._allow_fields(origin)
        return None

    def _allow_fields(self, origin: bytes) -> Fields:
        return ((b"Access-Control-Allow-Origin", origin), *self._credentials)

    def _headers_allowed(self, request_headers: bytes) -> bool:
        allowed = self._allow_headers
        for item in request_headers.split(b","):
            name = item.strip(b" \t").lower()
            # An empty list element is allowed by RFC 9110's list syntax.
            if name and name not in allowed:
                return False
        return True


class CorsLayer:
    """Respond to CORS preflights, and add the CORS fields to the responses of a route.

    It runs after the route's per-IP limits, so preflights count against
    them, and before authentication, because browsers send no credentials
    on a preflight. An OPTIONS request that is not a preflight is refused
    with 405 unless the route lists OPTIONS among its methods.
    """

    name = "cors"

    def __init__(self, policies: Mapping[str, CorsPolicy]) -> None:
        self.policies = policies

    def applies_to(self, route: CompiledRoute) -> bool:
        return route.name in self.policies

    def check_head(self, exchange: Exchange) -> None:
        route = exchange.route
        assert route is not None
        policy = self.policies[route.name]
        origin = _request_origin(exchange)
        if exchange.method == "OPTIONS" and not (route.methods and "OPTIONS" in route.methods):
            request_methods = exchange.header_values(b"access-control-request-method")
            request_method = request_methods[0] if len(request_methods) == 1 else None
            if not policy.is_preflight(exchange.method, origin, request_method):
                raise MethodNotAllowed(
                    "cors",
                    "OPTIONS is allowed on this route for CORS preflights only",
                    headers=(("Allow", ", ".join(sorted(route.methods))),),
                )
            request_headers = b", ".join(exchange.header_values(b"access-control-request-headers"))
            fields = policy.preflight(exchange.method, origin, request_method, request_headers)
            granted = fields if fields is not None else [_VARY_PREFLIGHT]
            raise LocalResponse(204, b"", headers=_text_fields(granted))
        add_response_fields(exchange, policy)


def add_response_fields(exchange: Exchange, policy: CorsPolicy) -> None:
    """Add the CORS fields of `exchange`'s response, once."""
    if exchange.cors_added:
        return
    exchange.cors_added = True
    fields = policy.response_fields(_request_origin(exchange))
    if exchange.response_headers:
        exchange.response_headers = [*exchange.response_headers, *fields]
    else:
        exchange.response_headers = fields


def _request_origin(exchange: Exchange) -> bytes | None:
    """Return the request's Origin, or None without one.

    More than one Origin field has no single reading, so it becomes a value
    that no policy allows.
    """
    origins = exchange.header_values(b"origin")
    if not origins:
        return None
    if len(origins) > 1:
        return b"\x00"
    return origins[0]


def _text_fields(fields: Sequence[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    return tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in fields)
