"""Configuration of CORS and of the security headers added to responses.

`CorsConfig` is read by `ringwall.edge.cors.CorsPolicy` and
`SecurityHeadersConfig` by `ringwall.gateway.security_headers.SecurityHeaders`.
Both are validated completely at load, so a malformed security setting stops
the gateway from starting instead of silently allowing more than was written.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    model_validator,
)

from ringwall.config.types import Duration

# RFC 9110 token: the syntax of header field names and methods.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*$")
_HOST_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# A host whose last label is a decimal or 0x-hex number is an IPv4 address to a
# URL parser (WHATWG URL, "ends in a number"), which browsers serialize as a dotted quad.
_NUMERIC_LABEL = re.compile(r"^(\d+|0x[0-9a-f]*)$")
_CSP_DIRECTIVE_NAME = re.compile(r"^[a-z0-9-]+$")

DEFAULT_PORTS = {"http": 80, "https": 443}
ANY_ORIGIN = "*"
NULL_ORIGIN = "null"
MAX_HOST_LENGTH = 253

ReferrerPolicy = Literal[
    "no-referrer",
    "no-referrer-when-downgrade",
    "same-origin",
    "origin",
    "strict-origin",
    "origin-when-cross-origin",
    "strict-origin-when-cross-origin",
    "unsafe-url",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def normalize_host(host: str) -> str:
    """Lowercase a DNS name or IP address and check it as a URL parser would serialize it.

    IPv6 addresses come in brackets and leave in the compressed form
    (`[::1]`). Raises ValueError naming the problem.
    """
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"invalid IPv6 address {host!r}: expected [ADDRESS]")
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError as exc:
            raise ValueError(f"invalid IPv6 address {host!r}") from exc
        return f"[{address.compressed}]"
    host = host.lower()
    if host.endswith("."):
        raise ValueError(f"invalid host {host!r}: remove the trailing dot")
    if len(host) > MAX_HOST_LENGTH:
        raise ValueError(f"invalid host {host[:40]!r}...: longer than {MAX_HOST_LENGTH} characters")
    labels = host.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        try:
            address4 = ipaddress.IPv4Address(host)
        except ValueError as exc:
            raise ValueError(
                f"invalid host {host!r}: a name ending in a number must be an IPv4 address "
                "such as 192.0.2.10"
            ) from exc
        return str(address4)
    if not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError(
            f"invalid host {host!r}: expected a name such as app.example.com, "
            "written in ASCII (xn-- for international names)"
        )
    return host


def normalize_origin(value: str) -> str:
    """Return the origin as browsers send it in the Origin header: `scheme://host[:port]`.

    The scheme and host are lowercased and a default port (80 for http, 443
    for https) is removed. A path (even `/`), query, fragment or user info
    raises ValueError, because an origin has none and would never match.
    """
    if not value.isascii() or any(char <= " " or char == "\x7f" for char in value):
        raise ValueError(f"invalid origin {value!r}: expected ASCII without spaces or controls")
    scheme, separator, rest = value.partition("://")
    scheme = scheme.lower()
    if not separator or not _SCHEME.match(scheme) or not rest:
        raise ValueError(
            f"invalid origin {value!r}: expected scheme://host[:port], "
            "such as https://app.example.com"
        )
    for char, part in (("/", "path"), ("?", "query"), ("#", "fragment"), ("@", "user info")):
        if char in rest:
            raise ValueError(
                f"invalid origin {value!r}: remove the {part}, an origin is scheme://host[:port]"
            )

    if rest.startswith("["):
        end = rest.find("]")
        after_host = rest[end + 1 :]
        if end < 0 or (after_host and not after_host.startswith(":")):
            raise ValueError(
                f"invalid origin {value!r}: expected [IPV6] or [IPV6]:PORT after the scheme"
            )
        host_text, port_text = rest[: end + 1], after_host[1:]
        has_port = bool(after_host)
    else:
        host_text, has_port_separator, port_text = rest.partition(":")
        has_port = bool(has_port_separator)
        if ":" in port_text:
            raise ValueError(f"invalid origin {value!r}: put an IPv6 address in brackets")
    host = normalize_host(host_text)

    if not has_port:
        return f"{scheme}://{host}"
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"invalid origin {value!r}: expected a port from 1 to 65535")
    port = int(port_text)
    if DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _parse_allowed_origin(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected an origin such as https://app.example.com, or * or null")
    if value in (ANY_ORIGIN, NULL_ORIGIN):
        return value
    return normalize_origin(value)


def _find_bare_dot(pattern: str) -> int:
    """Return the position of a `.` that matches one arbitrary character, or -1.

    A `.` followed by a quantifier (`.*`, `.+`, `.?`, `.{2}`) is taken as
    intended. A lone `.` is almost always a domain's dot that was meant
    literally, and `https://app.example.com` written as a pattern would also
    match `https://appxexample.com`, a name anybody can register.
    """
    in_class = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            if char == "]":
                in_class = False
        elif char == "[":
            in_class = True
            # A `]` right after `[` or `[^` is a literal member of the class.
            if pattern[index + 1 : index + 2] == "^":
                index += 1
            if pattern[index + 1 : index + 2] == "]":
                index += 1
        elif char == "." and pattern[index + 1 : index + 2] not in ("*", "+", "?", "{"):
            return index
        index += 1
    return -1


def compile_origin_pattern(value: Any) -> re.Pattern[str]:
    """Compile a regular expression that must match a whole origin (`re.fullmatch`)."""
    if isinstance(value, re.Pattern):
        value = value.pattern
    if not isinstance(value, str) or not value:
        raise ValueError(r"expected a regular expression such as https://[a-z0-9-]+\.example\.com")
    try:
        pattern = re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from exc
    dot = _find_bare_dot(value)
    if dot >= 0:
        raise ValueError(
            f"the '.' at position {dot} of {value!r} matches any character: "
            r"write \. for a literal dot, or .* or .+ for any characters"
        )
    return pattern


def _parse_methods(value: object) -> object:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise ValueError("expected a list of methods such as [GET, POST]")
    methods = []
    for item in value:
        method = str(item).upper()
        if method == "*":
            raise ValueError(
                "list the methods: '*' is not supported, so the allowed set is explicit"
            )
        if not _TOKEN.match(method):
            raise ValueError(f"invalid method {item!r}")
        if method not in methods:
            methods.append(method)
    return tuple(methods)


def _parse_header_names(value: object) -> object:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise ValueError("expected a list of header names such as [Content-Type, Authorization]")
    names: list[str] = []
    for item in value:
        name = str(item)
        if name == "*":
            # Browsers read `*` as a literal name on credentialed requests, and
            # `*` never covers Authorization (MDN, Access-Control-Allow-Headers).
            raise ValueError("list the header names: '*' is not supported")
        if not _TOKEN.match(name):
            raise ValueError(f"invalid header name {item!r}")
        if name.lower() not in (existing.lower() for existing in names):
            names.append(name)
    return tuple(names)


AllowedOrigin = Annotated[str, PlainValidator(_parse_allowed_origin)]
OriginPattern = Annotated[
    re.Pattern[str],
    PlainValidator(compile_origin_pattern),
    PlainSerializer(lambda pattern: pattern.pattern),
]
Methods = Annotated[tuple[str, ...], BeforeValidator(_parse_methods)]
HeaderNames = Annotated[tuple[str, ...], BeforeValidator(_parse_header_names)]


class CorsConfig(_Model):
    """Cross-origin access for browsers (the Fetch standard's CORS protocol).

    `allow_origins` lists exact origins, compared byte for byte with the
    Origin header after both are in the form browsers send
    (`https://app.example.com`, `http://localhost:3000`). `*` allows every
    origin without credentials. `null` (sandboxed iframes, `data:` and
    `file:` documents) is allowed only when listed, and never with
    credentials. `allow_origin_patterns` are regular expressions that must
    match the whole origin. An origin that is not exactly
    `scheme://host[:port]` matches neither list.

    A preflight passes when its method is in `allow_methods` (compared
    case-sensitively, as Fetch does) and each requested header is in
    `allow_headers` (case-insensitively). A JSON API usually lists
    Content-Type, and Authorization when browsers send tokens.
    """

    allow_origins: tuple[AllowedOrigin, ...] = ()
    allow_origin_patterns: tuple[OriginPattern, ...] = ()
    # The CORS-safelisted methods, which need no preflight unless other headers are sent.
    allow_methods: Methods = ("GET", "HEAD", "POST")
    allow_headers: HeaderNames = ()
    expose_headers: HeaderNames = ()
    allow_credentials: bool = False
    # Time a browser may cache a preflight result. MDN gives the browsers' caps
    # (Chromium 76+ 2 hours, Firefox 24 hours), so more than a day is rejected.
    max_age: Duration = Field(600.0, ge=0, le=86400)

    @model_validator(mode="after")
    def _check_origins(self) -> CorsConfig:
        origins = set(self.allow_origins)
        if not origins and not self.allow_origin_patterns:
            raise ValueError("set allow_origins or allow_origin_patterns: no origin is allowed")
        if ANY_ORIGIN in origins:
            if self.allow_credentials:
                raise ValueError(
                    "allow_origins '*' cannot be used with allow_credentials: true, because "
                    "browsers reject credentialed responses to '*'; list the origins instead"
                )
            if origins - {ANY_ORIGIN, NULL_ORIGIN} or self.allow_origin_patterns:
                raise ValueError(
                    "allow_origins '*' already allows every origin: remove the other origins "
                    "and patterns (only 'null' may be listed with it)"
                )
        if NULL_ORIGIN in origins and self.allow_credentials:
            raise ValueError(
                "allow_origins 'null' cannot be used with allow_credentials: true, because "
                "any site can send Origin: null from a sandboxed iframe; remove 'null'"
            )
        return self


class HstsConfig(_Model):
    """Strict-Transport-Security (RFC 6797), sent only on HTTPS listeners.

    `include_subdomains` is off by default because it also binds every
    subdomain of the host, including ones this gateway does not serve.
    `preload` marks the host for browsers' built-in HSTS preload list.
    hstspreload.org accepts a host only with include_subdomains and a
    max_age of at least one year.
    """

    enabled: bool = True
    # One year: Helmet 8's default and the preload list's minimum.
    max_age: Duration = Field(31_536_000.0, ge=0)
    include_subdomains: bool = False
    preload: bool = False

    @model_validator(mode="after")
    def _check_preload(self) -> HstsConfig:
        if self.preload and (not self.include_subdomains or self.max_age < 31_536_000):
            raise ValueError(
                "preload needs include_subdomains: true and max_age of at least 31536000 "
                "seconds (one year)"
            )
        return self


def _check_csp(value: object) -> object:
    if value is None:
        return value
    if not isinstance(value, str):
        raise ValueError("expected a policy such as \"default-src 'self'\", or null")
    if not value.isascii() or any(char < " " or char == "\x7f" for char in value):
        raise ValueError("expected a policy of printable ASCII characters without line breaks")
    directives = [directive.strip() for directive in value.split(";") if directive.strip()]
    if not directives:
        raise ValueError("expected at least one directive, such as \"default-src 'self'\"")
    for directive in directives:
        name = directive.split(None, 1)[0].lower()
        if not _CSP_DIRECTIVE_NAME.match(name):
            raise ValueError(f"invalid directive name {name!r} in content_security_policy")
    return value


def frame_ancestors(policy: str) -> str | None:
    """Return the source list of the policy's frame-ancestors directive, or None."""
    for directive in policy.split(";"):
        name, _, sources = directive.strip().partition(" ")
        if name.lower() == "frame-ancestors":
            return sources.strip()
    return None


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


class SecurityHeadersConfig(_Model):
    """Security headers added to responses, and upstream headers removed from them.

    HSTS goes on every response of an HTTPS listener and `nosniff` on every
    response. The gateway's HSTS and X-Content-Type-Options replace an
    upstream's. Referrer-Policy goes on every response, and
    Content-Security-Policy and X-Frame-Options on HTML responses (text/html
    and application/xhtml+xml). For those three an upstream's own value is
    kept unless `replace_upstream` is true, because only the upstream has
    the details of its pages (script nonces, embedding). `null` turns a header off.

    The default policy forbids every resource, framing, `<base>` and form
    submission. It suits an API, whose HTML responses are error pages. A
    route that serves a web application sets its own policy or lets the
    upstream's through.
    """

    hsts: HstsConfig = HstsConfig()
    x_content_type_options: bool = True
    # no-referrer, Helmet 8's default: pages served with it send no Referer.
    # A site that reads Referer on its own origin can use
    # strict-origin-when-cross-origin, the browsers' own default.
    referrer_policy: ReferrerPolicy | None = "no-referrer"
    content_security_policy: Annotated[str | None, BeforeValidator(_check_csp)] = (
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    frame_options: Annotated[Literal["DENY", "SAMEORIGIN"] | None, BeforeValidator(_upper)] = "DENY"
    replace_upstream: bool = False
    remove_server_header: bool = True
    remove_powered_by: bool = True

    @model_validator(mode="after")
    def _check_framing(self) -> SecurityHeadersConfig:
        if self.frame_options is None or self.content_security_policy is None:
            return self
        sources = frame_ancestors(self.content_security_policy)
        expected = {"DENY": "'none'", "SAMEORIGIN": "'self'"}[self.frame_options]
        if sources in ("'none'", "'self'") and sources != expected:
            raise ValueError(
                f"frame_options {self.frame_options} disagrees with frame-ancestors {sources} "
                "in content_security_policy, and browsers follow frame-ancestors: use "
                "DENY with 'none' or SAMEORIGIN with 'self'"
            )
        return self
