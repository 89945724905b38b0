"""The validation layer: a request must match its route's declared shape.

From the head it checks the content type: one media type and a charset
from the route's lists, and no Content-Encoding, else 415. On a route with
`decompress`, the decompression layer has already decoded the body and
removed its Content-Encoding. It checks query, header and path parameters
(names, types, patterns, required), with a 400 that names the parameter.
For a route with a JSON body, the whole body is read (up to
the route's body limit), parsed strictly, validated against the schema, and
the bytes validated are the bytes forwarded. A URL-encoded or multipart
form body on a route that accepts one is read whole the same way and
checked by form_body.py. A 400 names the part that failed: a JSON pointer,
a parameter or field name or a limit, never raw request bytes beyond a
short escaped excerpt.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from ringwall.config.validation import ParamSpec, ValidateConfig, is_json_media_type
from ringwall.errors import BadRequest, UnsupportedMediaType, excerpt
from ringwall.gateway.validation.form_body import FormInvalid, FormValidator, form_validator
from ringwall.gateway.validation.json_body import (
    BodyInvalid,
    JsonSchemaValidator,
    check_json_body,
)
from ringwall.http.headers import content_fields

if TYPE_CHECKING:
    from ringwall.exchange import Exchange
    from ringwall.gateway.routing import CompiledRoute
    from ringwall.server.body import RequestBody

LAYER = "validation"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Content-Type values a route has accepted, kept per route so that a repeated
# value skips parsing. Clients choose the values, so the cache stops growing
# at this size.
_MAX_ACCEPTED_CONTENT_TYPES = 64


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    spec: ParamSpec
    pattern: re.Pattern[str] | None


def _compile_params(params: Mapping[str, ParamSpec]) -> tuple[_Param, ...]:
    return tuple(
        _Param(name, spec, re.compile(spec.pattern) if spec.pattern else None)
        for name, spec in params.items()
    )


class RouteValidation:
    """One route's `validate` block, compiled at load."""

    def __init__(self, config: ValidateConfig) -> None:
        self.config = config
        self.content_types = frozenset(config.content_types)
        self.charsets = frozenset(config.charsets)
        self.query = _compile_params(config.query)
        self.query_names = frozenset(config.query)
        self.headers = _compile_params(config.headers)
        self.path_params = _compile_params(config.path_params)
        self.json = config.json_
        schema = self.json.load_schema() if self.json is not None else None
        self.schema = JsonSchemaValidator(schema) if schema is not None else None
        self._max_depth = self.json.max_depth if self.json is not None else 0
        self._max_members = self.json.max_members if self.json is not None else 0
        self.accepts_only_json = bool(self.content_types) and all(
            is_json_media_type(media_type) for media_type in self.content_types
        )
        self.form = form_validator(config)
        # Accepted Content-Type values and their lowercase media types.
        self._accepted_content_types: dict[bytes, str] = {}
        # Whether the head declares nothing to check but a JSON media type.
        self._checks_only_json = (
            self.accepts_only_json
            and self.json is not None
            and self.form is None
            and config.additional_query
            and not (self.query or self.headers or self.path_params)
        )

    def check(self, exchange: Exchange) -> Awaitable[None] | None:
        """Check the head and then, when the route declares one, the body.

        Equal to `check_head`, then `check_body` if `needs_body`, with one
        scan of the header fields for all three.
        """
        if self._checks_only_json and exchange.has_body:
            # The common request to a JSON API takes fewer steps: one
            # Content-Type accepted before, no Content-Encoding and a
            # complete body. Anything else takes the full path below. The
            # loop is `content_fields` written out, which saves a call.
            content_type = None
            for name, value in exchange.headers:
                size = len(name)
                if size == 12 and name.lower() == b"content-type":
                    if content_type is not None:
                        break
                    content_type = value
                elif size == 16 and name.lower() == b"content-encoding":
                    break
            else:
                body = exchange.body
                if (
                    content_type in self._accepted_content_types
                    and body is not None
                    and body.complete
                    and body.error is None
                ):
                    try:
                        check_json_body(
                            body.whole(), self.schema, self._max_depth, self._max_members
                        )
                    except BodyInvalid as invalid:
                        raise _body_rejection(invalid) from None
                    return None
        content_types = self._check_head(exchange)
        if self._needs_body(exchange, content_types):
            return self._check_body(exchange, content_types)
        return None

    def check_head(self, exchange: Exchange) -> None:
        """Check everything the request head declares; raise BadRequest or 415."""
        self._check_head(exchange)

    def _check_head(self, exchange: Exchange) -> list[bytes]:
        """Check the head like `check_head`, and return the Content-Type values."""
        content_types = self._check_content_type(exchange)
        if self.query or not self.config.additional_query:
            self._check_query(exchange.query)
        for param in self.headers:
            values = exchange.header_values(param.name.lower().encode("ascii"))
            if len(values) > 1:
                raise BadRequest(LAYER, f"header {param.name}: sent more than once")
            value = values[0].decode("latin-1") if values else None
            _check_param("header", param, value)
        for param in self.path_params:
            _check_param("path parameter", param, exchange.params.get(param.name))
        return content_types

    def _check_content_type(self, exchange: Exchange) -> list[bytes]:
        """Check the body's media type and encoding, and return the Content-Type values."""
        if not exchange.has_body:
            required = self.content_types and self.config.body_required
            if required and exchange.method in _BODY_METHODS:
                raise BadRequest(LAYER, "a request body is required")
            return []
        values, encodings = content_fields(exchange.headers)
        if encodings and any(value.strip().lower() != b"identity" for value in encodings):
            raise UnsupportedMediaType(
                LAYER, "compressed request bodies are not accepted on this route"
            )
        if not self.content_types:
            return values
        if not values:
            raise UnsupportedMediaType(LAYER, "the Content-Type header is missing")
        if len(values) > 1:
            raise BadRequest(LAYER, "Content-Type: sent more than once")
        if values[0] not in self._accepted_content_types:
            self._check_media_type(values[0])
        return values

    def _check_media_type(self, value: bytes) -> None:
        media_type, charset = parse_content_type(value)
        if media_type not in self.content_types:
            raise UnsupportedMediaType(
                LAYER,
                f"media type {excerpt(media_type, 64)} is not accepted: expected "
                f"{', '.join(sorted(self.content_types))}",
            )
        if charset is not None and charset not in self.charsets:
            raise UnsupportedMediaType(
                LAYER,
                f"charset {excerpt(charset, 32)} is not accepted: expected "
                f"{', '.join(sorted(self.charsets))}",
            )
        if len(self._accepted_content_types) < _MAX_ACCEPTED_CONTENT_TYPES:
            self._accepted_content_types[value] = media_type

    def _check_query(self, raw: bytes) -> None:
        try:
            pairs = parse_qsl(
                raw.decode("ascii"), keep_blank_values=True, strict_parsing=False, errors="strict"
            )
        except (UnicodeDecodeError, ValueError):
            raise BadRequest(LAYER, "the query string is not valid") from None
        values: dict[str, list[str]] = {}
        for name, value in pairs:
            values.setdefault(name, []).append(value)
        if not self.config.additional_query:
            unknown = sorted(set(values) - self.query_names)
            if unknown:
                raise BadRequest(
                    LAYER, f"query parameter {excerpt(unknown[0], 64)} is not accepted"
                )
        for param in self.query:
            found = values.get(param.name)
            if found is not None and len(found) > 1:
                raise BadRequest(LAYER, f"query parameter {param.name}: sent more than once")
            _check_param("query parameter", param, found[0] if found else None)

    def needs_body(self, exchange: Exchange) -> bool:
        """Return whether the request has a JSON or form body to read and check.

        Call it only after `check_head` has accepted the request.
        """
        return self._needs_body(exchange, exchange.header_values(b"content-type"))

    def _needs_body(self, exchange: Exchange, content_types: list[bytes]) -> bool:
        # NOTE: a request without a body is never checked against required form
        # fields, so a route needs body_required to reject an empty POST.
        if not exchange.has_body:
            return False
        if self.form is not None and self.form.applies_to(content_types):
            return True
        if self.json is None:
            return False
        if self.accepts_only_json:
            # check_head has accepted the media type, and every accepted type is JSON.
            return True
        if not content_types:
            return not self.content_types  # no declared types: the body must be JSON
        media_type = self._accepted_content_types.get(content_types[0])
        if media_type is None:
            media_type, _ = parse_content_type(content_types[0])
        return is_json_media_type(media_type)

    def check_body(self, exchange: Exchange) -> Awaitable[None] | None:
        """Check the whole body as a form or as strict JSON, and keep it to forward.

        A JSON body that is already complete is checked at once, and None is
        returned. Otherwise the returned awaitable reads the body and checks it.
        """
        return self._check_body(exchange, exchange.header_values(b"content-type"))

    def _check_body(self, exchange: Exchange, content_types: list[bytes]) -> Awaitable[None] | None:
        if self.form is not None and self.form.applies_to(content_types):
            return self._check_form_body(exchange, self.form)
        body = exchange.body
        assert body is not None
        if body.complete and body.error is None:
            self._check_json_body(body.whole())
            return None
        return self._collect_json_body(body)

    async def _collect_json_body(self, body: RequestBody) -> None:
        self._check_json_body(await body.collect())

    def _check_json_body(self, data: bytes) -> None:
        try:
            check_json_body(data, self.schema, self._max_depth, self._max_members)
        except BodyInvalid as invalid:
            raise _body_rejection(invalid) from None

    async def _check_form_body(self, exchange: Exchange, form: FormValidator) -> None:
        body = exchange.body
        assert body is not None
        # collect() leaves the bytes queued, so the upstream gets the bytes checked here.
        data = await body.collect()
        try:
            form.check(data, exchange.header_values(b"content-type")[0])
        except FormInvalid as invalid:
            raise BadRequest(LAYER, str(invalid)) from None


def _body_rejection(invalid: BodyInvalid) -> BadRequest:
    where = invalid.pointer or "the body"
    return BadRequest(LAYER, f"body {where}: {invalid.reason}", detail=f"{where}: {invalid.reason}")


def parse_content_type(value: bytes) -> tuple[str, str | None]:
    """Return the lowercase media type and charset (None when absent) of a Content-Type value."""
    text = value.decode("latin-1")
    media_type, _, parameters = text.partition(";")
    charset = None
    for parameter in parameters.split(";"):
        name, _, raw = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = raw.strip().strip('"').lower()
    return media_type.strip().lower(), charset


def _check_param(kind: str, param: _Param, value: str | None) -> None:
    spec = param.spec
    if value is None:
        if spec.required:
            raise BadRequest(LAYER, f"{kind} {param.name}: missing")
        return
    if len(value) > spec.max_length:
        raise BadRequest(LAYER, f"{kind} {param.name}: longer than {spec.max_length} characters")
    if spec.type == "integer":
        if not re.fullmatch(r"-?[0-9]{1,19}", value):
            raise BadRequest(LAYER, f"{kind} {param.name}: expected an integer")
        _check_range(kind, param, int(value))
    elif spec.type == "number":
        try:
            number = float(value)
        except ValueError:
            raise BadRequest(LAYER, f"{kind} {param.name}: expected a number") from None
        if not math.isfinite(number):
            raise BadRequest(LAYER, f"{kind} {param.name}: expected a finite number")
        _check_range(kind, param, number)
    elif spec.type == "boolean" and value not in ("true", "false"):
        raise BadRequest(LAYER, f"{kind} {param.name}: expected true or false")
    if spec.enum and value not in spec.enum:
        raise BadRequest(LAYER, f"{kind} {param.name}: not one of the accepted values")
    if param.pattern is not None and not param.pattern.search(value):
        raise BadRequest(LAYER, f"{kind} {param.name}: does not match the expected pattern")


def _check_range(kind: str, param: _Param, number: float) -> None:
    spec = param.spec
    if spec.minimum is not None and number < spec.minimum:
        raise BadRequest(LAYER, f"{kind} {param.name}: below the minimum {spec.minimum:g}")
    if spec.maximum is not None and number > spec.maximum:
        raise BadRequest(LAYER, f"{kind} {param.name}: above the maximum {spec.maximum:g}")


class ValidationLayer:
    """Check requests on routes with a `validate` block."""

    name = LAYER

    def __init__(self, routes: Mapping[str, RouteValidation]) -> None:
        self.routes = routes

    def applies_to(self, route: CompiledRoute) -> bool:
        return route.name in self.routes

    def check_head(self, exchange: Exchange) -> Awaitable[None] | None:
        route = exchange.route
        assert route is not None
        return self.routes[route.name].check(exchange)
