"""Check a request that a backend received against an OpenAPI 3.1 document.

The checker is written for tests that must show that a gateway forwarded
only requests the document allows. It resolves `$ref`s inside the document
and validates with jsonschema-rs (JSON Schema draft 2020-12, which OpenAPI
3.1 builds on), independently of Ringwall's own OpenAPI import. It covers
what the demo document uses:

- the path is matched segment by segment after percent-decoding each one,
  and literal paths before templated ones;
- path, query and header parameters with a `schema`, in the styles the
  defaults give to scalars (`simple` for path and header, `form` for query);
- a JSON request body against its media type's schema, and the media type
  itself against the declared ones, where `*/*` accepts any.

NOTE: query parameters that the document does not declare are accepted,
because OpenAPI does not say that they are invalid. Numbers outside the
range of a double are reported as violations. Array and object
parameters, `content` parameters, cookies and security requirements are not
checked: the demo document has none of the first four, and authentication
is tested elsewhere.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jsonschema_rs

from ringwall.demo.api import ReceivedRequest

_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class _Parameter:
    name: str
    location: str
    required: bool
    schema: dict[str, Any]
    schema_pointer: str


@dataclass(frozen=True)
class _Operation:
    method: str
    template: str
    pointer: str
    definition: dict[str, Any]
    parameters: tuple[_Parameter, ...]


def _escape_pointer_token(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _reject_duplicate_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build an object, raising ValueError for a repeated name, which parsers read differently."""
    counts = Counter(name for name, _ in pairs)
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        raise ValueError(f"member names {repeated!r:.80} appear more than once")
    return dict(pairs)


class SpecConformance:
    """The operations of one OpenAPI 3.1 document, ready to check received requests."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = dict(document)
        self._validators: dict[str, jsonschema_rs.Draft202012Validator] = {}
        self._operations: list[_Operation] = []
        for template, item in self.document["paths"].items():
            item_pointer = "#/paths/" + _escape_pointer_token(template)
            shared = self._parameters(f"{item_pointer}/parameters")
            for method, definition in item.items():
                if method == "parameters" or not isinstance(definition, dict):
                    continue
                pointer = f"{item_pointer}/{method}"
                own = self._parameters(f"{pointer}/parameters")
                # An operation's parameter replaces a path item's one with the same name and location.
                own_keys = {(p.name, p.location) for p in own}
                merged = [p for p in shared if (p.name, p.location) not in own_keys] + own
                self._operations.append(
                    _Operation(method.upper(), template, pointer, definition, tuple(merged))
                )
        # Literal paths win over templated ones (OpenAPI 3.1, Paths Object).
        self._operations.sort(key=lambda operation: "{" in operation.template)

    def _lookup(self, pointer: str) -> tuple[Any, str]:
        """Return the value at `pointer` (a `#/...` fragment) and its pointer, following `$ref`s."""
        while True:
            if not pointer.startswith("#/"):
                raise ValueError(f"only local references are supported, got {pointer!r}")
            value: Any = self.document
            for token in pointer[2:].split("/"):
                token = token.replace("~1", "/").replace("~0", "~")
                value = value[int(token)] if isinstance(value, list) else value.get(token, {})
            if not (isinstance(value, dict) and "$ref" in value):
                return value, pointer
            pointer = value["$ref"]

    def _parameters(self, list_pointer: str) -> list[_Parameter]:
        entries, _ = self._lookup(list_pointer)
        parameters = []
        for position in range(len(entries) if isinstance(entries, list) else 0):
            parameter, pointer = self._lookup(f"{list_pointer}/{position}")
            schema, schema_pointer = self._lookup(f"{pointer}/schema")
            parameters.append(
                _Parameter(
                    parameter["name"],
                    parameter["in"],
                    bool(parameter.get("required", False)),
                    schema,
                    schema_pointer,
                )
            )
        return parameters

    def _validator(self, pointer: str) -> jsonschema_rs.Draft202012Validator:
        """Return a validator for the schema at `pointer`, with the whole document as its root.

        Keeping the document as the root lets local `$ref`s such as
        `#/components/schemas/Product` resolve without rewriting the schema.
        The document's own members (openapi, info, paths) are unknown
        keywords, which draft 2020-12 ignores.
        """
        validator = self._validators.get(pointer)
        if validator is None:
            root = {**self.document, "$ref": pointer}
            validator = jsonschema_rs.Draft202012Validator(root, validate_formats=False)
            self._validators[pointer] = validator
        return validator

    def _match(self, method: str, path: str) -> tuple[_Operation, dict[str, str]] | None:
        segments = [unquote(segment, errors="strict") for segment in path.split("/")]
        for operation in self._operations:
            if operation.method != method:
                continue
            template_segments = operation.template.split("/")
            if len(template_segments) != len(segments):
                continue
            params: dict[str, str] = {}
            for expected, actual in zip(template_segments, segments, strict=True):
                if expected.startswith("{") and expected.endswith("}"):
                    if not actual:
                        break
                    params[expected[1:-1]] = actual
                elif expected != actual:
                    break
            else:
                return operation, params
        return None

    def violations(self, request: ReceivedRequest) -> list[str]:
        """Return one message for each way `request` breaks the document, or [] if it conforms."""
        parts = urlsplit(request.target)
        try:
            matched = self._match(request.method, parts.path)
        except UnicodeDecodeError:
            return [f"path {parts.path!r} is not UTF-8 after percent-decoding"]
        if matched is None:
            return [f"no operation for {request.method} {parts.path!r}"]
        operation, path_values = matched
        problems = self._parameter_violations(operation, request, parts.query, path_values)
        problems += self._body_violations(operation, request)
        return [f"{request.method} {operation.template}: {problem}" for problem in problems]

    def _parameter_violations(
        self,
        operation: _Operation,
        request: ReceivedRequest,
        raw_query: str,
        path_values: Mapping[str, str],
    ) -> list[str]:
        try:
            pairs = parse_qsl(raw_query, keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            return [f"query {raw_query!r} is not UTF-8 after percent-decoding"]
        query: dict[str, list[str]] = {}
        for name, value in pairs:
            query.setdefault(name, []).append(value)
        problems = []
        for parameter in operation.parameters:
            if parameter.location == "path":
                values = [path_values[parameter.name]] if parameter.name in path_values else []
            elif parameter.location == "query":
                values = query.get(parameter.name, [])
            elif parameter.location == "header":
                lowercase = parameter.name.lower()
                values = [v for n, v in request.headers if n.lower() == lowercase]
            else:
                continue
            label = f"{parameter.location} parameter {parameter.name}"
            if not values:
                if parameter.required:
                    problems.append(f"{label} is missing")
                continue
            if len(values) > 1:
                problems.append(f"{label} is sent {len(values)} times")
                continue
            problems += self._value_violations(label, values[0], parameter)
        return problems

    def _value_violations(self, label: str, text: str, parameter: _Parameter) -> list[str]:
        """Convert `text` to the schema's scalar type, then validate it against the schema."""
        value: Any = text
        kind = parameter.schema.get("type")
        if kind == "integer":
            if not _INTEGER.fullmatch(text):
                return [f"{label}={text!r:.80} is not an integer"]
            value = int(text)
        elif kind == "number":
            if not _NUMBER.fullmatch(text) or not math.isfinite(float(text)):
                return [f"{label}={text!r:.80} is not a number"]
            value = float(text)
        elif kind == "boolean":
            if text not in ("true", "false"):
                return [f"{label}={text!r:.80} is not a boolean"]
            value = text == "true"
        try:
            self._validator(parameter.schema_pointer).validate(value)
        except jsonschema_rs.ValidationError as exc:
            return [f"{label}={text!r:.80}: {exc.message:.200}"]
        return []

    def _body_violations(self, operation: _Operation, request: ReceivedRequest) -> list[str]:
        if "requestBody" not in operation.definition:
            if request.body:
                return [f"a body of {len(request.body)} bytes, but the operation declares none"]
            return []
        request_body, body_pointer = self._lookup(f"{operation.pointer}/requestBody")
        if not request.body:
            return ["the required body is missing"] if request_body.get("required") else []

        content: dict[str, Any] = request_body["content"]
        content_type = request.header("content-type")
        if content_type is None:
            return ["a body without Content-Type"]
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type in content:
            declared = media_type
        elif "*/*" in content:
            declared = "*/*"
        else:
            return [f"media type {media_type!r} is not one of {sorted(content)}"]
        if not (media_type == "application/json" or media_type.endswith("+json")):
            return []

        try:
            body = json.loads(
                request.body.decode("utf-8"),
                parse_constant=_reject_constant,
                object_pairs_hook=_reject_duplicate_names,
            )
        except (UnicodeDecodeError, ValueError) as exc:
            return [f"the body is not JSON: {exc}"]
        media_pointer = f"{body_pointer}/content/{_escape_pointer_token(declared)}"
        _, schema_pointer = self._lookup(f"{media_pointer}/schema")
        try:
            self._validator(schema_pointer).validate(body)
        except jsonschema_rs.ValidationError as exc:
            return [f"body at {exc.instance_path}: {exc.message:.200}"]
        return []
