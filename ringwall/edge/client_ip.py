"""Find the client's IP address behind trusted proxies.

The socket peer is the client unless it is one of the configured trusted
proxies. Then the `X-Forwarded-For` lines (all of them, in order) are read
from the right, skipping trusted addresses; the first untrusted entry is the
client. Entries left of it were written by the client and are never used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from ringwall.config.model import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ClientAddressResolver:
    def __init__(self, trusted: Sequence[IPNetwork]) -> None:
        self._trusted = tuple(trusted)
        self.has_trusted = bool(self._trusted)

    def is_trusted(self, address: str) -> bool:
        if not self._trusted:
            return False
        parsed = _parse(address)
        return parsed is not None and any(parsed in network for network in self._trusted)

    def resolve(self, peer: str, forwarded_for: Sequence[bytes]) -> str:
        """Return the client address for a connection from `peer`.

        `forwarded_for` lists the raw values of every X-Forwarded-For header,
        in the order received.
        """
        if not self.is_trusted(peer) or not forwarded_for:
            return peer
        entries = [entry.strip() for line in forwarded_for for entry in line.split(b",")]
        client = peer
        for entry in reversed(entries):
            parsed = _parse(entry.decode("latin-1"))
            if parsed is None:
                # An unreadable hop: stop at the last address that a trusted
                # proxy vouched for, never skip past it to client-written text.
                return client
            client = str(parsed)
            if not any(parsed in network for network in self._trusted):
                return client
        return client


def _parse(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]  # "[v6]:port"
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]  # "v4:port"
    if "%" in text:
        # A zone id (fe80::1%eth0) names an interface of the sender, not a
        # client; it would also make one client into many keys.
        text = text.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address
