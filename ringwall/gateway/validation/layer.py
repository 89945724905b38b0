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
    parse_strict_json,
)

if TYPE_CHECKING:
    from ringwall.exchange import Exchange
    from ringwall.gateway.routing import CompiledRoute
    from ringwall.server.body import RequestBody

LAYER = "validation"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


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
        self.accepts_only_json = bool(self.content_types) and all(
            is_json_media_type(media_type) for media_type in self.content_types
        )
        self.form = form_validator(config)

    def check_head(self, exchange: Exchange) -> None:
        """Check everything the request head declares; raise BadRequest or 415."""
        self._check_content_type(exchange)
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

    def _check_content_type(self, exchange: Exchange) -> None:
        if exchange.body_encoded():
            raise UnsupportedMediaType(
                LAYER, "compressed request bodies are not accepted on this route"
            )
        if not self.content_types:
            return
        if not exchange.has_body:
            if self.config.body_required and exchange.method in _BODY_METHODS:
                raise BadRequest(LAYER, "a request body is required")
            return
        values = exchange.header_values(b"content-type")
        if not values:
            raise UnsupportedMediaType(LAYER, "the Content-Type header is missing")
        if len(values) > 1:
            raise BadRequest(LAYER, "Content-Type: sent more than once")
        media_type, charset = parse_content_type(values[0])
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
        # NOTE: a request without a body is never checked against required form
        # fields, so a route needs body_required to reject an empty POST.
        if self.form is not None and exchange.has_body:
            if self.form.applies_to(exchange.header_values(b"content-type")):
                return True
        if self.json is None or not exchange.has_body:
            return False
        if self.accepts_only_json:
            # check_head has accepted the media type, and every accepted type is JSON.
            return True
        values = exchange.header_values(b"content-type")
        if not values:
            return not self.content_types  # no declared types: the body must be JSON
        media_type, _ = parse_content_type(values[0])
        return is_json_media_type(media_type)

    def check_body(self, exchange: Exchange) -> Awaitable[None] | None:
        """Check the whole body as a form or as strict JSON, and keep it to forward.

        A JSON body that is already complete is checked at once, and None is
        returned. Otherwise the returned awaitable reads the body and checks it.
        """
        if self.form is not None and self.form.applies_to(exchange.header_values(b"content-type")):
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
        assert self.json is not None
        try:
            document = parse_strict_json(
                data, max_depth=self.json.max_depth, max_members=self.json.max_members
            )
            if self.schema is not None:
                self.schema.validate(document)
        except BodyInvalid as invalid:
            where = invalid.pointer or "the body"
            raise BadRequest(
                LAYER, f"body {where}: {invalid.reason}", detail=f"{where}: {invalid.reason}"
            ) from None

    async def _check_form_body(self, exchange: Exchange, form: FormValidator) -> None:
        body = exchange.body
        assert body is not None
        # collect() leaves the bytes queued, so the upstream gets the bytes checked here.
        data = await body.collect()
        try:
            form.check(data, exchange.header_values(b"content-type")[0])
        except FormInvalid as invalid:
            raise BadRequest(LAYER, str(invalid)) from None


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
        validation = self.routes[route.name]
        validation.check_head(exchange)
        if validation.needs_body(exchange):
            return validation.check_body(exchange)
        return None
