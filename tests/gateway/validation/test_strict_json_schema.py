"""Tests for `compile_schema` and `check` of the C extension _strict_json.

`check` may return True only when the reference accepts the body: the
strict parser of json_body.py, then jsonschema-rs with the options of
JsonSchemaValidator. A False where the reference accepts only costs the
slower path. So the differential tests assert the one direction, and the
tables below also assert that `check` decides the common valid bodies,
such as the benchmark's order, so that the fast path applies to them.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Iterator
from itertools import cycle
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from ringwall.gateway.validation import json_body
from ringwall.gateway.validation.json_body import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_MEMBERS,
    INT64_MAX,
    INT64_MIN,
    BodyInvalid,
    JsonSchemaValidator,
    check_json_body,
    parse_strict_json,
)
from tests.gateway.validation.test_json_body import HOSTILE_DOCUMENTS
from tests.gateway.validation.test_strict_json import NATIVE_FRAGMENTS

native: Any = pytest.importorskip(
    "ringwall.gateway.validation._strict_json",
    reason="the C extension is not built: run `pip install -e .`",
)

ROOT = Path(__file__).resolve().parents[3]
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def compile_checker(schema: object) -> Any:
    compiled = native.compile_schema(schema, json_body._compile_schema)
    assert compiled is not None, schema
    return compiled


def reference_accepts(
    body: bytes,
    schema: Any,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> bool:
    """Return whether parse_strict_json and then jsonschema-rs accept `body`."""
    try:
        document = parse_strict_json(body, max_depth=max_depth, max_members=max_members)
    except BodyInvalid:
        return False
    return bool(json_body._compile_schema(schema).is_valid(document))


def check(
    body: bytes | bytearray | memoryview,
    compiled: Any,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> bool:
    result = native.check(body, compiled, max_depth, max_members)
    assert type(result) is bool
    return result


def assert_sound(
    body: bytes,
    schema: Any,
    compiled: Any,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> bool:
    """Assert that `check` returns True only where the reference accepts, and return it."""
    fast = check(body, compiled, max_depth, max_members)
    if fast:
        assert reference_accepts(body, schema, max_depth, max_members), (schema, body)
    return fast


# --- each keyword, both ways --------------------------------------------------

# (schema, bodies that `check` accepts, bodies that the reference rejects)
KEYWORD_CASES: list[tuple[Any, list[bytes], list[bytes]]] = [
    (True, [b"null", b'{"a": [1, {"b": "x"}], "c": 1.5}'], []),
    (False, [], [b"null", b"{}", b"[]", b"0"]),
    ({}, [b"1", b'"x"', b"[[]]"], []),
    ({"type": "string"}, [b'"x"', b'""'], [b"1", b"null", b"[]", b"{}", b"true"]),
    (
        {"type": "integer"},
        [b"0", b"-0", b"-5", str(INT64_MAX).encode(), str(INT64_MIN).encode()],
        [b"1.5", b'"1"', b"true", b"null"],
    ),
    ({"type": "number"}, [b"1", b"1.5", b"-2e3", b"0.0"], [b'"1"', b"null", b"false"]),
    ({"type": ["null", "boolean"]}, [b"null", b"true", b"false"], [b"0", b'""', b"[]"]),
    ({"type": "object"}, [b"{}", b'{"a": 1}'], [b"[]", b"null"]),
    ({"type": "array"}, [b"[]", b"[1, [2]]"], [b"{}", b'"[]"']),
    ({"type": "boolean"}, [b"true", b"false"], [b"0", b"1", b"null"]),
    (
        {"properties": {"a": {"type": "integer"}, "é": {"type": "string"}}},
        [b"{}", b'{"a": 1}', b'{"b": "x"}', b'{"\xc3\xa9": "x", "a": 2}', b"[1]", b'"a"'],
        [b'{"a": "x"}', b'{"\xc3\xa9": 1}', b'{"b": 1, "a": null}'],
    ),
    (
        {"required": ["a", "b"]},
        [b'{"a": 1, "b": 2}', b'{"b": null, "a": [], "c": 1}', b'"x"', b"[]"],
        [b'{"a": 1}', b"{}", b'{"c": 1}'],
    ),
    (
        {"properties": {"a": {}}, "required": ["a"]},
        [b'{"a": null}', b'{"a": 1, "b": 2}'],
        [b'{"b": 1}', b"{}"],
    ),
    (
        {"properties": {"a": {}}, "additionalProperties": False},
        [b'{"a": 1}', b"{}"],
        [b'{"b": 1}', b'{"a": 1, "b": 2}', b'{"A": 1}'],
    ),
    (
        {"properties": {"a": {}}, "additionalProperties": {"type": "integer"}},
        [b'{"a": "x", "b": 1}', b'{"c": 2, "d": 3}'],
        [b'{"b": "x"}', b'{"a": 1, "c": null}'],
    ),
    # A name that `required` lists but `properties` does not is an additional property.
    ({"required": ["a"], "additionalProperties": False}, [b"[]", b'"x"'], [b'{"a": 1}', b"{}"]),
    (
        {"required": ["a"], "additionalProperties": {"type": "string"}},
        [b'{"a": "x"}'],
        [b'{"a": 1}', b"{}"],
    ),
    ({"items": {"type": "string"}}, [b"[]", b'["a", "b"]', b"{}"], [b'["a", 1]', b"[null]"]),
    ({"items": False}, [b"[]", b"1"], [b"[1]", b"[[]]"]),
    ({"items": True}, [b"[1, {}]"], []),
    ({"minItems": 1, "maxItems": 2}, [b"[1]", b"[1, 2]", b"{}"], [b"[]", b"[1, 2, 3]"]),
    (
        {"minLength": 2, "maxLength": 3},
        [
            b'"ab"',
            b'"abc"',
            b'"\xc3\xa9\xc3\xa9"',  # 2 code points in 4 bytes
            '"\U0001f600\U0001f600\U0001f600"'.encode(),  # 3 code points in 12 bytes
            b'"\\ud83d\\ude00x"',  # an escaped pair is 1 code point
            b'"\\n\\t"',
            b"1",
        ],
        [b'"a"', b'"abcd"', b'"\\n"', b'"\xc3\xa9"', b'"\\ud83d\\ude00"'],
    ),
    (
        {"minProperties": 1, "maxProperties": 2},
        [b'{"a": 1}', b'{"a": 1, "b": 2}', b"[]"],
        [b"{}", b'{"a": 1, "b": 2, "c": 3}'],
    ),
    (
        {"enum": ["a", "é", 1, True, None, -(2**63)]},
        [b'"a"', b'"\xc3\xa9"', b"1", b"true", b"null", str(INT64_MIN).encode()],
        [b'"b"', b'"A"', b"2", b"false", b"1.5", b"[]", b"{}", b'"a "'],
    ),
    ({"enum": [False, 0]}, [b"false", b"0", b"-0"], [b"true", b"1", b"null"]),
    ({"const": "x"}, [b'"x"'], [b'"y"', b'"xx"', b"null"]),
    ({"const": None}, [b"null"], [b"0", b"false", b'""']),
    ({"const": 0}, [b"0", b"-0"], [b"1", b"false", b"null"]),
    ({"const": True}, [b"true"], [b"1", b"false"]),
    ({"minimum": 1}, [b"1", b"2", b"1.5", b"1e1", b'"0"'], [b"0", b"0.5", b"-1", b"0.99"]),
    ({"minimum": 1.0}, [b"1", b"2", b"1.0"], [b"0", b"0.999"]),
    ({"maximum": 1.5}, [b"1.5", b"0.5", b"-2e3"], [b"2", b"1.50001", b"2.0"]),
    ({"exclusiveMinimum": 0}, [b"1", b"0.1", b"5e-324"], [b"0", b"-0", b"0.0", b"-0.0", b"-1"]),
    ({"exclusiveMaximum": 10}, [b"9", b"9.99"], [b"10", b"10.0", b"11", b"1e2"]),
    ({"minimum": -(2**63), "maximum": 2**63 - 1}, [str(INT64_MIN).encode(), b"0", b"1e18"], []),
    (
        {"type": "integer", "minimum": 1, "maximum": 2147483647},
        [b"1", b"2147483647"],
        [b"0", b"2147483648", b"-1"],
    ),
    (
        {"pattern": "^ord-[0-9]{3}$"},
        [b'"ord-123"', b"5", b'"ord-\\u0031\\u00323"', b"null"],
        [b'"ord-12"', b'"xord-123"', b'"ord-1234"'],
    ),
    ({"pattern": "é"}, [b'"\xc3\xa9"', b'"x\\u00e9"'], [b'"e"']),
    ({"format": "email"}, [b'"a@example.com"', b"1", b"[]"], [b'"not an email"']),
    ({"format": "date"}, [b'"2024-02-29"'], [b'"2023-02-29"', b'"2024-2-1"']),
    ({"format": "uuid"}, [b'"12345678-1234-1234-1234-123456789abc"'], [b'"1234"']),
    ({"format": "int32"}, [b'"anything"', b"1"], []),  # unknown formats are ignored
    (
        {"type": "string", "pattern": "^a", "format": "email", "maxLength": 20},
        [b'"a@example.com"'],
        [b'"b@example.com"', b'"a@"', b'"a@example.commmmmmmmmm"'],
    ),
    ({"uniqueItems": False}, [b"[1, 1]"], []),
    (
        {
            "title": "t",
            "description": "d",
            "default": 1,
            "examples": [1, {"x": 1.5}],
            "$comment": "c",
            "deprecated": True,
            "readOnly": True,
            "writeOnly": False,
            "type": "integer",
        },
        [b"1"],
        [b'"x"'],
    ),
    ({"$schema": DRAFT_2020_12, "$id": "https://example.test/s", "type": "integer"}, [b"1"], []),
    (
        {
            "type": "object",
            "properties": {"a": {"type": "array", "items": {"properties": {"b": {"const": 1}}}}},
        },
        [b'{"a": [{"b": 1}, {}, 2]}'],
        [b'{"a": [{"b": 2}]}', b'{"a": {}}'],
    ),
]


@pytest.mark.parametrize(("schema", "valid", "invalid"), KEYWORD_CASES)
def test_keyword_decided_both_ways(schema: Any, valid: list[bytes], invalid: list[bytes]) -> None:
    compiled = compile_checker(schema)
    for body in valid:
        assert reference_accepts(body, schema), body
        assert check(body, compiled), body
    for body in invalid:
        assert not reference_accepts(body, schema), body
        assert not check(body, compiled), body


# (schema, body) that the reference accepts and `check` leaves to it.
UNDECIDED_CASES: list[tuple[Any, bytes]] = [
    ({}, b'{"\\u0061": 1}'),  # a key with an escape
    ({"properties": {"a": {}}}, b'{"\\u0061": 1}'),
    ({}, json.dumps({f"k{index}": index for index in range(17)}).encode()),
    ({"type": "integer"}, b"1.0"),  # jsonschema-rs counts 1.0 as an integer
    ({"type": "integer"}, b"1e2"),
    ({"enum": [1]}, b"1.0"),
    ({"const": 0}, b"-0.0"),
    ({"enum": ["a"]}, b'"\\u0061"'),  # an escaped string against enum strings
    ({"maximum": 1.5}, b"1"),  # an integer against a bound with a fraction
    # A double equal to the double nearest to an integer bound beyond 2^53.
    ({"minimum": 2**60}, b"1152921504606846976.0"),
]


@pytest.mark.parametrize(("schema", "body"), UNDECIDED_CASES)
def test_undecided_case_left_to_reference(schema: Any, body: bytes) -> None:
    assert reference_accepts(body, schema)
    assert not check(body, compile_checker(schema))


def test_sixteen_unlisted_keys_decided() -> None:
    body = json.dumps({f"k{index}": index for index in range(16)}).encode()
    assert check(body, compile_checker({}))
    # Listed keys do not count against the 16.
    schema: dict[str, Any] = {"properties": {f"p{index}": {} for index in range(40)}}
    document = {f"p{index}": index for index in range(40)} | {f"k{index}": 0 for index in range(16)}
    assert check(json.dumps(document).encode(), compile_checker(schema))


def test_sixty_four_properties_compile() -> None:
    schema = {"properties": {f"p{index}": {"type": "integer"} for index in range(64)}}
    compiled = compile_checker(schema)
    assert check(json.dumps({f"p{index}": index for index in range(64)}).encode(), compiled)
    assert not check(b'{"p63": "x"}', compiled)
    assert not check(b'{"p63": 1, "p63": 2}', compiled)


# --- bounds beyond 2^53 --------------------------------------------------------

# jsonschema-rs 0.58.3 reads a double bound as its shortest decimal string, so
# to it the bound 2.0**60 is 1152921504606847000, not 2^60 = 1152921504606846976.
# It also finds the double 2.0**60 above the integer maximum 2**60. So the
# reference rejects each body below, although its exact value satisfies the bound.
LARGE_BOUND_REJECTIONS: list[tuple[dict[str, Any], bytes]] = [
    ({"minimum": 2.0**60}, b"1152921504606846977"),
    ({"exclusiveMinimum": 2.0**60}, b"1152921504606846999"),
    ({"maximum": -(2.0**60)}, b"-1152921504606846977"),
    ({"exclusiveMaximum": -(2.0**60)}, b"-1152921504606846999"),
    ({"minimum": float(INT64_MAX - 1023)}, b"9223372036854774785"),
    ({"maximum": 2**60}, b"1152921504606846976.0"),
    ({"maximum": 2**60}, b"1.152921504606847e18"),
    ({"minimum": -(2**60)}, b"-1152921504606846976.0"),
    ({"maximum": 2**62}, b"4.611686018427388e18"),
]


@pytest.mark.parametrize(("schema", "body"), LARGE_BOUND_REJECTIONS)
def test_number_at_large_bound_not_accepted(schema: dict[str, Any], body: bytes) -> None:
    assert not reference_accepts(body, schema)
    assert not check(body, compile_checker(schema))


# Bodies that rounding to a double cannot move across the bound, so `check` decides them.
LARGE_BOUND_ACCEPTANCES: list[tuple[dict[str, Any], bytes]] = [
    ({"maximum": 2**60}, b"1.1e18"),
    ({"minimum": 2**60}, b"1.2e18"),
    ({"exclusiveMaximum": 2**60}, b"1152921504606846720.0"),
    ({"minimum": 2.0**53}, b"9007199254740992"),
    ({"maximum": -(2.0**53)}, b"-9007199254740992"),
]


@pytest.mark.parametrize(("schema", "body"), LARGE_BOUND_ACCEPTANCES)
def test_number_far_from_large_bound_decided(schema: dict[str, Any], body: bytes) -> None:
    assert reference_accepts(body, schema)
    assert check(body, compile_checker(schema))


def _bodies_near(center: int) -> list[bytes]:
    """Return integer and double literals at and next to `center`."""
    bodies = [str(center + offset).encode() for offset in (-2, -1, 0, 1, 2, 24, 25)]
    value = float(center)
    for double in (math.nextafter(value, -math.inf), value, math.nextafter(value, math.inf)):
        bodies.append(repr(double).encode())
        bodies.append(b"%.17e" % double)
    return [body for body in bodies if INT64_MIN <= int(float(body)) <= INT64_MAX]


@pytest.mark.parametrize(
    "center",
    [2**53 - 1, 2**53, 2**53 + 2, 10**16 + 2, 2**60, 2**62 + 2**40, INT64_MAX - 1023],
)
def test_bounds_near_double_precision_limit_sound(center: int) -> None:
    for sign in (1, -1):
        for bound in (sign * center, float(sign * center)):
            for keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                schema = {keyword: bound}
                compiled = compile_checker(schema)
                for body in _bodies_near(sign * center):
                    assert_sound(body, schema, compiled)


@settings(derandomize=True, max_examples=1000, deadline=None)
@given(
    st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
    | st.floats(min_value=-(2.0**63), max_value=float(INT64_MAX - 1023)),  # the double below 2^63
    st.sampled_from(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]),
    st.booleans(),
    st.integers(min_value=-3, max_value=3),
)
def test_bound_against_nearby_number_sound(
    center: float, keyword: str, float_bound: bool, offset: int
) -> None:
    bound: int | float = float(center) if float_bound else int(center)
    schema = {keyword: bound}
    compiled = compile_checker(schema)
    integer = int(center) + offset
    if INT64_MIN <= integer <= INT64_MAX:
        assert_sound(str(integer).encode(), schema, compiled)
    double = float(center)
    for _ in range(abs(offset)):
        double = math.nextafter(double, math.copysign(math.inf, offset))
    if math.isfinite(double):
        assert_sound(repr(double).encode(), schema, compiled)


# --- schemas outside the subset -------------------------------------------------

DECLINED_SCHEMAS: list[Any] = [
    {"$ref": "#"},
    {"$defs": {"a": {}}},
    {"allOf": [{}]},
    {"anyOf": [{}]},
    {"oneOf": [{}]},
    {"not": {}},
    {"if": {}, "then": {}, "else": {}},
    {"patternProperties": {"^a": {}}},
    {"propertyNames": {"maxLength": 3}},
    {"dependentRequired": {"a": ["b"]}},
    {"dependentSchemas": {"a": {}}},
    {"dependencies": {"a": ["b"]}},  # jsonschema-rs applies it under draft 2020-12
    {"unevaluatedProperties": False},
    {"unevaluatedItems": False},
    {"prefixItems": [{}]},
    {"additionalItems": False},
    {"items": [{}]},
    {"contains": {}},
    {"minContains": 1},
    {"uniqueItems": True},
    {"multipleOf": 2},
    {"$dynamicRef": "#a"},
    {"$anchor": "a"},
    {"contentMediaType": "application/json"},
    {"x-extension": 1},
    {"nullable": True},
    {"enum": [1.5]},
    {"enum": [[1]]},
    {"enum": "a"},
    {"const": {"a": 1}},
    {"const": 1.0},
    {"minimum": 2**64},
    {"minimum": True},
    {"minimum": float("inf")},
    {"minimum": "1"},
    {"minLength": 1.0},
    {"minLength": -1},
    {"maxItems": 2**70},
    {"type": "int"},
    {"type": ["string", "int"]},
    {"format": 5},
    {"pattern": None},
    {"properties": []},
    {"required": "a"},
    {"properties": {f"p{index}": {} for index in range(65)}},
    {"properties": {"a": {"$ref": "#"}}},
    {"items": {"not": {}}},
    {"additionalProperties": {"anyOf": [{}]}},
    {"properties": {"a": {"$id": "https://example.test/a"}}},
    {"properties": {"a": {"$schema": DRAFT_2020_12}}},
    {"$schema": "http://json-schema.org/draft-07/schema#"},
    "a",
    None,
    [{}],
]


@pytest.mark.parametrize("schema", DECLINED_SCHEMAS)
def test_keyword_outside_subset_declined(schema: Any) -> None:
    assert native.compile_schema(schema, json_body._compile_schema) is None


# The formats of jsonschema-rs 0.58, and one it does not know.
FORMATS_OF_JSONSCHEMA_RS = [
    "date",
    "date-time",
    "duration",
    "email",
    "hostname",
    "idn-email",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "iri",
    "iri-reference",
    "json-pointer",
    "regex",
    "relative-json-pointer",
    "time",
    "uri",
    "uri-reference",
    "uri-template",
    "uuid",
    "int64",
]


@pytest.mark.parametrize("format_name", FORMATS_OF_JSONSCHEMA_RS)
def test_format_applies_to_strings_only(format_name: str) -> None:
    schema = {"format": format_name}
    compiled = compile_checker(schema)
    for body in [b"1", b"-1.5", b"null", b"true", b"[]", b'{"a": "x"}']:
        assert reference_accepts(body, schema), body
        assert check(body, compiled), body
    for body in [b'""', b'"x"', b'"2024-01-01"', b'"a@example.com"', b'"::1"', b'"/a"', b'"P1D"']:
        assert check(body, compiled) is reference_accepts(body, schema), body


def test_validator_without_checker_for_declined_schema() -> None:
    validator = JsonSchemaValidator({"type": "object", "not": {"required": ["a"]}})
    assert validator._checker is None
    check_json_body(b"{}", validator, 64, 10)
    with pytest.raises(BodyInvalid):
        check_json_body(b'{"a": 1}', validator, 64, 10)


def test_factory_called_once_per_keyword() -> None:
    calls: list[dict[str, Any]] = []

    def factory(schema: dict[str, Any]) -> Any:
        calls.append(schema)
        return json_body._compile_schema(schema)

    schema = {"properties": {"a": {"pattern": "^x"}, "b": {"format": "email"}}}
    compiled = native.compile_schema(schema, factory)
    assert compiled is not None
    assert sorted(map(str, calls)) == ["{'format': 'email'}", "{'pattern': '^x'}"]
    assert check(b'{"a": "xy", "b": "c@example.com"}', compiled)
    assert len(calls) == 2


def test_factory_error_raised_from_compile() -> None:
    def factory(schema: dict[str, Any]) -> Any:
        raise RuntimeError("factory failed")

    with pytest.raises(RuntimeError, match="factory failed"):
        native.compile_schema({"properties": {"a": {"pattern": "x"}}}, factory)


def test_is_valid_error_raised_from_check() -> None:
    class Failing:
        def is_valid(self, instance: object) -> bool:
            raise RuntimeError("is_valid failed")

    compiled = native.compile_schema({"pattern": "x"}, lambda schema: Failing())
    with pytest.raises(RuntimeError, match="is_valid failed"):
        check(b'"x"', compiled)
    assert check(b"1", compiled)  # is_valid runs for strings only


def test_self_containing_schema_raises_recursion_error() -> None:
    schema: dict[str, Any] = {"type": "object"}
    schema["properties"] = {"a": schema}
    with pytest.raises(RecursionError):
        native.compile_schema(schema, json_body._compile_schema)


def test_bad_arguments_raise() -> None:
    compiled = compile_checker({})
    with pytest.raises(TypeError):
        native.check(b"1", {}, 64, 10)
    with pytest.raises(TypeError):
        native.check(b"1", compiled, 64)
    with pytest.raises(TypeError):
        native.check("1", compiled, 64, 10)
    with pytest.raises(TypeError):
        native.compile_schema({})
    for limits in [(0, 10), (501, 10), (64, 0)]:
        with pytest.raises(ValueError, match="must be"):
            native.check(b"1", compiled, *limits)


def test_buffers_checked_like_bytes() -> None:
    compiled = compile_checker({"properties": {"a": {"pattern": "^x"}}})
    for body in (b'{"a": "xy"}', b'{"a": "y"}'):
        expected = check(body, compiled)
        assert check(bytearray(body), compiled) is expected
        assert check(memoryview(body), compiled) is expected


# --- the rules of the strict parser ---------------------------------------------

STRICT_REJECTIONS = [
    b"",
    b" ",
    b"\xef\xbb\xbf{}",
    b'{"a": 1, "a": 2}',
    b'{"a": 1, "\\u0061": 2}',
    b'{"\\u0061": 1, "a": 2}',
    b'{"b": 1, "b": 2}',  # not in `properties`
    b'{"c": 1, "c": 2}',  # listed by `required` only
    b'{"a": {"x": 1, "x": 1}}',
    b'[{"x": {}, "x": []}]',
    b'{"\xc3\xa9": 1, "\\u00e9": 2}',
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b'{"a": NaN}',
    b"[Infinity]",
    b'"\\ud800"',
    b'"\\udc00"',
    b'"\\ud83dx"',
    b'"\\ud83d\\u0041"',
    b'{"a": "\\ud800"}',
    b'{"\\udc00": 1}',
    b'"\xff"',
    b'"\xc0\xaf"',
    b'"\xed\xa0\x80"',
    b'"\xf4\x90\x80\x80"',
    b'"\xe2\x82"',
    b'{"\xff": 1}',
    b'"a\x00b"',
    b'"a\nb"',
    b'"\\a"',
    str(INT64_MAX + 1).encode(),
    str(INT64_MIN - 1).encode(),
    b"9" * 25,
    b"1e400",
    b"-1e400",
    b"1.7976931348623159e308",
    b'{"a": 1e400}',
    b"01",
    b"1.",
    b".5",
    b"-",
    b"+1",
    b"[1,]",
    b'{"a":1,}',
    b'{"a" 1}',
    b"{'a': 1}",
    b"[] []",
    b'{"a": 1}x',
    b"1 2",
    b'"abc',
    b"tru",
    b"nul",
    b"[",
    b"{",
]


@pytest.mark.parametrize("body", STRICT_REJECTIONS)
def test_strict_parse_rule_still_rejected(body: bytes) -> None:
    assert native.parse(body, DEFAULT_MAX_DEPTH, DEFAULT_MAX_MEMBERS) is native.REJECTED
    for schema in (True, {}, {"properties": {"a": {}}, "required": ["c"]}):
        assert not check(body, compile_checker(schema)), (schema, body)


@pytest.mark.parametrize("schema", [True, {"items": {"properties": {"a": {}}}}])
def test_depth_limit_applied(schema: Any) -> None:
    compiled = compile_checker(schema)
    for max_depth in (1, 3, 64):
        assert check(b"[" * max_depth + b"]" * max_depth, compiled, max_depth=max_depth)
        too_deep = b"[" * (max_depth + 1) + b"]" * (max_depth + 1)
        assert not check(too_deep, compiled, max_depth=max_depth)
    nested = b'[{"a": [{"a": 1}]}]'
    assert check(nested, compiled, max_depth=4)
    assert not check(nested, compiled, max_depth=3)


@pytest.mark.parametrize("schema", [True, {"properties": {"0": {}, "1": {}}}])
def test_member_limit_applied(schema: Any) -> None:
    compiled = compile_checker(schema)
    for max_members in (1, 2, 5):
        at_limit = list(range(max_members))
        assert check(json.dumps(at_limit).encode(), compiled, max_members=max_members)
        members = {str(index): index for index in at_limit}
        assert check(json.dumps(members).encode(), compiled, max_members=max_members)
        over = list(range(max_members + 1))
        for document in (over, {str(index): index for index in over}, {"a": [over]}):
            assert not check(json.dumps(document).encode(), compiled, max_members=max_members)


# --- the benchmark and the demo -----------------------------------------------


def _load_bench_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "bench_validated", ROOT / "bench" / "validated.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _load_bench_module()


def test_bench_order_takes_fast_path() -> None:
    body = BENCH.order_body()
    validator = JsonSchemaValidator(BENCH.SCHEMA)
    assert validator._checker is not None
    assert check(body, validator._checker)
    # Neither the parser nor jsonschema-rs runs for it.
    with (
        mock.patch.object(native, "parse", side_effect=AssertionError("parse called")),
        mock.patch.object(json_body, "_parse_in_python", side_effect=AssertionError),
    ):
        check_json_body(body, validator, DEFAULT_MAX_DEPTH, DEFAULT_MAX_MEMBERS)


def test_bench_order_variants_decided() -> None:
    compiled = compile_checker(BENCH.SCHEMA)
    order = json.loads(BENCH.order_body())
    assert check(json.dumps(order, indent=2).encode(), compiled)
    assert check(json.dumps(order, ensure_ascii=False).encode(), compiled)
    for broken, path in [
        ({**order, "order_id": "ord-26-42"}, "/order_id"),
        ({**order, "items": []}, "/items"),
        ({**order, "extra": 1}, "/extra"),
        ({**order, "currency": "CHF"}, "/currency"),
        ({**order, "customer": {"id": "c"}}, "/customer"),
    ]:
        body = json.dumps(broken).encode()
        assert not check(body, compiled), path
        assert not reference_accepts(body, BENCH.SCHEMA), path


def _demo_order_schemas() -> list[dict[str, Any]]:
    config = yaml.safe_load((ROOT / "examples" / "demo" / "ringwall.yaml").read_text())
    route = next(route for route in config["routes"] if route["name"] == "create-order")
    spec = json.loads((ROOT / "ringwall" / "demo" / "openapi.json").read_text())
    return [route["validate"]["json"]["schema"], spec["components"]["schemas"]["OrderRequest"]]


DEMO_ORDERS = [
    b'{"product_id": 42, "quantity": 2}',
    b'{"quantity":1,"product_id":1}',
    b'{"product_id": 2147483647, "quantity": 100}',
    b'\n{ "product_id" : 100 ,\n  "quantity" : 3 }\n',
]


@pytest.mark.parametrize("schema", _demo_order_schemas())
def test_demo_orders_take_fast_path(schema: dict[str, Any]) -> None:
    validator = JsonSchemaValidator(schema)
    assert validator._checker is not None
    for body in DEMO_ORDERS:
        assert check(body, validator._checker), body
        assert reference_accepts(body, schema), body
    for body in [
        b'{"product_id": 42}',
        b'{"product_id": 0, "quantity": 2}',
        b'{"product_id": 2147483648, "quantity": 2}',
        b'{"product_id": 42, "quantity": 2.0}',
        b'{"product_id": 42, "quantity": 2, "note": "x"}',
        b'{"product_id": 42, "quantity": 2, "quantity": 3}',
    ]:
        assert not check(body, validator._checker), body


# --- check_json_body with and without the check ------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"product_id": 42, "quantity": 2}',
        b'{"product_id": 42, "quantity": 0}',
        b'{"product_id": 42, "quantity": 2, "quantity": 3}',
        b'{"product_id": 42, "\\u0071uantity": 2}',
        b'{"product_id": 42, "quantity": 2.5}',
        b'{"product_id": "42", "quantity": 2}',
        b'{"product_id": 42, "quantity": 2, "x": NaN}',
        b'{"product_id": 42}',
        b"[]",
        b"{",
    ],
)
def test_check_json_body_outcome_unchanged(body: bytes) -> None:
    schema = _demo_order_schemas()[0]
    without_checker = JsonSchemaValidator(schema)
    without_checker._checker = None
    assert _outcome(body, JsonSchemaValidator(schema)) == _outcome(body, without_checker)


def _outcome(body: bytes, validator: JsonSchemaValidator) -> tuple[str, str] | None:
    """Return the reason and pointer of the BodyInvalid that check_json_body raises, or None."""
    try:
        check_json_body(body, validator, DEFAULT_MAX_DEPTH, DEFAULT_MAX_MEMBERS)
    except BodyInvalid as invalid:
        return invalid.reason, invalid.pointer
    return None


def test_check_json_body_without_extension() -> None:
    validator = JsonSchemaValidator(_demo_order_schemas()[0])
    with mock.patch.object(json_body, "_strict_json", None):
        check_json_body(DEMO_ORDERS[0], validator, DEFAULT_MAX_DEPTH, DEFAULT_MAX_MEMBERS)
        with pytest.raises(BodyInvalid):
            check_json_body(b'{"quantity": 1}', validator, DEFAULT_MAX_DEPTH, DEFAULT_MAX_MEMBERS)


# --- differential tests ---------------------------------------------------------

# Property names shared by schemas and instances, so that instances hit them.
NAMES = ["a", "b", "id", "é", "a b", ""]
NUMBERS = st.sampled_from(
    [0, 1, -1, 2, 2.5, 0.5, -0.0, 1.0, 1e300, 2**53, 2**53 + 1, INT64_MAX, INT64_MIN, 3]
) | st.integers(min_value=-5, max_value=5)
SCALARS = st.none() | st.booleans() | st.sampled_from(NAMES) | st.integers(-3, 3)
PATTERNS = ["^a", "a$", "^[0-9]+$", "é", "^.{2}$", "^[a-z ]*$"]
FORMATS = ["email", "date", "uuid", "ipv4", "int32", "regex"]
TYPE_NAMES = ["null", "boolean", "object", "array", "string", "number", "integer"]
COUNTS = st.integers(min_value=0, max_value=3)

SCALAR_KEYWORDS: dict[str, st.SearchStrategy[Any]] = {
    "type": st.sampled_from(TYPE_NAMES)
    | st.lists(st.sampled_from(TYPE_NAMES), min_size=1, max_size=3, unique=True),
    "minLength": COUNTS,
    "maxLength": COUNTS,
    "minItems": COUNTS,
    "maxItems": COUNTS,
    "minProperties": COUNTS,
    "maxProperties": COUNTS,
    "minimum": NUMBERS,
    "maximum": NUMBERS,
    "exclusiveMinimum": NUMBERS,
    "exclusiveMaximum": NUMBERS,
    "enum": st.lists(SCALARS, min_size=1, max_size=4),
    "const": SCALARS,
    "pattern": st.sampled_from(PATTERNS),
    "format": st.sampled_from(FORMATS),
    "required": st.lists(st.sampled_from(NAMES), max_size=3, unique=True),
    "uniqueItems": st.just(False),
    "title": st.just("t"),
}


def _with_children(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {},
        optional={
            **SCALAR_KEYWORDS,
            "properties": st.dictionaries(st.sampled_from(NAMES), children, max_size=3),
            "additionalProperties": children,
            "items": children,
        },
    )


SCHEMAS = st.recursive(
    st.booleans() | st.fixed_dictionaries({}, optional=SCALAR_KEYWORDS),
    _with_children,
    max_leaves=6,
)

INSTANCES = st.recursive(
    st.none()
    | st.booleans()
    | NUMBERS
    | st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(NAMES)
    | st.text(max_size=4),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=2), children, max_size=4)
    ),
    max_leaves=12,
)


def _write_string(text: str, choices: Iterator[int]) -> str:
    """Write `text` as a JSON string, escaping all of it when the next choice is 1."""
    if next(choices) % 4 == 1:
        units = text.encode("utf-16-be", "surrogatepass")
        return (
            '"'
            + "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))
            + '"'
        )
    return json.dumps(text, ensure_ascii=next(choices) % 2 == 0)


def write_json(value: object, choices: Iterator[int]) -> str:
    """Write `value` as JSON, where `choices` decide escapes and repeated keys."""
    if isinstance(value, dict):
        members = [
            f"{_write_string(key, choices)}: {write_json(item, choices)}"
            for key, item in value.items()
        ]
        if members and next(choices) % 5 == 0:
            members.append(members[next(choices) % len(members)])  # a duplicate key
        return "{" + ", ".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(write_json(item, choices) for item in value) + "]"
    if isinstance(value, str):
        return _write_string(value, choices)
    return json.dumps(value)


SNIPPETS = [
    b'"',
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"0",
    b"1",
    b".0",
    b"e5",
    b"-",
    b" ",
    b"\x00",
    b"\xff",
    b"\xc3",
    b'"a": 1, ',
    b"\\u0061",
    b"\\ud800",
    b"1e400",
    b"NaN",
    b"9223372036854775808",
]


@st.composite
def mutations(draw: st.DrawFn, body: bytes) -> bytes:
    """Return `body` with a byte replaced, deleted, or a snippet inserted."""
    if not body:
        return draw(st.sampled_from(SNIPPETS))
    position = draw(st.integers(min_value=0, max_value=len(body) - 1))
    action = draw(st.sampled_from(["replace", "delete", "insert"]))
    if action == "delete":
        return body[:position] + body[position + 1 :]
    snippet = draw(st.sampled_from(SNIPPETS))
    if action == "replace":
        return body[:position] + snippet + body[position + 1 :]
    return body[:position] + snippet + body[position:]


def _without_crossed_counts(schema: Any) -> Any:
    """Return `schema` without each maximum count that is below its minimum.

    hypothesis-jsonschema 0.23.1 raises InvalidArgument for such a pair
    where it should generate nothing.
    """
    if not isinstance(schema, dict):
        return schema
    copy: dict[str, Any] = {
        keyword: (
            {name: _without_crossed_counts(member) for name, member in value.items()}
            if keyword == "properties"
            else _without_crossed_counts(value)
        )
        for keyword, value in schema.items()
    }
    for noun in ("Length", "Items", "Properties"):
        if copy.get("min" + noun, 0) > copy.get("max" + noun, 2**63):
            del copy["max" + noun]
    return copy


@settings(
    derandomize=True,
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(SCHEMAS, st.data())
def test_check_sound_for_generated_schemas(schema: Any, data: st.DataObject) -> None:
    compiled = compile_checker(schema)
    instance = data.draw(from_schema(_without_crossed_counts(schema)) | INSTANCES, label="instance")
    choices = cycle(data.draw(st.lists(st.integers(0, 19), min_size=1, max_size=8)))
    bodies = [
        json.dumps(instance).encode(),
        json.dumps(instance, ensure_ascii=False, indent=1).encode(),
        write_json(instance, choices).encode("utf-8", "surrogatepass"),
    ]
    bodies.append(data.draw(mutations(bodies[-1]), label="mutated"))
    for body in bodies:
        assert_sound(body, schema, compiled)
        assert_sound(body, schema, compiled, max_depth=2, max_members=2)


@settings(derandomize=True, max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(NATIVE_FRAGMENTS), max_size=30).map(b"".join))
def test_fragment_soup_sound(body: bytes) -> None:
    for schema in (True, {"properties": {"a": {"type": "integer"}}, "required": ["b"]}):
        compiled = compile_checker(schema)
        assert_sound(body, schema, compiled)
        assert_sound(body, schema, compiled, max_depth=2, max_members=2)


@settings(derandomize=True, max_examples=500, deadline=None)
@given(HOSTILE_DOCUMENTS, st.sampled_from(["", " ", "\n", " x", "]"]))
def test_hostile_documents_sound(document: str, tail: str) -> None:
    body = (document + tail).encode("utf-8", "surrogatepass")
    for schema in (True, {"additionalProperties": {"type": ["integer", "string", "array"]}}):
        compiled = compile_checker(schema)
        assert_sound(body, schema, compiled)
        assert_sound(body, schema, compiled, max_depth=3, max_members=3)


@settings(derandomize=True, max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_sound(body: bytes) -> None:
    assert_sound(body, True, compile_checker(True))


def _needs_no_shortcut(value: object, ensure_ascii: bool) -> bool:
    """Return whether `check` with the schema true must decide `value` as json.dumps writes it.

    The shortcuts are keys with escapes and objects of more than 16 members.
    """
    if isinstance(value, dict):
        keys = value.keys()
        plain = all(json.dumps(key, ensure_ascii=ensure_ascii)[1:-1] == key for key in keys)
        members = value.values()
        return (
            plain
            and len(value) <= 16
            and all(_needs_no_shortcut(member, ensure_ascii) for member in members)
        )
    if isinstance(value, list):
        return all(_needs_no_shortcut(element, ensure_ascii) for element in value)
    return True


@settings(derandomize=True, max_examples=500, deadline=None)
@given(INSTANCES, st.booleans())
def test_any_schema_decides_plain_documents(document: object, ensure_ascii: bool) -> None:
    body = json.dumps(document, ensure_ascii=ensure_ascii).encode("utf-8")
    accepted = assert_sound(body, True, compile_checker(True))
    assert reference_accepts(body, True)
    if _needs_no_shortcut(document, ensure_ascii):
        assert accepted, body
