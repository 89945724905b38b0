"""Configuration of request validation: the declared shape of a route's requests.

A route's `validate` block lists what a request may carry: its content
types, its query and header parameters, patterns for its path parameters,
for JSON bodies a JSON Schema (draft 2020-12), and for form bodies parsing
limits and declared fields. Anything else is rejected after authentication
and before authorization and the upstream: 415 for a content type or
encoding not declared, 400 naming the part that failed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from ringwall.config.types import ByteSize

_MEDIA_TYPE = re.compile(r"^[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+$")
_NAME = re.compile(r"^[A-Za-z0-9_.~-]{1,128}$")
# Declared form field names: printable ASCII without spaces, so that names
# such as items[0][sku] fit. '"' and '\' are excluded because a multipart
# name cannot carry them: browsers send '"' as %22, and the parser rejects
# backslashes.
_FORM_FIELD_NAME = re.compile(r"^[!#-\[\]-~]+$")
ParamType = Literal["string", "integer", "number", "boolean"]
FormFieldType = Literal["string", "integer", "number", "boolean", "file"]
# An integer setting: YAML's true and false are not read as 1 and 0.
Count = Annotated[int, Strict()]

FORM_URLENCODED = "application/x-www-form-urlencoded"
MULTIPART_FORM_DATA = "multipart/form-data"
FORM_MEDIA_TYPES = frozenset({FORM_URLENCODED, MULTIPART_FORM_DATA})


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
        return _check_regex(value)


def _check_regex(value: str | None) -> str | None:
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


class FormFieldSpec(_Model):
    """One declared form field: its type, whether it is required, its values.

    The keys mean what they mean for a query parameter. Type `file` requires
    a multipart/form-data part with a filename, and then only `required`
    applies. `max_length` counts characters of a text value.
    """

    type: FormFieldType = "string"
    required: bool = False
    pattern: str | None = None
    enum: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    max_length: int = Field(1024, ge=1, le=65536)

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str | None) -> str | None:
        return _check_regex(value)

    @model_validator(mode="after")
    def _check(self) -> FormFieldSpec:
        if self.type == "file":
            unused = [
                key
                for key, value in (
                    ("pattern", self.pattern),
                    ("enum", self.enum or None),
                    ("minimum", self.minimum),
                    ("maximum", self.maximum),
                )
                if value is not None
            ]
            if unused:
                raise ValueError(f"{', '.join(unused)}: not checked on a field of type file")
        return self


class FormBodySpec(_Model):
    """A form body: limits for strict parsing and, optionally, the fields it may carry.

    The defaults apply to every route that accepts a form media type, also
    without a `form` block. 1,000 fields is the default of werkzeug 2.2.3 and
    later (`max_form_parts`) and of starlette 0.25.0 and later (`max_fields`,
    `max_files`).
    """

    # Fields of a URL-encoded body, or parts of a multipart body.
    max_fields: Count = Field(1000, ge=1, le=100_000)
    # UTF-8 bytes of a field name, after percent-decoding.
    max_name_bytes: Count = Field(256, ge=1, le=4096)
    # Bytes of one text value: a URL-encoded value after percent-decoding, or
    # a part without a filename.
    max_value_bytes: ByteSize = Field(64 * 1024, ge=1)
    # Bytes of one part with a filename. None: only the route's body limit.
    max_file_bytes: ByteSize | None = None
    # Header fields of one multipart part.
    max_part_headers: Count = Field(8, ge=1, le=64)
    # With true, a field name may occur more than once, and each occurrence
    # is checked.
    duplicate_fields: bool = False
    # With declared fields, another field name gets 400 unless this is true.
    additional_fields: bool = False
    fields: dict[str, FormFieldSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> FormBodySpec:
        for name in self.fields:
            if not _FORM_FIELD_NAME.match(name):
                raise ValueError(
                    f"fields: invalid field name {name!r}: use printable ASCII without spaces, "
                    "quotes and backslashes"
                )
            if len(name) > self.max_name_bytes:
                raise ValueError(
                    f"fields: field name {name[:64]!r} is longer than max_name_bytes "
                    f"({self.max_name_bytes})"
                )
        return self


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
    # Form bodies are parsed strictly whenever content_types lists a form
    # media type. This block sets the limits and declares fields.
    form: FormBodySpec | None = None
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
        if (
            self.json_ is not None
            and self.content_types
            and not any(is_json_media_type(media_type) for media_type in self.content_types)
        ):
            raise ValueError("json needs a JSON media type in content_types")
        if self.form is not None and not any(
            media_type in FORM_MEDIA_TYPES for media_type in self.content_types
        ):
            raise ValueError(
                f"form needs {FORM_URLENCODED} or {MULTIPART_FORM_DATA} in content_types"
            )
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
