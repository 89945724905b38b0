"""Tests for the C parser ringwall.gateway.validation._strict_json against the Python parser.

The C parser must accept exactly the bodies that the Python parser of
json_body.py accepts, and return the same document: the same types and
the same float bits. Every test here compares the two on the same body.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringwall.gateway.validation import json_body
from ringwall.gateway.validation.json_body import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_MEMBERS,
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH_LIMIT,
    BodyInvalid,
    parse_strict_json,
)
from tests.gateway.validation.test_json_body import (
    HOSTILE_DOCUMENTS,
    JSON_FRAGMENTS,
    JSON_VALUES,
)

native: Any = pytest.importorskip(
    "ringwall.gateway.validation._strict_json",
    reason="the C extension is not built: run `pip install -e .`",
)

REJECTED = ("rejected",)


def typed(value: object) -> object:
    """Return `value` with the type of every part, and floats as their exact bits."""
    if value is None or isinstance(value, bool | str):
        return (type(value).__name__, value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    if isinstance(value, list):
        return ("list", [typed(element) for element in value])
    if isinstance(value, dict):
        return ("dict", [(key, typed(member)) for key, member in value.items()])
    raise AssertionError(f"unexpected type {type(value).__name__}")


def python_result(body: bytes, max_depth: int, max_members: int) -> object:
    try:
        return typed(json_body._parse_in_python(body, max_depth, max_members))
    except BodyInvalid:
        return REJECTED


def native_result(body: bytes, max_depth: int, max_members: int) -> object:
    document = native.parse(body, max_depth, max_members)
    return REJECTED if document is native.REJECTED else typed(document)


def assert_agree(
    body: bytes, max_depth: int = DEFAULT_MAX_DEPTH, max_members: int = DEFAULT_MAX_MEMBERS
) -> object:
    """Assert that both parsers return the same result for `body`, and return it."""
    expected = python_result(body, max_depth, max_members)
    assert native_result(body, max_depth, max_members) == expected, body
    return expected


def accepted(body: bytes, **limits: int) -> object:
    result = assert_agree(body, **limits)
    assert result != REJECTED, body
    return result


def rejected(body: bytes, **limits: int) -> None:
    assert assert_agree(body, **limits) == REJECTED, body


# --- edge cases -------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"0",
        b"-0",
        b"-0.0",
        b"0e0",
        b"-0E-0",
        b"1.5e+3",
        b"1e-400",
        b"0." + b"0" * 400 + b"1",
        b"1" + b"0" * 308 + b".0",
        b"1.7976931348623157e308",
        b"4.9e-324",
        b"2.2250738585072011e-308",
        b"0.1",
        b"123456789.123456789e-5",
        str(INT64_MAX).encode(),
        str(INT64_MIN).encode(),
        b"1" * 19,
        b"-" + b"1" * 19,
        b"true",
        b"false",
        b"null",
        b'""',
        b"[]",
        b"{}",
        b"[ ]",
        b"{ \n}",
        b" \t\r\n[1 , 2 ]\r\n\t ",
        b'{"a" : {"b" :[ {} , [] ] } }',
        b'"\\ud83d\\ude00"',
        b'"\\uD83D\\uDE00"',
        b'"\\u00e9\\u00E9\\u0000\\u001f"',
        b'"\\"\\\\\\/\\b\\f\\n\\r\\t"',
        b'"\x7f"',
        b'"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"',
        b'"\xef\xbf\xbf\xef\xbf\xbe"',  # the noncharacters U+FFFF and U+FFFE
        b'"\xf4\x8f\xbf\xbf"',  # U+10FFFF
        b'"\xed\x9f\xbf"',  # U+D7FF, just below the surrogates
        b'"\xee\x80\x80"',  # U+E000, just above them
        b'"\\ud7ff\\ue000"',
        b'{"a": 1, "A": 2, "a ": 3}',
        b'{"\\u0061": 1, "b": 2}',
        b'{"\\":": "\\":"}',
        b'"' + b"x" * 10_000 + b'"',
        b'"' + b"\\n" * 5_000 + b'"',
        b'["' + "\u00e9".encode() * 300 + b'\\n"]',
    ],
)
def test_valid_body_accepted_alike(body: bytes) -> None:
    accepted(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b" \n",
        b"\x0c1",  # form feed is not JSON whitespace
        b"1\x0c",
        b"\xef\xbb\xbf1",
        b"\xef\xbb\xbf{}",
        b"00",
        b"01",
        b"-01",
        b"-",
        b"--1",
        b"+1",
        b"1.",
        b".5",
        b"1.e5",
        b"1e",
        b"1e+",
        b"1E-",
        b"0x10",
        b"1_000",
        b"1e400",
        b"-1e400",
        b"2e308",
        b"1.7976931348623159e308",
        b"1" * 400 + b".0",
        b"9" * 19,
        b"1" * 20,
        str(INT64_MAX + 1).encode(),
        str(INT64_MIN - 1).encode(),
        b"9" * 5000,
        b"NaN",
        b"Infinity",
        b"-Infinity",
        b"[NaN]",
        b"nul",
        b"tru",
        b"truex",
        b"nulls",
        b"True",
        b"None",
        b"[1,]",
        b"[,1]",
        b"[1 2]",
        b"[1,,2]",
        b"[",
        b"]",
        b"{",
        b'{"a"}',
        b'{"a":}',
        b'{"a" 1}',
        b'{"a":1,}',
        b"{,}",
        b"{1: 2}",
        b"{'a': 1}",
        b'{"a":1 "b":2}',
        b"[] []",
        b"[]x",
        b"1 2",
        b'"abc',
        b'"abc\\"',
        b'"\\',
        b'"\\"',
        b'"\\a"',
        b'"\\x41"',
        b'"\\U0041"',
        b'"\\u"',
        b'"\\u12"',
        b'"\\u12g4"',
        b'"\\ud83d"',
        b'"\\ude00"',
        b'"\\ud83dx"',
        b'"\\ud83d\\u0041"',
        b'"\\ud83d\\ud83d"',
        b'"\\ud83d\\n"',
        b'"\\ude00\\ud83d"',
        b'"\\ud83d\\ude0"',
        b'"a\x00b"',
        b'"a\x1fb"',
        b'"a\tb"',
        b'"a\nb"',
        b'"\xff"',
        b'"\x80"',
        b'"\xc0\xaf"',
        b'"\xc1\xbf"',
        b'"\xe0\x80\xaf"',
        b'"\xe0\x9f\xbf"',
        b'"\xed\xa0\x80"',
        b'"\xed\xbf\xbf"',
        b'"\xf0\x8f\xbf\xbf"',
        b'"\xf4\x90\x80\x80"',
        b'"\xf5\x80\x80\x80"',
        b'"\xe2\x82"',
        b'"\xe2\x82\\n"',
        b'"\xf0\x9f\x98"',
        b'"\xc3"',
        b"\xc3\xa9",
        b'{"a": 1, "a": 2}',
        b'{"a": 1, "\\u0061": 2}',
        b'{"\\u00e9": 1, "\xc3\xa9": 2}',
        b'{"\\ud83d\\ude00": 1, "\xf0\x9f\x98\x80": 2}',
        b'[{"x": {}, "x": []}]',
        b'{"a": "\\ud800"}',
        b'{"\\udc00": 1}',
    ],
)
def test_invalid_body_rejected_alike(body: bytes) -> None:
    rejected(body)


def test_signed_zero_kept() -> None:
    assert math.copysign(1.0, native.parse(b"-0.0", 64, 10)) == -1.0
    zero = native.parse(b"-0", 64, 10)
    assert type(zero) is int
    assert zero == 0


@pytest.mark.parametrize(("max_depth", "depth"), [(1, 1), (3, 3), (64, 64), (200, 200)])
def test_depth_limit_matches(max_depth: int, depth: int) -> None:
    accepted(b"[" * depth + b"]" * depth, max_depth=max_depth)
    rejected(b"[" * (depth + 1) + b"]" * (depth + 1), max_depth=max_depth)
    accepted(b'{"a":' * depth + b"1" + b"}" * depth, max_depth=max_depth)
    rejected(b'{"a":' * (depth + 1) + b"1" + b"}" * (depth + 1), max_depth=max_depth)


def test_depth_limit_at_maximum() -> None:
    # typed() would need two frames per level, so compare without it.
    deepest = b"[" * MAX_DEPTH_LIMIT + b"]" * MAX_DEPTH_LIMIT
    document = native.parse(deepest, MAX_DEPTH_LIMIT, 10)
    assert document == json_body._parse_in_python(deepest, MAX_DEPTH_LIMIT, 10)
    too_deep = b"[" + deepest + b"]"
    assert native.parse(too_deep, MAX_DEPTH_LIMIT, 10) is native.REJECTED
    with pytest.raises(BodyInvalid):
        json_body._parse_in_python(too_deep, MAX_DEPTH_LIMIT, 10)


def test_brackets_in_strings_do_not_count_as_depth() -> None:
    accepted(b'["[[[[", {"{{{{": "]]]]"}]', max_depth=2)


@pytest.mark.parametrize("max_members", [1, 2, 3, 100])
def test_member_limit_matches(max_members: int) -> None:
    at_limit = list(range(max_members))
    accepted(json.dumps(at_limit).encode(), max_members=max_members)
    accepted(
        json.dumps({"a": dict.fromkeys(map(str, at_limit), 0)}).encode(), max_members=max_members
    )
    over = list(range(max_members + 1))
    for document in (over, {str(index): index for index in over}, {"a": [over]}):
        rejected(json.dumps(document).encode(), max_members=max_members)


def test_deep_unclosed_body_rejected() -> None:
    rejected(b"[" * 1_000_000)
    rejected(b"[" * 1_000_000, max_depth=MAX_DEPTH_LIMIT)


@pytest.mark.parametrize(
    "limits", [(0, 10), (MAX_DEPTH_LIMIT + 1, 10), (64, 0), (64, -1), (-5, 10)]
)
def test_bad_limits_raise_value_error(limits: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        native.parse(b"[]", *limits)


def test_buffers_parse_like_bytes() -> None:
    body = b'{"a": [1, 2.5, "x"]}'
    expected = accepted(body)
    assert typed(native.parse(bytearray(body), 64, 10)) == expected
    assert typed(native.parse(memoryview(body), 64, 10)) == expected


def test_str_body_raises_type_error() -> None:
    with pytest.raises(TypeError):
        native.parse('{"a": 1}', 64, 10)


# --- the key cache ----------------------------------------------------------


def test_many_distinct_keys_parse_correctly() -> None:
    # Far more keys than cache slots, many of the same length, so slots are
    # replaced between and within documents.
    for round_number in range(3):
        keys = [f"k{round_number}-{index:05d}" for index in range(3000)]
        document = {key: index for index, key in enumerate(keys)}
        body = json.dumps(document).encode()
        assert native.parse(body, 64, 10_000) == document
        accepted(body)


@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 16, 31, 32, 33, 64])
def test_keys_around_cache_length_limit(length: int) -> None:
    key = "".join(chr(ord("a") + index % 26) for index in range(length))
    # Keys of the same length that differ at the end, or only in the middle.
    for other in (key[:-1] + "!", key[: length // 2] + "!" + key[length // 2 + 1 :]):
        other = other or "!"
        for _ in range(3):
            document = {key: 1, other: 2, "x": {key: 3}}
            assert accepted(json.dumps(document).encode()) == typed(document)
            document = {other: 1, key: 2}
            assert accepted(json.dumps(document).encode()) == typed(document)
            rejected(json.dumps({key: 1}).encode()[:-1] + b', "' + key.encode() + b'": 2}')


def test_cached_key_equals_escaped_spelling() -> None:
    # "ab" is cached after the first body. Its escaped spelling must still
    # be found as a duplicate of it.
    accepted(b'{"ab": 1}')
    rejected(b'{"ab": 1, "\\u0061b": 2}')
    rejected(b'{"\\u0061b": 1, "ab": 2}')


# --- differential tests -----------------------------------------------------


# More fragments than test_json_body.py's, for the C parser's own edge cases.
NATIVE_FRAGMENTS = [
    *JSON_FRAGMENTS,
    b'"\\u00e9"',
    b'"\\uD83D\\uDE00"',
    b'"\\ud83d"',
    b'"\\ude00"',
    b'"\\ud83d\\u0041"',
    b'"\\u12"',
    b'"\\q"',
    b'"\\/"',
    b'"a\x7fb"',
    b'"\x00"',
    b'"\t"',
    b'"\xf0\x9f\x98\x80"',
    b'"\xc0\x80"',
    b'"\xed\xa0\x80"',
    b'"\xf4\x90\x80\x80"',
    b'"\xe2\x82"',
    b'"',
    b"\\",
    b"-0",
    b"-0.0",
    b"-",
    b"1.",
    b".5",
    b"1e",
    b"1E+2",
    b"00",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"1.7976931348623159e308",
    b"\t",
    b"\r",
    b"\x0c",
    b"fals",
    b"nulll",
]


@settings(derandomize=True, max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(NATIVE_FRAGMENTS), max_size=30).map(b"".join))
def test_fragment_soup_agrees(body: bytes) -> None:
    assert_agree(body)
    assert_agree(body, max_depth=2, max_members=2)


@settings(derandomize=True, max_examples=500, deadline=None)
@given(HOSTILE_DOCUMENTS, st.sampled_from(["", " ", "\n", " x", "]"]))
def test_hostile_documents_agree(document: str, tail: str) -> None:
    body = (document + tail).encode("utf-8", "surrogatepass")
    assert_agree(body)
    assert_agree(body, max_depth=3, max_members=3)


@settings(derandomize=True, max_examples=500, deadline=None)
@given(
    JSON_VALUES,
    st.booleans(),
    st.sampled_from([None, 0, 2]),
    st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]),
)
def test_generated_documents_agree(
    document: object, ensure_ascii: bool, indent: int | None, separators: tuple[str, str]
) -> None:
    text = json.dumps(document, ensure_ascii=ensure_ascii, indent=indent, separators=separators)
    result = accepted(text.encode("utf-8"))
    assert result == typed(document)


@settings(derandomize=True, max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_agree(body: bytes) -> None:
    assert_agree(body)
    assert_agree(body, max_depth=2, max_members=2)


DIGITS = st.text(alphabet="0123456789", max_size=25)
# Signs, digits, fractions and exponents, in and out of the JSON grammar.
NUMBER_LITERALS = st.tuples(
    st.sampled_from(["", "-", "+", "--"]),
    DIGITS,
    st.sampled_from(["", "."]),
    DIGITS,
    st.sampled_from(["", "e", "E"]),
    st.sampled_from(["", "+", "-"]),
    st.text(alphabet="0123456789", max_size=4),
).map("".join)


@settings(derandomize=True, max_examples=1000, deadline=None)
@given(NUMBER_LITERALS)
def test_number_literals_agree(literal: str) -> None:
    result = assert_agree(literal.encode())
    assert_agree(b"[" + literal.encode() + b"]")
    if result != REJECTED and ("." in literal or "e" in literal.lower()):
        # Bit for bit what Python's float() returns for the literal.
        assert result == ("float", struct.pack("<d", float(literal)))


@settings(derandomize=True, max_examples=1000, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_round_trip_agrees(value: float) -> None:
    assert accepted(repr(value).encode()) == ("float", struct.pack("<d", value))


@settings(derandomize=True, max_examples=1000, deadline=None)
@given(st.integers(min_value=INT64_MIN - 10, max_value=INT64_MAX + 10))
def test_integers_near_int64_range_agree(value: int) -> None:
    result = assert_agree(str(value).encode())
    assert (result != REJECTED) is (INT64_MIN <= value <= INT64_MAX)


def _escape_some(text: str, choices: list[int]) -> str:
    """Write `text` as a JSON string, each character in the form that `choices` picks in turn.

    0 writes the character as it is, unless JSON needs an escape for it, 1
    as \\u escapes with mixed-case hex digits, and 2 as json.dumps escapes it.
    """
    parts: list[str] = []
    for index, char in enumerate(text):
        escape = choices[index % len(choices)] % 3 if choices else 0
        if escape == 1:
            units = char.encode("utf-16-be", "surrogatepass")
            parts.extend(f"\\u{units[i]:02x}{units[i + 1]:02X}" for i in range(0, len(units), 2))
        elif escape == 2 or char in '"\\' or char < " ":
            parts.append(json.dumps(char)[1:-1])
        else:
            parts.append(char)
    return '"' + "".join(parts) + '"'


@settings(derandomize=True, max_examples=1000, deadline=None)
@given(st.text(), st.lists(st.integers(min_value=0, max_value=2), max_size=8))
def test_strings_with_escapes_agree(text: str, choices: list[int]) -> None:
    body = _escape_some(text, choices).encode("utf-8", "surrogatepass")
    result = assert_agree(body)
    if not any("\ud800" <= char <= "\udfff" for char in text):
        assert result == ("str", text)


# Bytes that end a run of plain string contents, with what follows them.
STOP_BYTES = [b"\x00", b"\x1f", b"\n", b'"', b"\\n", b"\\", b"\x80", b"\xff", b"\xc3\xa9", b"\xc3"]


@pytest.mark.parametrize("stop", STOP_BYTES)
def test_stop_byte_found_at_every_position(stop: bytes) -> None:
    # The scan reads eight bytes at a time, so try each offset in two words.
    for position in range(24):
        contents = b"x" * position + stop + b"y" * (30 - position)
        assert_agree(b'"' + contents + b'"')
        assert_agree(b'["' + contents + b'", 1]')
        # After an escape, the string is decoded by another path.
        assert_agree(b'"\\t' + contents + b'"')


@settings(derandomize=True, max_examples=1000, deadline=None)
@given(st.binary(max_size=40))
def test_raw_string_bytes_agree(contents: bytes) -> None:
    # Any bytes between quotes: UTF-8 errors, control characters, escapes.
    assert_agree(b'"' + contents + b'"')
    assert_agree(b'{"' + contents + b'": 1}')


# --- parse_strict_json with and without the C parser ------------------------


def test_parse_strict_json_uses_native_result() -> None:
    with mock.patch.object(native, "parse", return_value=["from C"]) as parse:
        assert parse_strict_json(b"[]", max_depth=5, max_members=7) == ["from C"]
    parse.assert_called_once_with(b"[]", 5, 7)


def test_rejected_body_reported_by_python_parser() -> None:
    with pytest.raises(BodyInvalid) as caught:
        parse_strict_json(b'{"a": 1, "\\u0061": 2}')
    assert caught.value.reason == "duplicate key"
    assert caught.value.pointer == "/a"


@pytest.mark.parametrize("body", [b'{"a": [1, 2.5, "\\u00e9"]}', b"null", b'"x"', b"[]", b"-0.0"])
def test_parse_without_extension_returns_same(body: bytes) -> None:
    expected = typed(parse_strict_json(body))
    with mock.patch.object(json_body, "_strict_json", None):
        assert typed(parse_strict_json(body)) == expected
