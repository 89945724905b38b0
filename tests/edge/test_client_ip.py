"""Tests for ringwall.edge.client_ip: the client address behind trusted proxies."""

import ipaddress

import pytest

from ringwall.edge.client_ip import ClientAddressResolver

TRUSTED = [
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("fd00::/8"),
]


@pytest.fixture
def resolver() -> ClientAddressResolver:
    return ClientAddressResolver(TRUSTED)


def test_no_trusted_proxies() -> None:
    resolver = ClientAddressResolver([])

    assert resolver.has_trusted is False
    assert resolver.is_trusted("10.0.0.1") is False
    assert resolver.resolve("10.0.0.1", [b"1.2.3.4"]) == "10.0.0.1"


def test_has_trusted(resolver: ClientAddressResolver) -> None:
    assert resolver.has_trusted is True


@pytest.mark.parametrize(
    ("address", "trusted"),
    [
        ("10.0.0.1", True),
        ("10.255.255.255", True),
        ("11.0.0.1", False),
        ("fd00::1", True),
        ("fe80::1", False),
        ("::ffff:10.0.0.1", True),
        ("10.0.0.1:8080", True),
        ("[fd00::1]:8080", True),
        ("not-an-ip", False),
        ("", False),
    ],
)
def test_is_trusted(resolver: ClientAddressResolver, address: str, trusted: bool) -> None:
    assert resolver.is_trusted(address) is trusted


@pytest.mark.parametrize(
    "forwarded_for",
    [[b"1.2.3.4"], [b"1.2.3.4, 10.0.0.2"], [b"10.0.0.2"], [b"garbage"]],
)
def test_untrusted_peer_ignores_xff(
    resolver: ClientAddressResolver, forwarded_for: list[bytes]
) -> None:
    assert resolver.resolve("203.0.113.9", forwarded_for) == "203.0.113.9"


def test_trusted_peer_without_xff(resolver: ClientAddressResolver) -> None:
    assert resolver.resolve("10.0.0.1", []) == "10.0.0.1"


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        ([b"1.2.3.4"], "1.2.3.4"),
        ([b"1.2.3.4, 10.0.0.2"], "1.2.3.4"),
        ([b"6.6.6.6, 1.2.3.4, 10.0.0.2, 10.0.0.3"], "1.2.3.4"),
        ([b"6.6.6.6,1.2.3.4"], "1.2.3.4"),
        ([b"  1.2.3.4  ,  10.0.0.2  "], "1.2.3.4"),
    ],
)
def test_rightmost_untrusted_entry(
    resolver: ClientAddressResolver, forwarded_for: list[bytes], client: str
) -> None:
    assert resolver.resolve("10.0.0.1", forwarded_for) == client


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        ([b"6.6.6.6", b"1.2.3.4"], "1.2.3.4"),
        ([b"6.6.6.6, 1.2.3.4", b"10.0.0.2"], "1.2.3.4"),
        ([b"6.6.6.6", b"1.2.3.4, 10.0.0.2", b"10.0.0.3"], "1.2.3.4"),
        ([b"1.2.3.4", b"10.0.0.2, 10.0.0.3", b"10.0.0.4"], "1.2.3.4"),
    ],
)
def test_several_xff_lines(
    resolver: ClientAddressResolver, forwarded_for: list[bytes], client: str
) -> None:
    assert resolver.resolve("10.0.0.1", forwarded_for) == client


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        ([b"10.0.0.2"], "10.0.0.2"),
        ([b"10.0.0.5, 10.0.0.2"], "10.0.0.5"),
        ([b"10.0.0.7", b"10.0.0.5, 10.0.0.2"], "10.0.0.7"),
        ([b"fd00::7, 10.0.0.2"], "fd00::7"),
    ],
)
def test_all_trusted_leftmost(
    resolver: ClientAddressResolver, forwarded_for: list[bytes], client: str
) -> None:
    assert resolver.resolve("10.0.0.1", forwarded_for) == client


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        ([b"garbage"], "10.0.0.1"),
        ([b"1.2.3.4, garbage"], "10.0.0.1"),
        ([b"1.2.3.4, garbage, 10.0.0.2"], "10.0.0.2"),
        ([b"1.2.3.4", b"unknown", b"10.0.0.2, 10.0.0.3"], "10.0.0.2"),
        ([b"1.2.3.4, , 10.0.0.2"], "10.0.0.2"),
        ([b"1.2.3.4, 10.0.0.2, "], "10.0.0.1"),
        ([b"1.2.3.4, 999.1.1.1"], "10.0.0.1"),
        ([b"1.2.3.4, \xff\xfe"], "10.0.0.1"),
    ],
)
def test_garbage_stops_walk(
    resolver: ClientAddressResolver, forwarded_for: list[bytes], client: str
) -> None:
    assert resolver.resolve("10.0.0.1", forwarded_for) == client


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        ([b"1.2.3.4:5678"], "1.2.3.4"),
        ([b"1.2.3.4:5678, 10.0.0.2:443"], "1.2.3.4"),
        ([b"[2001:db8::1]:5678"], "2001:db8::1"),
        ([b"[2001:db8::1]"], "2001:db8::1"),
        ([b"2001:db8::1"], "2001:db8::1"),
        ([b"2001:DB8:0:0:0:0:0:1"], "2001:db8::1"),
        ([b"2001:db8::1, [fd00::2]:80"], "2001:db8::1"),
    ],
)
def test_ports_and_ipv6(
    resolver: ClientAddressResolver, forwarded_for: list[bytes], client: str
) -> None:
    assert resolver.resolve("10.0.0.1", forwarded_for) == client


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        ([b"::ffff:1.2.3.4"], "1.2.3.4"),
        ([b"[::ffff:1.2.3.4]:80"], "1.2.3.4"),
        ([b"1.2.3.4, ::ffff:10.0.0.2"], "1.2.3.4"),
    ],
)
def test_ipv4_mapped_entries(
    resolver: ClientAddressResolver, forwarded_for: list[bytes], client: str
) -> None:
    assert resolver.resolve("10.0.0.1", forwarded_for) == client


def test_ipv4_mapped_peer(resolver: ClientAddressResolver) -> None:
    assert resolver.resolve("::ffff:10.0.0.1", [b"1.2.3.4"]) == "1.2.3.4"


def test_ipv6_trusted_peer(resolver: ClientAddressResolver) -> None:
    assert resolver.resolve("fd00::1", [b"1.2.3.4, fd00::2"]) == "1.2.3.4"


def test_single_host_network() -> None:
    resolver = ClientAddressResolver([ipaddress.ip_network("192.0.2.1/32")])

    assert resolver.resolve("192.0.2.1", [b"1.2.3.4, 192.0.2.2"]) == "192.0.2.2"
