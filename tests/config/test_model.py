"""Tests for ringwall.config.model: route, upstream and server rules, and immutability."""

import ipaddress
from typing import Any

import pytest
from pydantic import ValidationError

from ringwall.config import Config, Route, Upstream
from ringwall.config.model import (
    ActiveHealth,
    ClientLimits,
    LogConfig,
    ServerConfig,
    Target,
    normalize_host_pattern,
)


def make_route(**fields: Any) -> Route:
    fields.setdefault("upstream", "api")
    fields.setdefault("auth", "none")
    return Route(**fields)


def make_upstream(**fields: Any) -> Upstream:
    fields.setdefault("targets", ["http://127.0.0.1:9000"])
    return Upstream(**fields)


@pytest.mark.parametrize(
    "path",
    ["/", "/api", "/api/", "/api/v1/users", "/a-b_c.d~e", "/a;b=c", "/files/.well-known", "/x..y"],
)
def test_route_path_valid(path: str) -> None:
    assert make_route(path=path).path == path


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "starts with /"),
        ("api", "starts with /"),
        ("api/x", "starts with /"),
        ("/a b", "plain path"),
        ("/a\tb", "plain path"),
        ("/a\x7f", "plain path"),
        ("/a?b", "plain path"),
        ("/a#b", "plain path"),
        ("/a\\b", "plain path"),
        ("/a%2Fb", "plain path"),
        ("/a%", "plain path"),
        ("/..", "normalized path"),
        ("/a/../b", "normalized path"),
        ("/a/./b", "normalized path"),
        ("/a/.", "normalized path"),
        ("//a", "normalized path"),
        ("/a//b", "normalized path"),
        ("/a/b//", "normalized path"),
    ],
)
def test_route_path_invalid(path: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make_route(path=path)


@pytest.mark.parametrize("path", ["/accounts/{id}", "/{tenant}/items/{item_id}", "/a/{_x1}/"])
def test_template_valid(path: str) -> None:
    assert make_route(path=path, match="template").path == path


@pytest.mark.parametrize("match", ["prefix", "exact"])
def test_params_need_template(match: str) -> None:
    with pytest.raises(ValidationError, match="needs match: template"):
        make_route(path="/accounts/{id}", match=match)


@pytest.mark.parametrize(
    "path",
    [
        "/accounts/id{id}",
        "/accounts/{id}.json",
        "/a/{}",
        "/a/{1id}",
        "/a/{id",
        "/a/id}",
        "/a/{a-b}",
    ],
)
def test_template_whole_segment(path: str) -> None:
    with pytest.raises(ValidationError, match="a parameter fills a whole segment"):
        make_route(path=path, match="template")


def test_template_without_params() -> None:
    assert make_route(path="/plain", match="template").match == "template"


def test_strip_prefix_with_prefix() -> None:
    assert make_route(path="/api", strip_prefix=True).strip_prefix is True


@pytest.mark.parametrize(
    ("path", "match"),
    [("/api", "exact"), ("/api/{id}", "template")],
)
def test_strip_prefix_other_match(path: str, match: str) -> None:
    with pytest.raises(ValidationError, match="strip_prefix needs match: prefix"):
        make_route(path=path, match=match, strip_prefix=True)


def test_match_kind_invalid() -> None:
    with pytest.raises(ValidationError, match="match"):
        make_route(path="/", match="regex")


@pytest.mark.parametrize(
    ("hosts", "normalized"),
    [
        (["api.example.com"], ("api.example.com",)),
        (["API.Example.COM"], ("api.example.com",)),
        (["api.example.com."], ("api.example.com",)),
        (["*.Example.com"], ("*.example.com",)),
        ("api.example.com", ("api.example.com",)),
        (["localhost", "127.0.0.1"], ("localhost", "127.0.0.1")),
        (["xn--bcher-kva.example"], ("xn--bcher-kva.example",)),
        (["a" * 63 + ".com"], ("a" * 63 + ".com",)),
        ([], ()),
    ],
)
def test_hosts_normalized(hosts: Any, normalized: tuple[str, ...]) -> None:
    assert make_route(path="/", hosts=hosts).hosts == normalized


@pytest.mark.parametrize(
    "host",
    [
        "",
        ".",
        "*",
        "*.",
        "*example.com",
        "a.*.example.com",
        "*.*.example.com",
        "api.example.com:8080",
        "user@example.com",
        "exa_mple.com",
        "exa mple.com",
        "-api.example.com",
        "api-.example.com",
        "a..example.com",
        "a" * 64 + ".com",
        "bücher.example",
    ],
)
def test_hosts_invalid(host: str) -> None:
    with pytest.raises(ValidationError, match="invalid host"):
        make_route(path="/", hosts=[host])


def test_hosts_not_list() -> None:
    with pytest.raises(ValidationError, match="expected a list of host names"):
        make_route(path="/", hosts={"a": 1})


def test_host_pattern_function() -> None:
    assert normalize_host_pattern("*.API.example.com.") == "*.api.example.com"


@pytest.mark.parametrize(
    ("methods", "normalized"),
    [
        (["get", "Post"], ("GET", "POST")),
        (("DELETE",), ("DELETE",)),
        (["m-search"], ("M-SEARCH",)),
        ([], ()),
    ],
)
def test_methods_uppercased(methods: Any, normalized: tuple[str, ...]) -> None:
    assert make_route(path="/", methods=methods).methods == normalized


def test_methods_single_string() -> None:
    assert make_route(path="/", methods="get").methods == ("GET",)


@pytest.mark.parametrize("methods", [None, {"GET": 1}])
def test_methods_not_list(methods: object) -> None:
    with pytest.raises(ValidationError, match="expected a list of methods"):
        make_route(path="/", methods=methods)


@pytest.mark.parametrize("method", ["GE T", "", "GET\r\n", "GET/1", "(GET)"])
def test_methods_invalid(method: str) -> None:
    with pytest.raises(ValidationError, match="invalid method"):
        make_route(path="/", methods=[method])


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("http://127.0.0.1:9000", "127.0.0.1", 9000),
        ("http://127.0.0.1:9000/", "127.0.0.1", 9000),
        ("http://backend", "backend", 80),
        ("http://Backend.Internal:8080", "backend.internal", 8080),
        ("http://[::1]:9000", "::1", 9000),
        ("http://[::1]", "::1", 80),
        ("HTTP://backend:1", "backend", 1),
        ("http://backend:65535", "backend", 65535),
    ],
)
def test_target_url_valid(url: str, host: str, port: int) -> None:
    target = make_upstream(targets=[url]).targets[0]

    assert target.host == host
    assert target.port == port


def test_target_single_string() -> None:
    upstream = make_upstream(targets="http://backend:9000")

    assert upstream.targets == (Target(host="backend", port=9000),)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://backend", "unsupported target"),
        ("backend:9000", "unsupported target"),
        ("//backend:9000", "unsupported target"),
        ("", "unsupported target"),
        ("http://backend:9000/api", "no path"),
        ("http://backend:9000/api/", "no path"),
        ("http://user@backend:9000", "no path"),
        ("http://user:pass@backend:9000", "no path"),
        ("http://backend:9000?x=1", "no path"),
        ("http://backend:99999", "invalid port"),
        ("http://backend:port", "invalid port"),
        ("http://:9000", "missing host"),
        ("http://", "missing host"),
    ],
)
def test_target_url_invalid(url: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make_upstream(targets=[url])


def test_target_port_zero() -> None:
    with pytest.raises(ValidationError, match="invalid port"):
        make_upstream(targets=["http://backend:0"])


def test_target_fragment() -> None:
    with pytest.raises(ValidationError, match="backend:9000#frag"):
        make_upstream(targets=["http://backend:9000#frag"])


@pytest.mark.parametrize("targets", [[], ()])
def test_targets_empty(targets: object) -> None:
    with pytest.raises(ValidationError, match="at least 1"):
        make_upstream(targets=targets)


def test_targets_not_list() -> None:
    with pytest.raises(ValidationError, match="expected a list of target URLs"):
        make_upstream(targets=9000)


@pytest.mark.parametrize(
    ("host", "authority"),
    [("10.0.0.1", "10.0.0.1:80"), ("backend", "backend:80"), ("::1", "[::1]:80")],
)
def test_target_authority(host: str, authority: str) -> None:
    assert Target(host=host, port=80).authority == authority


@pytest.mark.parametrize("retries", [-1, 6])
def test_upstream_retries_bounds(retries: int) -> None:
    with pytest.raises(ValidationError, match="retries"):
        make_upstream(retries=retries)


def test_upstream_balance_invalid() -> None:
    with pytest.raises(ValidationError, match="balance"):
        make_upstream(balance="random")


@pytest.mark.parametrize("path", ["health", "/he alth", "/health\x7f", ""])
def test_health_path_invalid(path: str) -> None:
    with pytest.raises(ValidationError, match="absolute path"):
        ActiveHealth(path=path)


@pytest.mark.parametrize(("workers", "expected"), [(1, 1), (256, 256), ("auto", "auto")])
def test_workers_valid(workers: object, expected: object) -> None:
    assert ServerConfig(workers=workers).workers == expected


@pytest.mark.parametrize("workers", [0, -1, 257, 1000])
def test_workers_out_of_range(workers: int) -> None:
    with pytest.raises(ValidationError, match="from 1 to 256"):
        ServerConfig(workers=workers)


@pytest.mark.parametrize("workers", ["many", "AUTO", None, 1.5])
def test_workers_invalid(workers: object) -> None:
    with pytest.raises(ValidationError, match="workers"):
        ServerConfig(workers=workers)


def test_workers_boolean_rejected() -> None:
    with pytest.raises(ValidationError, match="workers"):
        ServerConfig(workers=True)


def test_worker_count_explicit() -> None:
    assert ServerConfig(workers=3).worker_count() == 3


def test_worker_count_auto() -> None:
    assert ServerConfig(workers="auto").worker_count() >= 1


@pytest.mark.parametrize(
    ("entries", "networks"),
    [
        (["10.0.0.0/8"], ["10.0.0.0/8"]),
        (["10.1.2.3/8"], ["10.0.0.0/8"]),
        (["192.168.1.1"], ["192.168.1.1/32"]),
        (["::1"], ["::1/128"]),
        (["fd00::/8", "127.0.0.1"], ["fd00::/8", "127.0.0.1/32"]),
        ((), []),
    ],
)
def test_trusted_proxies_parsed(entries: object, networks: list[str]) -> None:
    parsed = ServerConfig(trusted_proxies=entries).trusted_proxies

    assert [str(network) for network in parsed] == networks


def test_trusted_proxies_types() -> None:
    parsed = ServerConfig(trusted_proxies=["10.0.0.0/8", "::1"]).trusted_proxies

    assert isinstance(parsed[0], ipaddress.IPv4Network)
    assert isinstance(parsed[1], ipaddress.IPv6Network)


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "not-an-ip", "10.0.0", "", "::1/129"])
def test_trusted_proxies_invalid(entry: str) -> None:
    with pytest.raises(ValidationError, match="invalid IP address or CIDR range"):
        ServerConfig(trusted_proxies=[entry])


def test_trusted_proxies_not_list() -> None:
    with pytest.raises(ValidationError, match="expected a list of IP addresses"):
        ServerConfig(trusted_proxies="10.0.0.0/8")


@pytest.mark.parametrize("header", ["X-Request-Id", "X-Trace_Id", "request.id"])
def test_request_id_header_valid(header: str) -> None:
    assert ServerConfig(request_id_header=header).request_id_header == header


@pytest.mark.parametrize("header", ["", "X Request", "X-Id:", "X-Id\r\nX-Evil: 1"])
def test_request_id_header_invalid(header: str) -> None:
    with pytest.raises(ValidationError, match="HTTP header name"):
        ServerConfig(request_id_header=header)


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_request_target_bytes", 63), ("max_header_count", 0), ("max_header_bytes", 255)],
)
def test_limits_lower_bounds(field: str, value: int) -> None:
    with pytest.raises(ValidationError, match=field):
        ClientLimits(**{field: value})


def test_config_assignment_raises() -> None:
    config = Config()

    with pytest.raises(ValidationError, match="frozen"):
        config.server = ServerConfig()  # type: ignore[misc]


def test_nested_assignment_raises() -> None:
    config = Config()

    with pytest.raises(ValidationError, match="frozen"):
        config.server.limits.max_body_bytes = 1  # type: ignore[misc]


def test_route_assignment_raises() -> None:
    route = make_route(path="/")

    with pytest.raises(ValidationError, match="frozen"):
        route.path = "/admin"  # type: ignore[misc]


def test_routes_tuple_immutable() -> None:
    config = Config(upstreams={"api": make_upstream()}, routes=[make_route(path="/")])

    assert isinstance(config.routes, tuple)


def test_unknown_field_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ServerConfig(listn="127.0.0.1:80")  # type: ignore[call-arg]


def test_route_names_default() -> None:
    routes = [make_route(path="/a"), make_route(path="/b", name="bee"), make_route(path="/c")]

    config = Config(upstreams={"api": make_upstream()}, routes=routes)

    assert [route.name for route in config.routes] == ["routes[0]", "bee", "routes[2]"]


def test_route_names_duplicate() -> None:
    routes = [make_route(path="/a", name="x"), make_route(path="/b", name="x")]

    with pytest.raises(ValidationError, match="duplicate route name 'x'"):
        Config(upstreams={"api": make_upstream()}, routes=routes)


def test_route_name_clashes_default() -> None:
    routes = [make_route(path="/a"), make_route(path="/b", name="routes[0]")]

    with pytest.raises(ValidationError, match="duplicate route name"):
        Config(upstreams={"api": make_upstream()}, routes=routes)


@pytest.mark.parametrize(
    "target",
    [{"host": "a b/c", "port": 80}, {"host": "backend", "port": 0}, {"host": "x", "port": 999999}],
)
def test_target_mapping_validated(target: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Upstream(targets=[target])


def test_workers_invalid_one_error() -> None:
    with pytest.raises(ValidationError) as info:
        ServerConfig(workers="many")
    assert len(info.value.errors()) == 1


def test_log_level_any_case() -> None:
    assert LogConfig(level="INFO").level == "info"
