"""Routes and handlers of the demo backend, independent of the HTTP connection code."""

import asyncio
import copy
import hashlib
import http
import json
import math
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ringwall.demo import data
from ringwall.demo.websocket import HandshakeError, validate_handshake

MAX_STREAM_CHUNKS = 1000
MAX_STREAM_INTERVAL_SECONDS = 5.0
MAX_SLOW_DELAY_SECONDS = 30.0
DEFAULT_STREAM_CHUNKS = 3
DEFAULT_SLOW_DELAY_SECONDS = 1.0


@dataclass(frozen=True)
class ReceivedRequest:
    """One complete request as the backend received it.

    `target` is the request target exactly as sent. `headers` keeps the names in the
    case and order the client sent them, and values are decoded as Latin-1.
    """

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """Return the first value of header `name`, compared case-insensitively."""
        lowercase_name = name.lower()
        matches = (value for key, value in self.headers if key.lower() == lowercase_name)
        return next(matches, None)


@dataclass(frozen=True)
class Reply:
    """A response for the connection code to send.

    The connection code adds Content-Length from `body`, except for status 204 and 304
    and for streamed replies. When `stream` is set, `body` is ignored and the chunks
    are sent with chunked transfer coding.
    """

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    stream: AsyncGenerator[bytes, None] | None = None


@dataclass(frozen=True)
class WebSocketAccept:
    """Accepted WebSocket handshake with the Sec-WebSocket-Accept value to send."""

    accept: str


Outcome = Reply | WebSocketAccept


class BadRequestError(Exception):
    """Invalid query parameter or body, reported to the client with status 400 and the message."""


@dataclass(frozen=True)
class _Call:
    request: ReceivedRequest
    path: str
    query: str
    params: dict[str, str]


_Handler = Callable[[_Call], Awaitable[Outcome]]


@dataclass(frozen=True)
class _Route:
    pattern: re.Pattern[str]
    methods: frozenset[str] | None
    handler: _Handler


JSON_HEADERS = (("Content-Type", "application/json"),)


def encode_json(payload: Any) -> bytes:
    """Encode `payload` as compact UTF-8 JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_reply(status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> Reply:
    """Build a JSON reply."""
    return Reply(status, (*JSON_HEADERS, *headers), encode_json(payload))


def error_reply(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> Reply:
    """Build a JSON error reply such as {"error": "not_found", "message": "..."}."""
    code = http.HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    return json_reply(status, {"error": code, "message": message}, headers)


def split_target(target: str) -> tuple[str, str]:
    """Split a request target into the raw path and the raw query string.

    Absolute-form targets ("http://host/path?q") are reduced to their path and query.
    The asterisk form ("*") is returned as the path.
    """
    if target.startswith("/"):
        path, _, query = target.partition("?")
        return path, query
    parts = urlsplit(target)
    if parts.scheme and parts.netloc:
        return parts.path or "/", parts.query
    return target, ""


def _etag_for(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Apply the weak comparison that RFC 9110 section 13.1.2 requires for If-None-Match."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    candidates = (token.strip().removeprefix("W/") for token in if_none_match.split(","))
    return etag in candidates


def conditional_json_reply(request: ReceivedRequest, payload: Any) -> Reply:
    """Build a JSON reply with an ETag, or 304 when If-None-Match matches it."""
    body = encode_json(payload)
    etag = _etag_for(body)
    if _etag_matches(request.header("if-none-match"), etag):
        return Reply(304, (("ETag", etag),))
    return Reply(200, (*JSON_HEADERS, ("ETag", etag)), body)


def _query_value(query: str, name: str) -> str | None:
    values = parse_qs(query, keep_blank_values=True).get(name)
    return values[-1] if values else None


def query_int(query: str, name: str, default: int, maximum: int) -> int:
    """Parse an integer query parameter in 0..maximum, or raise BadRequestError."""
    raw = _query_value(query, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequestError(f"invalid {name}: {raw!r} is not an integer") from None
    if not 0 <= value <= maximum:
        raise BadRequestError(f"invalid {name}: {value} is outside 0..{maximum}")
    return value


def query_seconds(query: str, name: str, default: float) -> float:
    """Parse a non-negative, finite number of seconds, or raise BadRequestError."""
    raw = _query_value(query, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequestError(f"invalid {name}: {raw!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise BadRequestError(f"invalid {name}: {raw!r} must be a non-negative number")
    return value


async def stream_lines(count: int, interval: float) -> AsyncGenerator[bytes, None]:
    """Yield `count` JSON lines, waiting `interval` seconds between two lines."""
    for index in range(count):
        if index and interval:
            await asyncio.sleep(interval)
        yield encode_json({"chunk": index + 1, "of": count}) + b"\n"


def _parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError:
        raise BadRequestError("invalid request body: expected a JSON object") from None
    if not isinstance(payload, dict):
        raise BadRequestError("invalid request body: expected a JSON object")
    return payload


@dataclass
class _OrderBook:
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_number: int = 5003

    def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        order_id = f"ord-{self.next_number}"
        self.next_number += 1
        client_fields = {key: value for key, value in fields.items() if key not in ("id", "status")}
        order = {"id": order_id, **client_fields, "status": "pending"}
        self.orders[order_id] = order
        return order


class DemoApi:
    """Fintech-style demo API with in-memory data.

    Orders are per instance, so each DemoApi starts from the same sample data.
    Routes match the percent-decoded path, as most web frameworks do, so
    "/api/%61dmin/users" reaches the admin route. The echo route reports the raw path.
    """

    def __init__(self) -> None:
        orders = copy.deepcopy({order["id"]: order for order in data.ORDERS})
        self._order_book = _OrderBook(orders=orders)
        self._routes = self._build_routes()

    def _build_routes(self) -> tuple[_Route, ...]:
        def route(pattern: str, methods: str | None, handler: _Handler) -> _Route:
            allowed = None if methods is None else frozenset(methods.split())
            return _Route(re.compile(pattern), allowed, handler)

        return (
            route(r"/health", "GET", self._health),
            route(r"/openapi\.json", "GET", self._openapi_document),
            route(r"/api/products", "GET", self._list_products),
            route(r"/api/products/(?P<id>[^/]+)", "GET", self._get_product),
            route(r"/api/orders", "GET POST", self._orders),
            route(r"/api/orders/(?P<id>[^/]+)", "GET DELETE", self._order),
            route(r"/api/accounts/(?P<id>[^/]+)", "GET", self._get_account),
            route(r"/api/accounts/(?P<id>[^/]+)/transactions", "GET", self._list_transactions),
            route(r"/api/admin/users", "GET", self._list_admin_users),
            route(r"/api/admin/audit", "GET", self._list_audit_events),
            route(r"/api/partner/rates", "GET", self._partner_rates),
            route(r"/api/internal/status", "GET", self._internal_status),
            route(r"/api/echo(?:/.*)?", None, self._echo),
            route(r"/api/stream", "GET", self._stream),
            route(r"/api/slow", "GET", self._slow),
            route(r"/api/ws", "GET", self._websocket),
        )

    async def handle(self, request: ReceivedRequest) -> Outcome:
        """Route `request` to its handler. Unknown paths get 404 and unsupported methods 405."""
        path, query = split_target(request.target)
        decoded_path = unquote(path)
        for route in self._routes:
            match = route.pattern.fullmatch(decoded_path)
            if match is None:
                continue
            if not _method_allowed(request.method, route.methods):
                return _method_not_allowed(request.method, route.methods)
            try:
                return await route.handler(_Call(request, path, query, match.groupdict()))
            except BadRequestError as error:
                return error_reply(400, str(error))
        return error_reply(404, f"no resource at {path}")

    async def _health(self, call: _Call) -> Outcome:
        return json_reply(200, {"status": "ok"})

    async def _openapi_document(self, call: _Call) -> Outcome:
        return conditional_json_reply(call.request, openapi_document())

    async def _list_products(self, call: _Call) -> Outcome:
        return conditional_json_reply(call.request, {"products": list(data.PRODUCTS)})

    async def _get_product(self, call: _Call) -> Outcome:
        product_id = call.params["id"]
        product = next((item for item in data.PRODUCTS if item["id"] == product_id), None)
        if product is None:
            return error_reply(404, f"product {product_id!r} not found")
        return conditional_json_reply(call.request, product)

    async def _orders(self, call: _Call) -> Outcome:
        if call.request.method == "POST":
            order = self._order_book.create(_parse_json_object(call.request.body))
            return json_reply(201, order, (("Location", f"/api/orders/{order['id']}"),))
        return json_reply(200, {"orders": list(self._order_book.orders.values())})

    async def _order(self, call: _Call) -> Outcome:
        order_id = call.params["id"]
        orders = self._order_book.orders
        if order_id not in orders:
            return error_reply(404, f"order {order_id!r} not found")
        if call.request.method == "DELETE":
            del orders[order_id]
            return Reply(204)
        return json_reply(200, orders[order_id])

    async def _get_account(self, call: _Call) -> Outcome:
        account = data.ACCOUNTS.get(call.params["id"])
        if account is None:
            return error_reply(404, f"account {call.params['id']!r} not found")
        return json_reply(200, account)

    async def _list_transactions(self, call: _Call) -> Outcome:
        account_id = call.params["id"]
        if account_id not in data.ACCOUNTS:
            return error_reply(404, f"account {account_id!r} not found")
        transactions = list(data.TRANSACTIONS.get(account_id, ()))
        return json_reply(200, {"account_id": account_id, "transactions": transactions})

    async def _list_admin_users(self, call: _Call) -> Outcome:
        return json_reply(200, {"users": list(data.ADMIN_USERS)})

    async def _list_audit_events(self, call: _Call) -> Outcome:
        return json_reply(200, {"events": list(data.AUDIT_EVENTS)})

    async def _partner_rates(self, call: _Call) -> Outcome:
        # Exchange rates for partners; the gateway admits only callers with an API key.
        return json_reply(200, {"base": "EUR", "rates": {"USD": "1.0842", "GBP": "0.8571"}})

    async def _internal_status(self, call: _Call) -> Outcome:
        # For services with a client certificate; the gateway checks it and
        # names the caller in its X-Ringwall-* fields, which this reports.
        caller = {
            name.lower(): value
            for name, value in call.request.headers
            if name.lower().startswith("x-ringwall-") and name.lower() != "x-ringwall-token"
        }
        return json_reply(200, {"status": "ok", "caller": caller})

    async def _echo(self, call: _Call) -> Outcome:
        request = call.request
        payload = {
            "method": request.method,
            "path": call.path,
            "query": call.query,
            "headers": [[name, value] for name, value in request.headers],
            "body_length": len(request.body),
            "body_sha256": hashlib.sha256(request.body).hexdigest(),
        }
        return json_reply(200, payload)

    async def _stream(self, call: _Call) -> Outcome:
        count = query_int(call.query, "chunks", DEFAULT_STREAM_CHUNKS, MAX_STREAM_CHUNKS)
        interval = query_seconds(call.query, "interval", 0.0)
        interval = min(interval, MAX_STREAM_INTERVAL_SECONDS)
        headers = (("Content-Type", "application/x-ndjson"),)
        return Reply(200, headers, stream=stream_lines(count, interval))

    async def _slow(self, call: _Call) -> Outcome:
        delay = query_seconds(call.query, "delay", DEFAULT_SLOW_DELAY_SECONDS)
        delay = min(delay, MAX_SLOW_DELAY_SECONDS)
        await asyncio.sleep(delay)
        return json_reply(200, {"delay": delay})

    async def _websocket(self, call: _Call) -> Outcome:
        if call.request.method != "GET":
            return error_reply(426, "a WebSocket handshake needs GET", (("Upgrade", "websocket"),))
        headers = {name.lower(): value for name, value in call.request.headers}
        try:
            return WebSocketAccept(validate_handshake(headers))
        except HandshakeError as error:
            if error.status != 426:
                return error_reply(error.status, str(error))
            upgrade_headers = (("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"))
            return error_reply(426, str(error), upgrade_headers)


def openapi_document() -> dict[str, Any]:
    """Return a fresh copy of the demo API's OpenAPI 3.1 document, ringwall/demo/openapi.json."""
    document: dict[str, Any] = json.loads(_openapi_text())
    return document


@cache
def _openapi_text() -> str:
    return resources.files("ringwall.demo").joinpath("openapi.json").read_text(encoding="utf-8")


def _method_allowed(method: str, allowed: frozenset[str] | None) -> bool:
    if allowed is None or method in allowed:
        return True
    return method == "HEAD" and "GET" in allowed


def _method_not_allowed(method: str, allowed: frozenset[str] | None) -> Reply:
    methods = sorted(allowed or ())
    if "GET" in methods:
        methods.append("HEAD")
    allow = ", ".join(methods)
    return error_reply(405, f"method {method} not allowed; allowed: {allow}", (("Allow", allow),))
