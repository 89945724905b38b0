"""Tests for ringwall.http.target.split_target: the canonical path and the raw query.

The path rules themselves are tested in test_canonical.py.
"""

import pytest

from ringwall.errors import BadRequest
from ringwall.http.target import split_target


@pytest.mark.parametrize(
    ("target", "path"),
    [
        (b"/", "/"),
        (b"/api/v1/users", "/api/v1/users"),
        (b"/a//b", "/a/b"),
        (b"/info/../private", "/private"),
        (b"/info/%2e%2e/private", "/private"),
        (b"/%61dmin", "/admin"),
    ],
)
def test_path_is_canonical(target: bytes, path: str) -> None:
    assert split_target(target) == (path, b"")


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


@pytest.mark.parametrize("target", [b"*", b"http://a/b", b"a/b", b""])
def test_origin_form_only(target: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        split_target(target)
    assert caught.value.layer == "target"


@pytest.mark.parametrize("target", [b"/a#b", b"/a?b#c"])
def test_fragment_rejected(target: bytes) -> None:
    with pytest.raises(BadRequest):
        split_target(target)


@pytest.mark.parametrize("target", [b"/admin%2Fusers", b"/a/../../b", b"/a;b", b"/a\\b"])
def test_ambiguous_path_rejected(target: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        split_target(target)
    assert caught.value.status == 400
    assert caught.value.layer == "target"
