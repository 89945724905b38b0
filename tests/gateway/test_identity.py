"""Identity header encoding and claim lookups."""

from ringwall.gateway.identity import (
    Identity,
    claim_at,
    claim_strings,
    encode_header_value,
    identity_headers,
)


def test_header_value_control_bytes_encoded() -> None:
    assert encode_header_value("a\r\nX-Admin: 1") == b"a%0D%0AX-Admin: 1"
    assert encode_header_value("nul\x00") == b"nul%00"
    assert encode_header_value("caf\u00e9") == b"caf%C3%A9"
    assert encode_header_value("50%") == b"50%25"


def test_identity_headers_never_contain_line_breaks() -> None:
    identity = Identity(
        subject="evil\r\nX-Ringwall-Roles: admin",
        method="jwt",
        issuer="i\n",
        key_id="k\x00",
        roles=frozenset({"a\rb"}),
        scopes=frozenset(),
        claims={},
    )
    for name, value in identity_headers(identity):
        assert b"\r" not in value
        assert b"\n" not in value
        assert b"\x00" not in value
        assert name.startswith(b"X-Ringwall-")


def test_claim_paths_and_strings() -> None:
    claims = {"realm": {"roles": ["admin"]}, "scope": "read write", "scp": ["x", 1]}
    assert claim_at(claims, "realm.roles") == ["admin"]
    assert claim_at(claims, "realm.missing") is None
    assert claim_at(claims, "scope.deeper") is None
    assert claim_strings(claims, ("scope", "scp")) == frozenset({"read", "write", "x"})


def test_separator_inside_role_encoded() -> None:
    identity = Identity(
        subject="u",
        method="jwt",
        issuer=None,
        key_id=None,
        roles=frozenset({"x,admin", "viewer"}),
        scopes=frozenset({"a b", "c"}),
        claims={},
    )
    fields = dict(identity_headers(identity))
    assert fields[b"X-Ringwall-Roles"] == b"viewer,x%2Cadmin"
    assert fields[b"X-Ringwall-Scopes"] == b"a%20b c"
