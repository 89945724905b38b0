"""Tests for ringwall.http.target.split_target: the path every layer and the upstream see."""

import random

import pytest

from ringwall.errors import BadRequest
from ringwall.http.target import split_target


def rejection_of(target: bytes) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        split_target(target)
    return caught.value


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"/", "/", b""),
        (b"/api/v1/users", "/api/v1/users", b""),
        (b"/a/b/", "/a/b/", b""),
        (b"/a;b=c/d", "/a;b=c/d", b""),
        (b"/a/.hidden", "/a/.hidden", b""),
        (b"/a/...", "/a/...", b""),
        (b"/a/.../b", "/a/.../b", b""),
        (b"/a/..b", "/a/..b", b""),
        (b"/a/b..", "/a/b..", b""),
        (b"/!$&'()*+,;=:@-._~", "/!$&'()*+,;=:@-._~", b""),
    ],
)
def test_plain_paths(target: bytes, path: str, query: bytes) -> None:
    assert split_target(target) == (path, query)


@pytest.mark.parametrize(
    ("target", "query"),
    [
        (b"/search?q=1", b"q=1"),
        (b"/search?", b""),
        (b"/search?a=%2F&b=..%2f", b"a=%2F&b=..%2f"),
        (b"/search?x=/../y", b"x=/../y"),
        (b"/search?a=b?c", b"a=b?c"),
        (b"/search?q=%zz", b"q=%zz"),
        (b"/search?q=a\\b", b"q=a\\b"),
    ],
)
def test_query_kept_raw(target: bytes, query: bytes) -> None:
    assert split_target(target) == ("/search", query)


@pytest.mark.parametrize(
    ("target", "path"),
    [
        (b"/%41%42%43", "/ABC"),
        (b"/%61%7a", "/az"),
        (b"/%30%39", "/09"),
        (b"/a%2Db%2ec%5Fd%7E", "/a-b.c_d~"),
        (b"/%2e%2e%2e", "/..."),
        (b"/%2ehidden", "/.hidden"),
    ],
)
def test_unreserved_escapes_decoded(target: bytes, path: str) -> None:
    assert split_target(target)[0] == path


@pytest.mark.parametrize(
    ("target", "path"),
    [
        (b"/a%20b", "/a%20b"),
        (b"/caf%c3%a9", "/caf%C3%A9"),
        (b"/a%3fb", "/a%3Fb"),
        (b"/a%23b", "/a%23b"),
        (b"/a%25", "/a%25"),
        (b"/a%252f", "/a%252f"),
        (b"/a%3bb", "/a%3Bb"),
        (b"/a%ff", "/a%FF"),
        (b"/a%80", "/a%80"),
    ],
)
def test_other_escapes_uppercased(target: bytes, path: str) -> None:
    assert split_target(target)[0] == path


def test_mixed_escapes() -> None:
    assert split_target(b"/%7Euser/a%2db%c3%A9?x=%7e") == ("/~user/a-b%C3%A9", b"x=%7e")


@pytest.mark.parametrize(
    "target",
    [b"", b"*", b"api", b"http://example.com/", b"example.com:443", b"?q=1", b" /a"],
)
def test_origin_form_only(target: bytes) -> None:
    rejection = rejection_of(target)

    assert "origin-form" in rejection.reason


@pytest.mark.parametrize("target", [b"/a#b", b"/a?q=1#frag", b"/#", b"/a%20#"])
def test_fragment_rejected(target: bytes) -> None:
    rejection = rejection_of(target)

    assert "fragment" in rejection.reason


@pytest.mark.parametrize("escape", [b"%2F", b"%2f", b"%5C", b"%5c"])
def test_encoded_separator_rejected(escape: bytes) -> None:
    rejection = rejection_of(b"/a" + escape + b"b")

    assert "encoded '/' or '\\'" in rejection.reason


@pytest.mark.parametrize("escape", [b"%00", b"%0a", b"%0A", b"%0d", b"%09", b"%1f", b"%7f", b"%7F"])
def test_encoded_control_rejected(escape: bytes) -> None:
    rejection = rejection_of(b"/a" + escape + b"b")

    assert "encoded control character" in rejection.reason


@pytest.mark.parametrize("target", [b"/a\\b", b"/\\", b"/a/..\\b", b"/a%41\\b"])
def test_raw_backslash_rejected(target: bytes) -> None:
    rejection = rejection_of(target)

    assert "backslash" in rejection.reason


@pytest.mark.parametrize(
    "target",
    [b"/a%zz", b"/a%", b"/a%2", b"/a%g0", b"/a%0g", b"/%%41", b"/a%-1", b"/a% 1", b"/a%2%46"],
)
def test_invalid_escape_rejected(target: bytes) -> None:
    rejection = rejection_of(target)

    assert "invalid percent-encoding" in rejection.reason


@pytest.mark.parametrize(
    "target",
    [
        b"/.",
        b"/..",
        b"/./a",
        b"/../a",
        b"/a/.",
        b"/a/..",
        b"/a/./b",
        b"/a/../b",
        b"/a/../../etc/passwd",
        b"/a/%2e/b",
        b"/a/%2E/b",
        b"/a/%2e%2e/b",
        b"/a/%2E%2E/b",
        b"/a/.%2e/b",
        b"/a/%2e./b",
        b"/a/..;x/b",
        b"/a/..;/b",
        b"/a/.;x/b",
        b"/a/%2e%2e;x",
        b"/a/..?q=1",
    ],
)
def test_dot_segment_rejected(target: bytes) -> None:
    rejection = rejection_of(target)

    assert "dot segments" in rejection.reason


@pytest.mark.parametrize(
    "target",
    [
        b"/caf\xc3\xa9",
        b"/a\x80",
        b"/\xff",
        b"/a b",
        b"/a\tb",
        b"/a\x00",
        b"/a\x7f",
        b'/a"b',
        b"/a<b",
    ],
)
def test_invalid_byte_rejected(target: bytes) -> None:
    rejection = rejection_of(target)

    assert "invalid byte" in rejection.reason


@pytest.mark.parametrize(
    "target",
    [
        b"api",
        b"/a#b",
        b"/a%2Fb",
        b"/a%00",
        b"/a\\b",
        b"/a%zz",
        b"/a/../b",
        b"/\xff",
    ],
)
def test_rejection_is_protocol_400(target: bytes) -> None:
    rejection = rejection_of(target)

    assert type(rejection) is BadRequest
    assert rejection.layer == "protocol"
    assert rejection.status == 400


def test_reason_escapes_input() -> None:
    rejection = rejection_of(b"/a%\xff\n")

    assert rejection.reason.isascii()
    assert "\n" not in rejection.reason


# Fragments that the random targets below are built from: plain and encoded
# letters, separators, dots and bytes that must be rejected or kept encoded.
PIECES = [
    b"a",
    b"Z",
    b"/",
    b".",
    b"..",
    b";",
    b"%2e",
    b"%2E",
    b"%2f",
    b"%2F",
    b"%5c",
    b"%5C",
    b"%41",
    b"%25",
    b"%3b",
    b"%c3%a9",
    b"%",
    b"%z",
    b"\\",
    b"?",
    b"#",
    b"\xff",
    b"%00",
]


@pytest.mark.parametrize("seed", range(20))
def test_accepted_paths_are_safe(seed: int) -> None:
    generator = random.Random(seed)
    accepted = 0

    for _ in range(500):
        count = generator.randint(1, 8)
        target = b"/" + b"".join(generator.choice(PIECES) for _ in range(count))
        try:
            path, _query = split_target(target)
        except BadRequest as rejection:
            assert rejection.layer == "protocol"
            continue
        accepted += 1
        segments = path.split("/")
        assert path.startswith("/"), target
        assert "/../" not in path + "/", target
        assert "/./" not in path + "/", target
        assert "%2F" not in path.upper(), target
        assert "%5C" not in path.upper(), target
        assert "\\" not in path, target
        assert "." not in segments, target
        assert ".." not in segments, target
        assert path.isascii(), target

    assert accepted > 0
