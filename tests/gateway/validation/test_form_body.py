"""Tests for ringwall.gateway.validation.form_body: strict form parsing and declared fields."""

from __future__ import annotations

import string
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ringwall.config.validation import FormBodySpec, ValidateConfig
from ringwall.gateway.validation.form_body import (
    MAX_PART_HEAD_BYTES,
    FormField,
    FormInvalid,
    FormLimits,
    FormValidator,
    form_validator,
    multipart_boundary,
    parse_form,
    parse_multipart,
    parse_urlencoded,
)

LIMITS = FormLimits()
URLENCODED = b"application/x-www-form-urlencoded"
BOUNDARY = b"XyZ"
MULTIPART = b"multipart/form-data; boundary=" + BOUNDARY


def part(disposition: bytes, content: bytes = b"v", *headers: bytes) -> bytes:
    head = b"\r\n".join((b"Content-Disposition: " + disposition, *headers))
    return b"--XyZ\r\n" + head + b"\r\n\r\n" + content + b"\r\n"


def text(name: bytes, value: bytes = b"v") -> bytes:
    return part(b'form-data; name="' + name + b'"', value)


def multipart(*parts: bytes, close: bytes = b"--XyZ--\r\n") -> bytes:
    return b"".join(parts) + close


def rejection(body: bytes, content_type: bytes = MULTIPART, **limits: Any) -> FormInvalid:
    with pytest.raises(FormInvalid) as caught:
        parse_form(body, content_type, FormLimits(**limits))
    return caught.value


def validator(**spec: Any) -> FormValidator:
    return FormValidator(FormBodySpec.model_validate(spec))


def validator_rejection(
    spec: dict[str, Any], body: bytes, content_type: bytes = URLENCODED
) -> FormInvalid:
    with pytest.raises(FormInvalid) as caught:
        validator(**spec).check(body, content_type)
    return caught.value


# --- URL-encoded: valid bodies ----------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", []),
        (b"a=1", [("a", "1")]),
        (b"a=1&b=2", [("a", "1"), ("b", "2")]),
        (b"q=hello+world%21", [("q", "hello world!")]),
        (b"name=Ren%C3%A9e", [("name", "Renée")]),
        (b"empty=", [("empty", "")]),
        (b"expr=a=b", [("expr", "a=b")]),
        (b"a=1&&b=2&", [("a", "1"), ("b", "2")]),
        (b"items%5B0%5D=x", [("items[0]", "x")]),
        (b"text=line1%0D%0Aline2", [("text", "line1\r\nline2")]),
        (b"raw=a b", [("raw", "a b")]),
        (b"plus=%2B", [("plus", "+")]),
    ],
)
def test_urlencoded_parses(body: bytes, expected: list[tuple[str, str]]) -> None:
    fields = parse_urlencoded(body, LIMITS)
    assert [(field.name, field.value) for field in fields] == expected
    assert all(field.filename is None for field in fields)


def test_urlencoded_size_counts_decoded_bytes() -> None:
    [field] = parse_urlencoded(b"a=%C3%A9", LIMITS)
    assert field.size == 2


# --- URL-encoded: rejected bodies -------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"a=1;b=2", "byte 3 is a semicolon: percent-encode it as %3B"),
        (b"a=%zz", "form field a: invalid percent-encoding in the value"),
        (b"a=%4", "form field a: invalid percent-encoding in the value"),
        (b"a=100%", "form field a: invalid percent-encoding in the value"),
        (b"%g1=1", "form field %g1: invalid percent-encoding in the name"),
        (b"a=\xc3\xa9", "byte 2 is a control character or not ASCII"),
        (b"a=b\r\n", "byte 3 is a control character or not ASCII"),
        (b"a=b\tc", "byte 3 is a control character or not ASCII"),
        (b"a=\x00", "byte 2 is a control character or not ASCII"),
        (b"a=\x7f", "byte 2 is a control character or not ASCII"),
        (b"flag", "form field flag: '=' and a value are missing"),
        (b"a=1&flag", "form field flag: '=' and a value are missing"),
        (b"=v", "form body: field 1: the field name is empty"),
        (b"a=1&=v", "form body: field 2: the field name is empty"),
        (b"a=%ff", "form field a: the value is not valid UTF-8 at byte 0"),
        (b"a=%C3%28", "form field a: the value is not valid UTF-8 at byte 0"),
        (b"a=%ED%A0%80", "form field a: the value is not valid UTF-8"),
        (b"%ff=1", r"form field \xff: the name is not valid UTF-8"),
        (b"a%00=1", r"form field a\x00: the name contains a control character"),
        (b"a%0A=1", r"form field a\x0a: the name contains a control character"),
        (b"a%C2%85=1", "the name contains a control character"),
        (b"a=%00", "form field a: the value contains a NUL character"),
    ],
)
def test_urlencoded_rejected(body: bytes, message: str) -> None:
    assert message in str(rejection(body, URLENCODED))


@pytest.mark.parametrize(
    ("body", "limits", "message"),
    [
        (b"a=1&b=2&c=3", {"max_fields": 2}, "form body: more than 2 fields"),
        (b"abcd=1", {"max_name_bytes": 3}, "form field abcd: the name is longer than 3 bytes"),
        (b"%C3%A9%C3%A9=1", {"max_name_bytes": 3}, "the name is longer than 3 bytes"),
        (b"a=1234", {"max_value_bytes": 3}, "form field a: the value is longer than 3 bytes"),
        (b"a=%C3%A9%C3%A9", {"max_value_bytes": 3}, "the value is longer than 3 bytes"),
    ],
)
def test_urlencoded_limits(body: bytes, limits: dict[str, int], message: str) -> None:
    assert message in str(rejection(body, URLENCODED, **limits))


def test_urlencoded_limits_allow_exact_size() -> None:
    limits = FormLimits(max_fields=2, max_name_bytes=3, max_value_bytes=3)
    assert len(parse_urlencoded(b"abc=123&&d=%C3%A9", limits)) == 2


def test_urlencoded_name_excerpt_is_short_and_escaped() -> None:
    invalid = rejection(b"\x01" * 500 + b"=1", URLENCODED)
    assert "\x01" not in str(invalid)
    invalid = rejection(b"%FF" * 500 + b"=1", URLENCODED, max_name_bytes=1000)
    assert invalid.field is not None
    assert len(invalid.field) < 300
    assert invalid.field.isascii()
    assert invalid.field.isprintable()


# --- multipart: valid bodies ------------------------------------------------


CHROME_BODY = (
    b"------WebKitFormBoundaryAbC123\r\n"
    b'Content-Disposition: form-data; name="title"\r\n'
    b"\r\n"
    b"Quarterly report\r\n"
    b"------WebKitFormBoundaryAbC123\r\n"
    b'Content-Disposition: form-data; name="upload"; filename="r\xc3\xa9sum\xc3\xa9.pdf"\r\n'
    b"Content-Type: application/pdf\r\n"
    b"\r\n"
    b"%PDF-1.7\r\n\xff\xfe\x00binary\r\n"
    b"------WebKitFormBoundaryAbC123\r\n"
    b'Content-Disposition: form-data; name="empty"; filename=""\r\n'
    b"Content-Type: application/octet-stream\r\n"
    b"\r\n"
    b"\r\n"
    b"------WebKitFormBoundaryAbC123--\r\n"
)


def test_multipart_browser_body_parses() -> None:
    content_type = b"multipart/form-data; boundary=----WebKitFormBoundaryAbC123"
    fields = parse_form(CHROME_BODY, content_type, LIMITS)
    assert fields == [
        FormField("title", "Quarterly report", None, None, 16),
        FormField("upload", None, "résumé.pdf", "application/pdf", 19),
        FormField("empty", None, "", "application/octet-stream", 0),
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"--XyZ--\r\n", []),
        (b"--XyZ--", []),
        (multipart(text(b"a")), [("a", "v")]),
        (multipart(text(b"a"), close=b"--XyZ--"), [("a", "v")]),
        (multipart(text(b"a", b"")), [("a", "")]),
        (multipart(text(b"a", b"line1\r\nline2\r\n")), [("a", "line1\r\nline2\r\n")]),
        (multipart(text(b"a", b"--XY and -- and \r\n--X")), [("a", "--XY and -- and \r\n--X")]),
        (multipart(part(b"form-data; name=token_name")), [("token_name", "v")]),
        (multipart(part(b'Form-Data; NAME="a"')), [("a", "v")]),
        (multipart(part(b'form-data;name="a"')), [("a", "v")]),
        (multipart(part(b'form-data; name="a;b=c"')), [("a;b=c", "v")]),
        (multipart(part(b'form-data; name="a"; size=3')), [("a", "v")]),
        (multipart(part(b'form-data; name="%22q%22"')), [("%22q%22", "v")]),
        (multipart(part(b'form-data; name="caf\xc3\xa9"')), [("café", "v")]),
        (multipart(part(b'form-data; name="a"', b"v", b"Content-Length: 1")), [("a", "v")]),
        (
            multipart(part(b'form-data; name="a"', b"v", b"Content-Transfer-Encoding: binary")),
            [("a", "v")],
        ),
        (
            multipart(part(b'form-data; name="a"', b"{}", b"Content-Type: application/json")),
            [("a", "{}")],
        ),
        (multipart(text(b"a"), text(b"a", b"w")), [("a", "v"), ("a", "w")]),
    ],
)
def test_multipart_parses(body: bytes, expected: list[tuple[str, str]]) -> None:
    fields = parse_multipart(body, BOUNDARY, LIMITS)
    assert [(field.name, field.value) for field in fields] == expected


def test_multipart_file_content_is_not_decoded() -> None:
    body = multipart(part(b'form-data; name="f"; filename="a.bin"', b"\x00\xff\xfe"))
    [field] = parse_multipart(body, BOUNDARY, LIMITS)
    assert field.value is None
    assert field.filename == "a.bin"
    assert field.size == 3


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        (b"multipart/form-data; boundary=XyZ", b"XyZ"),
        (b"multipart/form-data;boundary=XyZ", b"XyZ"),
        (b"Multipart/Form-Data; BOUNDARY=XyZ", b"XyZ"),
        (b'multipart/form-data; boundary="XyZ"', b"XyZ"),
        (b'multipart/form-data; boundary="a b:c"', b"a b:c"),
        (b"multipart/form-data; boundary=XyZ; charset=UTF-8", b"XyZ"),
        (b"multipart/form-data; boundary=" + b"a" * 70, b"a" * 70),
        (b'multipart/form-data; boundary="\'()+_,-./:=?"', b"'()+_,-./:=?"),
        (b"multipart/form-data; boundary='+_-.", b"'+_-."),
    ],
)
def test_boundary_parsed(content_type: bytes, boundary: bytes) -> None:
    assert multipart_boundary(content_type) == boundary


# --- multipart: rejected Content-Type ---------------------------------------


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        (b"multipart/form-data", "the Content-Type has no boundary parameter"),
        (b"multipart/form-data; charset=utf-8", "the Content-Type has no boundary parameter"),
        (b"multipart/form-data; boundary=", "malformed parameter"),
        (b'multipart/form-data; boundary=""', "the boundary must be 1 to 70"),
        (b"multipart/form-data; boundary=" + b"a" * 71, "the boundary must be 1 to 70"),
        (b'multipart/form-data; boundary="ab "', "must not end with a space"),
        (b'multipart/form-data; boundary="a;b"', "the boundary must be 1 to 70"),
        (b'multipart/form-data; boundary="a\\\\b"', "backslash in a parameter"),
        (b"multipart/form-data; boundary=a; boundary=b", "more than one boundary parameter"),
        (b"multipart/form-data; BOUNDARY=a; boundary=a", "more than one boundary parameter"),
        (b"multipart/form-data; boundary=a b", "malformed parameter at byte 31"),
        (b"multipart/form-data ; boundary=a", "malformed parameter"),
        (b'multipart/form-data; boundary="abc', "malformed parameter"),
        (b"multipart/form-data; boundary=XyZ;", "malformed parameter"),
        (b"multipart/form-data boundary=XyZ", "malformed parameter"),
        (b"multipart", "the Content-Type is malformed"),
    ],
)
def test_multipart_content_type_rejected(content_type: bytes, message: str) -> None:
    with pytest.raises(FormInvalid) as caught:
        multipart_boundary(content_type)
    assert message in str(caught.value)
    assert str(caught.value).startswith("form body: ")


# --- multipart: rejected framing --------------------------------------------


LONG_HEAD = b"X-Pad: " + b"p" * MAX_PART_HEAD_BYTES


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the body does not start with the boundary"),
        (b"preamble\r\n" + multipart(text(b"a")), "does not start with the boundary"),
        (b"\r\n" + multipart(text(b"a")), "does not start with the boundary"),
        (multipart(text(b"a")).replace(b"XyZ", b"Other"), "does not start with the boundary"),
        (b"--XyZ", "the closing boundary is missing"),
        (b"--XyZ\r\n", "the closing boundary is missing"),
        (text(b"a"), "the closing boundary is missing"),
        (text(b"a")[:-4], "part 1: the body ends inside the header section"),
        (b"--XyZ\r\nContent-Disposition: form-data", "the body ends inside the header section"),
        (multipart(text(b"a"), close=b"--XyZ"), "the closing boundary is missing"),
        (multipart(text(b"a"), close=b"--XyZ--\r\njunk"), "data after the closing boundary"),
        (multipart(text(b"a"), close=b"--XyZ--\r\n\r\n"), "data after the closing boundary"),
        (multipart(text(b"a"), close=b"--XyZ--  "), "data after the closing boundary"),
        (
            multipart(text(b"a"), close=b"--XyZ--\r\n--XyZ\r\n" + text(b"b")[7:] + b"--XyZ--"),
            "data after the closing boundary",
        ),
        (multipart(text(b"a").replace(b"--XyZ\r\n", b"--XyZ  \r\n")), "characters after"),
        (multipart(text(b"a").replace(b"--XyZ\r\n", b"--XyZ\n")), "characters after"),
        (multipart(text(b"a"), text(b"b").replace(b"--XyZ\r\n", b"--XyZz\r\n")), "part 2"),
        (b"--XyZ\r\n\r\nv\r\n--XyZ--", "part 1: the Content-Disposition header is missing"),
        (
            multipart(text(b"a", b"x--XyZ\r\ny")),
            "form body: part 1: the content contains the boundary",
        ),
        (multipart(text(b"a", b"x\n--XyZ--")), "part 1: the content contains the boundary"),
        (multipart(text(b"a", b"x\r--XyZ\r\n")), "part 1: the content contains the boundary"),
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\nv--XyZ--',
            "part 1: the content contains the boundary",
        ),
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\n--XyZ--',
            "part 1: the content contains the boundary",
        ),
    ],
)
def test_multipart_framing_rejected(body: bytes, message: str) -> None:
    assert message in str(rejection(body))


# --- multipart: rejected part headers ---------------------------------------


@pytest.mark.parametrize(
    ("part_bytes", "message"),
    [
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="a"\nX-A: b\r\n\r\nv\r\n',
            "part 1: the header section has a line break other than CRLF",
        ),
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="a"\n\nv\r\n',
            "part 1: the header section has a line break other than CRLF",
        ),
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\rX-A: b\r\n\r\nv\r\n',
            "the header section has a line break other than CRLF",
        ),
        (
            b'--XyZ\r\nContent-Disposition: form-data;\r\n name="a"\r\n\r\nv\r\n',
            "part 1: a header line is malformed",
        ),
        (
            b'--XyZ\r\nContent-Disposition : form-data; name="a"\r\n\r\nv\r\n',
            "a header line is malformed",
        ),
        (
            b'--XyZ\r\nContent-Disposition form-data; name="a"\r\n\r\nv\r\n',
            "a header line is malformed",
        ),
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="a\x01"\r\n\r\nv\r\n',
            "a header line contains a control character",
        ),
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\nv\r\n'.replace(
                b"form-data", b"form-data\x00"
            ),
            "a header line contains a control character",
        ),
        (
            b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n' + LONG_HEAD + b"\r\n\r\nv\r\n",
            f"part 1: the header section does not end with an empty line within "
            f"{MAX_PART_HEAD_BYTES} bytes",
        ),
        (
            part(b"form-data", b"v", b"Content-Type: text/plain").replace(
                b"Content-Disposition: form-data\r\n", b""
            ),
            "part 1: the Content-Disposition header is missing",
        ),
        (
            part(b'form-data; name="a"', b"v", b'Content-Disposition: form-data; name="b"'),
            "part 1: more than one Content-Disposition header",
        ),
        (
            part(b'form-data; name="a"', b"v", b"Content-Type: text/plain", b"content-type: a/b"),
            "part 1: more than one Content-Type header",
        ),
        (
            part(
                b'form-data; name="a"',
                b"v",
                b"Content-Transfer-Encoding: binary",
                b"Content-Transfer-Encoding: binary",
            ),
            "more than one Content-Transfer-Encoding header",
        ),
        (
            part(b'form-data; name="a"', b"v", *[b"X-%d: 1" % i for i in range(8)]),
            "part 1: more than 8 header fields",
        ),
        (part(b'attachment; name="a"'), "part 1: the Content-Disposition type must be form-data"),
        (part(b'inline; name="a"'), "the Content-Disposition type must be form-data"),
        (part(b'form-data-x; name="a"'), "the Content-Disposition type must be form-data"),
        (part(b'; name="a"'), "the Content-Disposition type must be form-data"),
        (part(b"form-data"), "part 1: the Content-Disposition has no name parameter"),
        (part(b'form-data; filename="a.txt"'), "the Content-Disposition has no name parameter"),
        (part(b'form-data; namex="a"'), "the Content-Disposition has no name parameter"),
        (part(b"form-data; name*=UTF-8''a"), "parameter name* is not accepted"),
        (
            part(b"form-data; name=\"a\"; filename*=UTF-8''evil.php"),
            "parameter filename* is not accepted: multipart/form-data uses plain name",
        ),
        (
            part(b'form-data; name="a"; filename="a.txt"; filename*0="b"'),
            "parameter filename*0 is not accepted",
        ),
        (part(b'form-data; name="a"; name="b"'), "has more than one name parameter"),
        (part(b'form-data; name="a"; NAME="a"'), "has more than one name parameter"),
        (
            part(b'form-data; name="a"; filename="x"; filename="y"'),
            "more than one filename parameter",
        ),
        (part(b'form-data; name="a\\"b"'), "has a backslash in a parameter"),
        (part(b'form-data; name="a"; filename="C:\\\\x.txt"'), "has a backslash in a parameter"),
        (part(b'form-data ; name="a"'), "has a malformed parameter at byte 9"),
        (part(b'form-data; name="a" ; filename="b"'), "has a malformed parameter"),
        (part(b'form-data; name = "a"'), "has a malformed parameter"),
        (part(b'form-data; name="a'), "has a malformed parameter"),
        (part(b"form-data; name=a b"), "has a malformed parameter"),
        (part(b"form-data; name"), "has a malformed parameter"),
        (part(b'form-data; name="a";'), "has a malformed parameter"),
        (part(b'form-data; name="a"', b"v", b"Content-Type: text"), "Content-Type is malformed"),
        (
            part(b'form-data; name="a"', b"v", b"Content-Type: text/plain; charset"),
            "the Content-Type of field a has a malformed parameter",
        ),
        (
            part(b'form-data; name="a"', b"v", b"Content-Type: multipart/mixed; boundary=q"),
            "form field a: nested multipart content is not accepted",
        ),
        (
            part(b'form-data; name="a"', b"dg==", b"Content-Transfer-Encoding: base64"),
            "form field a: a Content-Transfer-Encoding other than 7bit, 8bit or binary",
        ),
        (
            part(b'form-data; name="a"', b"v", b"Content-Transfer-Encoding: quoted-printable"),
            "a Content-Transfer-Encoding other than 7bit, 8bit or binary",
        ),
    ],
)
def test_multipart_part_headers_rejected(part_bytes: bytes, message: str) -> None:
    assert message in str(rejection(multipart(part_bytes)))


# --- multipart: rejected names, values and filenames ------------------------


@pytest.mark.parametrize(
    ("part_bytes", "message"),
    [
        (text(b""), "form body: part 1: the field name is empty"),
        (text(b"\xff"), r"form field \xff: the name is not valid UTF-8"),
        (text(b"a\xc3"), "the name is not valid UTF-8"),
        (text(b"a\xc2\x85"), "the name contains a control character"),
        (text(b"a", b"\xff"), "form field a: the value is not valid UTF-8 at byte 0"),
        (text(b"a", b"ok\xc3\x28"), "form field a: the value is not valid UTF-8 at byte 2"),
        (text(b"a", b"x\x00y"), "form field a: the value contains a NUL character"),
        (
            part(b'form-data; name="f"; filename="../../etc/passwd"'),
            "form field f: the file name contains a path separator",
        ),
        (part(b'form-data; name="f"; filename="/etc/passwd"'), "contains a path separator"),
        (part(b'form-data; name="f"; filename="a/b.txt"'), "contains a path separator"),
        (
            part(b'form-data; name="f"; filename="..\xef\xbc\x8fx.txt"'),
            "contains a path separator",
        ),
        (part(b'form-data; name="f"; filename="a\xef\xbc\xbcb"'), "contains a path separator"),
        (part(b'form-data; name="f"; filename=".."'), "form field f: the file name is '.' or '..'"),
        (part(b'form-data; name="f"; filename="."'), "the file name is '.' or '..'"),
        (part(b'form-data; name="f"; filename="\xef\xbc\x8e\xef\xbc\x8e"'), "is '.' or '..'"),
        (
            part(b'form-data; name="f"; filename="a\xc2\x85.txt"'),
            "form field f: the file name contains a control character",
        ),
        (
            part(b'form-data; name="f"; filename="a\xff.txt"'),
            "form field f: the file name is not valid UTF-8",
        ),
    ],
)
def test_multipart_names_and_values_rejected(part_bytes: bytes, message: str) -> None:
    assert message in str(rejection(multipart(part_bytes)))


@pytest.mark.parametrize(
    ("body", "limits", "message"),
    [
        (multipart(text(b"a"), text(b"b"), text(b"c")), {"max_fields": 2}, "more than 2 parts"),
        (multipart(text(b"abcd")), {"max_name_bytes": 3}, "the name is longer than 3 bytes"),
        (multipart(text(b"a", b"1234")), {"max_value_bytes": 3}, "value is longer than 3 bytes"),
        (
            multipart(part(b'form-data; name="f"; filename="a"', b"1234")),
            {"max_file_bytes": 3},
            "form field f: the file is larger than 3 bytes",
        ),
        (
            multipart(part(b'form-data; name="a"', b"v", b"X-A: 1", b"X-B: 2")),
            {"max_part_headers": 2},
            "more than 2 header fields",
        ),
    ],
)
def test_multipart_limits(body: bytes, limits: dict[str, int], message: str) -> None:
    assert message in str(rejection(body, **limits))


def test_multipart_limits_allow_exact_size() -> None:
    limits = FormLimits(
        max_fields=2, max_name_bytes=3, max_value_bytes=3, max_file_bytes=3, max_part_headers=2
    )
    body = multipart(
        part(b'form-data; name="abc"', b"123", b"X-A: 1"),
        part(b'form-data; name="f"; filename="x"', b"123"),
    )
    assert len(parse_multipart(body, BOUNDARY, limits)) == 2


def test_file_parts_are_not_limited_by_value_size() -> None:
    body = multipart(part(b'form-data; name="f"; filename="x"', b"12345"))
    assert parse_multipart(body, BOUNDARY, FormLimits(max_value_bytes=3))[0].size == 5


def test_parse_form_needs_form_media_type() -> None:
    with pytest.raises(ValueError, match="not a form media type"):
        parse_form(b"{}", b"application/json", LIMITS)


# --- declared fields --------------------------------------------------------


DECLARED: dict[str, Any] = {
    "fields": {
        "title": {"required": True, "max_length": 8},
        "count": {"type": "integer", "minimum": 1, "maximum": 10},
        "price": {"type": "number", "minimum": 0},
        "gift": {"type": "boolean"},
        "color": {"enum": ["red", "blue"]},
        "code": {"pattern": "^[A-Z]{3}$"},
    }
}


@pytest.mark.parametrize(
    "body",
    [
        b"title=a",
        b"title=&count=10&price=1.5&gift=true&color=red&code=ABC",
        b"title=abcdefgh&count=1&price=0&gift=false",
        b"price=2e3&title=x",
        b"price=0.25&title=x",
    ],
)
def test_declared_fields_accepted(body: bytes) -> None:
    validator(**DECLARED).check(body, URLENCODED)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"count=2", "form field title: missing"),
        (b"title=abcdefghi", "form field title: longer than 8 characters"),
        (b"title=a&count=x", "form field count: expected an integer"),
        (b"title=a&count=1.0", "form field count: expected an integer"),
        (b"title=a&count=%2B1", "form field count: expected an integer"),
        (b"title=a&count=0", "form field count: below the minimum 1"),
        (b"title=a&count=11", "form field count: above the maximum 10"),
        (b"title=a&price=abc", "form field price: expected a number"),
        (b"title=a&price=1_000", "form field price: expected a number"),
        (b"title=a&price=+1", "form field price: expected a number"),
        (b"title=a&price=nan", "form field price: expected a number"),
        (b"title=a&price=inf", "form field price: expected a number"),
        (b"title=a&price=1e999", "form field price: expected a finite number"),
        (b"title=a&price=-1", "form field price: below the minimum 0"),
        (b"title=a&gift=yes", "form field gift: expected true or false"),
        (b"title=a&color=green", "form field color: not one of the accepted values"),
        (b"title=a&code=abc", "form field code: does not match the expected pattern"),
        (b"title=a&other=1", "form field other: not accepted on this route"),
        (b"title=a&title=b", "form field title: sent more than once"),
        (b"count=1&title=a&count=2", "form field count: sent more than once"),
    ],
)
def test_declared_fields_rejected(body: bytes, message: str) -> None:
    assert str(validator_rejection(DECLARED, body)) == message


def test_additional_fields_allowed() -> None:
    validator(**DECLARED, additional_fields=True).check(b"title=a&other=1", URLENCODED)


def test_undeclared_names_accepted_without_fields() -> None:
    validator().check(b"anything=1&else=2", URLENCODED)


def test_duplicate_fields_rejected_by_default() -> None:
    invalid = validator_rejection({}, multipart(text(b"a"), text(b"a")), MULTIPART)
    assert str(invalid) == "form field a: sent more than once"


def test_duplicate_fields_allowed_and_each_checked() -> None:
    spec = {"duplicate_fields": True, "fields": {"tag": {"enum": ["a", "b"]}}}
    validator(**spec).check(b"tag=a&tag=b", URLENCODED)
    assert str(validator_rejection(spec, b"tag=a&tag=c")).endswith("not one of the accepted values")


FILE_SPEC: dict[str, Any] = {
    "fields": {"avatar": {"type": "file", "required": True}, "note": {"required": False}}
}


def test_file_field_accepted() -> None:
    body = multipart(part(b'form-data; name="avatar"; filename="me.png"', b"\x89PNG"))
    fields = validator(**FILE_SPEC).check(body, MULTIPART)
    assert fields[0].filename == "me.png"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (multipart(text(b"avatar", b"me.png")), "form field avatar: expected a file"),
        (multipart(text(b"note")), "form field avatar: missing"),
        (
            multipart(part(b'form-data; name="avatar"; filename=""', b"")),
            "form field avatar: missing",
        ),
        (
            multipart(
                part(b'form-data; name="avatar"; filename="a"'),
                part(b'form-data; name="note"; filename="b"'),
            ),
            "form field note: expected a text value, got a file",
        ),
    ],
)
def test_file_field_rejected(body: bytes, message: str) -> None:
    assert str(validator_rejection(FILE_SPEC, body, MULTIPART)) == message


def test_file_field_in_urlencoded_body_rejected() -> None:
    assert str(validator_rejection(FILE_SPEC, b"avatar=me.png")) == (
        "form field avatar: expected a file"
    )


def test_validator_uses_configured_limits() -> None:
    spec = {"max_fields": 1, "max_value_bytes": "1KiB", "max_file_bytes": "2KiB"}
    limits = validator(**spec).limits
    assert limits == FormLimits(max_fields=1, max_value_bytes=1024, max_file_bytes=2048)


def test_validator_applies_to_form_content_types() -> None:
    checks = validator()
    assert checks.applies_to([URLENCODED])
    assert checks.applies_to([b"Multipart/Form-Data; boundary=x"])
    assert checks.applies_to([b"application/x-www-form-urlencoded;charset=UTF-8"])
    assert not checks.applies_to([b"application/json"])
    assert not checks.applies_to([])
    assert not checks.applies_to([URLENCODED, URLENCODED])


# --- configuration ----------------------------------------------------------


@pytest.mark.parametrize(
    ("content_types", "has_form"),
    [
        (["application/x-www-form-urlencoded"], True),
        (["application/json", "multipart/form-data"], True),
        (["application/json"], False),
        ([], False),
    ],
)
def test_form_validator_defaults(content_types: list[str], has_form: bool) -> None:
    checks = form_validator(ValidateConfig.model_validate({"content_types": content_types}))
    assert (checks is not None) is has_form
    if checks is not None:
        assert checks.limits == FormLimits()
        assert not checks.duplicate_fields


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"content_types": ["application/json"], "form": {}}, "form needs"),
        ({"content_types": [], "form": {}}, "form needs"),
        ({"form": {"max_fields": 0}}, "greater than or equal to 1"),
        ({"form": {"max_fields": True}}, "valid integer"),
        ({"form": {"max_fields": "10"}}, "valid integer"),
        ({"form": {"max_value_bytes": 0}}, "greater than or equal to 1"),
        ({"form": {"max_value_bytes": "1.5KiB"}}, "expected a size"),
        ({"form": {"max_part_headers": 65}}, "less than or equal to 64"),
        ({"form": {"unknown": 1}}, "Extra inputs"),
        ({"form": {"fields": {"a b": {}}}}, "invalid field name 'a b'"),
        ({"form": {"fields": {'a"': {}}}}, "invalid field name"),
        ({"form": {"fields": {"é": {}}}}, "invalid field name"),
        ({"form": {"max_name_bytes": 3, "fields": {"abcd": {}}}}, "longer than max_name_bytes"),
        ({"form": {"fields": {"f": {"type": "file", "pattern": "x"}}}}, "pattern: not checked"),
        ({"form": {"fields": {"f": {"type": "file", "enum": ["x"]}}}}, "enum: not checked"),
        ({"form": {"fields": {"f": {"type": "date"}}}}, "Input should be"),
        ({"form": {"fields": {"f": {"pattern": "("}}}}, "invalid regular expression"),
    ],
)
def test_form_config_rejected(config: dict[str, Any], message: str) -> None:
    config.setdefault("content_types", ["multipart/form-data"])
    with pytest.raises(ValidationError, match=message):
        ValidateConfig.model_validate(config)


def test_form_config_accepts_bracket_names() -> None:
    config = ValidateConfig.model_validate(
        {
            "content_types": ["multipart/form-data"],
            "form": {"fields": {"items[0][sku]": {}, "files[]": {"type": "file"}}},
        }
    )
    assert config.form is not None
    assert set(config.form.fields) == {"items[0][sku]", "files[]"}


# --- fuzzing ----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_urlencoded_parses_or_raises_form_invalid(body: bytes) -> None:
    try:
        fields = parse_urlencoded(body, LIMITS)
    except FormInvalid as invalid:
        assert invalid.reason.isascii()
        return
    assert all(field.name and field.value is not None for field in fields)


FRAGMENTS = st.sampled_from(
    [
        b"--XyZ",
        b"--",
        b"\r\n",
        b"\n",
        b"\r",
        b"Content-Disposition: ",
        b"form-data",
        b'; name="a"',
        b"; filename=",
        b'"x.txt"',
        b"Content-Type: text/plain",
        b"value",
        b"\xff",
        b"\x00",
        b" ",
        b";",
        b"\\",
    ]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(FRAGMENTS | st.binary(max_size=8), max_size=30))
def test_multipart_parses_or_raises_form_invalid(pieces: list[bytes]) -> None:
    body = b"".join(pieces)
    try:
        fields = parse_multipart(body, BOUNDARY, LIMITS)
    except FormInvalid as invalid:
        assert invalid.reason.isascii()
        return
    # Whatever parses must have the strict shape: framed by the boundary.
    assert body.startswith(b"--XyZ")
    assert body.endswith((b"--XyZ--", b"--XyZ--\r\n"))
    assert all(field.name for field in fields)


NAMES = st.text(string.ascii_letters + string.digits + "_[].-", min_size=1, max_size=12)
VALUES = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(NAMES, VALUES), max_size=10))
def test_urlencoded_round_trip(pairs: list[tuple[str, str]]) -> None:
    body = urlencode(pairs).encode("ascii")
    fields = parse_urlencoded(body, LIMITS)
    assert [(field.name, field.value) for field in fields] == pairs


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(NAMES, VALUES), max_size=10))
def test_multipart_round_trip(pairs: list[tuple[str, str]]) -> None:
    body = multipart(*(text(name.encode(), value.encode()) for name, value in pairs))
    try:
        fields = parse_multipart(body, BOUNDARY, LIMITS)
    except FormInvalid as invalid:
        # A generated value may contain the boundary, which the sender must avoid.
        assert any("--XyZ" in value for _, value in pairs), invalid
        return
    assert [(field.name, field.value) for field in fields] == pairs
