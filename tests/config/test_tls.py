"""Loading server.tls: files checked at load, client-auth needs a CA, SNI names validated."""

from pathlib import Path

import pytest

from ringwall.config import parse_config
from tests.support.config_issues import issues_of
from tests.support.tls import make_tls_files


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    return make_tls_files(tmp_path)


def server_tls(cert: Path, key: Path, extra: str = "") -> str:
    return f"""
server:
  tls:
    certificates:
      - {{cert: {cert}, key: {key}}}
{extra}"""


def test_defaults(files: tuple[Path, Path, Path]) -> None:
    _, cert, key = files
    tls = parse_config(server_tls(cert, key), {}).server.tls
    assert tls is not None
    assert tls.listen == ("127.0.0.1", 8443)
    assert tls.profile == "intermediate"
    assert tls.client_auth.mode == "none"
    assert tls.redirect_http


def test_missing_certificate_file(tmp_path: Path, files: tuple[Path, Path, Path]) -> None:
    _, _, key = files
    issues = issues_of(server_tls(tmp_path / "absent.pem", key))
    assert issues[0].path == "server.tls.certificates[0].cert"
    assert "cannot read certificate file" in issues[0].message


def test_client_auth_needs_ca(files: tuple[Path, Path, Path]) -> None:
    _, cert, key = files
    issues = issues_of(server_tls(cert, key, "    client_auth: {mode: required}\n"))
    assert issues[0].path == "server.tls.client_auth"
    assert "needs ca" in issues[0].message


def test_empty_ca_file(tmp_path: Path, files: tuple[Path, Path, Path]) -> None:
    _, cert, key = files
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    extra = f"    client_auth: {{mode: optional, ca: {empty}}}\n"
    issues = issues_of(server_tls(cert, key, extra))
    assert issues[0].path == "server.tls.client_auth.ca"
    assert "contains no PEM block" in issues[0].message


def test_unreadable_ca_file(tmp_path: Path, files: tuple[Path, Path, Path]) -> None:
    _, cert, key = files
    extra = f"    client_auth: {{mode: optional, ca: {tmp_path / 'missing.pem'}}}\n"
    issues = issues_of(server_tls(cert, key, extra))
    assert issues[0].path == "server.tls.client_auth.ca"
    assert "cannot read client CA file" in issues[0].message


def test_duplicate_sni_name(files: tuple[Path, Path, Path]) -> None:
    _, cert, key = files
    extra = """    sni:
      - names: [a.example.test]
      - names: [A.example.test.]
"""
    issues = issues_of(server_tls(cert, key, extra))
    assert "a.example.test is listed in more than one sni entry" in issues[0].message


def test_invalid_sni_name(files: tuple[Path, Path, Path]) -> None:
    _, cert, key = files
    issues = issues_of(server_tls(cert, key, "    sni:\n      - names: ['a.*.example.test']\n"))
    assert "invalid server name" in issues[0].message


def test_crl_needs_client_auth(files: tuple[Path, Path, Path]) -> None:
    ca, cert, key = files
    extra = f"    client_auth: {{mode: none, crl: {ca}}}\n"
    issues = issues_of(server_tls(cert, key, extra))
    assert issues[0].path == "server.tls.client_auth"
    assert "crl applies only to client certificates" in issues[0].message


def test_unreadable_crl_file(tmp_path: Path, files: tuple[Path, Path, Path]) -> None:
    ca, cert, key = files
    extra = f"    client_auth: {{mode: required, ca: {ca}, crl: {tmp_path / 'missing.pem'}}}\n"
    issues = issues_of(server_tls(cert, key, extra))
    assert issues[0].path == "server.tls.client_auth.crl"
    assert "cannot read client CRL file" in issues[0].message
