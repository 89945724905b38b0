"""Configuration of request validation: the declared shape of a route's requests.

A route's `validate` block lists what a request may carry: its content
types, its query and header parameters, patterns for its path parameters
and, for JSON bodies, a JSON Schema (draft 2020-12). Anything else is
rejected after authentication and before authorization and the upstream:
415 for a content type or encoding not declared, 400 naming the part that
failed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_MEDIA_TYPE = re.compile(r"^[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+$")
_NAME = re.compile(r"^[A-Za-z0-9_.~-]{1,128}$")
ParamType = Literal["string", "integer", "number", "boolean"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ParamSpec(_Model):
    """One query, header or path parameter: its type, whether it is required, its values."""

    type: ParamType = "string"
    required: bool = False
    pattern: str | None = None
    enum: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    max_length: int = Field(1024, ge=1, le=65536)

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value


class JsonBodySpec(_Model):
    """A JSON body: strict parsing limits and a JSON Schema, inline or from a file."""

    schema_: dict[str, Any] | None = Field(None, alias="schema")
    schema_file: str | None = None
    max_depth: int = Field(64, ge=1, le=500)
    max_members: int = Field(10_000, ge=1, le=1_000_000)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _check(self) -> JsonBodySpec:
        if self.schema_ is not None and self.schema_file is not None:
            raise ValueError("set schema or schema_file, not both")
        return self

    def load_schema(self) -> dict[str, Any] | None:
        """Return the schema, reading `schema_file` when set. Raises ValueError on a bad file."""
        if self.schema_file is None:
            return self.schema_
        try:
            document = json.loads(Path(self.schema_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"schema_file: cannot read {self.schema_file}: {exc}") from None
        if not isinstance(document, dict):
            raise ValueError(f"schema_file: {self.schema_file} does not hold a JSON object")
        return document


class ValidateConfig(_Model):
    """The declared shape of a route's requests."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    # Media types a body may have, such as application/json. Empty: any.
    content_types: tuple[str, ...] = ()
    charsets: tuple[str, ...] = ("utf-8",)
    # Query parameters; with `additional_query: false`, others get 400.
    query: dict[str, ParamSpec] = Field(default_factory=dict)
    additional_query: bool = True
    headers: dict[str, ParamSpec] = Field(default_factory=dict)
    path_params: dict[str, ParamSpec] = Field(default_factory=dict)
    json_: JsonBodySpec | None = Field(None, alias="json")
    # A body is required on POST, PUT and PATCH when true.
    body_required: bool = False

    @field_validator("content_types", "charsets", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ValueError("expected a list such as [application/json]")
        return tuple(str(item).strip().lower() for item in value)

    @model_validator(mode="after")
    def _check(self) -> ValidateConfig:
        for media_type in self.content_types:
            if not _MEDIA_TYPE.match(media_type):
                raise ValueError(
                    f"content_types: invalid media type {media_type!r}, expected such as "
                    "application/json"
                )
        for kind, params in (
            ("query", self.query),
            ("headers", self.headers),
            ("path_params", self.path_params),
        ):
            for name in params:
                if not _NAME.match(name):
                    raise ValueError(f"{kind}: invalid parameter name {name!r}")
        if self.json_ is not None and self.content_types and not any(
            is_json_media_type(media_type) for media_type in self.content_types
        ):
            raise ValueError("json needs a JSON media type in content_types")
        if self.json_ is not None:
            schema = self.json_.load_schema()
            if schema is not None:
                # Imported here: the validator library is needed only with a schema.
                from ringwall.gateway.validation.json_body import JsonSchemaValidator

                JsonSchemaValidator(schema)  # raises ValueError for an invalid schema
        return self


def is_json_media_type(media_type: str) -> bool:
    """Return whether a lowercase media type is JSON: application/json or any +json type."""
    return media_type == "application/json" or media_type.endswith("+json")
