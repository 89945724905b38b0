"""Path mutations against every protected route of the demo: the same decision, or 400.

Each mutation is a way a path can be written differently while some
backend reads it as the original. The gateway must either refuse the
mutated request or decide it exactly as the canonical path, and the
backend must never receive a protected path without that decision.
"""

from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringwall.demo.backend import DemoBackend
from ringwall.errors import BadRequest
from ringwall.http.canonical import canonical_path
from tests.support.client import request
from tests.support.demo_gateway import running_demo, without_limits
from tests.support.gateway_thread import GatewayThread

# The caller owns acc-1001 and has role customer, so these paths must stay refused.
PROTECTED = [
    "/api/admin/users",
    "/api/admin/audit",
    "/api/accounts/acc-2002",
    "/api/accounts/acc-2002/transactions",
    "/api/partner/rates",
]
ALLOWED = [
    "/api/accounts/acc-1001",
    "/api/accounts/acc-1001/transactions",
    "/api/orders",
    "/api/orders/ord-5001",
    "/api/products/p-100",
]


def _second_slash(path: str, replacement: str) -> str:
    index = path.index("/", 1)
    return path[:index] + replacement + path[index + 1 :]


def _encode_char(path: str, escape: str) -> str:
    return path[:5] + escape + path[6:]  # the "a" or "p" after "/api/"


MUTATIONS: dict[str, Callable[[str], str]] = {
    "dot-segment": lambda p: _second_slash(p, "/./"),
    "double-slash": lambda p: _second_slash(p, "//"),
    "dot-dot": lambda p: _second_slash(p, "/x/../"),
    "encoded-dot-lower": lambda p: _second_slash(p, "/%2e/"),
    "encoded-dot-upper": lambda p: _second_slash(p, "/%2E/"),
    "encoded-dot-dot": lambda p: _second_slash(p, "/x/%2e%2e/"),
    "encoded-slash": lambda p: _second_slash(p, "%2f"),
    "encoded-backslash": lambda p: _second_slash(p, "%5c"),
    "encoded-nul": lambda p: _second_slash(p, "%00/"),
    "encoded-semicolon": lambda p: _second_slash(p, "%3b/"),
    "encoded-question": lambda p: _second_slash(p, "%3f/"),
    "encoded-hash": lambda p: _second_slash(p, "%23/"),
    "dot-dot-semicolon": lambda p: _second_slash(p, "/x/..;/"),
    "trailing-dot": lambda p: p + ".",
    "trailing-space": lambda p: p + "%20",
    "upper-case": lambda p: p.upper(),
    "unreserved-escape": lambda p: _encode_char(p, "%" + format(ord(p[5]), "02x")),
    "double-encoding": lambda p: _second_slash(p, "%252f"),
}


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayThread, DemoBackend, str]]:
    # Hundreds of requests from one address would trip the demo's ban rule and limits.
    with running_demo(tmp_path_factory.mktemp("demo-paths"), adjust=without_limits) as demo:
        token = demo.issuer.mint("alice", roles=("customer",), accounts=("acc-1001",))
        yield demo.gateway, demo.backend, token


def status(gateway: GatewayThread, target: str, token: str) -> int:
    raw = b"GET %b HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %b\r\n\r\n" % (
        target.encode(),
        token.encode(),
    )
    return request(gateway.port, raw).status


def canonical(target: str) -> str | None:
    try:
        return canonical_path(target.encode())
    except BadRequest:
        return None


@pytest.mark.parametrize("path", PROTECTED + ALLOWED)
@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_mutation_decided_as_canonical(
    setup: tuple[GatewayThread, DemoBackend, str], path: str, mutation: str
) -> None:
    gateway, backend, token = setup
    target = MUTATIONS[mutation](path)
    before = len(backend.received)
    got = status(gateway, target, token)
    received = [r.target for r in backend.received[before:] if r.target != "/health"]
    form = canonical(target)
    if form is None:
        assert got == 400
        assert received == []
        return
    assert got == status(gateway, form, token)
    if path in PROTECTED:
        assert got in (401, 403, 404, 405)
        assert received == []
    for forwarded in received:
        assert forwarded == form


@pytest.mark.parametrize("path", PROTECTED)
def test_protected_paths_refused(setup: tuple[GatewayThread, DemoBackend, str], path: str) -> None:
    gateway, _, token = setup
    assert status(gateway, path, token) in (401, 403)


@pytest.mark.parametrize(
    "target",
    [
        "/info/../api/admin/users",
        "/api/%2e%2e/api/admin/users",
        "/api/admin%2Fusers",
        "/api/admin%5Cusers",
        "/api/admin%252Fusers",
        "/api/admin%00/x",
        "/api/admin%3b/x",
        "/api/admin%3F/x",
        "/api/admin%23/x",
    ],
)
def test_published_bypasses_refused(
    setup: tuple[GatewayThread, DemoBackend, str], target: str
) -> None:
    gateway, backend, token = setup
    before = len(backend.received)
    assert status(gateway, target, token) in (400, 403, 404)
    assert [r for r in backend.received[before:] if r.target != "/health"] == []


PIECES = [
    "api",
    "admin",
    "users",
    "accounts",
    "acc-1001",
    "acc-2002",
    "orders",
    "ord-5001",
    "audit",
    "partner",
    "/",
    "//",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2f",
    "%5c",
    "%00",
    "%3b",
    ";",
    "%25",
    "%41",
    "%61",
    "%c3%a9",
    "\u00e9",
    "~",
    "%7e",
    "A",
    "x",
]


@settings(derandomize=True, max_examples=300, deadline=None)
@given(parts=st.lists(st.sampled_from(PIECES), min_size=1, max_size=8))
def test_any_path_decided_as_its_canonical_form(
    setup: tuple[GatewayThread, DemoBackend, str], parts: list[str]
) -> None:
    gateway, backend, token = setup
    target = "/" + "".join(parts)
    before = len(backend.received)
    got = status(gateway, target, token)
    received = [r.target for r in backend.received[before:] if r.target != "/health"]
    form = canonical(target)
    if form is None or got == 400:
        # Rejected, by the canonical rules or earlier by the HTTP parser (raw UTF-8).
        assert got == 400
        assert received == []
        return
    assert got == status(gateway, form, token)
    assert all(forwarded == form for forwarded in received)
