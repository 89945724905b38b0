"""Tests for ringwall.openapi: OpenAPI 3.0 and 3.1 documents converted into routes."""

import copy
import re
from typing import Any

import pytest

from ringwall.config.model import Route
from ringwall.gateway.validation.json_body import BodyInvalid, JsonSchemaValidator
from ringwall.openapi import (
    MAX_SCHEMA_NODES,
    OpenApiError,
    import_openapi,
    join_pointer,
    python_pattern,
    routes_from_openapi,
)

ORDER_SCHEMA = {
    "type": "object",
    "required": ["product_id", "quantity"],
    "additionalProperties": False,
    "properties": {
        "product_id": {"type": "integer", "minimum": 1},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 100},
    },
}


def document(paths: dict[str, Any], version: str = "3.1.0", **extra: Any) -> dict[str, Any]:
    return {"openapi": version, "info": {"title": "test", "version": "1"}, "paths": paths, **extra}


def ok() -> dict[str, Any]:
    return {"200": {"description": "ok"}}


def json_body(schema: Any, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def only_route(spec: dict[str, Any]) -> dict[str, Any]:
    routes = routes_from_openapi(spec, upstream="app", auth="none")
    assert len(routes) == 1, routes
    return routes[0]


def body_schema(spec: dict[str, Any], path: str = "/items", method: str = "POST") -> Any:
    routes = routes_from_openapi(spec, upstream="app", auth="none")
    route = next(r for r in routes if r["path"] == path and method in r["methods"])
    return route["validate"]["json"]["schema"]


def post_schema(schema: Any, version: str = "3.1.0", **extra: Any) -> dict[str, Any]:
    """A document whose only operation is POST /items with a JSON body of `schema`."""
    operation = {"requestBody": json_body(schema), "responses": ok()}
    return document({"/items": {"post": operation}}, version, **extra)


def raises_at(spec: Any, pointer: str, message: str, **options: Any) -> None:
    with pytest.raises(OpenApiError) as caught:
        import_openapi(spec, upstream="app", **options)
    assert caught.value.pointer == pointer, caught.value
    assert message in caught.value.reason
    assert str(caught.value).startswith("#" + pointer + ": ")


# ---------------------------------------------------------------------------
# Routes


def test_route_for_plain_path() -> None:
    spec = document({"/health": {"get": {"operationId": "getHealth", "responses": ok()}}})
    routes = routes_from_openapi(spec, upstream="app", auth="jwt")
    assert routes == [
        {
            "name": "getHealth",
            "path": "/health",
            "match": "exact",
            "methods": ["GET", "HEAD"],
            "auth": "jwt",
            "upstream": "app",
            "validate": {"additional_query": False},
        }
    ]


def test_routes_pass_route_model() -> None:
    spec = document(
        {
            "/accounts/{account_id}": {
                "get": {
                    "parameters": [
                        {
                            "name": "account_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^acc-[0-9]{4}$"},
                        }
                    ],
                    "responses": ok(),
                },
            },
            "/orders": {"post": {"requestBody": json_body(ORDER_SCHEMA), "responses": ok()}},
        }
    )
    for route in routes_from_openapi(spec, upstream="app", auth="api_key"):
        model = Route.model_validate(route)
        assert model.upstream == "app"
        assert model.auth.methods == ("api_key",)
        assert model.validate_ is not None


def test_template_path_and_pattern() -> None:
    spec = document(
        {
            "/accounts/{account_id}/transactions": {
                "parameters": [
                    {
                        "name": "account_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^acc-[0-9]{4}$"},
                    }
                ],
                "get": {"responses": ok()},
            }
        }
    )
    route = only_route(spec)
    assert route["match"] == "template"
    assert route["name"] == "accounts-account_id-transactions"
    assert route["validate"]["path_params"] == {"account_id": {"pattern": r"^acc-[0-9]{4}\Z"}}


def test_methods_with_same_validation_share_route() -> None:
    spec = document({"/orders/{id}": {"get": {"responses": ok()}, "delete": {"responses": ok()}}})
    route = only_route(spec)
    assert route["methods"] == ["GET", "HEAD", "DELETE"]
    assert route["name"] == "orders-id"


def test_different_bodies_split_routes() -> None:
    spec = document(
        {
            "/orders": {
                "get": {"operationId": "listOrders", "responses": ok()},
                "post": {
                    "operationId": "createOrder",
                    "requestBody": json_body(ORDER_SCHEMA),
                    "responses": ok(),
                },
                "put": {"requestBody": json_body({"type": "object"}), "responses": ok()},
            }
        }
    )
    routes = routes_from_openapi(spec, upstream="app")
    assert [(r["name"], r["methods"]) for r in routes] == [
        ("listOrders", ["GET", "HEAD"]),
        ("createOrder", ["POST"]),
        ("orders-put", ["PUT"]),
    ]
    assert "json" not in routes[0]["validate"]
    assert routes[1]["validate"]["json"]["schema"] == ORDER_SCHEMA
    assert routes[1]["validate"]["body_required"] is True
    assert routes[2]["validate"]["json"]["schema"] == {"type": "object"}


def auth_by_name(spec: dict[str, Any], auth: Any = "jwt") -> dict[str, str]:
    return {r["name"]: r["auth"] for r in routes_from_openapi(spec, upstream="app", auth=auth)}


def test_empty_security_gets_no_auth() -> None:
    bearer = [{"bearerAuth": []}]
    spec = document(
        {
            "/health": {"get": {"operationId": "health", "security": [], "responses": ok()}},
            "/orders": {"get": {"operationId": "orders", "security": bearer, "responses": ok()}},
            "/echo": {"get": {"operationId": "echo", "security": [{}, *bearer], "responses": ok()}},
            "/items": {"get": {"operationId": "items", "responses": ok()}},
        }
    )
    assert auth_by_name(spec) == {
        "health": "none",
        "orders": "jwt",
        "echo": "jwt",
        "items": "jwt",
    }
    assert auth_by_name(spec, "api_key")["health"] == "none"
    assert auth_by_name(spec, "api_key")["items"] == "api_key"


def test_document_security_is_default() -> None:
    paths = {
        "/health": {"get": {"operationId": "health", "responses": ok()}},
        "/orders": {
            "get": {"operationId": "orders", "security": [{"bearerAuth": []}], "responses": ok()}
        },
    }
    assert auth_by_name(document(paths, security=[])) == {"health": "none", "orders": "jwt"}
    assert auth_by_name(document(paths, security=[{"bearerAuth": []}])) == {
        "health": "jwt",
        "orders": "jwt",
    }
    public = {"/items": {"get": {"operationId": "items", "security": [], "responses": ok()}}}
    assert auth_by_name(document(public, security=[{"bearerAuth": []}])) == {"items": "none"}


def test_different_security_splits_routes() -> None:
    spec = document(
        {
            "/orders/{id}": {
                "get": {"security": [], "responses": ok()},
                "delete": {"security": [{"bearerAuth": []}], "responses": ok()},
            }
        }
    )
    routes = routes_from_openapi(spec, upstream="app")
    assert [(r["name"], r["methods"], r["auth"]) for r in routes] == [
        ("orders-id-get", ["GET", "HEAD"], "none"),
        ("orders-id-delete", ["DELETE"], "jwt"),
    ]


@pytest.mark.parametrize(
    ("spec", "pointer"),
    [
        (document({"/a": {"get": {"security": {}, "responses": ok()}}}), "/paths/~1a/get/security"),
        (document({"/a": {"get": {"responses": ok()}}}, security="none"), "/security"),
    ],
)
def test_security_not_a_list_raises(spec: dict[str, Any], pointer: str) -> None:
    raises_at(spec, pointer, "expected a list of security requirement objects")


def test_declared_head_is_not_added_twice() -> None:
    spec = document({"/a": {"get": {"responses": ok()}, "head": {"responses": ok()}}})
    assert only_route(spec)["methods"] == ["GET", "HEAD"]
    spec = document(
        {"/a": {"get": {"responses": ok()}, "head": {"tags": ["x"], "responses": ok()}}}
    )
    assert only_route(spec)["methods"] == ["GET", "HEAD"]


def test_route_names_are_unique() -> None:
    spec = document(
        {
            "/a": {"get": {"operationId": "fetch item", "responses": ok()}},
            "/b": {"get": {"operationId": "fetch-item", "responses": ok()}},
            "/c": {"get": {"operationId": "fetch/item", "responses": ok()}},
            "/": {"get": {"responses": ok()}},
        }
    )
    names = [route["name"] for route in routes_from_openapi(spec, upstream="app")]
    assert names == ["fetch-item", "fetch-item-2", "fetch-item-3", "root"]


def test_extension_keys_are_skipped() -> None:
    spec = document({"x-meta": {"a": 1}, "/a": {"x-owner": "team", "get": {"responses": ok()}}})
    assert only_route(spec)["path"] == "/a"


def test_unsupported_path_is_skipped_with_warning() -> None:
    spec = document(
        {
            "/files/{name}.{ext}": {"get": {"responses": ok()}},
            "/caf\u00e9": {"get": {"responses": ok()}},
            "/empty": {"summary": "no operations"},
            "/ok": {"get": {"responses": ok()}},
        }
    )
    result = import_openapi(spec, upstream="app")
    assert [route["path"] for route in result.routes] == ["/ok"]
    pointers = [warning.pointer for warning in result.warnings]
    assert pointers == ["/paths/~1files~1{name}.{ext}", "/paths/~1caf\u00e9", "/paths/~1empty"]
    assert "skipped" in result.warnings[0].message


def test_path_item_ref() -> None:
    spec = document(
        {"/a": {"$ref": "#/x-items/shared"}},
        **{"x-items": {"shared": {"get": {"operationId": "shared", "responses": ok()}}}},
    )
    assert only_route(spec)["name"] == "shared"


# ---------------------------------------------------------------------------
# Base path


def test_base_path_from_servers() -> None:
    spec = document(
        {"/items": {"get": {"responses": ok()}}},
        servers=[{"url": "https://api.example.com/v1/"}, {"url": "/v1"}],
    )
    assert only_route(spec)["path"] == "/v1/items"


def test_base_path_from_server_variable_default() -> None:
    spec = document(
        {"/items": {"get": {"responses": ok()}}},
        servers=[
            {
                "url": "https://{host}/{version}",
                "variables": {"host": {"default": "example.com"}, "version": {"default": "v2"}},
            }
        ],
    )
    assert only_route(spec)["path"] == "/v2/items"


def test_servers_with_different_paths_warn() -> None:
    spec = document(
        {"/items": {"get": {"responses": ok()}}},
        servers=[{"url": "https://a.example/v1"}, {"url": "https://b.example/v2"}],
    )
    result = import_openapi(spec, upstream="app")
    assert result.routes[0]["path"] == "/items"
    assert result.warnings[0].pointer == "/servers"
    assert "/v1, /v2" in result.warnings[0].message


def test_explicit_base_path() -> None:
    spec = document({"/items": {"get": {"responses": ok()}}}, servers=[{"url": "/v1"}])
    result = import_openapi(spec, upstream="app", base_path="/api/")
    assert result.routes[0]["path"] == "/api/items"
    result = import_openapi(spec, upstream="app", base_path="")
    assert result.routes[0]["path"] == "/items"
    with pytest.raises(ValueError, match="expected a path such as /v1"):
        import_openapi(spec, upstream="app", base_path="api")


# ---------------------------------------------------------------------------
# Parameters


def params_of(*parameters: dict[str, Any], version: str = "3.1.0") -> dict[str, Any]:
    spec = document({"/a": {"get": {"parameters": list(parameters), "responses": ok()}}}, version)
    validate: dict[str, Any] = only_route(spec)["validate"]
    return validate


def test_query_parameter_types() -> None:
    validate = params_of(
        {"name": "q", "in": "query", "required": True, "schema": {"type": "string"}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        {"name": "ratio", "in": "query", "schema": {"type": "number", "maximum": 0.5}},
        {"name": "flag", "in": "query", "schema": {"type": "boolean"}},
        {"name": "any", "in": "query"},
    )
    assert validate["query"] == {
        "q": {"required": True},
        "limit": {"type": "integer", "minimum": 1},
        "ratio": {"type": "number", "maximum": 0.5},
        "flag": {"type": "boolean"},
        "any": {},
    }
    assert validate["additional_query"] is False


def test_string_constraints() -> None:
    validate = params_of(
        {
            "name": "sort",
            "in": "query",
            "schema": {"type": "string", "enum": ["asc", "desc"], "maxLength": 4},
        },
        {"name": "code", "in": "query", "schema": {"type": "string", "pattern": r"^\d+$"}},
    )
    assert validate["query"]["sort"] == {"enum": ["asc", "desc"], "max_length": 4}
    assert validate["query"]["code"] == {"pattern": r"(?a)^\d+\Z"}


def test_enum_values_become_text() -> None:
    validate = params_of(
        {"name": "n", "in": "query", "schema": {"type": "integer", "enum": [1, 2.0, None]}},
        {"name": "b", "in": "query", "schema": {"type": "boolean", "enum": [True]}},
        {"name": "c", "in": "query", "schema": {"type": "string", "const": "x"}},
    )
    assert validate["query"]["n"]["enum"] == ["1", "2"]
    assert validate["query"]["b"]["enum"] == ["true"]
    assert validate["query"]["c"]["enum"] == ["x"]


def test_nullable_type_list_parameter() -> None:
    validate = params_of({"name": "n", "in": "query", "schema": {"type": ["integer", "null"]}})
    assert validate["query"]["n"] == {"type": "integer"}


def test_integer_exclusive_bounds_30() -> None:
    schema = {
        "type": "integer",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 10,
        "exclusiveMaximum": True,
    }
    validate = params_of({"name": "n", "in": "query", "schema": schema}, version="3.0.3")
    assert validate["query"]["n"] == {"type": "integer", "minimum": 1, "maximum": 9}


def test_integer_exclusive_bounds_31() -> None:
    schema = {"type": "integer", "exclusiveMinimum": 0.5, "minimum": 0, "exclusiveMaximum": 10}
    validate = params_of({"name": "n", "in": "query", "schema": schema})
    assert validate["query"]["n"] == {"type": "integer", "minimum": 1, "maximum": 9}


def test_number_exclusive_bound_warns() -> None:
    parameter = {
        "name": "x",
        "in": "query",
        "schema": {"type": "number", "exclusiveMinimum": 0},
    }
    spec = document({"/a": {"get": {"parameters": [parameter], "responses": ok()}}})
    result = import_openapi(spec, upstream="app")
    assert result.routes[0]["validate"]["query"]["x"] == {"type": "number", "minimum": 0}
    assert "checked as inclusive" in result.warnings[0].message


def test_unchecked_keywords_warn() -> None:
    parameter = {
        "name": "id",
        "in": "query",
        "schema": {"type": "string", "format": "uuid", "minLength": 3},
    }
    spec = document({"/a": {"get": {"parameters": [parameter], "responses": ok()}}})
    result = import_openapi(spec, upstream="app")
    assert result.routes[0]["validate"]["query"]["id"] == {}
    assert result.warnings[0].pointer == "/paths/~1a/get/parameters/0/schema"
    assert result.warnings[0].message == "parameter id: minLength, format not checked"


def test_operation_parameter_overrides_path_item() -> None:
    spec = document(
        {
            "/a": {
                "parameters": [
                    {"name": "X-Id", "in": "header", "schema": {"type": "string"}},
                    {"name": "page", "in": "query", "schema": {"type": "integer"}},
                ],
                "get": {
                    "parameters": [
                        {"name": "x-id", "in": "header", "required": True},
                    ],
                    "responses": ok(),
                },
            }
        }
    )
    validate = only_route(spec)["validate"]
    assert validate["headers"] == {"x-id": {"required": True}}
    assert validate["query"] == {"page": {"type": "integer"}}


def test_parameter_refs() -> None:
    spec = document(
        {
            "/a": {
                "get": {
                    "parameters": [{"$ref": "#/components/parameters/Page"}],
                    "responses": ok(),
                }
            }
        },
        components={
            "parameters": {
                "Page": {
                    "name": "page",
                    "in": "query",
                    "schema": {"$ref": "#/components/schemas/N"},
                }
            },
            "schemas": {"N": {"type": "integer", "maximum": 50}},
        },
    )
    assert only_route(spec)["validate"]["query"] == {"page": {"type": "integer", "maximum": 50}}


def test_ignored_and_unchecked_parameters() -> None:
    spec = document(
        {
            "/a/{id}": {
                "get": {
                    "parameters": [
                        {"name": "Authorization", "in": "header", "required": True},
                        {"name": "Accept", "in": "header"},
                        {"name": "session", "in": "cookie"},
                        {"name": "other", "in": "path", "required": True},
                        {"name": "id", "in": "path", "required": True, "style": "matrix"},
                    ],
                    "responses": ok(),
                }
            }
        }
    )
    result = import_openapi(spec, upstream="app")
    validate = result.routes[0]["validate"]
    assert "headers" not in validate
    assert validate["path_params"] == {"id": {}}
    messages = [warning.message for warning in result.warnings]
    assert messages == [
        "cookie parameter session is not checked",
        "skipped: path parameter other is not in the path",
        "parameter id has style matrix: not checked",
    ]


@pytest.mark.parametrize(
    "parameter",
    [
        {"name": "tags", "in": "query", "schema": {"type": "array", "items": {"type": "string"}}},
        {"name": "filter[name]", "in": "query", "schema": {"type": "string"}},
    ],
)
def test_unsupported_query_parameter_allows_others(parameter: dict[str, Any]) -> None:
    spec = document({"/a": {"get": {"parameters": [parameter], "responses": ok()}}})
    result = import_openapi(spec, upstream="app")
    assert "validate" not in result.routes[0]
    assert len(result.warnings) == 1


def test_allow_unknown_query_option() -> None:
    spec = document({"/a": {"get": {"responses": ok()}}})
    result = import_openapi(spec, upstream="app", additional_query=True)
    assert "validate" not in result.routes[0]


def test_parameter_max_length_is_capped() -> None:
    parameter = {"name": "q", "in": "query", "schema": {"type": "string", "maxLength": 10**6}}
    assert params_of(parameter)["query"]["q"] == {"max_length": 65536}


def test_invalid_parameter_pattern() -> None:
    parameter = {"name": "q", "in": "query", "schema": {"type": "string", "pattern": "(["}}
    spec = document({"/a": {"get": {"parameters": [parameter], "responses": ok()}}})
    raises_at(spec, "/paths/~1a/get/parameters/0/schema", "invalid regular expression")


def test_invalid_parameter_object() -> None:
    spec = document({"/a": {"get": {"parameters": [{"name": "q"}], "responses": ok()}}})
    raises_at(spec, "/paths/~1a/get/parameters/0/in", "expected one of query")


# ---------------------------------------------------------------------------
# Request bodies


def test_body_from_component_ref() -> None:
    spec = post_schema(
        {"$ref": "#/components/schemas/Order"},
        components={"schemas": {"Order": ORDER_SCHEMA}},
    )
    assert body_schema(spec) == ORDER_SCHEMA


def test_request_body_ref() -> None:
    operation = {"requestBody": {"$ref": "#/components/requestBodies/Order"}, "responses": ok()}
    spec = document(
        {"/items": {"post": operation}},
        components={"requestBodies": {"Order": json_body(ORDER_SCHEMA, required=False)}},
    )
    validate = only_route(spec)["validate"]
    assert validate["json"] == {"schema": ORDER_SCHEMA}
    assert "body_required" not in validate


def test_body_content_types() -> None:
    content = {
        "application/json; charset=utf-8": {"schema": {"type": "object"}},
        "application/merge-patch+json": {"schema": {"type": "object"}},
        "Text/Plain; charset=ISO-8859-1": {},
    }
    spec = document({"/a": {"patch": {"requestBody": {"content": content}, "responses": ok()}}})
    result = import_openapi(spec, upstream="app")
    validate = result.routes[0]["validate"]
    assert validate["content_types"] == [
        "application/json",
        "application/merge-patch+json",
        "text/plain",
    ]
    assert validate["charsets"] == ["utf-8", "iso-8859-1"]
    assert validate["json"] == {"schema": {"type": "object"}}
    assert result.warnings[0].message == "bodies of text/plain are forwarded without a body check"


def test_json_without_schema_is_parsed_strictly() -> None:
    content = {"application/json": {}}
    spec = document({"/a": {"post": {"requestBody": {"content": content}, "responses": ok()}}})
    assert only_route(spec)["validate"]["json"] == {}


def test_any_media_type() -> None:
    content = {"*/*": {"schema": {}}}
    spec = document({"/a": {"post": {"requestBody": {"content": content}, "responses": ok()}}})
    assert only_route(spec)["validate"] == {"additional_query": False}

    content = {"application/json": {"schema": {"type": "object"}}, "image/*": {}}
    spec = document({"/a": {"post": {"requestBody": {"content": content}, "responses": ok()}}})
    result = import_openapi(spec, upstream="app")
    assert result.routes[0]["validate"] == {"additional_query": False}
    assert [warning.message for warning in result.warnings] == [
        "a media type range is accepted as any media type",
        "the body may have any media type, so it is not checked as JSON",
    ]


def test_body_of_any_media_type_not_required() -> None:
    for content in ({"*/*": {}}, {}):
        body = {"required": True, "content": content}
        spec = document({"/a": {"post": {"requestBody": body, "responses": ok()}}})
        assert only_route(spec)["validate"] == {"additional_query": False}


def test_different_json_schemas_warn() -> None:
    content = {
        "application/vnd.a+json": {"schema": {"type": "array"}},
        "application/json": {"schema": {"type": "object"}},
    }
    spec = document({"/a": {"post": {"requestBody": {"content": content}, "responses": ok()}}})
    result = import_openapi(spec, upstream="app")
    assert result.routes[0]["validate"]["json"] == {"schema": {"type": "object"}}
    assert "schema of application/json is applied" in result.warnings[0].message


def test_invalid_media_type() -> None:
    content = {"application/json/x": {}}
    spec = document({"/a": {"post": {"requestBody": {"content": content}, "responses": ok()}}})
    raises_at(spec, "/paths/~1a/post/requestBody/content/application~1json~1x", "invalid media")


def test_missing_request_body_content() -> None:
    spec = document({"/a": {"post": {"requestBody": {}, "responses": ok()}}})
    raises_at(spec, "/paths/~1a/post/requestBody/content", "expected an object of media types")


# ---------------------------------------------------------------------------
# Form bodies


UPLOAD_SCHEMA = {
    "type": "object",
    "required": ["title", "file"],
    "additionalProperties": False,
    "properties": {
        "title": {"type": "string", "maxLength": 40, "pattern": "^[A-Za-z ]+$"},
        "count": {"type": "integer", "minimum": 1},
        "gift": {"type": "boolean"},
        "color": {"type": "string", "enum": ["red", "blue"]},
        "file": {"type": "string", "format": "binary"},
    },
}


def form_import(content: dict[str, Any], required: bool = True) -> Any:
    body = {"required": required, "content": content}
    spec = document({"/upload": {"post": {"requestBody": body, "responses": ok()}}})
    return import_openapi(spec, upstream="app")


def test_multipart_schema_becomes_form_fields() -> None:
    result = form_import({"multipart/form-data": {"schema": UPLOAD_SCHEMA}})
    validate = result.routes[0]["validate"]
    assert validate["content_types"] == ["multipart/form-data"]
    assert validate["body_required"] is True
    assert validate["form"] == {
        "fields": {
            "title": {"required": True, "pattern": "^[A-Za-z ]+\\Z", "max_length": 40},
            "count": {"type": "integer", "minimum": 1},
            "gift": {"type": "boolean"},
            "color": {"enum": ["red", "blue"]},
            "file": {"type": "file", "required": True},
        }
    }
    assert result.warnings == []
    Route.model_validate(result.routes[0])


def test_urlencoded_binary_property_is_text() -> None:
    result = form_import({"application/x-www-form-urlencoded": {"schema": UPLOAD_SCHEMA}})
    assert result.routes[0]["validate"]["form"]["fields"]["file"] == {"required": True}


def test_form_schema_with_additional_properties() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    result = form_import({"application/x-www-form-urlencoded": {"schema": schema}})
    assert result.routes[0]["validate"]["form"] == {
        "fields": {"a": {"type": "integer"}},
        "additional_fields": True,
    }


def test_form_component_ref() -> None:
    body = {"content": {"multipart/form-data": {"schema": {"$ref": "#/components/schemas/U"}}}}
    spec = document(
        {"/upload": {"post": {"requestBody": body, "responses": ok()}}},
        components={"schemas": {"U": UPLOAD_SCHEMA}},
    )
    form = only_route(spec)["validate"]["form"]
    assert form["fields"]["file"] == {"type": "file", "required": True}


def test_form_array_property_not_checked() -> None:
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"tags": {"type": "array", "items": {"type": "string"}}, "a": {}},
    }
    result = form_import({"multipart/form-data": {"schema": schema}})
    assert result.routes[0]["validate"]["form"] == {
        "fields": {"a": {}},
        "additional_fields": True,
    }
    assert [warning.message for warning in result.warnings] == [
        "form field tags is an array or object: not checked, and the form then accepts "
        "fields that it does not declare"
    ]
    assert result.warnings[0].pointer.endswith("/schema/properties/tags")


def test_form_without_object_schema_keeps_defaults() -> None:
    for media in ({}, {"schema": {"type": "string"}}):
        result = form_import({"application/x-www-form-urlencoded": media})
        validate = result.routes[0]["validate"]
        assert validate["content_types"] == ["application/x-www-form-urlencoded"]
        assert "form" not in validate


def test_form_warnings_name_form_field() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": ["string", "integer"]}, "bad name": {"type": "string"}},
    }
    result = form_import({"application/x-www-form-urlencoded": {"schema": schema}})
    assert [warning.message for warning in result.warnings] == [
        "form field n has several types: only its length is checked",
        "form field name bad name is not supported: not checked",
    ]


def test_json_and_form_media_types_on_one_route() -> None:
    content = {
        "application/json": {"schema": {"type": "object"}},
        "multipart/form-data": {"schema": UPLOAD_SCHEMA},
        "text/plain": {},
    }
    result = form_import(content)
    validate = result.routes[0]["validate"]
    assert validate["json"] == {"schema": {"type": "object"}}
    assert validate["form"]["fields"]["count"] == {"type": "integer", "minimum": 1}
    assert [warning.message for warning in result.warnings] == [
        "bodies of text/plain are forwarded without a body check"
    ]


def test_different_form_schemas_warn() -> None:
    content = {
        "application/x-www-form-urlencoded": {"schema": UPLOAD_SCHEMA},
        "multipart/form-data": {"schema": {"type": "object", "properties": {"x": {}}}},
    }
    result = form_import(content)
    assert "file" in result.routes[0]["validate"]["form"]["fields"]
    assert result.routes[0]["validate"]["form"]["fields"]["file"] == {"required": True}
    assert "the schema of application/x-www-form-urlencoded is applied" in (
        result.warnings[0].message
    )


# ---------------------------------------------------------------------------
# Schemas


def test_30_nullable() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "nullable": True},
            "kind": {"type": "string", "enum": ["a", None], "nullable": True},
            "plain": {"type": "string", "nullable": False},
        },
    }
    converted = body_schema(post_schema(schema, "3.0.3"))
    assert converted["properties"] == {
        "name": {"type": ["string", "null"]},
        "kind": {"type": ["string", "null"], "enum": ["a", None]},
        "plain": {"type": "string"},
    }


def test_30_nullable_without_type_warns() -> None:
    schema = {"allOf": [{"type": "object"}], "nullable": True}
    result = import_openapi(post_schema(schema, "3.0.0"), upstream="app")
    assert result.routes[0]["validate"]["json"]["schema"] == {"allOf": [{"type": "object"}]}
    assert (
        result.warnings[0].pointer
        == "/paths/~1items/post/requestBody/content/application~1json/schema"
    )
    assert "nullable: true without type" in result.warnings[0].message


def test_30_exclusive_bounds() -> None:
    schema = {
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 5,
        "exclusiveMaximum": False,
    }
    assert body_schema(post_schema(schema, "3.0.3")) == {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": 5,
    }


def test_annotations_and_extensions_dropped() -> None:
    schema = {
        "type": "object",
        "title": "Order",
        "description": "An order",
        "example": {"a": 1},
        "x-internal": True,
        "xml": {"name": "order"},
        "properties": {
            "example": {"type": "string", "example": "text", "default": "x"},
            "x-trace": {"type": "string", "x-note": "kept: a property, not a keyword"},
        },
    }
    for version in ("3.0.3", "3.1.0"):
        assert body_schema(post_schema(schema, version)) == {
            "type": "object",
            "properties": {"example": {"type": "string"}, "x-trace": {"type": "string"}},
        }


def test_read_only_property_not_required() -> None:
    schema = {
        "type": "object",
        "required": ["id", "name"],
        "properties": {
            "id": {"$ref": "#/components/schemas/Id"},
            "name": {"type": "string"},
        },
    }
    spec = post_schema(schema, components={"schemas": {"Id": {"type": "string", "readOnly": True}}})
    converted = body_schema(spec)
    assert converted["required"] == ["name"]
    assert converted["properties"]["id"] == {"type": "string", "readOnly": True}


def test_30_ref_siblings_ignored() -> None:
    schema = {"$ref": "#/components/schemas/Name", "maxLength": 3, "description": "x"}
    spec = post_schema(schema, "3.0.3", components={"schemas": {"Name": {"type": "string"}}})
    result = import_openapi(spec, upstream="app")
    assert result.routes[0]["validate"]["json"]["schema"] == {"type": "string"}
    assert result.warnings[0].message.startswith("maxLength next to $ref ignored")


def test_31_ref_siblings_apply() -> None:
    schema = {"$ref": "#/components/schemas/Name", "maxLength": 3, "description": "x"}
    spec = post_schema(schema, components={"schemas": {"Name": {"type": "string"}}})
    assert body_schema(spec) == {"maxLength": 3, "allOf": [{"type": "string"}]}


def test_31_schema_keywords() -> None:
    schema = {
        "$schema": "https://spec.openapis.org/oas/3.1/dialect/base",
        "type": "object",
        "properties": {"a": True, "b": False, "c": {"type": ["string", "null"]}},
        "prefixItems": [{"const": 1}],
        "$defs": {"unused": {"type": "string"}},
    }
    assert body_schema(post_schema(schema)) == {
        "type": "object",
        "properties": {"a": True, "b": False, "c": {"type": ["string", "null"]}},
        "prefixItems": [{"const": 1}],
    }


def test_boolean_root_schema() -> None:
    assert body_schema(post_schema(True)) == {}
    assert body_schema(post_schema(False)) == {"not": {}}


def test_nested_refs_inlined() -> None:
    components = {
        "schemas": {
            "Order": {
                "type": "object",
                "properties": {"lines": {"$ref": "#/components/schemas/Lines"}},
            },
            "Lines": {"type": "array", "items": {"$ref": "#/components/schemas/Line"}},
            "Line": {"type": "object", "properties": {"sku": {"type": "string"}}},
        }
    }
    spec = post_schema({"$ref": "#/components/schemas/Order"}, components=components)
    assert body_schema(spec) == {
        "type": "object",
        "properties": {
            "lines": {
                "type": "array",
                "items": {"type": "object", "properties": {"sku": {"type": "string"}}},
            }
        },
    }


def test_ref_with_escaped_pointer() -> None:
    components = {"schemas": {"a/b~c d": {"type": "integer"}}}
    spec = post_schema({"$ref": "#/components/schemas/a~1b~0c%20d"}, components=components)
    assert body_schema(spec) == {"type": "integer"}


def test_recursive_ref_uses_defs() -> None:
    components = {
        "schemas": {
            "Node": {
                "type": "object",
                "required": ["value"],
                "properties": {
                    "value": {"type": "integer"},
                    "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
                },
            }
        }
    }
    spec = post_schema({"$ref": "#/components/schemas/Node"}, components=components)
    schema = body_schema(spec)
    assert schema["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    assert schema["$defs"]["Node"]["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}

    validator = JsonSchemaValidator(schema)
    validator.validate({"value": 1, "children": [{"value": 2, "children": [{"value": 3}]}]})
    with pytest.raises(BodyInvalid) as caught:
        validator.validate({"value": 1, "children": [{"value": 2, "children": [{"value": "3"}]}]})
    assert caught.value.pointer == "/children/0/children/0/value"


def test_mutual_recursion() -> None:
    components = {
        "schemas": {
            "A": {"type": "object", "properties": {"b": {"$ref": "#/components/schemas/B"}}},
            "B": {"type": "object", "properties": {"a": {"$ref": "#/components/schemas/A"}}},
        }
    }
    schema = body_schema(post_schema({"$ref": "#/components/schemas/A"}, components=components))
    validator = JsonSchemaValidator(schema)
    validator.validate({"b": {"a": {"b": {"a": {}}}}})
    with pytest.raises(BodyInvalid):
        validator.validate({"b": {"a": {"b": {"a": 1}}}})


def test_circular_ref_without_schema() -> None:
    components = {
        "schemas": {
            "A": {"$ref": "#/components/schemas/B"},
            "B": {"$ref": "#/components/schemas/A"},
        }
    }
    spec = post_schema({"$ref": "#/components/schemas/A"}, components=components)
    raises_at(spec, "/components/schemas/A", "circular $ref")


def test_exponential_inlining_is_limited() -> None:
    schemas: dict[str, Any] = {"S0": {"type": "string"}}
    for level in range(1, 30):
        below = {"$ref": f"#/components/schemas/S{level - 1}"}
        schemas[f"S{level}"] = {"type": "object", "properties": {"a": below, "b": below}}
    spec = post_schema({"$ref": "#/components/schemas/S29"}, components={"schemas": schemas})
    with pytest.raises(OpenApiError, match=f"more than {MAX_SCHEMA_NODES} schemas"):
        import_openapi(spec, upstream="app")


def test_deeply_nested_schema_rejected() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(5000):
        schema = {"type": "object", "properties": {"a": schema}}
    with pytest.raises(OpenApiError, match="nested too deeply"):
        import_openapi(post_schema(schema), upstream="app")


def test_output_is_independent_of_document() -> None:
    components = {"schemas": {"E": {"enum": [["a"], ["b"]]}}}
    spec = post_schema(
        {"type": "object", "properties": {"x": {"$ref": "#/components/schemas/E"}}},
        components=components,
    )
    original = copy.deepcopy(spec)
    schema = body_schema(spec)
    schema["properties"]["x"]["enum"][0].append("changed")
    assert spec == original


def test_converted_schema_rejects_wrong_type() -> None:
    validator = JsonSchemaValidator(body_schema(post_schema(ORDER_SCHEMA)))
    validator.validate({"product_id": 42, "quantity": 2})
    with pytest.raises(BodyInvalid) as caught:
        validator.validate({"product_id": "42", "quantity": 2})
    assert caught.value.pointer == "/product_id"


# ---------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("spec", "pointer", "message"),
    [
        ([], "", "expected an OpenAPI document"),
        ({"paths": {}}, "/openapi", "missing"),
        ({"swagger": "2.0", "paths": {}}, "/swagger", "Swagger 2.0 is not supported"),
        ({"openapi": 3.1, "paths": {}}, "/openapi", 'expected a string such as "3.1.0"'),
        ({"openapi": "3.2.0", "paths": {}}, "/openapi", "expected 3.0.x or 3.1.x"),
        ({"openapi": "3.1"}, "/openapi", "expected 3.0.x or 3.1.x"),
        ({"openapi": "3.1.0"}, "/paths", "missing"),
        ({"openapi": "3.0.3", "paths": []}, "/paths", "expected an object"),
        ({"openapi": "3.1.0", "paths": {"orders": {}}}, "/paths/orders", "starts with /"),
        ({"openapi": "3.1.0", "paths": {"/a": []}}, "/paths/~1a", "expected a path item"),
        ({"openapi": "3.1.0", "paths": {"/a": {"get": 1}}}, "/paths/~1a/get", "operation"),
        (
            {"openapi": "3.1.0", "jsonSchemaDialect": "https://example.com/d", "paths": {}},
            "/jsonSchemaDialect",
            "unsupported dialect",
        ),
    ],
)
def test_invalid_document(spec: Any, pointer: str, message: str) -> None:
    raises_at(spec, pointer, message)


def test_remote_ref_rejected() -> None:
    spec = post_schema(
        {"type": "object", "properties": {"a": {"$ref": "common.yaml#/components/schemas/A"}}}
    )
    raises_at(
        spec,
        "/paths/~1items/post/requestBody/content/application~1json/schema/properties/a/$ref",
        "refers to another document",
    )


def test_url_ref_rejected() -> None:
    spec = post_schema({"$ref": "https://example.com/schemas/order.json"})
    raises_at(
        spec,
        "/paths/~1items/post/requestBody/content/application~1json/schema/$ref",
        "refers to another document",
    )


def test_anchor_ref_rejected() -> None:
    spec = post_schema({"$ref": "#order"})
    raises_at(
        spec,
        "/paths/~1items/post/requestBody/content/application~1json/schema/$ref",
        "names an anchor",
    )


def test_missing_ref_target() -> None:
    operation = {"parameters": [{"$ref": "#/components/parameters/Nope"}], "responses": ok()}
    spec = document({"/a": {"get": operation}})
    raises_at(spec, "/paths/~1a/get/parameters/0/$ref", "not found in the document")


def test_schema_id_rejected() -> None:
    spec = post_schema({"$id": "https://example.com/order", "type": "object"})
    raises_at(
        spec,
        "/paths/~1items/post/requestBody/content/application~1json/schema/$id",
        "$id is not supported",
    )


def test_items_list_rejected() -> None:
    spec = post_schema({"type": "array", "items": [{"type": "string"}]}, "3.0.3")
    raises_at(
        spec,
        "/paths/~1items/post/requestBody/content/application~1json/schema/items",
        "use prefixItems",
    )


def test_invalid_json_schema() -> None:
    spec = post_schema({"type": "text"})
    raises_at(
        spec,
        "/paths/~1items/post/requestBody/content/application~1json/schema",
        "invalid JSON Schema",
    )


def test_environment_reference_rejected() -> None:
    parameter = {"name": "q", "in": "query", "schema": {"type": "string", "enum": ["${HOME}"]}}
    spec = document({"/a": {"get": {"parameters": [parameter], "responses": ok()}}})
    raises_at(spec, "/paths/~1a", "replaces with an environment variable")


# ---------------------------------------------------------------------------
# Helpers


def test_join_pointer_escapes() -> None:
    assert join_pointer("/paths", "/a/{b}", "get") == "/paths/~1a~1{b}/get"
    assert join_pointer("", "a~b", 0) == "/a~0b/0"


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("^a$", r"^a\Z"),
        (r"^a\$", r"^a\$"),
        ("^[$]+$", r"^[$]+\Z"),
        (r"^[\]$]$", r"^[\]$]\Z"),
        (r"^\d{4}$", r"(?a)^\d{4}\Z"),
        ("(a|b)", "(a|b)"),
    ],
)
def test_python_pattern(pattern: str, expected: str) -> None:
    assert python_pattern(pattern) == expected


def test_python_pattern_matches_like_ecma() -> None:
    assert re.search("^acc-[0-9]{4}$", "acc-1234\n") is not None
    assert re.search(python_pattern("^acc-[0-9]{4}$"), "acc-1234\n") is None
    assert re.search(python_pattern(r"^\d+$"), "\u0663") is None
    assert re.search(python_pattern(r"^\d+$"), "123") is not None
    assert re.search(python_pattern(r"^\w+$"), "caf\u00e9") is None
