"""OpenSSL settings through ctypes: the layout check and the setters' errors."""

import ssl

import pytest

from ringwall.tls import openssl


def test_layout_recognized() -> None:
    assert openssl.available()


def test_groups_list_checked() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    openssl.set_groups(context, "X25519:P-256:P-384")
    with pytest.raises(ValueError, match="rejected the group list"):
        openssl.set_groups(context, "X25519:no-such-group")


def test_ticket_keys_length_checked() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    openssl.set_ticket_keys(context, bytes(80))
    with pytest.raises(ValueError, match="expected 80 bytes"):
        openssl.set_ticket_keys(context, bytes(48))
