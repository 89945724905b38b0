"""Match a request's host, path and method to a configured route.

Precedence, most specific first: an exact host beats a `*.` wildcard, which
beats a route for any host. Then an exact path beats a template, which beats
a prefix, and a longer literal beats a shorter one. Ties go to the route
listed first. A path that matches only routes for other methods gets 405.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from ringwall.config.model import Route
from ringwall.errors import BadRequest, MethodNotAllowed, NotFound, excerpt
from ringwall.http.canonical import canonical_path

if TYPE_CHECKING:
    from ringwall.exchange import Exchange
    from ringwall.pipeline import Layer

LAYER = "routing"

_HOST_RANK = {"exact": 0, "wildcard": 1, "any": 2}
_PATH_RANK = {"exact": 0, "template": 1, "prefix": 2}


class CompiledRoute:
    """A route with its matchers prepared for the per-request scan."""

    __slots__ = (
        "exact_hosts",
        "folded",
        "json_name",
        "layers",
        "literal_length",
        "match",
        "methods",
        "name",
        "path",
        "prefix_slash",
        "rank",
        "route",
        "segments",
        "upstream",
        "wildcard_suffixes",
    )

    def __init__(self, route: Route, index: int, hosts: tuple[str, ...] | None = None) -> None:
        hosts = route.hosts if hosts is None else hosts
        self.route = route
        self.name = route.name
        self.json_name = json.dumps(route.name)
        self.upstream = route.upstream
        # The layers after routing that apply to this route; set by the Pipeline.
        self.layers: tuple[Layer, ...] = ()
        # A case-insensitive route matches the case-folded canonical path.
        self.folded = route.case_insensitive
        self.path = route.path.lower() if self.folded else route.path
        self.match = route.match
        self.methods = frozenset(route.methods)
        self.exact_hosts = frozenset(h for h in hosts if not h.startswith("*."))
        self.wildcard_suffixes = tuple(h[1:] for h in hosts if h.startswith("*."))
        self.prefix_slash = self.path if self.path.endswith("/") else self.path + "/"
        # (True, name) for a {name} parameter, (False, text) for a literal segment.
        self.segments: tuple[tuple[bool, str], ...] = tuple(
            (True, segment[1:-1])
            if segment.startswith("{")
            else (False, segment.lower())
            if self.folded
            else (False, segment)
            for segment in route.path.split("/")[1:]
        )
        self.literal_length = len(route.path) - sum(
            len(s) for s in route.path.split("/") if s.startswith("{")
        )
        if self.exact_hosts:
            host_kind = "exact"
        elif self.wildcard_suffixes:
            host_kind = "wildcard"
        else:
            host_kind = "any"
        self.rank = (_HOST_RANK[host_kind], _PATH_RANK[route.match], -self.literal_length, index)

    def matches_host(self, host: str) -> bool:
        if not self.exact_hosts and not self.wildcard_suffixes:
            return True
        if host in self.exact_hosts:
            return True
        return any(
            host.endswith(suffix) and len(host) > len(suffix) for suffix in self.wildcard_suffixes
        )

    def matches_path(self, path: str) -> dict[str, str] | None:
        """Return the template parameters ({} for none) if `path` matches, else None."""
        if self.match == "prefix":
            if path == self.path or path.startswith(self.prefix_slash) or self.path == "/":
                return {}
            return None
        if self.match == "exact":
            return {} if path == self.path else None
        parts = path.split("/")[1:]
        if len(parts) != len(self.segments):
            return None
        params = {}
        for part, (is_param, text) in zip(parts, self.segments, strict=True):
            if is_param:
                if not part:
                    return None
                params[text] = part
            elif part != text:
                return None
        return params

    def upstream_path(self, path: str) -> str:
        if not self.route.strip_prefix or self.path == "/":
            return path
        rest = path[len(self.path.rstrip("/")) :]
        return rest if rest.startswith("/") else "/" + rest


class Router:
    def __init__(self, routes: tuple[Route, ...]) -> None:
        compiled = []
        for index, route in enumerate(routes):
            # A route that lists exact and wildcard hosts becomes two entries, so
            # each ranks by the kind of host that matched.
            exact = tuple(host for host in route.hosts if not host.startswith("*."))
            wildcard = tuple(host for host in route.hosts if host.startswith("*."))
            if exact and wildcard:
                compiled.append(CompiledRoute(route, index, exact))
                compiled.append(CompiledRoute(route, index, wildcard))
            else:
                compiled.append(CompiledRoute(route, index))
        self.routes = tuple(sorted(compiled, key=lambda route: route.rank))
        self.has_folded = any(route.folded for route in self.routes)

    def match(
        self, host: str, path: str, method: str, folded: str | None = None
    ) -> tuple[CompiledRoute, dict[str, str]]:
        """Return the route for a request, or raise `NotFound` or `MethodNotAllowed`.

        `folded` is the case-folded canonical path, which case-insensitive routes match.
        """
        allowed: set[str] = set()
        for route in self.routes:
            if (route.exact_hosts or route.wildcard_suffixes) and not route.matches_host(host):
                continue
            params = route.matches_path(folded if route.folded and folded is not None else path)
            if params is None:
                continue
            if not route.methods or method in route.methods:
                return route, params
            if method == "OPTIONS" and route.route.cors is not None:
                # A CORS preflight. The CORS layer responds to it and rejects other OPTIONS.
                return route, params
            allowed.update(route.methods)
        if allowed:
            raise MethodNotAllowed(
                LAYER,
                f"method {excerpt(method, 16)} is not allowed on this path",
                headers=(("Allow", ", ".join(sorted(allowed))),),
            )
        raise NotFound(LAYER, "no route matches this host and path")


_HOST_CACHE: dict[bytes, str] = {}
_HOST_CACHE_SIZE = 1024


def normalize_host(value: bytes) -> str:
    """Return the Host header's name, lowercased, without trailing dot or port.

    Raises `BadRequest` for userinfo, a path, an invalid port or invalid bytes.
    Results are cached, since nearly every request of a gateway names one of
    a few hosts; only valid values are cached.
    """
    host = _HOST_CACHE.get(value)
    if host is None:
        host = _parse_host(value)
        if len(_HOST_CACHE) >= _HOST_CACHE_SIZE:
            _HOST_CACHE.clear()
        _HOST_CACHE[value] = host
    return host


def _parse_host(value: bytes) -> str:
    try:
        text = value.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        raise BadRequest("protocol", "the Host header must be ASCII") from None
    if not text:
        raise BadRequest("protocol", "the Host header is empty")
    if any(ch in text for ch in "@/\\?# ") or any(ch < " " or ch == "\x7f" for ch in text):
        raise BadRequest("protocol", f"invalid Host header '{excerpt(text)}'")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise BadRequest("protocol", f"invalid Host header '{excerpt(text)}'")
        host, port = text[: end + 1], text[end + 1 :]
    else:
        host, colon, port_digits = text.partition(":")
        port = colon + port_digits
    if port:
        digits = port[1:]
        if not port.startswith(":") or not digits.isdigit() or not 0 < int(digits) <= 65535:
            raise BadRequest("protocol", f"invalid port in Host header '{excerpt(text)}'")
    name = host.rstrip(".")
    if not name:
        raise BadRequest("protocol", f"the Host header has an empty name: '{excerpt(text)}'")
    return name


class RoutingLayer:
    """Pick the route for a request; the request's host and path are already normalized."""

    name = LAYER

    def __init__(self, router: Router) -> None:
        self.router = router

    def check_head(self, exchange: Exchange) -> None:
        folded = None
        if self.router.has_folded:
            folded = canonical_path(exchange.target.partition(b"?")[0], lowercase=True)
        route, params = self.router.match(exchange.host, exchange.path, exchange.method, folded)
        if route.folded and folded is not None:
            # One meaning everywhere: later checks and the upstream see the folded path.
            exchange.path = folded
        exchange.route = route
        exchange.params = params
        exchange.upstream_path = route.upstream_path(exchange.path)
        if exchange.upgrade is not None and not upgrade_allowed(exchange.upgrade, route):
            # Forwarded as a plain request: the Upgrade field is hop-by-hop and is
            # dropped, so no unlisted protocol (such as h2c) can open a tunnel.
            exchange.upgrade = None


def upgrade_allowed(value: bytes, route: CompiledRoute) -> bool:
    """Return True if the first protocol in an Upgrade value is one the route allows."""
    first = value.split(b",", 1)[0].strip().split(b"/", 1)[0].lower()
    return first.decode("ascii", "replace") in route.route.upgrades


def host_matcher(patterns: tuple[str, ...]) -> Callable[[str], bool] | None:
    """Return a test for normalized host names against exact names and "*.suffix" patterns.

    None when `patterns` is empty: every host is served.
    """
    if not patterns:
        return None
    exact = frozenset(pattern for pattern in patterns if not pattern.startswith("*."))
    suffixes = tuple(pattern[1:] for pattern in patterns if pattern.startswith("*."))

    def matches(host: str) -> bool:
        return host in exact or any(
            host.endswith(suffix) and len(host) > len(suffix) for suffix in suffixes
        )

    return matches
