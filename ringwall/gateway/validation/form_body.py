"""Parse form bodies strictly and check their fields against the route's declarations.

Two media types are parsed: application/x-www-form-urlencoded (the WHATWG
URL Standard's serialization) and multipart/form-data (RFC 7578, framed as
in RFC 2046, section 5.1). As with JSON, a gateway that accepts a body its
upstream reads differently has checked the wrong fields, so the inputs on
which common parsers disagree are rejected instead of read one way:

URL-encoded bodies

- A raw `;`. Go before 1.17 and Python's `parse_qsl` before its February
  2021 security fix split fields at it, Go 1.17 and later reject it, and
  browsers percent-encode it.
- A `%` not followed by two hex digits, which some parsers keep as a
  literal and others reject.
- Control characters and non-ASCII bytes that are not percent-encoded.
  Older starlette releases decode the raw bytes as Latin-1, and UTF-8
  parsers read them differently.
- A field without `=`, which some parsers drop and others read as an
  empty value. Empty fields (`a=1&&b=2`) are skipped, as python-multipart
  and the WHATWG URL Standard do.

multipart/form-data bodies

- A missing, invalid or repeated `boundary` parameter, and a quoted
  boundary with a backslash, which PHP does not unescape.
- Data before the first boundary, whitespace after a boundary, and
  anything after the closing boundary but one CRLF.
- Line breaks other than CRLF, and header lines continued on the next
  line. The sansio multipart decoder of werkzeug 2.x accepts bare CR and
  LF and joins continued lines.
- The boundary inside a part's content, also without the CRLF in front:
  RFC 2046 forbids it, and parsers that do not require the CRLF split there.
- A Content-Disposition that is not `form-data` with a `name`, repeated
  parameters, and `name*` or `filename*`, which RFC 7578, section 4.2
  forbids. Python's `email.message` decodes `filename*` and returns it as
  the filename, and python-multipart parsed these headers with it until
  2026. Quoted values may not contain a backslash, because browsers
  percent-encode `"` instead and parsers disagree on escapes.
- A Content-Transfer-Encoding other than 7bit, 8bit or binary, which some
  parsers decode, and a nested multipart/mixed part.

Both media types

- Names, text values and filenames that are not UTF-8. A part with a
  `filename` is a file and its content is not decoded. A part without one
  is a text value.
- Control characters in names and filenames, a NUL in text values, and
  path separators in filenames, also those that Unicode NFKC normalization
  turns into `/` or `\\`.
- More fields than `max_fields`, and names, values, files or part headers
  over their limits.
- A name that occurs more than once, unless duplicates are allowed, because
  frameworks differ on whether the first or the last one wins.

Kong's request-validator checks only JSON bodies and passes the other
allowed media types unchecked (Kong request-validator documentation, 2.8
to 3.x). Messages here never quote the body beyond `ringwall.errors.excerpt`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from ringwall.config.validation import (
    FORM_MEDIA_TYPES,
    FORM_URLENCODED,
    MULTIPART_FORM_DATA,
    FormBodySpec,
)
from ringwall.errors import RingwallError, excerpt

if TYPE_CHECKING:
    from ringwall.config.validation import FormFieldSpec, ValidateConfig

# The header section of one part, including its line breaks. Names and
# filenames are bounded by it too.
MAX_PART_HEAD_BYTES = 16 * 1024

_CRLF = b"\r\n"
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# RFC 9110 quoted-string without quoted-pair and without HTAB.
_QUOTED = rb'"([ !#-\[\]-~\x80-\xff]*)"'
_PARAMETER = re.compile(rb";[ \t]*(" + _TOKEN + rb")=(?:(" + _TOKEN + rb")|" + _QUOTED + rb")")
_MEDIA_TYPE = re.compile(rb"(" + _TOKEN + rb")/(" + _TOKEN + rb")")
_DISPOSITION_TYPE = re.compile(_TOKEN)
# RFC 9110 field-line: no whitespace before the colon, no control
# characters but HTAB in the value, no obs-fold. One flat character class,
# so a failing match never backtracks.
_HEADER_LINE = re.compile(rb"(" + _TOKEN + rb"):([ \t!-~\x80-\xff]*)")
_HEADER_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# A CR or LF that is not part of a CRLF. A CR at the end may be the first
# half of a CRLF in a truncated body.
_BARE_LINE_BREAK = re.compile(rb"\r(?!\n|\Z)|(?<!\r)\n")
# RFC 2046, section 5.1.1: 1 to 70 characters, and the last is not a space.
_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_IDENTITY_TRANSFER_ENCODINGS = frozenset({"7bit", "8bit", "binary"})

_URLENCODED_RAW_BYTE = re.compile(rb"[^\x20-\x7e]")
_URLENCODED_FIELD = re.compile(rb"[^&]+")
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")

# C0 controls, DEL and C1 controls: Unicode category Cc.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_INTEGER = re.compile(r"-?[0-9]{1,19}")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


class FormInvalid(RingwallError):
    """A form body that does not parse strictly or does not match its declared fields.

    `reason` is written by Ringwall. `field` is the name of the field that
    failed, already cut to a short escaped excerpt, or None when the failure
    concerns the body as a whole or a part whose name is unknown. The
    message starts with "form field NAME:" or "form body:".
    """

    def __init__(self, reason: str, field: str | None = None) -> None:
        where = f"form field {field}" if field is not None else "form body"
        super().__init__(f"{where}: {reason}")
        self.reason = reason
        self.field = field


@dataclass(frozen=True, slots=True)
class FormLimits:
    """The parsing limits of one route, from its `form` block."""

    max_fields: int = 1000
    max_name_bytes: int = 256
    max_value_bytes: int = 64 * 1024
    # None: a file part is limited only by the body limit.
    max_file_bytes: int | None = None
    max_part_headers: int = 8


@dataclass(frozen=True, slots=True)
class FormField:
    """One field of a form body, in body order.

    `value` is the decoded text of a text field and None for a file part.
    `filename` is None for a text field and may be "" for a file part, which
    browsers send for an empty file input. `size` counts the bytes of the
    decoded value or of the file content.
    """

    name: str
    value: str | None
    filename: str | None
    content_type: str | None
    size: int


def form_media_type(content_type: bytes) -> str | None:
    """Return the form media type of a Content-Type value, or None for any other type."""
    media_type = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
    return media_type if media_type in FORM_MEDIA_TYPES else None


def parse_form(body: bytes, content_type: bytes, limits: FormLimits) -> list[FormField]:
    """Parse `body` by the form media type of `content_type`; raise FormInvalid.

    Raises ValueError when `content_type` is not a form media type.
    """
    media_type = form_media_type(content_type)
    if media_type == FORM_URLENCODED:
        return parse_urlencoded(body, limits)
    if media_type == MULTIPART_FORM_DATA:
        return parse_multipart(body, multipart_boundary(content_type), limits)
    raise ValueError(f"not a form media type: {excerpt(content_type)}")


# ---------------------------------------------------------------------------
# application/x-www-form-urlencoded


def parse_urlencoded(body: bytes, limits: FormLimits) -> list[FormField]:
    """Parse a URL-encoded form body strictly and return its fields."""
    raw_byte = _URLENCODED_RAW_BYTE.search(body)
    if raw_byte is not None:
        raise FormInvalid(
            f"byte {raw_byte.start()} is a control character or not ASCII: percent-encode it"
        )
    semicolon = body.find(b";")
    if semicolon != -1:
        raise FormInvalid(
            f"byte {semicolon} is a semicolon: percent-encode it as %3B, because some "
            "parsers split fields at it"
        )

    fields: list[FormField] = []
    for number, match in enumerate(_URLENCODED_FIELD.finditer(body), 1):
        if number > limits.max_fields:
            raise FormInvalid(f"more than {limits.max_fields} fields")
        raw_name, equals, raw_value = match[0].partition(b"=")
        if not equals:
            raise FormInvalid("'=' and a value are missing", excerpt(raw_name))
        name_bytes = _percent_decode(raw_name)
        if name_bytes is None:
            raise FormInvalid("invalid percent-encoding in the name", excerpt(raw_name))
        name = _decode_name(name_bytes, limits, f"field {number}")
        value_bytes = _percent_decode(raw_value)
        if value_bytes is None:
            raise FormInvalid("invalid percent-encoding in the value", excerpt(name))
        value = _decode_text_value(value_bytes, name, limits)
        fields.append(FormField(name, value, None, None, len(value_bytes)))
    return fields


def _percent_decode(raw: bytes) -> bytes | None:
    """Return `raw` with `+` as space and %XX decoded, or None for a stray `%`."""
    if _BAD_PERCENT.search(raw):
        return None
    return unquote_to_bytes(raw.replace(b"+", b" "))


# ---------------------------------------------------------------------------
# multipart/form-data


def multipart_boundary(content_type: bytes) -> bytes:
    """Return the boundary of a multipart Content-Type value; raise FormInvalid."""
    media_type = _MEDIA_TYPE.match(content_type)
    if media_type is None:
        raise FormInvalid("the Content-Type is malformed")
    parameters = _parse_parameters(content_type, media_type.end(), "the Content-Type")
    boundary = parameters.get("boundary")
    if boundary is None:
        raise FormInvalid("the Content-Type has no boundary parameter")
    if not _BOUNDARY.fullmatch(boundary):
        raise FormInvalid(
            "the boundary must be 1 to 70 letters, digits, spaces or '()+_,-./:=? "
            "(RFC 2046, section 5.1.1), and must not end with a space"
        )
    return boundary


def parse_multipart(body: bytes, boundary: bytes, limits: FormLimits) -> list[FormField]:
    """Parse a multipart/form-data body strictly and return its fields.

    The body must start with the first boundary and end with the closing
    boundary, optionally followed by one CRLF.
    """
    delimiter = b"--" + boundary
    if not body.startswith(delimiter):
        raise FormInvalid("the body does not start with the boundary")
    position = len(delimiter)
    fields: list[FormField] = []
    while True:
        # `position` is just after a boundary: next comes "--" to close the
        # body, or CRLF and a part.
        if body.startswith(b"--", position):
            if body[position + 2 :] not in (b"", _CRLF):
                raise FormInvalid("data after the closing boundary")
            return fields
        if position >= len(body):
            raise FormInvalid("the closing boundary is missing")
        if not body.startswith(_CRLF, position):
            raise FormInvalid(
                f"a boundary line of part {len(fields) + 1} has characters after the boundary"
            )
        position += 2
        number = len(fields) + 1
        if number > limits.max_fields:
            raise FormInvalid(f"more than {limits.max_fields} parts")
        if position == len(body):
            raise FormInvalid("the closing boundary is missing")

        headers, position = _read_part_head(body, position, number, limits)
        end = body.find(delimiter, position)
        if end == -1:
            raise FormInvalid("the closing boundary is missing")
        if end - 2 < position or body[end - 2 : end] != _CRLF:
            raise FormInvalid(f"part {number}: the content contains the boundary")
        fields.append(_make_field(headers, body[position : end - 2], number, limits))
        position = end + len(delimiter)


# Header fields that a part may carry at most once, by lowercase name.
_SINGLE_HEADERS = {
    "content-disposition": "Content-Disposition",
    "content-type": "Content-Type",
    "content-transfer-encoding": "Content-Transfer-Encoding",
}


def _read_part_head(
    body: bytes, start: int, number: int, limits: FormLimits
) -> tuple[dict[str, bytes], int]:
    """Return the part's header fields by lowercase name, and where its content starts."""
    if body.startswith(_CRLF, start):
        raise FormInvalid(f"part {number}: the Content-Disposition header is missing")
    end = body.find(b"\r\n\r\n", start, start + MAX_PART_HEAD_BYTES)
    if end == -1:
        if _BARE_LINE_BREAK.search(body, start, start + MAX_PART_HEAD_BYTES):
            raise FormInvalid(f"part {number}: the header section has a line break other than CRLF")
        if len(body) - start < MAX_PART_HEAD_BYTES:
            raise FormInvalid(f"part {number}: the body ends inside the header section")
        raise FormInvalid(
            f"part {number}: the header section does not end with an empty line within "
            f"{MAX_PART_HEAD_BYTES} bytes"
        )
    lines = body[start:end].split(_CRLF)
    if len(lines) > limits.max_part_headers:
        raise FormInvalid(f"part {number}: more than {limits.max_part_headers} header fields")

    headers: dict[str, bytes] = {}
    for line in lines:
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            if _BARE_LINE_BREAK.search(line):
                raise FormInvalid(
                    f"part {number}: the header section has a line break other than CRLF"
                )
            if _HEADER_CONTROL.search(line):
                raise FormInvalid(f"part {number}: a header line contains a control character")
            raise FormInvalid(f"part {number}: a header line is malformed")
        name = match[1].decode("ascii").lower()
        if name in headers and name in _SINGLE_HEADERS:
            raise FormInvalid(f"part {number}: more than one {_SINGLE_HEADERS[name]} header")
        headers[name] = match[2].strip(b" \t")
    return headers, end + 4


def _make_field(
    headers: dict[str, bytes], content: bytes, number: int, limits: FormLimits
) -> FormField:
    disposition = headers.get("content-disposition")
    if disposition is None:
        raise FormInvalid(f"part {number}: the Content-Disposition header is missing")
    raw_name, raw_filename = _parse_disposition(disposition, number)
    name = _decode_name(raw_name, limits, f"part {number}")
    content_type = _part_content_type(headers.get("content-type"), name)
    encoding = headers.get("content-transfer-encoding")
    if encoding is not None and encoding.lower().decode("latin-1") not in (
        _IDENTITY_TRANSFER_ENCODINGS
    ):
        raise FormInvalid(
            "a Content-Transfer-Encoding other than 7bit, 8bit or binary is not accepted",
            excerpt(name),
        )

    if raw_filename is None:
        value = _decode_text_value(content, name, limits)
        return FormField(name, value, None, content_type, len(content))
    filename = _decode_filename(raw_filename, name)
    if limits.max_file_bytes is not None and len(content) > limits.max_file_bytes:
        raise FormInvalid(f"the file is larger than {limits.max_file_bytes} bytes", excerpt(name))
    return FormField(name, None, filename, content_type, len(content))


def _parse_disposition(value: bytes, number: int) -> tuple[bytes, bytes | None]:
    """Return the raw name and filename of a part's Content-Disposition value."""
    disposition_type = _DISPOSITION_TYPE.match(value)
    if disposition_type is None or disposition_type[0].lower() != b"form-data":
        raise FormInvalid(f"part {number}: the Content-Disposition type must be form-data")
    where = f"part {number}: the Content-Disposition"
    parameters = _parse_parameters(value, disposition_type.end(), where)
    # RFC 2231 forms: name*, filename* and continuations such as filename*0.
    extended = sorted(name for name in parameters if "*" in name)
    if extended:
        raise FormInvalid(
            f"{where} parameter {excerpt(extended[0])} is not accepted: multipart/form-data "
            "uses plain name and filename parameters (RFC 7578, section 4.2)"
        )
    name = parameters.get("name")
    if name is None:
        raise FormInvalid(f"{where} has no name parameter")
    return name, parameters.get("filename")


def _parse_parameters(value: bytes, start: int, where: str) -> dict[str, bytes]:
    """Return the `; name=value` parameters of a header value, by lowercase name.

    Quoted values are returned without their quotes. A parameter that occurs
    twice raises FormInvalid, because parsers differ on which one wins.
    """
    parameters: dict[str, bytes] = {}
    position = start
    while position < len(value):
        match = _PARAMETER.match(value, position)
        if match is None:
            if b"\\" in value[position:]:
                raise FormInvalid(f"{where} has a backslash in a parameter, which is not accepted")
            raise FormInvalid(f"{where} has a malformed parameter at byte {position}")
        name = match[1].decode("ascii").lower()
        if name in parameters:
            raise FormInvalid(f"{where} has more than one {excerpt(name)} parameter")
        parameters[name] = match[2] if match[2] is not None else match[3]
        position = match.end()
    return parameters


def _part_content_type(value: bytes | None, name: str) -> str | None:
    if value is None:
        return None
    media_type = _MEDIA_TYPE.match(value)
    if media_type is None:
        raise FormInvalid("the part's Content-Type is malformed", excerpt(name))
    _parse_parameters(value, media_type.end(), f"the Content-Type of field {excerpt(name)}")
    text = media_type[0].decode("ascii").lower()
    if text.startswith("multipart/"):
        raise FormInvalid("nested multipart content is not accepted", excerpt(name))
    return text


def _decode_filename(raw: bytes, name: str) -> str:
    try:
        filename = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormInvalid("the file name is not valid UTF-8", excerpt(name)) from None
    if _CONTROL.search(filename):
        raise FormInvalid("the file name contains a control character", excerpt(name))
    # NFKC turns, for example, U+FF0F FULLWIDTH SOLIDUS into "/" and
    # U+FF0E FULLWIDTH FULL STOP into ".", and some backends normalize.
    for form in (filename, unicodedata.normalize("NFKC", filename)):
        if "/" in form or "\\" in form:
            raise FormInvalid("the file name contains a path separator", excerpt(name))
        if form in (".", ".."):
            raise FormInvalid("the file name is '.' or '..'", excerpt(name))
    return filename


# ---------------------------------------------------------------------------
# Names and values


def _decode_name(raw: bytes, limits: FormLimits, where: str) -> str:
    """Return a field name as text; `where` names the field or part for messages."""
    if not raw:
        raise FormInvalid(f"{where}: the field name is empty")
    if len(raw) > limits.max_name_bytes:
        raise FormInvalid(f"the name is longer than {limits.max_name_bytes} bytes", excerpt(raw))
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormInvalid("the name is not valid UTF-8", excerpt(raw)) from None
    if _CONTROL.search(name):
        raise FormInvalid("the name contains a control character", excerpt(name))
    return name


def _decode_text_value(raw: bytes, name: str, limits: FormLimits) -> str:
    if len(raw) > limits.max_value_bytes:
        raise FormInvalid(f"the value is longer than {limits.max_value_bytes} bytes", excerpt(name))
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"the value is not valid UTF-8 at byte {exc.start}"
        raise FormInvalid(reason, excerpt(name)) from None
    if "\x00" in value:
        raise FormInvalid("the value contains a NUL character", excerpt(name))
    return value


# ---------------------------------------------------------------------------
# Declared fields


@dataclass(frozen=True, slots=True)
class _DeclaredField:
    name: str
    spec: FormFieldSpec
    pattern: re.Pattern[str] | None


class FormValidator:
    """One route's form rules, compiled at load: limits, duplicates and declared fields."""

    def __init__(self, spec: FormBodySpec) -> None:
        self.limits = FormLimits(
            max_fields=spec.max_fields,
            max_name_bytes=spec.max_name_bytes,
            max_value_bytes=spec.max_value_bytes,
            max_file_bytes=spec.max_file_bytes,
            max_part_headers=spec.max_part_headers,
        )
        self.duplicate_fields = spec.duplicate_fields
        # Without declared fields, names are not checked.
        self.additional_fields = spec.additional_fields or not spec.fields
        self.fields = tuple(
            _DeclaredField(name, field, re.compile(field.pattern) if field.pattern else None)
            for name, field in spec.fields.items()
        )
        self.names = frozenset(spec.fields)

    def applies_to(self, content_types: Sequence[bytes]) -> bool:
        """Return whether a request with these Content-Type values has a form body to check."""
        return len(content_types) == 1 and form_media_type(content_types[0]) is not None

    def check(self, body: bytes, content_type: bytes) -> list[FormField]:
        """Parse `body` and check its fields; raise FormInvalid for the first problem."""
        fields = parse_form(body, content_type, self.limits)
        by_name: dict[str, list[FormField]] = {}
        for field in fields:
            found = by_name.setdefault(field.name, [])
            if found and not self.duplicate_fields:
                raise FormInvalid("sent more than once", excerpt(field.name))
            found.append(field)
            if not self.additional_fields and field.name not in self.names:
                raise FormInvalid("not accepted on this route", excerpt(field.name))
        for declared in self.fields:
            _check_declared(declared, by_name.get(declared.name, []))
        return fields


def form_validator(config: ValidateConfig) -> FormValidator | None:
    """Return the form rules of a `validate` block, or None when it accepts no form media type.

    A route that lists a form media type in `content_types` gets strict
    parsing with the default limits even without a `form` block.
    """
    if config.form is not None:
        return FormValidator(config.form)
    if any(media_type in FORM_MEDIA_TYPES for media_type in config.content_types):
        return FormValidator(FormBodySpec())
    return None


def _check_declared(declared: _DeclaredField, found: list[FormField]) -> None:
    spec = declared.spec
    if spec.type == "file":
        # A file input left empty arrives as a part with filename="" and no content.
        found = [field for field in found if field.filename or field.size]
    if not found:
        if spec.required:
            raise FormInvalid("missing", declared.name)
        return
    for field in found:
        if spec.type == "file":
            if field.filename is None:
                raise FormInvalid("expected a file", declared.name)
            continue
        if field.value is None:
            raise FormInvalid("expected a text value, got a file", declared.name)
        _check_value(declared, field.value)


def _check_value(declared: _DeclaredField, value: str) -> None:
    """Check a text value against its declaration, with the rules of query parameters.

    Numbers must be decimal literals such as -1.5 or 2e3.
    """
    spec, name = declared.spec, declared.name
    if len(value) > spec.max_length:
        raise FormInvalid(f"longer than {spec.max_length} characters", name)
    if spec.type == "integer":
        if not _INTEGER.fullmatch(value):
            raise FormInvalid("expected an integer", name)
        _check_range(declared, int(value))
    elif spec.type == "number":
        if not _NUMBER.fullmatch(value):
            raise FormInvalid("expected a number", name)
        number = float(value)
        if not math.isfinite(number):
            raise FormInvalid("expected a finite number", name)
        _check_range(declared, number)
    elif spec.type == "boolean" and value not in ("true", "false"):
        raise FormInvalid("expected true or false", name)
    if spec.enum and value not in spec.enum:
        raise FormInvalid("not one of the accepted values", name)
    if declared.pattern is not None and not declared.pattern.search(value):
        raise FormInvalid("does not match the expected pattern", name)


def _check_range(declared: _DeclaredField, number: float) -> None:
    spec = declared.spec
    if spec.minimum is not None and number < spec.minimum:
        raise FormInvalid(f"below the minimum {spec.minimum:g}", declared.name)
    if spec.maximum is not None and number > spec.maximum:
        raise FormInvalid(f"above the maximum {spec.maximum:g}", declared.name)
