"""Tests for ringwall.gateway.routing: route precedence, 404 and 405, and Host normalization."""

from typing import Any, cast

import pytest

from ringwall.config import Route
from ringwall.errors import BadRequest, MethodNotAllowed, NotFound
from ringwall.exchange import Exchange
from ringwall.gateway.routing import CompiledRoute, Router, RoutingLayer, normalize_host
from ringwall.http.target import split_target
from ringwall.runtime import Runtime


def make_route(name: str, path: str, **fields: Any) -> Route:
    fields.setdefault("auth", "none")
    return Route(name=name, path=path, upstream="api", **fields)


def matched(routes: list[Route], host: str, path: str, method: str = "GET") -> str:
    route, _ = Router(tuple(routes)).match(host, path, method)
    return route.name


def compiled(path: str, **fields: Any) -> CompiledRoute:
    return CompiledRoute(make_route("r", path, **fields), 0)


@pytest.mark.parametrize("order", [1, -1])
def test_exact_host_beats_wildcard(order: int) -> None:
    routes = [
        make_route("wildcard", "/", hosts=["*.example.com"]),
        make_route("exact", "/", hosts=["api.example.com"]),
    ][::order]

    assert matched(routes, "api.example.com", "/") == "exact"


@pytest.mark.parametrize("order", [1, -1])
def test_wildcard_beats_any_host(order: int) -> None:
    routes = [
        make_route("any", "/"),
        make_route("wildcard", "/", hosts=["*.example.com"]),
    ][::order]

    assert matched(routes, "api.example.com", "/") == "wildcard"


@pytest.mark.parametrize("order", [1, -1])
def test_host_beats_path_kind(order: int) -> None:
    routes = [
        make_route("any-exact", "/users", match="exact"),
        make_route("host-prefix", "/", hosts=["api.example.com"]),
    ][::order]

    assert matched(routes, "api.example.com", "/users") == "host-prefix"


def test_exact_beats_mixed_wildcard() -> None:
    routes = [
        make_route("mixed", "/", hosts=["www.example.com", "*.example.com"]),
        make_route("exact", "/", hosts=["api.example.com"]),
    ]

    assert matched(routes, "api.example.com", "/") == "exact"


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("api.example.com", "wildcard"),
        ("a.b.example.com", "wildcard"),
        ("example.com", "any"),
        ("badexample.com", "any"),
        ("api.example.org", "any"),
    ],
)
def test_wildcard_host_match(host: str, name: str) -> None:
    routes = [make_route("wildcard", "/", hosts=["*.example.com"]), make_route("any", "/")]

    assert matched(routes, host, "/") == name


def test_host_only_routes_404() -> None:
    routes = [make_route("exact", "/", hosts=["api.example.com"])]

    with pytest.raises(NotFound):
        matched(routes, "other.example.com", "/")


@pytest.mark.parametrize("order", [1, -1])
def test_exact_path_beats_template(order: int) -> None:
    routes = [
        make_route("template", "/users/{id}", match="template"),
        make_route("exact", "/users/me", match="exact"),
    ][::order]

    assert matched(routes, "h", "/users/me") == "exact"


@pytest.mark.parametrize("order", [1, -1])
def test_template_beats_prefix(order: int) -> None:
    routes = [
        make_route("prefix", "/users/42"),
        make_route("template", "/users/{id}", match="template"),
    ][::order]

    assert matched(routes, "h", "/users/42") == "template"


@pytest.mark.parametrize("order", [1, -1])
def test_longer_prefix_wins(order: int) -> None:
    routes = [
        make_route("short", "/api"),
        make_route("long", "/api/admin"),
        make_route("root", "/"),
    ][::order]

    assert matched(routes, "h", "/api/admin/users") == "long"
    assert matched(routes, "h", "/api/users") == "short"
    assert matched(routes, "h", "/other") == "root"


def test_longer_template_wins() -> None:
    routes = [
        make_route("short", "/{a}/{b}", match="template"),
        make_route("long", "/users/{id}", match="template"),
    ]

    assert matched(routes, "h", "/users/7") == "long"


def test_tie_goes_to_first() -> None:
    routes = [make_route("first", "/api"), make_route("second", "/api")]

    assert matched(routes, "h", "/api") == "first"


@pytest.mark.parametrize(
    ("path", "matches"),
    [
        ("/api", True),
        ("/api/", True),
        ("/api/x", True),
        ("/api/x/y", True),
        ("/apix", False),
        ("/ap", False),
        ("/", False),
        ("/API", False),
    ],
)
def test_prefix_segment_boundary(path: str, matches: bool) -> None:
    assert (compiled("/api").matches_path(path) is not None) is matches


@pytest.mark.parametrize(
    ("path", "matches"),
    [("/api/", True), ("/api/x", True), ("/api", False), ("/apix", False)],
)
def test_prefix_trailing_slash(path: str, matches: bool) -> None:
    assert (compiled("/api/").matches_path(path) is not None) is matches


@pytest.mark.parametrize("path", ["/", "/x", "/a/b/c"])
def test_root_prefix_matches_all(path: str) -> None:
    assert compiled("/").matches_path(path) == {}


@pytest.mark.parametrize(
    ("path", "matches"),
    [("/api", True), ("/api/", False), ("/api/x", False), ("/apix", False)],
)
def test_exact_path(path: str, matches: bool) -> None:
    assert (compiled("/api", match="exact").matches_path(path) is not None) is matches


@pytest.mark.parametrize(
    ("template", "path", "params"),
    [
        ("/users/{id}", "/users/42", {"id": "42"}),
        ("/users/{id}", "/users/%C3%A9", {"id": "%C3%A9"}),
        ("/{org}/repos/{repo}", "/acme/repos/gw", {"org": "acme", "repo": "gw"}),
        ("/users/{id}/", "/users/42/", {"id": "42"}),
        ("/static", "/static", {}),
    ],
)
def test_template_params(template: str, path: str, params: dict[str, str]) -> None:
    assert compiled(template, match="template").matches_path(path) == params


@pytest.mark.parametrize(
    "path",
    ["/users", "/users/", "/users/42/", "/users/42/x", "/user/42", "/", "/users//"],
)
def test_template_no_match(path: str) -> None:
    assert compiled("/users/{id}", match="template").matches_path(path) is None


def test_router_returns_params() -> None:
    router = Router((make_route("user", "/users/{id}", match="template"),))

    _, params = router.match("h", "/users/42", "GET")

    assert params == {"id": "42"}


def test_method_filter() -> None:
    routes = [
        make_route("read", "/items", methods=["GET", "HEAD"]),
        make_route("write", "/items", methods=["POST"]),
    ]

    assert matched(routes, "h", "/items", "GET") == "read"
    assert matched(routes, "h", "/items", "POST") == "write"


def test_method_falls_to_less_specific() -> None:
    routes = [
        make_route("exact-post", "/items", match="exact", methods=["POST"]),
        make_route("prefix-any", "/items"),
    ]

    assert matched(routes, "h", "/items", "GET") == "prefix-any"


def test_method_not_allowed() -> None:
    routes = [
        make_route("read", "/items", methods=["GET", "HEAD"]),
        make_route("write", "/items", match="exact", methods=["post", "PUT"]),
        make_route("other", "/other", methods=["DELETE"]),
    ]

    with pytest.raises(MethodNotAllowed) as caught:
        matched(routes, "h", "/items", "PATCH")

    assert caught.value.status == 405
    assert caught.value.layer == "routing"
    assert caught.value.headers == (("Allow", "GET, HEAD, POST, PUT"),)


def test_method_in_reason_escaped() -> None:
    routes = [make_route("read", "/items", methods=["GET"])]

    with pytest.raises(MethodNotAllowed) as caught:
        matched(routes, "h", "/items", "X\r\n" + "Y" * 40)

    assert "\r" not in caught.value.reason
    assert "Y" * 17 not in caught.value.reason


def test_not_found() -> None:
    routes = [make_route("api", "/api")]

    with pytest.raises(NotFound) as caught:
        matched(routes, "h", "/apix")

    assert caught.value.status == 404
    assert caught.value.layer == "routing"


def test_no_routes_not_found() -> None:
    with pytest.raises(NotFound):
        Router(()).match("h", "/", "GET")


@pytest.mark.parametrize(
    ("path", "request_path", "upstream_path"),
    [
        ("/api", "/api/users", "/users"),
        ("/api", "/api", "/"),
        ("/api", "/api/", "/"),
        ("/api/", "/api/users", "/users"),
        ("/api/v1", "/api/v1/a/b", "/a/b"),
        ("/", "/users", "/users"),
    ],
)
def test_strip_prefix(path: str, request_path: str, upstream_path: str) -> None:
    route = compiled(path, strip_prefix=True)

    assert route.upstream_path(request_path) == upstream_path


def test_no_strip_prefix() -> None:
    assert compiled("/api").upstream_path("/api/users") == "/api/users"


@pytest.mark.parametrize(
    ("value", "host"),
    [
        (b"example.com", "example.com"),
        (b"Example.COM", "example.com"),
        (b"example.com.", "example.com"),
        (b"example.com:8080", "example.com"),
        (b"Example.com.:443", "example.com"),
        (b"example.com:65535", "example.com"),
        (b"  example.com  ", "example.com"),
        (b"127.0.0.1:80", "127.0.0.1"),
        (b"[::1]", "[::1]"),
        (b"[::1]:8080", "[::1]"),
        (b"[2001:DB8::1]:443", "[2001:db8::1]"),
    ],
)
def test_normalize_host(value: bytes, host: str) -> None:
    assert normalize_host(value) == host


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"   ",
        b"user@example.com",
        b"user:pass@example.com",
        b"example.com/path",
        b"example.com\\x",
        b"example.com?q",
        b"example.com#f",
        b"exa mple.com",
        b"example.com\x00",
        b"example.com\x7f",
        b"example.com:0",
        b"example.com:99999",
        b"example.com:65536",
        b"example.com:x",
        b"example.com:",
        b"example.com:80:80",
        b"example.com:-1",
        b"[::1",
        b"[::1]x",
        b"[::1]:0",
        b"caf\xc3\xa9.com",
        b"\xff",
    ],
)
def test_normalize_host_rejected(value: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        normalize_host(value)

    assert caught.value.layer == "protocol"


@pytest.mark.parametrize("value", [b":80", b".", b"..:80"])
def test_normalize_host_empty_name(value: bytes) -> None:
    with pytest.raises(BadRequest):
        normalize_host(value)


def test_normalize_host_cached_rejection_repeats() -> None:
    for _ in range(2):
        with pytest.raises(BadRequest):
            normalize_host(b"user@example.com")


def _routed(routes: list[Route], target: bytes) -> Exchange:
    exchange = Exchange(cast(Runtime, None), "127.0.0.1", 0.0, 0.0)
    exchange.method = "GET"
    exchange.host = "api.example.test"
    exchange.target = target
    exchange.path, exchange.query = split_target(target)
    RoutingLayer(Router(tuple(routes))).check_head(exchange)
    return exchange


def test_case_insensitive_route_matches_any_case() -> None:
    routes = [make_route("r", "/api/Products", case_insensitive=True)]
    exchange = _routed(routes, b"/API/PRODUCTS/42?Page=2")
    assert exchange.route is not None
    # Later checks and the upstream see the folded path; the query stays as sent.
    assert exchange.path == "/api/products/42"
    assert exchange.upstream_path == "/api/products/42"
    assert exchange.query == b"Page=2"


def test_case_sensitive_route_keeps_case() -> None:
    with pytest.raises(NotFound):
        _routed([make_route("r", "/api/products")], b"/API/products")
    exchange = _routed([make_route("r", "/api/products")], b"/api/products/X")
    assert exchange.path == "/api/products/X"


def test_folded_template_params() -> None:
    routes = [make_route("r", "/Accounts/{account_id}", match="template", case_insensitive=True)]
    exchange = _routed(routes, b"/ACCOUNTS/ACC-1001")
    assert exchange.params == {"account_id": "acc-1001"}
