"""Set up the POST and WAF systems: a 1 KB JSON order, and the configs that receive it.

Both route `/` to the backend. `ringwall-validated` also declares the
body's content type and a JSON Schema, so every request is read whole,
parsed strictly and validated before it is forwarded. wrk sends the same
body with a Lua script.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ORDER: dict[str, Any] = {
    "order_id": "ord-2026-000042",
    "customer": {"id": "cus-1001", "email": "alice@example.test", "tier": "gold"},
    "currency": "EUR",
    "items": [
        {"product_id": 100 + index, "quantity": index + 1, "unit_price": 12.5 + index}
        for index in range(8)
    ],
    "shipping": {
        "name": "Alice Example",
        "street": "1 Example Street",
        "city": "Exampleton",
        "postal_code": "12345",
        "country": "DE",
    },
    "notes": "Leave at the front desk. " * 10,
    "gift": False,
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["order_id", "customer", "currency", "items"],
    "additionalProperties": False,
    "properties": {
        "order_id": {"type": "string", "pattern": "^ord-[0-9]{4}-[0-9]{6}$"},
        "customer": {
            "type": "object",
            "required": ["id", "email"],
            "properties": {
                "id": {"type": "string", "maxLength": 32},
                "email": {"type": "string", "maxLength": 254},
                "tier": {"enum": ["basic", "silver", "gold"]},
            },
        },
        "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 100,
            "items": {
                "type": "object",
                "required": ["product_id", "quantity"],
                "additionalProperties": False,
                "properties": {
                    "product_id": {"type": "integer", "minimum": 1},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": 1000},
                    "unit_price": {"type": "number", "minimum": 0},
                },
            },
        },
        "shipping": {"type": "object"},
        "notes": {"type": "string", "maxLength": 1000},
        "gift": {"type": "boolean"},
    },
}


def order_body() -> bytes:
    return json.dumps(ORDER).encode()


def write_post_script(prefix: Path) -> Path:
    """Write the wrk Lua script that POSTs the order."""
    path = prefix / "post-order.lua"
    body = order_body().decode()
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return path


def write_post_config(prefix: Path, validated: bool) -> Path:
    """Write Ringwall's config with one route `/`, with or without the body's validation."""
    route: dict[str, Any] = {"name": "all", "path": "/", "upstream": "app", "auth": "none"}
    if validated:
        route["validate"] = {"content_types": ["application/json"], "json": {"schema": SCHEMA}}
    config = {"upstreams": {"app": {"targets": ["${UPSTREAM_URL}"]}}, "routes": [route]}
    path = prefix / ("ringwall-validated.yaml" if validated else "ringwall-post.yaml")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_waf_config(prefix: Path) -> Path:
    """Write Ringwall's config with the WAF on route `/`: CRS, paranoia level 1, block mode."""
    config = {
        "logging": {"security": str(prefix / "security.log")},
        "waf": {"mode": "block", "paranoia": 1},
        "upstreams": {"app": {"targets": ["${UPSTREAM_URL}"]}},
        "routes": [{"name": "all", "path": "/", "upstream": "app", "auth": "none"}],
    }
    path = prefix / "ringwall-waf.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
