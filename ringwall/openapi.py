"""Convert an OpenAPI 3.0 or 3.1 document into Ringwall routes with `validate` blocks.

`import_openapi` takes a parsed document (the dict that JSON or YAML
parsing returns) and returns route mappings to write under `routes:` in a
configuration, plus warnings for the parts that a route cannot express.
Nothing is read from disk or the network.

Each path item becomes one route. When its operations need different
validation, such as GET without a body and POST with one, each group of
operations with the same validation becomes its own route. For every
operation:

- query, header and path parameters become `validate.query`,
  `validate.headers` and `validate.path_params`, with the schema's type,
  pattern, enum, minimum, maximum and maxLength;
- the request body's media types become `validate.content_types`, and the
  schema of its JSON media type becomes `validate.json.schema`, a
  self-contained JSON Schema (draft 2020-12): local `$ref`s are inlined
  (recursive ones go to `$defs`) and OpenAPI 3.0 keywords are rewritten;
- the object schema of an application/x-www-form-urlencoded or
  multipart/form-data body becomes `validate.form.fields`, one field per
  property with the checks of a query parameter, and `type: file` for a
  binary property of a multipart-only body.

Each route authenticates callers with the `auth` method given to
`import_openapi`, except that an operation whose `security` is an empty
list, its own or else the document's, gets `auth: none`, and one whose
requirements name only `mutualTLS` schemes (OpenAPI 3.1) gets `auth: mtls`.
A list that contains the empty requirement `{}` next to others makes
credentials optional, which one method cannot express, so such an
operation also gets the given method.

Query parameters that the document does not declare get 400 unless
`additional_query` is true. A GET operation also gets HEAD unless the path
item declares its own `head` operation, because a HEAD request is a GET
without the response body and servers accept it wherever they accept GET.

Errors and warnings name the JSON pointer (RFC 6901) of the value, written
as a URI fragment such as `#/paths/~1orders/post/requestBody`.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

from pydantic import ValidationError

from ringwall.config.model import Route
from ringwall.config.validation import (
    FORM_MEDIA_TYPES,
    MULTIPART_FORM_DATA,
    FormBodySpec,
    ParamSpec,
)
from ringwall.errors import RingwallError, excerpt
from ringwall.gateway.validation.json_body import JsonSchemaValidator

AuthMethod = Literal["none", "jwt", "api_key", "mtls"]
# The authentication, validate block and (method, operation) pairs of one route.
_OperationGroup = tuple[AuthMethod, dict[str, Any], list[tuple[str, dict[str, Any]]]]

# Operation keys of a path item, in the order their methods are listed.
HTTP_METHODS = ("get", "head", "post", "put", "patch", "delete", "options", "trace")

# The limit of inlined schema nodes per request body. Inlining copies a
# schema at every place that refers to it, so a document whose schemas
# refer to each other in many layers could otherwise grow exponentially.
MAX_SCHEMA_NODES = 100_000

_VERSION = re.compile(r"3\.([01])\.[0-9]+")
_DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_OPENAPI_31_DIALECT = "https://spec.openapis.org/oas/3.1/dialect/base"
_DIALECTS = frozenset({_DRAFT_2020_12, _DRAFT_2020_12 + "#", _OPENAPI_31_DIALECT})

# The parameter names, form field names and media types that ValidateConfig accepts.
_PARAM_NAME = re.compile(r"[A-Za-z0-9_.~-]{1,128}")
_FORM_FIELD_NAME = re.compile(r"[!#-\[\]-~]{1,256}")
_MEDIA_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_MAX_PARAM_LENGTH = 65536
# OpenAPI 3.0.3 and 3.1.0 (Parameter Object, field `name`) ignore header
# parameters with these names.
_IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})
# The `${NAME}` references that the configuration loader replaces in every string.
_ENV_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")

# Annotations that do not change what a schema accepts, dropped to keep the
# routes short, and OpenAPI keywords that JSON Schema does not define.
_DROPPED_KEYWORDS = frozenset(
    {
        "title",
        "description",
        "default",
        "example",
        "examples",
        "deprecated",
        "$comment",
        "externalDocs",
        "xml",
        "discriminator",
        # Every $ref is resolved against the whole document and inlined, so
        # nothing refers to these any more.
        "$defs",
        "definitions",
        "$anchor",
        "$dynamicAnchor",
    }
)
# Keywords that would change how a `$ref` inside resolves, or that need a
# dynamic scope. The converter resolves every `$ref` against the document.
_UNSUPPORTED_KEYWORDS = ("$id", "$dynamicRef", "$recursiveRef", "$recursiveAnchor")
_SUBSCHEMA_KEYWORDS = frozenset(
    {
        "items",
        "additionalItems",
        "additionalProperties",
        "unevaluatedItems",
        "unevaluatedProperties",
        "propertyNames",
        "contains",
        "not",
        "if",
        "then",
        "else",
        "contentSchema",
    }
)
_SUBSCHEMA_LIST_KEYWORDS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SUBSCHEMA_MAP_KEYWORDS = frozenset({"properties", "patternProperties", "dependentSchemas"})
# Schema keywords that a parameter check has no field for.
_UNCHECKED_PARAM_KEYWORDS = ("minLength", "multipleOf", "allOf", "anyOf", "oneOf", "not")
# Formats that only give the size of a number.
_NUMBER_FORMATS = frozenset({"int32", "int64", "float", "double"})


class OpenApiError(RingwallError):
    """An OpenAPI document that cannot be converted.

    `pointer` is the JSON pointer of the offending value ("" for the whole
    document). `reason` describes the problem and quotes at most a short,
    escaped excerpt of the document.
    """

    def __init__(self, pointer: str, reason: str) -> None:
        super().__init__(f"{format_pointer(pointer)}: {reason}")
        self.pointer = pointer
        self.reason = reason


@dataclass(frozen=True)
class ConversionWarning:
    """A part of the document that the routes check less strictly than it declares, or skip."""

    pointer: str
    message: str

    def __str__(self) -> str:
        return f"{format_pointer(self.pointer)}: {self.message}"


@dataclass(frozen=True)
class OpenApiImport:
    """The routes converted from a document, and the warnings about what they leave out."""

    routes: list[dict[str, Any]]
    warnings: list[ConversionWarning]


def routes_from_openapi(
    spec: Mapping[str, Any], *, upstream: str, auth: AuthMethod = "jwt"
) -> list[dict[str, Any]]:
    """Convert `spec` into route mappings, as `import_openapi` does, without the warnings."""
    return import_openapi(spec, upstream=upstream, auth=auth).routes


def import_openapi(
    spec: Mapping[str, Any],
    *,
    upstream: str,
    auth: AuthMethod = "jwt",
    base_path: str | None = None,
    additional_query: bool = False,
) -> OpenApiImport:
    """Convert the paths of an OpenAPI 3.0 or 3.1 document into route mappings.

    Every route sends its requests to `upstream` and authenticates callers
    with `auth`, or with none where the operation's `security` is an empty
    list. `base_path` is put before every path. None takes it from
    the path of the `servers` URLs when they all have the same one.
    Raises OpenApiError, naming the JSON pointer, for a document that is not
    OpenAPI 3.0 or 3.1, that is malformed where the conversion reads it, or
    that has a `$ref` to another document. Raises ValueError for a
    `base_path` that does not start with /.
    """
    if base_path and not base_path.startswith("/"):
        raise ValueError(f"invalid base path {base_path!r}: expected a path such as /v1")
    if not isinstance(spec, Mapping):
        raise OpenApiError("", "expected an OpenAPI document: a JSON object or a YAML mapping")
    importer = _Importer(spec, _check_version(spec), upstream, auth, additional_query)
    try:
        return importer.run(base_path)
    except RecursionError:
        raise OpenApiError("", "the document is nested too deeply to convert") from None


def json_schema_at(spec: Mapping[str, Any], pointer: str) -> dict[str, Any]:
    """Return the schema at `pointer` in `spec` as a self-contained JSON Schema (draft 2020-12).

    The schema is converted as a request body's is, with its `$ref`s inlined.
    Raises OpenApiError for a document or schema that cannot be converted.
    """
    importer = _Importer(spec, _check_version(spec), "", "none", additional_query=True)
    try:
        schema = importer.value_at(pointer)
    except LookupError:
        raise OpenApiError(pointer, "not found in the document") from None
    return _SchemaConverter(importer).convert(schema, pointer)


def format_pointer(pointer: str) -> str:
    """Write a JSON pointer as a URI fragment, such as `#/paths/~1orders`."""
    return "#" + pointer


def join_pointer(pointer: str, *tokens: str | int) -> str:
    """Append reference tokens to a JSON pointer, escaping `~` and `/` (RFC 6901)."""
    escaped = (str(token).replace("~", "~0").replace("/", "~1") for token in tokens)
    return pointer + "".join("/" + token for token in escaped)


def _check_version(spec: Mapping[str, Any]) -> Literal["3.0", "3.1"]:
    version = spec.get("openapi")
    if version is None:
        if "swagger" in spec:
            raise OpenApiError(
                "/swagger",
                f"Swagger {excerpt(str(spec['swagger']))} is not supported: convert the "
                "document to OpenAPI 3.0 or 3.1 first",
            )
        raise OpenApiError("/openapi", "missing: expected the OpenAPI version, such as 3.1.0")
    if not isinstance(version, str):
        raise OpenApiError(
            "/openapi", f'expected a string such as "3.1.0", got {excerpt(str(version))}'
        )
    match = _VERSION.fullmatch(version)
    if match is None:
        raise OpenApiError(
            "/openapi", f"unsupported version {excerpt(version)}: expected 3.0.x or 3.1.x"
        )
    if match.group(1) == "1":
        dialect = spec.get("jsonSchemaDialect", _OPENAPI_31_DIALECT)
        if dialect not in _DIALECTS:
            raise OpenApiError(
                "/jsonSchemaDialect",
                f"unsupported dialect {excerpt(str(dialect))}: expected {_OPENAPI_31_DIALECT} "
                f"or {_DRAFT_2020_12}",
            )
        return "3.1"
    return "3.0"


class _Importer:
    """The conversion of one document: its state, warnings and route names."""

    def __init__(
        self,
        spec: Mapping[str, Any],
        version: Literal["3.0", "3.1"],
        upstream: str,
        auth: AuthMethod,
        additional_query: bool,
    ) -> None:
        self.spec = spec
        self.version = version
        self.upstream = upstream
        self.auth = auth
        self.additional_query = additional_query
        self.warnings: list[ConversionWarning] = []
        self.route_names: set[str] = set()

    def warn(self, pointer: str, message: str) -> None:
        self.warnings.append(ConversionWarning(pointer, message))

    def run(self, base_path: str | None) -> OpenApiImport:
        paths = self.spec.get("paths")
        if paths is None:
            raise OpenApiError("/paths", "missing: expected the paths object with the API's paths")
        if not isinstance(paths, dict):
            raise OpenApiError("/paths", 'expected an object such as {"/orders": {"get": ...}}')
        base = self._servers_base_path() if base_path is None else base_path.rstrip("/")
        routes: list[dict[str, Any]] = []
        for raw_path, item in paths.items():
            pointer = join_pointer("/paths", raw_path)
            if not isinstance(raw_path, str):
                raise OpenApiError(pointer, "expected a path that starts with /")
            if raw_path.startswith("x-"):
                continue
            if not raw_path.startswith("/"):
                raise OpenApiError(pointer, "expected a path that starts with /")
            routes.extend(self._path_routes(base + raw_path, item, pointer))
        return OpenApiImport(routes, self.warnings)

    # -----------------------------------------------------------------------
    # References

    def resolve(self, ref: object, pointer: str) -> tuple[Any, str]:
        """Return the value that the `$ref` of the object at `pointer` names, and its pointer."""
        ref_pointer = join_pointer(pointer, "$ref")
        if not isinstance(ref, str):
            raise OpenApiError(ref_pointer, "expected a string such as #/components/schemas/Order")
        if not ref.startswith("#"):
            raise OpenApiError(
                ref_pointer,
                f"$ref {excerpt(ref)} refers to another document: only references inside this "
                "document, such as #/components/schemas/Order, are supported. Bundle the "
                "document into one file first",
            )
        target = unquote(ref[1:])
        if target and not target.startswith("/"):
            raise OpenApiError(
                ref_pointer,
                f"$ref {excerpt(ref)} names an anchor: only JSON pointers such as "
                "#/components/schemas/Order are supported",
            )
        try:
            return self.value_at(target), target
        except LookupError:
            raise OpenApiError(
                ref_pointer, f"$ref {excerpt(ref)}: not found in the document"
            ) from None

    def value_at(self, pointer: str) -> Any:
        """Return the value at a JSON pointer in the document, or raise LookupError."""
        value: Any = self.spec
        for token in pointer.split("/")[1:]:
            key = token.replace("~1", "/").replace("~0", "~")
            if isinstance(value, Mapping) and key in value:
                value = value[key]
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                raise LookupError(pointer)
        return value

    def dereference(self, value: Any, pointer: str) -> tuple[Any, str]:
        """Follow the `$ref`s of a parameter, request body or path item to the object itself."""
        seen: set[str] = set()
        while isinstance(value, dict) and "$ref" in value:
            if pointer in seen:
                raise OpenApiError(pointer, "circular $ref")
            seen.add(pointer)
            value, pointer = self.resolve(value["$ref"], pointer)
        return value, pointer

    # -----------------------------------------------------------------------
    # Paths

    def _servers_base_path(self) -> str:
        """Return the path of the servers' URLs when they all share it, else ""."""
        servers = self.spec.get("servers")
        if servers is None:
            return ""
        if not isinstance(servers, list):
            raise OpenApiError("/servers", "expected a list of server objects")
        bases: set[str] = set()
        for index, server in enumerate(servers):
            pointer = join_pointer("/servers", index)
            if not isinstance(server, dict) or not isinstance(server.get("url"), str):
                raise OpenApiError(pointer, "expected a server object with a url")
            base = _url_path(server["url"], server.get("variables"))
            if base is None:
                self.warn(
                    pointer,
                    "the URL is relative to the document's location, so its path is unknown: "
                    "no base path applied. Set one with --base-path",
                )
                return ""
            bases.add(base)
        if len(bases) > 1:
            listed = ", ".join(sorted(base or "/" for base in bases))
            self.warn(
                "/servers",
                f"the servers have different paths ({excerpt(listed, 200)}): no base path "
                "applied. Set one with --base-path",
            )
            return ""
        return bases.pop() if bases else ""

    def _path_routes(self, path: str, raw_item: Any, pointer: str) -> Iterator[dict[str, Any]]:
        item, item_pointer = self.dereference(raw_item, pointer)
        if not isinstance(item, dict):
            raise OpenApiError(item_pointer, "expected a path item object")
        operations = [
            (method, item[method], join_pointer(item_pointer, method))
            for method in HTTP_METHODS
            if method in item
        ]
        if not operations:
            self.warn(pointer, "skipped: the path has no operations")
            return
        match = "template" if "{" in path or "}" in path else "exact"
        problem = _route_path_problem(path, match)
        if problem is not None:
            self.warn(pointer, f"skipped: a route cannot have this path: {problem}")
            return
        if "servers" in item or any(
            isinstance(operation, dict) and "servers" in operation for _, operation, _ in operations
        ):
            self.warn(pointer, "servers of a path item or operation are ignored")

        path_params = {segment[1:-1] for segment in path.split("/") if segment.startswith("{")}
        # Operations with the same authentication and validation share a route.
        groups: dict[str, _OperationGroup] = {}
        for method, operation, operation_pointer in operations:
            if not isinstance(operation, dict):
                raise OpenApiError(operation_pointer, "expected an operation object")
            auth = self._operation_auth(operation, operation_pointer)
            block = self._validate_block(
                path_params, item, item_pointer, operation, operation_pointer
            )
            key = json.dumps([auth, block], sort_keys=True)
            groups.setdefault(key, (auth, block, []))[2].append((method, operation))

        for auth, block, members in groups.values():
            methods = [method.upper() for method, _ in members]
            if "GET" in methods and "head" not in item:
                methods.insert(methods.index("GET") + 1, "HEAD")
            name = self._route_name(path, members, split=len(groups) > 1)
            yield self._route(name, path, match, methods, auth, block, pointer)

    def _operation_auth(self, operation: dict[str, Any], operation_pointer: str) -> AuthMethod:
        """Return "none" when the operation's security requirements are an empty list, else `auth`.

        An operation's `security` replaces the document's (OpenAPI 3.0.3 and
        3.1.0, Operation Object). Without either, the document declares
        nothing, and the method given to `import_openapi` applies.
        """
        if "security" in operation:
            security = operation["security"]
            pointer = join_pointer(operation_pointer, "security")
        elif "security" in self.spec:
            security = self.spec["security"]
            pointer = "/security"
        else:
            return self.auth
        if not isinstance(security, list):
            raise OpenApiError(pointer, "expected a list of security requirement objects")
        if not security:
            return "none"
        if self._only_mutual_tls(security):
            return "mtls"
        return self.auth

    def _only_mutual_tls(self, security: list[Any]) -> bool:
        """Return whether every requirement names only schemes of type mutualTLS (OpenAPI 3.1)."""
        schemes = self.spec.get("components", {}).get("securitySchemes", {})
        if not isinstance(schemes, dict):
            return False
        names = [
            name
            for requirement in security
            if isinstance(requirement, dict)
            for name in requirement
        ]
        return bool(names) and all(
            isinstance(schemes.get(name), dict) and schemes[name].get("type") == "mutualTLS"
            for name in names
        )

    def _route_name(
        self, path: str, members: list[tuple[str, dict[str, Any]]], *, split: bool
    ) -> str:
        """Name a route after its operationId, or after its path and, when split, its methods."""
        operation_id = members[0][1].get("operationId") if len(members) == 1 else None
        if isinstance(operation_id, str) and _slug(operation_id):
            base = _slug(operation_id)
        else:
            base = _slug(path.replace("{", "").replace("}", "")) or "root"
            if split:
                base += "-" + "-".join(method for method, _ in members)
        name = base
        number = 2
        while name in self.route_names:
            name = f"{base}-{number}"
            number += 1
        self.route_names.add(name)
        return name

    def _route(
        self,
        name: str,
        path: str,
        match: str,
        methods: list[str],
        auth: AuthMethod,
        block: dict[str, Any],
        pointer: str,
    ) -> dict[str, Any]:
        route: dict[str, Any] = {
            "name": name,
            "path": path,
            "match": match,
            "methods": methods,
            "auth": auth,
            "upstream": self.upstream,
        }
        if block:
            route["validate"] = block
        reference = _find_env_reference(route)
        if reference is not None:
            raise OpenApiError(
                pointer,
                f"the route would contain {excerpt(reference)}, which the configuration loader "
                "replaces with an environment variable. Change the pattern or value",
            )
        try:
            Route.model_validate(route)
        except ValidationError as exc:
            raise OpenApiError(pointer, f"the route is invalid: {_first_error(exc)}") from None
        return route

    # -----------------------------------------------------------------------
    # Parameters

    def _validate_block(
        self,
        path_params: set[str],
        item: dict[str, Any],
        item_pointer: str,
        operation: dict[str, Any],
        operation_pointer: str,
    ) -> dict[str, Any]:
        sections: dict[str, dict[str, Any]] = {"query": {}, "headers": {}, "path_params": {}}
        additional_query = self.additional_query
        for param, pointer in self._parameters(item, item_pointer, operation, operation_pointer):
            name, location = param["name"], param["in"]
            if location == "cookie":
                self.warn(pointer, f"cookie parameter {excerpt(name)} is not checked")
                continue
            if location == "header" and name.lower() in _IGNORED_HEADERS:
                continue
            if location == "path" and name not in path_params:
                self.warn(pointer, f"skipped: path parameter {excerpt(name)} is not in the path")
                continue
            spec = None
            if _PARAM_NAME.fullmatch(name):
                spec = self._param_spec(param, pointer)
            else:
                self.warn(pointer, f"parameter name {excerpt(name)} is not supported: not checked")
            if spec is None:
                additional_query = additional_query or location == "query"
                continue
            section = {"query": "query", "header": "headers", "path": "path_params"}[location]
            sections[section][name] = spec

        body = self._body_block(operation, operation_pointer)
        block: dict[str, Any] = {
            key: body.pop(key) for key in ("content_types", "charsets") if key in body
        }
        for section, params in sections.items():
            if params:
                block[section] = params
            if section == "query" and not additional_query:
                block["additional_query"] = False
        block.update(body)
        return block

    def _parameters(
        self,
        item: dict[str, Any],
        item_pointer: str,
        operation: dict[str, Any],
        operation_pointer: str,
    ) -> list[tuple[dict[str, Any], str]]:
        """Return the operation's parameters: the path item's, overridden by the operation's."""
        merged: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
        for owner, owner_pointer in ((item, item_pointer), (operation, operation_pointer)):
            params = owner.get("parameters")
            if params is None:
                continue
            list_pointer = join_pointer(owner_pointer, "parameters")
            if not isinstance(params, list):
                raise OpenApiError(list_pointer, "expected a list of parameter objects")
            for index, raw in enumerate(params):
                param, pointer = self.dereference(raw, join_pointer(list_pointer, index))
                _check_parameter(param, pointer)
                name = param["name"].lower() if param["in"] == "header" else param["name"]
                merged[(param["in"], name)] = (param, pointer)
        return list(merged.values())

    def _param_spec(self, param: dict[str, Any], pointer: str) -> dict[str, Any] | None:
        """Return the ParamSpec mapping of a parameter, or None when it cannot be checked."""
        name = excerpt(param["name"])
        # A path parameter is always present once the route's template matches.
        required = param["in"] != "path" and param.get("required") is True
        spec: dict[str, Any] = {"required": True} if required else {}
        if param["in"] == "path" and param.get("style") in ("matrix", "label"):
            self.warn(pointer, f"parameter {name} has style {param['style']}: not checked")
            return spec
        if "schema" not in param:
            if "content" in param:
                self.warn(pointer, f"parameter {name} has content: only its length is checked")
            return spec

        schema, schema_pointer = self.dereference(param["schema"], join_pointer(pointer, "schema"))
        if isinstance(schema, bool):
            schema = {} if schema else {"not": {}}
        if not isinstance(schema, dict):
            raise OpenApiError(schema_pointer, "expected a schema object")
        param_type = self._param_type(schema, schema_pointer, name)
        if param_type is None:
            return None
        if param_type == "any":
            return spec
        if param_type != "string":
            spec = {"type": param_type, **spec}
        spec.update(self._param_constraints(schema, param_type, schema_pointer, name))
        try:
            ParamSpec.model_validate(spec)
        except ValidationError as exc:
            raise OpenApiError(schema_pointer, _first_error(exc)) from None
        return spec

    def _param_type(
        self, schema: dict[str, Any], pointer: str, name: str, kind: str = "parameter"
    ) -> str | None:
        """Return the ParamSpec type of a parameter schema, "any" for no check, None to skip.

        `kind` names what the schema describes in warnings, such as "form field".
        """
        declared = schema.get("type")
        if isinstance(declared, str):
            types = [declared]
        elif isinstance(declared, list):
            types = [value for value in declared if value != "null"]
        elif declared is None:
            types = []
        else:
            raise OpenApiError(join_pointer(pointer, "type"), "expected a type name or a list")
        if not types:
            if any(keyword in schema for keyword in _UNCHECKED_PARAM_KEYWORDS):
                self.warn(pointer, f"{kind} {name} has no type: only its length is checked")
            return "any"
        if len(types) > 1:
            self.warn(pointer, f"{kind} {name} has several types: only its length is checked")
            return "any"
        if types[0] in ("array", "object"):
            self.warn(
                pointer,
                f"parameter {name} is an {types[0]}: not checked, and a query parameter of "
                "this route may then have any name",
            )
            return None
        if types[0] not in ("string", "integer", "number", "boolean"):
            raise OpenApiError(
                join_pointer(pointer, "type"), f"unknown type {excerpt(str(types[0]))}"
            )
        return types[0]

    def _param_constraints(
        self,
        schema: dict[str, Any],
        param_type: str,
        pointer: str,
        name: str,
        kind: str = "parameter",
    ) -> dict[str, Any]:
        constraints: dict[str, Any] = {}
        unchecked = [keyword for keyword in _UNCHECKED_PARAM_KEYWORDS if keyword in schema]
        if "format" in schema and schema["format"] not in _NUMBER_FORMATS:
            unchecked.append("format")

        if param_type == "string" and isinstance(schema.get("pattern"), str):
            constraints["pattern"] = python_pattern(schema["pattern"])
        values = schema["enum"] if isinstance(schema.get("enum"), list) else None
        if "const" in schema:
            values = [schema["const"]]
        if values is not None:
            constraints["enum"] = [text for text in map(_param_text, values) if text is not None]
        if param_type == "string" and isinstance(schema.get("maxLength"), int):
            constraints["max_length"] = min(schema["maxLength"], _MAX_PARAM_LENGTH)
            if schema["maxLength"] > _MAX_PARAM_LENGTH:
                self.warn(pointer, f"{kind} {name}: maxLength capped at {_MAX_PARAM_LENGTH}")
        if param_type in ("integer", "number"):
            minimum, maximum, inclusive = self._bounds(schema, param_type)
            if minimum is not None:
                constraints["minimum"] = minimum
            if maximum is not None:
                constraints["maximum"] = maximum
            if inclusive:
                unchecked.append("exclusiveMinimum or exclusiveMaximum (checked as inclusive)")
        if unchecked:
            self.warn(pointer, f"{kind} {name}: {', '.join(unchecked)} not checked")
        return constraints

    def _bounds(
        self, schema: dict[str, Any], param_type: str
    ) -> tuple[int | float | None, int | float | None, bool]:
        """Return the inclusive bounds, and whether an exclusive bound was made inclusive.

        An exclusive bound of an integer is exact as an inclusive one: x > 1.5
        is x >= 2. A number parameter has no exclusive bound, so the bound
        itself is accepted too.
        """
        bounds: list[int | float | None] = []
        became_inclusive = False
        for inclusive_key, exclusive_key, direction in (
            ("minimum", "exclusiveMinimum", 1),
            ("maximum", "exclusiveMaximum", -1),
        ):
            candidates: list[tuple[float, bool]] = []
            if _is_number(schema.get(inclusive_key)):
                exclusive = self.version == "3.0" and schema.get(exclusive_key) is True
                candidates.append((schema[inclusive_key], exclusive))
            if _is_number(schema.get(exclusive_key)):
                candidates.append((schema[exclusive_key], True))
            effective: list[int | float] = []
            for value, exclusive in candidates:
                if param_type == "integer":
                    if direction == 1:
                        effective.append(math.floor(value) + 1 if exclusive else math.ceil(value))
                    else:
                        effective.append(math.ceil(value) - 1 if exclusive else math.floor(value))
                else:
                    effective.append(value)
                    became_inclusive = became_inclusive or exclusive
            if not effective:
                bounds.append(None)
            else:
                bounds.append(max(effective) if direction == 1 else min(effective))
        return bounds[0], bounds[1], became_inclusive

    # -----------------------------------------------------------------------
    # Request bodies

    def _body_block(self, operation: dict[str, Any], operation_pointer: str) -> dict[str, Any]:
        """Return the content_types, charsets, json, form and body_required keys of an operation."""
        if "requestBody" not in operation:
            return {}
        body, pointer = self.dereference(
            operation["requestBody"], join_pointer(operation_pointer, "requestBody")
        )
        if not isinstance(body, dict):
            raise OpenApiError(pointer, "expected a request body object")
        content = body.get("content")
        content_pointer = join_pointer(pointer, "content")
        if not isinstance(content, dict):
            raise OpenApiError(content_pointer, "expected an object of media types")

        content_types: list[str] = []
        charsets: set[str] = set()
        json_media: list[tuple[str, dict[str, Any], str]] = []
        form_media: list[tuple[str, dict[str, Any], str]] = []
        any_type = False
        for key, media in content.items():
            media_pointer = join_pointer(content_pointer, key)
            if not isinstance(media, dict):
                raise OpenApiError(media_pointer, "expected a media type object")
            media_type, charset = _split_media_type(key)
            if media_type.endswith("/*"):
                any_type = True
                if media_type != "*/*":
                    self.warn(media_pointer, "a media type range is accepted as any media type")
                continue
            if not _MEDIA_TYPE.fullmatch(media_type):
                raise OpenApiError(media_pointer, f"invalid media type {excerpt(media_type)}")
            if media_type not in content_types:
                content_types.append(media_type)
            if charset is not None:
                charsets.add(charset)
            if _is_json(media_type):
                json_media.append((media_type, media, media_pointer))
            elif media_type in FORM_MEDIA_TYPES:
                form_media.append((media_type, media, media_pointer))

        block: dict[str, Any] = {}
        if any_type or not content_types:
            if json_media:
                self.warn(
                    content_pointer,
                    "the body may have any media type, so it is not checked as JSON",
                )
            # NOTE: the validation layer checks body_required only on a route with
            # content_types, so a body of any media type is never required.
            return block
        block["content_types"] = content_types
        if charsets - {"utf-8"}:
            block["charsets"] = ["utf-8", *sorted(charsets - {"utf-8"})]
        unchecked = [
            media_type
            for media_type in content_types
            if not _is_json(media_type) and media_type not in FORM_MEDIA_TYPES
        ]
        if unchecked and (json_media or form_media):
            self.warn(
                content_pointer,
                f"bodies of {', '.join(unchecked)} are forwarded without a body check",
            )
        if json_media:
            block["json"] = self._json_block(json_media, content_pointer)
        if form_media:
            form = self._form_block(form_media, content_pointer)
            if form:
                block["form"] = form
        if body.get("required") is True:
            block["body_required"] = True
        return block

    def _json_block(
        self, json_media: list[tuple[str, dict[str, Any], str]], content_pointer: str
    ) -> dict[str, Any]:
        chosen = next((media for media in json_media if media[0] == "application/json"), None)
        media_type, media, media_pointer = chosen or json_media[0]
        if any(other.get("schema") != media.get("schema") for _, other, _ in json_media):
            self.warn(
                content_pointer,
                f"the JSON media types have different schemas: the schema of {media_type} "
                "is applied to all of them",
            )
        if "schema" not in media:
            return {}
        schema_pointer = join_pointer(media_pointer, "schema")
        schema = _SchemaConverter(self).convert(media["schema"], schema_pointer)
        try:
            JsonSchemaValidator(schema)
        except ValueError as exc:
            raise OpenApiError(schema_pointer, str(exc)) from None
        return {"schema": schema}

    def _form_block(
        self, form_media: list[tuple[str, dict[str, Any], str]], content_pointer: str
    ) -> dict[str, Any]:
        """Return the `form` block of a body's form media types; {} keeps the defaults.

        Only an object schema with `properties` is mapped. A property that
        cannot be checked as one field lets the form accept undeclared fields.
        """
        media_type, media, media_pointer = form_media[0]
        if any(other.get("schema") != media.get("schema") for _, other, _ in form_media):
            self.warn(
                content_pointer,
                f"the form media types have different schemas: the schema of {media_type} "
                "is applied to all of them",
            )
        if "schema" not in media:
            return {}
        schema, schema_pointer = self.dereference(
            media["schema"], join_pointer(media_pointer, "schema")
        )
        properties = schema.get("properties") if isinstance(schema, dict) else None
        if not isinstance(properties, dict) or not properties:
            self.warn(schema_pointer, "only an object schema with properties is checked in a form")
            return {}
        if "encoding" in media:
            self.warn(join_pointer(media_pointer, "encoding"), "encoding is not checked")

        required = schema.get("required") if isinstance(schema.get("required"), list) else []
        # A file is a part with a filename, which only multipart/form-data can carry.
        files_allowed = all(entry[0] == MULTIPART_FORM_DATA for entry in form_media)
        fields: dict[str, Any] = {}
        additional = schema.get("additionalProperties", True) is not False
        properties_pointer = join_pointer(schema_pointer, "properties")
        for name, raw in properties.items():
            pointer = join_pointer(properties_pointer, name)
            field = self._form_field(name, raw, pointer, name in required, files_allowed)
            if field is None:
                additional = True
            else:
                fields[name] = field

        block: dict[str, Any] = {"fields": fields} if fields else {}
        if fields and additional:
            block["additional_fields"] = True
        try:
            FormBodySpec.model_validate(block)
        except ValidationError as exc:
            raise OpenApiError(schema_pointer, _first_error(exc)) from None
        return block

    def _form_field(
        self, name: str, raw: Any, pointer: str, required: bool, files_allowed: bool
    ) -> dict[str, Any] | None:
        """Return the FormFieldSpec mapping of one property, or None when it is not checked."""
        label = excerpt(name)
        if not _FORM_FIELD_NAME.fullmatch(name):
            self.warn(pointer, f"form field name {label} is not supported: not checked")
            return None
        schema, pointer = self.dereference(raw, pointer)
        if isinstance(schema, bool):
            schema = {} if schema else {"not": {}}
        if not isinstance(schema, dict):
            raise OpenApiError(pointer, "expected a schema object")
        spec: dict[str, Any] = {"required": True} if required and not schema.get("readOnly") else {}

        declared = schema.get("type")
        types = declared if isinstance(declared, list) else [declared]
        if "array" in types or "object" in types:
            self.warn(
                pointer,
                f"form field {label} is an array or object: not checked, and the form then "
                "accepts fields that it does not declare",
            )
            return None
        if schema.get("format") == "binary" or "contentMediaType" in schema:
            if files_allowed:
                return {"type": "file", **spec}
            return spec
        param_type = self._param_type(schema, pointer, label, "form field")
        if param_type is None:
            return None
        if param_type == "any":
            return spec
        if param_type != "string":
            spec = {"type": param_type, **spec}
        spec.update(self._param_constraints(schema, param_type, pointer, label, "form field"))
        return spec


class _SchemaConverter:
    """Rewrite one OpenAPI schema as a self-contained JSON Schema (draft 2020-12).

    Every `$ref` is resolved against the whole document and replaced by a
    copy of its target. A `$ref` to a schema that is already being copied
    (a recursive schema) becomes a `$ref` into the root's `$defs` instead.

    OpenAPI 3.0 schemas are rewritten as its specification (3.0.3) defines them:

    - `nullable: true` adds "null" to `type`. Without `type` it has no effect,
      and an `enum` must list null itself to accept it.
    - `exclusiveMinimum: true` with `minimum: 5` becomes `exclusiveMinimum: 5`
      (the same for the maximum).
    - Keywords next to a `$ref` are ignored.

    For both versions, a `readOnly` property is removed from `required`,
    because OpenAPI 3.0.3 applies `required` to it in responses only.
    Annotations and OpenAPI-only keywords (`example`, `xml`, `x-*`) are dropped.
    """

    def __init__(self, importer: _Importer) -> None:
        self.importer = importer
        self.is_30 = importer.version == "3.0"
        self.definitions: dict[str, Any] = {}
        self.definition_names: dict[str, str] = {}
        self.nodes = 0

    def convert(self, schema: Any, pointer: str) -> dict[str, Any]:
        converted = self._convert(schema, pointer, ())
        result: dict[str, Any] = converted if isinstance(converted, dict) else {}
        if converted is False:
            result = {"not": {}}
        if self.definitions:
            result["$defs"] = self.definitions
        return result

    def _convert(self, node: Any, pointer: str, stack: tuple[str, ...]) -> Any:
        """Convert the schema `node`. `stack` lists the `$ref` targets being copied around it."""
        self.nodes += 1
        if self.nodes > MAX_SCHEMA_NODES:
            raise OpenApiError(
                pointer,
                f"the request body schema has more than {MAX_SCHEMA_NODES} schemas once its "
                "$refs are inlined",
            )
        if isinstance(node, bool):
            return node
        if not isinstance(node, dict):
            raise OpenApiError(pointer, "expected a schema object")
        for keyword in _UNSUPPORTED_KEYWORDS:
            if keyword in node:
                raise OpenApiError(
                    join_pointer(pointer, keyword),
                    f"{keyword} is not supported: every $ref is resolved against the document",
                )
        if "$schema" in node and node["$schema"] not in _DIALECTS:
            raise OpenApiError(
                join_pointer(pointer, "$schema"),
                f"unsupported dialect {excerpt(str(node['$schema']))}: expected JSON Schema "
                "draft 2020-12",
            )
        if "$ref" in node:
            return self._convert_reference(node, pointer, stack)
        return self._convert_keywords(node, pointer, stack)

    def _convert_reference(self, node: dict[str, Any], pointer: str, stack: tuple[str, ...]) -> Any:
        target, target_pointer = self.importer.resolve(node["$ref"], pointer)
        if target_pointer in stack:
            inlined: Any = {"$ref": "#/$defs/" + self._definition(target, target_pointer)}
        else:
            inlined = self._convert(target, target_pointer, (*stack, target_pointer))
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        if self.is_30:
            ignored = sorted(key for key in siblings if _is_assertion(key))
            if ignored:
                self.importer.warn(
                    pointer,
                    f"{', '.join(ignored)} next to $ref ignored, as OpenAPI 3.0 specifies. "
                    "Wrap the $ref in allOf to apply them",
                )
            return inlined
        extra = self._convert_keywords(siblings, pointer, stack)
        if not extra:
            return inlined
        extra["allOf"] = [inlined, *extra.get("allOf", [])]
        return extra

    def _definition(self, target: Any, target_pointer: str) -> str:
        """Return the `$defs` name of a recursive schema, converting it on first use."""
        name = self.definition_names.get(target_pointer)
        if name is not None:
            return name
        base = _slug(target_pointer.rsplit("/", 1)[-1]) or "schema"
        name = base
        number = 2
        while name in self.definitions:
            name = f"{base}-{number}"
            number += 1
        self.definition_names[target_pointer] = name
        self.definitions[name] = {}
        converted = self._convert(target, target_pointer, (target_pointer,))
        if converted == {"$ref": "#/$defs/" + name}:
            raise OpenApiError(
                target_pointer, "circular $ref: the schema refers to itself through $refs only"
            )
        self.definitions[name] = converted
        return name

    def _convert_keywords(
        self, node: dict[str, Any], pointer: str, stack: tuple[str, ...]
    ) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in node.items():
            key_pointer = join_pointer(pointer, key)
            if key.startswith("x-") or key in _DROPPED_KEYWORDS or key == "$schema":
                continue
            if self.is_30 and key in ("nullable", "exclusiveMinimum", "exclusiveMaximum"):
                continue
            if key in _SUBSCHEMA_MAP_KEYWORDS:
                if not isinstance(value, dict):
                    raise OpenApiError(key_pointer, "expected an object of schemas")
                result[key] = {
                    name: self._convert(schema, join_pointer(key_pointer, name), stack)
                    for name, schema in value.items()
                }
            elif key in _SUBSCHEMA_LIST_KEYWORDS:
                if not isinstance(value, list):
                    raise OpenApiError(key_pointer, "expected a list of schemas")
                result[key] = [
                    self._convert(schema, join_pointer(key_pointer, index), stack)
                    for index, schema in enumerate(value)
                ]
            elif key in _SUBSCHEMA_KEYWORDS:
                if key == "items" and isinstance(value, list):
                    raise OpenApiError(
                        key_pointer, "expected one schema: use prefixItems for a tuple"
                    )
                result[key] = self._convert(value, key_pointer, stack)
            else:
                result[key] = copy.deepcopy(value)
        if self.is_30:
            self._rewrite_30_keywords(node, result, pointer)
        _drop_read_only_required(result)
        return result

    def _rewrite_30_keywords(
        self, node: dict[str, Any], result: dict[str, Any], pointer: str
    ) -> None:
        if node.get("nullable") is True:
            declared = result.get("type")
            if isinstance(declared, str):
                result["type"] = [declared, "null"]
            elif isinstance(declared, list) and "null" not in declared:
                result["type"] = [*declared, "null"]
            elif declared is None:
                self.importer.warn(
                    pointer,
                    "nullable: true without type has no effect in OpenAPI 3.0.3: null is "
                    "accepted only where the other keywords accept it",
                )
        for exclusive_key, inclusive_key in (
            ("exclusiveMinimum", "minimum"),
            ("exclusiveMaximum", "maximum"),
        ):
            flag = node.get(exclusive_key)
            if flag is True and inclusive_key in result:
                result[exclusive_key] = result.pop(inclusive_key)
            elif _is_number(flag):
                # Already the JSON Schema form, which some 3.0 documents use.
                result[exclusive_key] = flag


def python_pattern(pattern: str) -> str:
    """Rewrite an ECMA-262 regular expression for Python's `re.search`, as a parameter check needs.

    OpenAPI patterns are ECMA-262 expressions, matched anywhere in the value.
    Two differences matter for a check. Python's `$` also matches before a
    final newline, so `$` becomes `\\Z`. Python's `\\d`, `\\w` and `\\b` match
    non-ASCII digits and letters, so a pattern with a class escape gets the
    ASCII flag, which also narrows `\\s` to ASCII whitespace.
    NOTE: other differences remain, such as `.` matching `\\r`, which ECMA-262
    excludes. Syntax that Python does not know, such as `\\p{L}`, fails to compile.
    """
    parts: list[str] = []
    in_class = False
    has_class_escape = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            escape = pattern[index : index + 2]
            has_class_escape = has_class_escape or escape[1] in "dDwWbBsS"
            parts.append(escape)
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            char = r"\Z"
        parts.append(char)
        index += 1
    return ("(?a)" if has_class_escape else "") + "".join(parts)


def _check_parameter(param: Any, pointer: str) -> None:
    if not isinstance(param, dict):
        raise OpenApiError(pointer, "expected a parameter object")
    if not isinstance(param.get("name"), str) or not param["name"]:
        raise OpenApiError(join_pointer(pointer, "name"), "expected the parameter's name")
    if param.get("in") not in ("query", "header", "path", "cookie"):
        raise OpenApiError(
            join_pointer(pointer, "in"), "expected one of query, header, path or cookie"
        )


def _param_text(value: object) -> str | None:
    """Return an enum value as a parameter's text, such as "true" for True, or None for null."""
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _url_path(url: str, variables: object) -> str | None:
    """Return the path of a server URL without a final /, or None for a relative URL."""
    if isinstance(variables, dict):
        for name, variable in variables.items():
            if isinstance(variable, dict) and isinstance(variable.get("default"), str):
                url = url.replace("{" + name + "}", variable["default"])
    url = url.split("?", 1)[0].split("#", 1)[0]
    if "://" in url:
        authority_and_path = url.split("://", 1)[1]
        slash = authority_and_path.find("/")
        return authority_and_path[slash:].rstrip("/") if slash >= 0 else ""
    if url.startswith("/"):
        return url.rstrip("/")
    return None


def _route_path_problem(path: str, match: str) -> str | None:
    """Return why a route cannot have `path`, using the Route model's own rules, or None."""
    try:
        Route.model_validate({"path": path, "match": match, "auth": "none", "upstream": "-"})
    except ValidationError as exc:
        return _first_error(exc)
    return None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    location = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


def _split_media_type(key: str) -> tuple[str, str | None]:
    """Return the lowercase media type of a content key and its charset parameter, if any."""
    media_type, _, parameters = key.partition(";")
    charset = None
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    return media_type.strip().lower(), charset


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_assertion(keyword: str) -> bool:
    return not keyword.startswith("x-") and keyword not in _DROPPED_KEYWORDS


def _drop_read_only_required(schema: dict[str, Any]) -> None:
    properties = schema.get("properties")
    required = schema.get("required")
    if not isinstance(properties, dict) or not isinstance(required, list):
        return
    required_in_requests = [
        name
        for name in required
        if not (isinstance(properties.get(name), dict) and properties[name].get("readOnly") is True)
    ]
    if len(required_in_requests) < len(required):
        schema["required"] = required_in_requests


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-")


def _find_env_reference(value: Any) -> str | None:
    """Return the first `${NAME}` reference in a string value of `value`, or None."""
    if isinstance(value, str):
        match = _ENV_REFERENCE.search(value)
        return match.group(0) if match else None
    if isinstance(value, dict):
        children = list(value.values())
    elif isinstance(value, list):
        children = value
    else:
        return None
    for child in children:
        found = _find_env_reference(child)
        if found is not None:
            return found
    return None
