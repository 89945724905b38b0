"""Exceptions raised by Ringwall.

    RingwallError
    ├── ConfigError              invalid configuration; carries one ConfigIssue per problem
    └── Rejection                a request refused by a layer; carries layer, status, safe reason
        ├── BadRequest           400
        ├── Unauthorized         401
        ├── Forbidden            403
        ├── RequestTimeout       408
        ├── NotFound             404
        ├── MethodNotAllowed     405
        ├── PayloadTooLarge      413
        ├── UriTooLong           414
        ├── HeaderFieldsTooLarge 431
        ├── BadGateway           502
        ├── ServiceUnavailable   503
        ├── GatewayTimeout       504
        └── VersionNotSupported  505

A rejection's `reason` is written by Ringwall, never copied from the request,
so it is safe to put in a response body and a log line. Use `excerpt()` to
quote request bytes.
"""

from __future__ import annotations

from dataclasses import dataclass


class RingwallError(Exception):
    """Base class of every exception Ringwall raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a configuration: where it is, what is wrong, and how to fix it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(RingwallError):
    """A configuration that cannot be loaded; `issues` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


class LocalResponse(RingwallError):
    """A response the gateway sends itself, such as its own JWK set; not an error."""

    def __init__(self, status: int, body: bytes, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"local response {status}")
        self.status = status
        self.body = body
        self.headers = headers


class Rejection(RingwallError):
    """A request refused by one layer of the gateway."""

    status: int = 400
    title: str = "Bad Request"

    def __init__(
        self,
        layer: str,
        reason: str,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        close: bool = False,
        detail: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.layer = layer
        self.reason = reason
        # The detail sent to the client, when it must be less than the logged reason.
        self.detail = reason if detail is None else detail
        self.headers = headers
        # Close the client connection after the response, because the rest of
        # the stream cannot be trusted (framing errors) or was not read.
        self.close = close


class BadRequest(Rejection):
    status = 400
    title = "Bad Request"


class Unauthorized(Rejection):
    status = 401
    title = "Unauthorized"


class Forbidden(Rejection):
    status = 403
    title = "Forbidden"


class NotFound(Rejection):
    status = 404
    title = "Not Found"


class MethodNotAllowed(Rejection):
    status = 405
    title = "Method Not Allowed"


class RequestTimeout(Rejection):
    status = 408
    title = "Request Timeout"


class PayloadTooLarge(Rejection):
    status = 413
    title = "Content Too Large"


class UnsupportedMediaType(Rejection):
    status = 415
    title = "Unsupported Media Type"


class UriTooLong(Rejection):
    status = 414
    title = "URI Too Long"


class HeaderFieldsTooLarge(Rejection):
    status = 431
    title = "Request Header Fields Too Large"


class MisdirectedRequest(Rejection):
    status = 421
    title = "Misdirected Request"


class TooManyRequests(Rejection):
    status = 429
    title = "Too Many Requests"


class BadGateway(Rejection):
    status = 502
    title = "Bad Gateway"


class ServiceUnavailable(Rejection):
    status = 503
    title = "Service Unavailable"


class GatewayTimeout(Rejection):
    status = 504
    title = "Gateway Timeout"


class VersionNotSupported(Rejection):
    status = 505
    title = "HTTP Version Not Supported"


def excerpt(raw: bytes | str, limit: int = 64) -> str:
    """Return a short, printable, escaped excerpt of untrusted input for messages."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    text = raw[:limit].decode("ascii", "backslashreplace")
    printable = "".join(ch if " " <= ch <= "~" else f"\\x{ord(ch):02x}" for ch in text)
    return printable + ("..." if len(raw) > limit else "")
