"""The HTTPS listener's contexts without sockets: SNI choices, domain fronting, reloads."""

import datetime
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from ringwall.certs_cli import ensure_dev_certificates
from ringwall.config.tls import TlsListenerConfig
from ringwall.tls import context as context_module
from ringwall.tls.context import (
    DEFAULT_POLICY,
    ServerTls,
    TlsConfigError,
    check_tls_files,
    ticket_keys,
)
from ringwall.tls.handshake import HandshakeInfo
from tests.support.tls import make_tls_files, write_crl


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("context") / "certs"
    ensure_dev_certificates(directory, datetime.datetime.now(datetime.UTC))
    return directory


def listener(certs: Path, **extra: object) -> TlsListenerConfig:
    return TlsListenerConfig.model_validate(
        {
            "certificates": [{"cert": certs / "server.pem", "key": certs / "server-key.pem"}],
            "sni": [
                {
                    "names": ["ringwall.localhost"],
                    "client_auth": {"mode": "required", "ca": certs / "ca.pem"},
                },
                {
                    "names": ["*.clients.localhost"],
                    "client_auth": {"mode": "optional", "ca": certs / "ca.pem"},
                },
            ],
            **extra,
        }
    )


def handshake(server_name: str | None, policy: int) -> HandshakeInfo:
    return HandshakeInfo(server_name, policy, "TLSv1.3", "TLS_AES_128_GCM_SHA256", None, False)


def test_policy_for_exact_and_wildcard(certs: Path) -> None:
    tls = ServerTls(listener(certs), b"s" * 32)
    assert tls.policy_for("ringwall.localhost") == 0
    assert tls.policy_for("a.clients.localhost") == 1
    assert tls.policy_for("a.b.clients.localhost") == DEFAULT_POLICY
    assert tls.policy_for("clients.localhost") == DEFAULT_POLICY
    assert tls.policy_for(None) == DEFAULT_POLICY


def test_misdirected_other_policy(certs: Path) -> None:
    tls = ServerTls(listener(certs), b"s" * 32)
    reason = tls.misdirected("ringwall.localhost", handshake("localhost", DEFAULT_POLICY))
    assert reason == "the host uses another client certificate policy than this connection"
    assert tls.misdirected("localhost", handshake("localhost", DEFAULT_POLICY)) is None
    assert tls.misdirected("ringwall.localhost", handshake("ringwall.localhost", 0)) is None


def test_misdirected_host_outside_certificate(certs: Path) -> None:
    tls = ServerTls(listener(certs), b"s" * 32)
    reason = tls.misdirected("api.example.test", handshake("localhost", DEFAULT_POLICY))
    assert reason == "the connection's certificate does not cover the host"
    assert tls.misdirected("127.0.0.1", handshake(None, DEFAULT_POLICY)) is None
    assert tls.misdirected("[::1]", handshake(None, DEFAULT_POLICY)) is None


def test_ticket_keys_per_period() -> None:
    first = ticket_keys(b"s" * 32, 7)
    assert len(first) == 80
    assert ticket_keys(b"s" * 32, 7) == first
    assert ticket_keys(b"s" * 32, 8) != first
    assert ticket_keys(b"t" * 32, 7) != first


def test_key_of_other_certificate_rejected(certs: Path, tmp_path: Path) -> None:
    _, _, other_key = make_tls_files(tmp_path)
    config = TlsListenerConfig.model_validate(
        {"certificates": [{"cert": certs / "server.pem", "key": other_key}]}
    )
    with pytest.raises(TlsConfigError, match=r"server.tls.certificates\[0\].key: cannot use"):
        ServerTls(config, b"s" * 32)


def test_reload_keeps_running_files_on_error(certs: Path, tmp_path: Path) -> None:
    live = tmp_path / "live"
    shutil.copytree(certs, live)
    tls = ServerTls(listener(live), b"s" * 32)
    assert not tls.reload_changed_files()

    (live / "server-key.pem").write_text("-----BEGIN PRIVATE KEY-----\nbroken\n")
    os.utime(live / "server-key.pem", (1, 1))
    assert not tls.reload_changed_files()
    assert tls.certificate_for("localhost") == 0

    shutil.copy(certs / "server-key.pem", live / "server-key.pem")
    os.utime(live / "server-key.pem", (2, 2))
    assert tls.reload_changed_files()


def test_check_tls_files_names_key_path(certs: Path, tmp_path: Path) -> None:
    from ringwall.config import parse_config

    _, _, other_key = make_tls_files(tmp_path)
    config = parse_config(
        f"""
server:
  tls:
    certificates:
      - {{cert: {certs / "server.pem"}, key: {other_key}}}
"""
    )
    assert check_tls_files(config).startswith("server.tls.certificates[0].key: cannot use")
    assert check_tls_files(parse_config("server: {}")) == ""


def test_crl_file_without_crl_rejected(certs: Path) -> None:
    # A PEM file, but of certificates: the path of the SNI entry names it.
    config = listener(certs)
    sni = config.sni[0].model_copy(
        update={
            "client_auth": config.sni[0].client_auth.model_copy(update={"crl": certs / "ca.pem"})
        }
    )
    with pytest.raises(
        TlsConfigError, match=r"server.tls.sni\[0\].client_auth.crl: .* no X509 CRL"
    ):
        ServerTls(config.model_copy(update={"sni": (sni, config.sni[1])}), b"s" * 32)


def crl_listener(certs: Path, crl: Path) -> TlsListenerConfig:
    return TlsListenerConfig.model_validate(
        {
            "certificates": [{"cert": certs / "server.pem", "key": certs / "server-key.pem"}],
            "sni": [
                {
                    "names": ["ringwall.localhost"],
                    "client_auth": {"mode": "required", "ca": certs / "ca.pem", "crl": crl},
                }
            ],
        }
    )


def test_crl_file_with_certificate_rejected(certs: Path, tmp_path: Path) -> None:
    # OpenSSL would trust a certificate loaded from the CRL file as a CA.
    crl = tmp_path / "crl.pem"
    write_crl(certs, crl)
    crl.write_bytes(crl.read_bytes() + (certs / "ca.pem").read_bytes())
    with pytest.raises(TlsConfigError, match=r"sni\[0\].client_auth.crl: .* other than X509 CRL"):
        ServerTls(crl_listener(certs, crl), b"s" * 32)


def test_crl_replaced_during_load_read_again(
    certs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crl = tmp_path / "crl.pem"
    write_crl(certs, crl)
    tls = ServerTls(crl_listener(certs, crl), b"s" * 32)
    original = context_module._read_crls

    def read_then_replace(*args: Any) -> tuple[bytes, ...]:
        crls = original(*args)
        # The CA's publishing job replaces the file right after this read.
        write_crl(certs, crl, revoked=(certs / "client.pem",))
        os.utime(crl, (time.time() + 5, time.time() + 5))
        return crls

    monkeypatch.setattr(context_module, "_read_crls", read_then_replace)
    tls.apply(tls.config)
    monkeypatch.setattr(context_module, "_read_crls", original)
    assert tls.reload_changed_files()
