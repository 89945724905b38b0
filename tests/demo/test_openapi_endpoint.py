"""The demo backend's OpenAPI document: served at /openapi.json and true to the backend.

Every operation of the document is called on a running backend, with the
examples that the document gives, and the response must have a documented
status and match the documented JSON schema.
"""

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from ringwall.demo.api import openapi_document
from ringwall.demo.backend import DemoBackend
from ringwall.gateway.validation.json_body import JsonSchemaValidator
from ringwall.openapi import HTTP_METHODS, join_pointer, json_schema_at
from tests.support.backend_thread import running_backend

TIMEOUT = 5.0
SPEC_FILE = Path(__file__).resolve().parents[2] / "ringwall" / "demo" / "openapi.json"


@pytest.fixture
def backend() -> Iterator[DemoBackend]:
    with running_backend() as started:
        yield started


def fetch(
    backend: DemoBackend,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[http.client.HTTPResponse, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=TIMEOUT)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


def test_document_served(backend: DemoBackend) -> None:
    response, data = fetch(backend, "GET", "/openapi.json")
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    document = json.loads(data)
    assert document == json.loads(SPEC_FILE.read_text(encoding="utf-8"))
    assert document["openapi"] == "3.1.0"
    assert "/api/orders" in document["paths"]


def test_document_conditional_get(backend: DemoBackend) -> None:
    response, _ = fetch(backend, "GET", "/openapi.json")
    etag = response.getheader("ETag")
    assert etag

    response, data = fetch(backend, "GET", "/openapi.json", headers={"If-None-Match": etag})
    assert response.status == 304
    assert data == b""


def test_document_rejects_post(backend: DemoBackend) -> None:
    response, _ = fetch(backend, "POST", "/openapi.json", b"{}")
    assert response.status == 405


def test_document_copy_is_fresh() -> None:
    first = openapi_document()
    first["paths"].clear()
    assert openapi_document()["paths"]


def test_order_body_schema() -> None:
    schema = openapi_document()["components"]["schemas"]["OrderRequest"]
    assert schema["required"] == ["product_id", "quantity"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["product_id"]["type"] == "integer"
    assert schema["properties"]["product_id"]["minimum"] == 1
    assert schema["properties"]["quantity"] == {"type": "integer", "minimum": 1, "maximum": 100}


def test_account_id_pattern() -> None:
    parameter = openapi_document()["components"]["parameters"]["AccountId"]
    assert parameter["schema"]["pattern"] == "^acc-[0-9]{4}$"


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any], str]]:
    for path, item in document["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item, join_pointer("/paths", path, method)


def parameters(document: dict[str, Any], item: dict[str, Any], operation: dict[str, Any]) -> Any:
    for parameter in [*item.get("parameters", []), *operation.get("parameters", [])]:
        if "$ref" in parameter:
            parameter = document["components"]["parameters"][parameter["$ref"].rsplit("/")[-1]]
        yield parameter


def example_request(
    document: dict[str, Any], path: str, item: dict[str, Any], operation: dict[str, Any]
) -> tuple[str, bytes | None, dict[str, str]]:
    """Build the target, body and headers of a request from the document's examples."""
    query = {}
    for parameter in parameters(document, item, operation):
        if "example" not in parameter:
            continue
        if parameter["in"] == "path":
            path = path.replace("{" + parameter["name"] + "}", parameter["example"])
        elif parameter["in"] == "query":
            query[parameter["name"]] = parameter["example"]
    assert "{" not in path, f"no example for a parameter of {path}"
    target = path + ("?" + urlencode(query) if query else "")
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    if "example" in body:
        return target, json.dumps(body["example"]).encode(), {"Content-Type": "application/json"}
    return target, None, {}


def test_operations_match_backend(backend: DemoBackend) -> None:
    document = openapi_document()
    checked = []
    for path, method, item, pointer in operations(document):
        operation = item[method]
        target, body, headers = example_request(document, path, item, operation)
        response, data = fetch(backend, method.upper(), target, body, headers)
        where = f"{method.upper()} {target}"
        responses = operation["responses"]
        assert str(response.status) in responses, f"{where}: undocumented {response.status}"

        documented = responses[str(response.status)]
        if "$ref" in documented:
            documented = document["components"]["responses"][documented["$ref"].rsplit("/")[-1]]
        content = documented.get("content", {})
        if "application/json" not in content:
            checked.append((where, response.status))
            continue
        assert response.getheader("Content-Type") == "application/json", where
        schema_pointer = join_pointer(
            pointer, "responses", str(response.status), "content", "application/json", "schema"
        )
        if "$ref" in responses[str(response.status)]:
            name = responses[str(response.status)]["$ref"].rsplit("/")[-1]
            schema_pointer = join_pointer(
                "/components/responses", name, "content", "application/json", "schema"
            )
        JsonSchemaValidator(json_schema_at(document, schema_pointer)).validate(json.loads(data))
        checked.append((where, response.status))

    assert len(checked) == 22
    assert ("POST /api/orders", 201) in checked
    assert ("DELETE /api/orders/ord-5001", 204) in checked
    assert ("GET /api/ws", 426) in checked
