"""Tests for ringwall.gateway.validation.json_body: strict JSON and JSON Schema checks."""

from __future__ import annotations

import json
import threading
import time
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringwall.gateway.validation import json_body
from ringwall.gateway.validation.json_body import (
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH_LIMIT,
    BodyInvalid,
    JsonSchemaValidator,
    format_pointer,
    parse_strict_json,
)

ORDER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["product_id", "quantity"],
    "additionalProperties": False,
    "properties": {
        "product_id": {"type": "integer"},
        "quantity": {"type": "integer", "minimum": 1},
        "note": {"type": "string", "maxLength": 20, "pattern": "^[a-z ]*$"},
        "email": {"type": "string", "format": "email"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"}},
            },
        },
    },
}


def rejection(body: bytes, **limits: int) -> BodyInvalid:
    with pytest.raises(BodyInvalid) as caught:
        parse_strict_json(body, **limits)
    return caught.value


def schema_rejection(document: object, schema: dict[str, Any] = ORDER_SCHEMA) -> BodyInvalid:
    with pytest.raises(BodyInvalid) as caught:
        JsonSchemaValidator(schema).validate(document)
    return caught.value


def nesting_depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((nesting_depth(member) for member in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((nesting_depth(element) for element in value), default=0)
    return 0


# --- valid documents --------------------------------------------------------


def test_valid_order_parses_and_validates() -> None:
    body = b'{"product_id": 42, "quantity": 2}'
    document = parse_strict_json(body)
    assert document == {"product_id": 42, "quantity": 2}
    JsonSchemaValidator(ORDER_SCHEMA).validate(document)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"0", 0),
        (b'"text"', "text"),
        (b"null", None),
        (b" \t\r\n[true, false] \n", [True, False]),
        (b'"\\ud83d\\ude00"', "\U0001f600"),
        (b'"\\u00e9\xc3\xa9"', "\u00e9\u00e9"),
        (b"1e-400", 0.0),
        (b"-0.5E+2", -50.0),
    ],
)
def test_parse_accepts_standard_json(body: bytes, expected: object) -> None:
    assert parse_strict_json(body) == expected


# --- duplicate keys ---------------------------------------------------------


def test_duplicate_key_in_order_rejected() -> None:
    error = rejection(b'{"product_id": 42, "quantity": 2, "quantity": -1}')
    assert error.reason == "duplicate key"
    assert error.pointer == "/quantity"


def test_escaped_duplicate_key_rejected() -> None:
    error = rejection(b'{"a":1,"\\u0061":2}')
    assert error.reason == "duplicate key"
    assert error.pointer == "/a"


def test_nested_duplicate_key_pointer() -> None:
    error = rejection(b'{"a": {"b": [1, {"c": 1, "c": 2}]}}')
    assert error.pointer == "/a/b/1/c"


def test_duplicate_key_pointer_escapes_slash_and_tilde() -> None:
    error = rejection(b'{"a/b~c": {"x": 1, "x": 2}}')
    assert error.pointer == "/a~1b~0c/x"


def test_duplicate_key_before_syntax_error_reported() -> None:
    error = rejection(b'[{"a": 1, "a": 2}, x')
    assert error.reason == "duplicate key"
    assert error.pointer == ""


# --- NaN, Infinity and numbers ----------------------------------------------


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_constant_rejected(constant: str) -> None:
    error = rejection(b'{"price": [1, %s]}' % constant.encode())
    assert error.reason == f"{constant} is not valid JSON"
    assert error.pointer == "/price/1"


@pytest.mark.parametrize("literal", [str(INT64_MAX), str(INT64_MIN), "-1", "1000000000000000000"])
def test_int64_bounds_accepted(literal: str) -> None:
    assert parse_strict_json(literal.encode()) == int(literal)


@pytest.mark.parametrize(
    "literal", [str(INT64_MAX + 1), str(INT64_MIN - 1), "1" * 25, "9" * 5000, "-" + "9" * 5000]
)
def test_integer_outside_int64_rejected(literal: str) -> None:
    error = rejection(b'{"n": %s}' % literal.encode())
    assert error.reason == "integer outside the signed 64-bit range"
    assert error.pointer == "/n"


def test_long_digit_run_in_string_accepted() -> None:
    body = b'{"card": "41111111111111111111111", "n": 5}'
    assert parse_strict_json(body) == {"card": "41111111111111111111111", "n": 5}


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "1" * 400 + ".0", "1E+0000309"])
def test_float_overflow_rejected(literal: str) -> None:
    error = rejection(b"[%s]" % literal.encode())
    assert error.reason == "number too large for a 64-bit float"
    assert error.pointer == "/0"


# --- encoding ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "offset"),
    [
        (b'{"a": "\xff"}', 7),
        (b'{"a": "\xc0\xaf"}', 7),  # overlong encoding of "/"
        (b'{"a": "\xed\xa0\x80"}', 7),  # UTF-8 encoded surrogate U+D800
        (b'{"a": "\xe2\x82"}', 7),  # truncated sequence
    ],
)
def test_invalid_utf8_rejected(body: bytes, offset: int) -> None:
    error = rejection(body)
    assert error.reason == f"invalid UTF-8 at byte {offset}"
    assert error.pointer == ""


def test_utf8_bom_rejected() -> None:
    error = rejection(b"\xef\xbb\xbf{}")
    assert "byte order mark" in error.reason


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (b'["ok", "\\ud800"]', "/1"),
        (b'{"a": "x\\udfffy"}', "/a"),
        (b'{"a": "\\ude00\\ud83d"}', "/a"),
    ],
)
def test_lone_surrogate_escape_rejected(body: bytes, pointer: str) -> None:
    error = rejection(body)
    assert error.reason == "string contains a lone surrogate"
    assert error.pointer == pointer


def test_lone_surrogate_in_key_rejected() -> None:
    error = rejection(b'{"\\udc00": 1}')
    assert error.reason == "key contains a lone surrogate"
    assert error.pointer == "/\\udc00"


def test_escaped_backslash_before_ud_accepted() -> None:
    assert parse_strict_json(b'["\\\\ud800"]') == ["\\ud800"]


# --- nesting depth ----------------------------------------------------------


def test_deeply_nested_array_rejected_fast() -> None:
    body = b"[" * 10_000 + b"]" * 10_000
    started = time.perf_counter()
    error = rejection(body)
    elapsed = time.perf_counter() - started
    assert error.reason == "JSON nesting deeper than 64 levels"
    assert elapsed < 1.0


def test_deeply_nested_object_rejected_fast() -> None:
    body = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    started = time.perf_counter()
    error = rejection(body)
    elapsed = time.perf_counter() - started
    assert error.reason == "JSON nesting deeper than 64 levels"
    assert elapsed < 1.0


def test_unclosed_million_brackets_rejected() -> None:
    error = rejection(b"[" * 1_000_000)
    assert error.reason == "JSON nesting deeper than 64 levels"


def test_depth_limit_is_inclusive() -> None:
    assert nesting_depth(parse_strict_json(b"[" * 64 + b"]" * 64)) == 64
    error = rejection(b"[" * 65 + b"]" * 65)
    assert error.reason == "JSON nesting deeper than 64 levels"


def test_brackets_inside_strings_not_counted() -> None:
    body = b'{"a": "[[[[{{{{", "b": ["\\"[[[", "\\\\", "]]]"]}'
    assert parse_strict_json(body, max_depth=2) == {
        "a": "[[[[{{{{",
        "b": ['"[[[', "\\", "]]]"],
    }


def test_closers_inside_strings_cannot_hide_depth() -> None:
    body = b'[["]]]]"], [[["x"]]]]'
    error = rejection(body, max_depth=3)
    assert error.reason == "JSON nesting deeper than 3 levels"


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    st.recursive(
        st.text(alphabet='[]{}"\\ab', max_size=6),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(alphabet='[]{}"\\', max_size=3), children, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_depth_limit_matches_real_depth(document: object) -> None:
    body = json.dumps(document).encode()
    if nesting_depth(document) <= 3:
        assert parse_strict_json(body, max_depth=3) == document
    else:
        assert "nesting deeper" in rejection(body, max_depth=3).reason


# --- member counts ----------------------------------------------------------


def test_array_over_member_limit_rejected() -> None:
    body = json.dumps({"items": [[1, 2, 3], [1, 2, 3, 4]]}).encode()
    error = rejection(body, max_members=3)
    assert error.reason == "array has more than 3 elements"
    assert error.pointer == "/items/1"


def test_object_over_member_limit_rejected() -> None:
    body = json.dumps({"a": {"w": 1, "x": 2, "y": 3, "z": 4}}).encode()
    error = rejection(body, max_members=3)
    assert error.reason == "object has more than 3 members"
    assert error.pointer == "/a"


def test_member_limit_is_inclusive() -> None:
    body = json.dumps([[1, 2, 3], {"x": 1, "y": 2, "z": 3}]).encode()
    assert parse_strict_json(body, max_members=3) == [[1, 2, 3], {"x": 1, "y": 2, "z": 3}]


def test_default_member_limit_rejects_large_array() -> None:
    body = b"[" + b"0," * 10_000 + b"0]"
    error = rejection(body)
    assert error.reason == "array has more than 10000 elements"
    assert error.pointer == ""


# --- syntax -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "invalid JSON: expecting value at byte 0"),
        (b"  ", "invalid JSON: expecting value at byte 2"),
        (b"[1] x", "invalid JSON: extra data at byte 4"),
        (b" {}{}", "invalid JSON: extra data at byte 3"),
        (b"1 2", "invalid JSON: extra data at byte 2"),
        (b"[1,]", "invalid JSON: expecting value at byte 3"),
        (b'{"a" 1}', "invalid JSON: expecting ':' delimiter at byte 5"),
        (b'["\xc3\xa9", x]', "invalid JSON: expecting value at byte 7"),
        (b'["abc', "invalid JSON: unterminated string starting at byte 1"),
        (b"[01]", "invalid JSON: expecting ',' delimiter at byte 2"),
        (b'["a\x01"]', "invalid JSON: invalid control character at byte 3"),
    ],
)
def test_syntax_error_rejected(body: bytes, reason: str) -> None:
    error = rejection(body)
    assert error.reason == reason
    assert error.pointer == ""


@pytest.mark.parametrize(
    "limits",
    [{"max_depth": 0}, {"max_depth": MAX_DEPTH_LIMIT + 1}, {"max_members": 0}],
)
def test_parse_rejects_bad_limits(limits: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        parse_strict_json(b"[]", **limits)


@settings(derandomize=True, max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_parse_returns_or_raises_body_invalid(body: bytes) -> None:
    try:
        parse_strict_json(body, max_depth=4, max_members=8)
    except BodyInvalid as error:
        assert error.reason


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(derandomize=True, max_examples=500, deadline=None)
@given(JSON_VALUES, st.booleans())
def test_generated_documents_round_trip(document: object, ensure_ascii: bool) -> None:
    body = json.dumps(document, ensure_ascii=ensure_ascii).encode("utf-8")
    parsed = parse_strict_json(body)
    assert parsed == document
    # Equality alone treats 1 and 1.0 as equal, so compare the types too.
    assert json.dumps(parsed) == json.dumps(document)


# --- pointers ---------------------------------------------------------------


def test_pointer_escapes_untrusted_tokens() -> None:
    assert format_pointer(("a/b", "m~n", 3)) == "/a~1b/m~0n/3"
    assert format_pointer(("line\nbreak",)) == "/line\\x0abreak"
    assert format_pointer(("\u00e9",)) == "/\\xe9"
    long_token = format_pointer(("k" * 100,))
    assert long_token == "/" + "k" * 32 + "..."


# --- schema validation ------------------------------------------------------


def test_string_product_id_rejected_with_pointer() -> None:
    error = schema_rejection(parse_strict_json(b'{"product_id": "42", "quantity": 2}'))
    assert error.pointer == "/product_id"
    assert error.reason == "expected integer, got string"


@pytest.mark.parametrize(
    ("document", "pointer", "reason"),
    [
        ({"product_id": 1, "quantity": 0}, "/quantity", "must be >= 1"),
        ({"product_id": 1}, "", 'missing required property "quantity"'),
        ({"product_id": 1, "quantity": 1, "coupon": "x"}, "/coupon", "unexpected property"),
        (
            {"product_id": 1, "quantity": 1, "note": "ABC"},
            "/note",
            "does not match the pattern ^[a-z ]*$",
        ),
        (
            {"product_id": 1, "quantity": 1, "note": "a" * 21},
            "/note",
            "must be at most 20 characters long",
        ),
        ({"product_id": 1, "quantity": 1, "email": "nope"}, "/email", "not a valid email"),
        (
            {"product_id": 1, "quantity": 1, "items": [{"sku": "a"}, {"quantity": "2"}]},
            "/items/1/quantity",
            "expected integer, got string",
        ),
        ([], "", "expected object, got array"),
    ],
)
def test_schema_violation_reported(document: object, pointer: str, reason: str) -> None:
    error = schema_rejection(document)
    assert error.pointer == pointer
    assert error.reason == reason


def test_schema_reason_never_quotes_value() -> None:
    secret = "hunter2-secret-value"
    for document in (
        {"product_id": secret, "quantity": 1},
        {"product_id": 1, "quantity": 1, "note": secret},
        {"product_id": 1, "quantity": 1, "email": secret},
    ):
        error = schema_rejection(document)
        assert secret not in error.reason
        assert secret not in str(error)


def test_false_additional_properties_without_properties() -> None:
    error = schema_rejection({"x": 1}, {"type": "object", "additionalProperties": False})
    assert error.reason == "unexpected property"
    assert error.pointer == ""


def test_unexpected_key_in_pointer_is_escaped() -> None:
    error = schema_rejection({"product_id": 1, "quantity": 1, "\x1b[31m": 1})
    assert error.pointer == "/\\x1b[31m"


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "integr"}, "invalid JSON Schema at /type"),
        ({"properties": {"a": {"minimum": "x"}}}, "invalid JSON Schema at /properties/a/minimum"),
        ({"pattern": "(?=a)b"}, "invalid JSON Schema at /pattern"),
        ({"$ref": "https://schemas.example/order.json"}, "invalid JSON Schema at /"),
        ({"$ref": "#/$defs/missing"}, "invalid JSON Schema"),
        ({"$schema": "http://json-schema.org/draft-07/schema#"}, "unsupported $schema"),
        ({"enum": {1, 2}}, "invalid JSON Schema"),
    ],
)
def test_invalid_schema_rejected_at_load(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("$", r"\$")):
        JsonSchemaValidator(schema)


def test_schema_must_be_object() -> None:
    not_a_schema: Any = [{"type": "object"}]
    with pytest.raises(ValueError, match="must be an object"):
        JsonSchemaValidator(not_a_schema)


def test_backtracking_pattern_runs_in_linear_time() -> None:
    validator = JsonSchemaValidator({"type": "string", "pattern": "^(a+)+$"})
    started = time.perf_counter()
    with pytest.raises(BodyInvalid):
        validator.validate("a" * 5_000 + "!")
    assert time.perf_counter() - started < 1.0


# --- member-counting scan against the exact scan ----------------------------
#
# The Python parser first parses without a duplicate-key hook and compares
# the members of the parsed objects with the colons in the body. The exact
# scan, with a hook on every object, is the parser as it was before that
# change. With the fast scan switched off, the Python parser runs only the
# exact scan, so the two must agree on every body: the same document or the
# same rejection. These tests call the Python parser directly, because the
# C parser would return the accepted documents before either scan runs
# (test_strict_json.py compares the C parser with the Python parser).


def outcome(
    body: bytes,
    max_depth: int = json_body.DEFAULT_MAX_DEPTH,
    max_members: int = json_body.DEFAULT_MAX_MEMBERS,
) -> tuple[object, ...]:
    """Return ("ok", document as JSON) or ("rejected", reason, pointer), from the Python parser."""
    try:
        document = json_body._parse_in_python(body, max_depth, max_members)
    except BodyInvalid as error:
        return ("rejected", error.reason, error.pointer)
    return ("ok", json.dumps(document))


def exact_outcome(body: bytes, **limits: int) -> tuple[object, ...]:
    with mock.patch.object(json_body, "_scan_counting", return_value=json_body._UNDECIDED):
        return outcome(body, **limits)


def assert_same_outcome(body: bytes, **limits: int) -> None:
    assert outcome(body, **limits) == exact_outcome(body, **limits), body


@pytest.mark.parametrize(
    ("body", "reason", "pointer"),
    [
        # A colon inside a string makes the colon count differ from the members.
        (b'{"t": "12:00", "a": 1, "a": 2}', "duplicate key", "/a"),
        (b'{"a": 1, "a": 2, "b": ":"}', "duplicate key", "/a"),
        (b'{"a": "x:y", "a": 1}', "duplicate key", "/a"),
        # Escaped quotes and backslashes around colons in keys.
        (b'{"a\\":": 1, "a\\":": 2}', "duplicate key", '/a":'),
        (b'{"\\\\": 1, "\\\\": 2}', "duplicate key", "/\\"),
        (b'{"\\\\\\":": {"k": 1, "k": 2}}', "duplicate key", '/\\":/k'),
        (b'{"\\u003a": 1, ":": 2}', "duplicate key", "/:"),
        # Whitespace before the colon, and colons after a quote or space in strings.
        (b'{"a" : 1, "a": 2}', "duplicate key", "/a"),
        (b'{"a"\r\n:1,"a"\t:2}', "duplicate key", "/a"),
        (b'{"a": ":", "a": " :"}', "duplicate key", "/a"),
        (b'{"t": "12:00", "a": " :", "a": 1}', "duplicate key", "/a"),
        (b'{"\\u0022": 1, "\\"": 2}', "duplicate key", '/"'),
        (b'[{}, {"a": {"a": 1}, "a": {"a": 1}}]', "duplicate key", "/1/a"),
        (b'{"a": [], "b": {}, "a": []}', "duplicate key", "/a"),
        # The first problem in document order is reported, whichever comes first.
        (b'[{"a": 1, "a": 2}, NaN]', "duplicate key", "/0/a"),
        (b'[NaN, {"a": 1, "a": 2}]', "NaN is not valid JSON", "/0"),
        (b'[1e400, {"a": 1, "a": 2}]', "number too large for a 64-bit float", "/0"),
        (b'{"a": 1, "a": 99999999999999999999}', "duplicate key", "/a"),
        # A duplicate key replaces the whole object, so it hides problems inside it.
        (b'{"n": 99999999999999999999, "n": 1}', "duplicate key", "/n"),
        (b'{"a": 1, "a": 2} x', "duplicate key", "/a"),
        (b'{"a": 1, "a": 2', "invalid JSON: expecting ',' delimiter at byte 15", ""),
        (b'{"a": "\\ud800", "a": 1}', "duplicate key", "/a"),
    ],
)
def test_duplicates_and_first_problem_rejected(body: bytes, reason: str, pointer: str) -> None:
    error = rejection(body)
    assert error.reason == reason
    assert error.pointer == pointer
    assert_same_outcome(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"t": "12:00", "url": "https://example.test:8443/a", "a": 1}',
        b'{"a" : ":b", "c"\n:\n" :", "d": "\\":"}',
        b'{"a\\":": 1, "b\\":": {"c": ":"}}',
        b'{"\\\\": "\\\\", "\\\\\\"": ":", "x": ["\\"", ":", "\\\\:"]}',
        b'{"a": {"a": {"a": 1}}, "b": [{"a": 1}, {"a": 2}]}',
        b'{"": 1, " ": 2, "\\u0000": 3}',
        b'{"id": "12345678901234567890123", "n": 9223372036854775807}',
        b'{"n": -9223372036854775808, "f": 1.5e300, "g": 2E-400}',
        b' \t\r\n{"a": 1} \r\n',
        b"{}",
        b"[{}, {}, []]",
    ],
)
def test_valid_bodies_with_colons_and_escapes_accepted(body: bytes) -> None:
    assert parse_strict_json(body) == json.loads(body)
    assert_same_outcome(body)


# Fragments of JSON, many of them hostile, to build bodies from.
JSON_FRAGMENTS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b" ",
    b"\n",
    b'"a"',
    b'"\\u0061"',
    b'"a:b"',
    b'":"',
    b'"\\""',
    b'"\\\\"',
    b'"\\\\\\""',
    b'"\\ud800"',
    b'"\\ud83d\\ude00"',
    b'"\xc3\xa9"',
    b"\xff",
    b"\xef\xbb\xbf",
    b"0",
    b"-1",
    b"1.5",
    b"1e400",
    b"-1E+309",
    b"1e-400",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"12345678901234567890",
    b"01",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"true",
    b"null",
    b"x",
]


@settings(derandomize=True, max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(JSON_FRAGMENTS), max_size=30).map(b"".join))
def test_fragment_soup_matches_exact_scan(body: bytes) -> None:
    assert_same_outcome(body)
    assert_same_outcome(body, max_depth=2, max_members=2)


def _escaped(text: str) -> str:
    """Encode `text` as a JSON string with every character as a \\u escape."""
    units = text.encode("utf-16-be")
    return (
        '"' + "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2)) + '"'
    )


KEYS = st.sampled_from(["a", "b", "a:b", ":", " :", 'q":', "\\", "\\:", "", "\u00e9", "\U0001f600"])
# Colons and whitespace around the key's colon, so some colons inside strings
# follow a quote or whitespace like the colons outside strings do.
SEPARATORS = st.sampled_from([":", " : ", ":\n", "\t:", "\r\n :"])
LEAVES = st.sampled_from(
    [
        "1",
        "-0",
        "1.5",
        "1e400",
        "2E-400",
        "NaN",
        "true",
        "null",
        '"x"',
        '":"',
        '" :"',
        '"12:00"',
        '"\\":"',
        '"\\\\"',
        str(2**63),
        str(-(2**63)),
        "1" * 19,
        '"\\ud800"',
        '"\\u003a"',
    ]
)


def _object(pairs: list[tuple[str, bool, str, str]]) -> str:
    members = [
        f"{_escaped(key) if escape else json.dumps(key)}{separator}{value}"
        for key, escape, separator, value in pairs
    ]
    return "{" + ",".join(members) + "}"


# Documents written by hand, so objects may repeat a key, written plainly or
# with \u escapes, and leaves may be values the strict parser rejects.
HOSTILE_DOCUMENTS = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=4).map(lambda items: "[" + ", ".join(items) + "]")
        | st.lists(st.tuples(KEYS, st.booleans(), SEPARATORS, children), max_size=4).map(_object)
    ),
    max_leaves=12,
)


@settings(derandomize=True, max_examples=1000, deadline=None)
@given(HOSTILE_DOCUMENTS, st.sampled_from(["", " ", "\n", " x", "]"]))
def test_hostile_documents_match_exact_scan(document: str, tail: str) -> None:
    body = (document + tail).encode("utf-8", "surrogatepass")
    assert_same_outcome(body)
    assert_same_outcome(body, max_depth=3, max_members=3)


@settings(derandomize=True, max_examples=500, deadline=None)
@given(JSON_VALUES, st.booleans())
def test_generated_documents_match_exact_scan(document: object, ensure_ascii: bool) -> None:
    assert_same_outcome(json.dumps(document, ensure_ascii=ensure_ascii).encode("utf-8"))


def test_parse_in_threads_keeps_counts_apart() -> None:
    bodies = {
        b'{"a": 1, "b": {"c": 2, "d": ":"}}': "ok",
        b'{"a": 1, "b": {"c": 2, "c": 3}}': "rejected",
        b'[{"x": 1}, {"x": 1, "y": 2, "x": 3}]': "rejected",
        b'{"k": [' + b'{"a": 1}, ' * 200 + b"{}]}": "ok",
    }
    failures: list[bytes] = []

    def parse_repeatedly() -> None:
        for _ in range(300):
            for body, expected in bodies.items():
                if outcome(body)[0] != expected:
                    failures.append(body)

    threads = [threading.Thread(target=parse_repeatedly) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_nested_parse_gets_own_scanner() -> None:
    # A parse that runs inside another one on the same thread, as from a
    # signal handler, must not reset the outer parse's member count.
    outer = json_body._take_scanner(False)
    outer.busy = True
    outer.members = 12345
    try:
        assert json_body._take_scanner(False) is not outer
        assert rejection(b'{"a": 1, "a": 2}').reason == "duplicate key"
        assert outcome(b'{"a": 1, "b": 2}') == ("ok", '{"a": 1, "b": 2}')
        assert outer.members == 12345
    finally:
        outer.busy = False
    assert json_body._take_scanner(False) is outer
