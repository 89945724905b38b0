"""The `ringwall certs dev` command: files, re-runs, rejections, and TLS handshakes with the files."""

import argparse
import concurrent.futures
import os
import shutil
import socket
import ssl
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ringwall.certs_cli import DEFAULT_CERTS_DIR, add_certs_parser, run_certs
from ringwall.cli import main
from tests.support.tls import make_tls_files

NOW = 1_800_000_000.0
DAY = 86400.0
FILES = ["ca-key.pem", "ca.pem", "client-key.pem", "client.pem", "server-key.pem", "server.pem"]
KEY_FILES = ["ca-key.pem", "client-key.pem", "server-key.pem"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ringwall")
    add_certs_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def run(out: Path | None, *extra: str, now: float | None = NOW) -> int:
    argv = ["certs", "dev", *(["--out", str(out)] if out is not None else []), *extra]
    arguments = build_parser().parse_args(argv)
    if now is None:
        return run_certs(arguments)
    return run_certs(arguments, clock=lambda: now)


def contents(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in FILES}


def chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "certs"


# The first run.


def test_dev_writes_six_files(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(out) == 0
    assert sorted(os.listdir(out)) == FILES
    assert capsys.readouterr().err == ""


def test_dev_file_modes(out: Path) -> None:
    assert run(out) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for name in FILES:
        expected = 0o600 if name in KEY_FILES else 0o644
        assert stat.S_IMODE((out / name).stat().st_mode) == expected, name


def test_dev_creates_parents_private(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    assert run(out) == 0
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE(out.stat().st_mode) == 0o700


def test_dev_keeps_existing_directory_mode(out: Path) -> None:
    out.mkdir(mode=0o755)
    out.chmod(0o755)
    assert run(out) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


def test_dev_default_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(None) == 0
    assert Path(".ringwall/certs") == DEFAULT_CERTS_DIR
    assert sorted(os.listdir(tmp_path / ".ringwall" / "certs")) == FILES
    assert stat.S_IMODE((tmp_path / ".ringwall").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / ".ringwall" / "certs").stat().st_mode) == 0o700


def test_dev_prints_files_and_curl(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(out) == 0
    output = capsys.readouterr().out
    assert f"in {out} (not for production use)" in output
    assert "ca.pem, ca-key.pem: created" in output
    assert "server.pem, server-key.pem: issued because the CA is new" in output
    assert "client.pem, client-key.pem: issued because the CA is new" in output
    assert "localhost, ringwall.localhost, 127.0.0.1, ::1" in output
    assert f"curl --cacert {out}/ca.pem https://127.0.0.1:8443/" in output
    assert (
        f"curl --cacert {out}/ca.pem --cert {out}/client.pem --key {out}/client-key.pem "
        "https://127.0.0.1:8443/"
    ) in output


def test_dev_quotes_paths_in_curl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "my certs"
    assert run(out) == 0
    assert f"curl --cacert '{out}/ca.pem' " in capsys.readouterr().out


def test_dev_chain_verifies(out: Path) -> None:
    assert run(out) == 0
    [ca] = chain(out / "ca.pem")
    ca.verify_directly_issued_by(ca)
    server_chain = chain(out / "server.pem")
    assert len(server_chain) == 2
    assert server_chain[1] == ca
    server_chain[0].verify_directly_issued_by(ca)
    [client] = chain(out / "client.pem")
    client.verify_directly_issued_by(ca)


def test_dev_keys_match_certificates(out: Path) -> None:
    assert run(out) == 0
    pairs = [("ca.pem", "ca-key.pem"), ("server.pem", "server-key.pem")]
    pairs.append(("client.pem", "client-key.pem"))
    for certificate_name, key_name in pairs:
        certificate = chain(out / certificate_name)[0]
        assert certificate.public_key() == private_key(out / key_name).public_key()


def test_dev_through_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "dev", "--out", str(tmp_path / "certs")]) == 0
    assert "ca.pem, ca-key.pem: created" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "certs")) == FILES


# Running again.


def test_rerun_keeps_everything(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(out) == 0
    before = contents(out)
    capsys.readouterr()
    assert run(out, now=NOW + 30 * DAY) == 0
    assert contents(out) == before
    output = capsys.readouterr().out
    assert output.count(": kept, valid until") == 3
    assert "issued" not in output


def test_rerun_reissues_expiring_leaves(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(out) == 0
    before = contents(out)
    capsys.readouterr()

    # 370 days later the leaves (397 days) have less than 27 days left, under the 30-day margin.
    assert run(out, now=NOW + 370 * DAY) == 0
    after = contents(out)
    assert after["ca.pem"] == before["ca.pem"]
    assert after["ca-key.pem"] == before["ca-key.pem"]
    for name in ["server.pem", "server-key.pem", "client.pem", "client-key.pem"]:
        assert after[name] != before[name], name
    output = capsys.readouterr().out
    assert "ca.pem, ca-key.pem: kept" in output
    assert output.count("issued because the certificate expires on") == 2

    [ca] = chain(out / "ca.pem")
    server = chain(out / "server.pem")[0]
    server.verify_directly_issued_by(ca)
    assert server.not_valid_before_utc.timestamp() <= NOW + 370 * DAY


def test_rerun_reissues_expired_leaves(out: Path) -> None:
    assert run(out) == 0
    before = contents(out)
    assert run(out, now=NOW + 500 * DAY) == 0
    after = contents(out)
    assert after["ca.pem"] == before["ca.pem"]
    assert after["server.pem"] != before["server.pem"]
    server = chain(out / "server.pem")[0]
    assert server.not_valid_after_utc.timestamp() > NOW + 500 * DAY


def test_rerun_reissues_missing_leaf_only(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(out) == 0
    before = contents(out)
    (out / "client-key.pem").unlink()
    capsys.readouterr()
    assert run(out) == 0
    after = contents(out)
    assert after["client.pem"] != before["client.pem"]
    for name in ["ca.pem", "ca-key.pem", "server.pem", "server-key.pem"]:
        assert after[name] == before[name], name
    assert "issued because client-key.pem is missing" in capsys.readouterr().out
    chain(out / "client.pem")[0].verify_directly_issued_by(chain(out / "ca.pem")[0])


def test_rerun_reissues_leaf_from_other_ca(out: Path, tmp_path: Path) -> None:
    assert run(out) == 0
    other = tmp_path / "other"
    other.mkdir()
    _, other_certificate, other_key = make_tls_files(other)
    shutil.copyfile(other_certificate, out / "server.pem")
    shutil.copyfile(other_key, out / "server-key.pem")
    assert run(out) == 0
    [ca] = chain(out / "ca.pem")
    chain(out / "server.pem")[0].verify_directly_issued_by(ca)
    assert chain(out / "server.pem")[1] == ca


def test_rerun_reissues_leaf_with_wrong_key(out: Path) -> None:
    assert run(out) == 0
    shutil.copyfile(out / "client-key.pem", out / "server-key.pem")
    assert run(out) == 0
    server = chain(out / "server.pem")[0]
    assert server.public_key() == private_key(out / "server-key.pem").public_key()


def test_force_recreates_everything(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(out) == 0
    before = contents(out)
    capsys.readouterr()
    assert run(out, "--force") == 0
    after = contents(out)
    for name in FILES:
        assert after[name] != before[name], name
    output = capsys.readouterr().out
    assert "ca.pem, ca-key.pem: created" in output
    assert "clients that trusted the old ca.pem must trust this one" in output
    [ca] = chain(out / "ca.pem")
    chain(out / "server.pem")[0].verify_directly_issued_by(ca)
    chain(out / "client.pem")[0].verify_directly_issued_by(ca)
    for name in KEY_FILES:
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name


def test_failed_write_keeps_files_whole(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(out) == 0
    before = contents(out)
    replace = os.replace
    calls: list[str] = []

    def failing_replace(source: str, target: str) -> None:
        calls.append(target)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", target)
        replace(source, target)

    monkeypatch.setattr(os, "replace", failing_replace)
    assert run(out, "--force") == 1
    monkeypatch.undo()
    after = contents(out)
    # The new CA key replaced the old one before the CA certificate failed,
    # and each file is either whole and old or whole and new.
    assert after["ca.pem"] == before["ca.pem"]
    assert after["ca-key.pem"] != before["ca-key.pem"]
    private_key(out / "ca-key.pem")
    assert sorted(os.listdir(out)) == FILES


# Refusals.


def test_rejects_mismatched_ca_key(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(out) == 0
    before = contents(out)
    shutil.copyfile(out / "server-key.pem", out / "ca-key.pem")
    capsys.readouterr()
    assert run(out) == 1
    error = capsys.readouterr().err
    assert f"invalid CA file {out}/ca-key.pem: the key does not match the certificate" in error
    assert f"ringwall certs dev --out {out} --force" in error
    assert contents(out)["server.pem"] == before["server.pem"]


def test_rejects_unreadable_ca_key(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(out) == 0
    (out / "ca-key.pem").unlink()
    # A directory in place of the file: unreadable even for root, which ignores modes.
    (out / "ca-key.pem").mkdir()
    capsys.readouterr()
    assert run(out) == 1
    error = capsys.readouterr().err
    assert f"cannot read {out}/ca-key.pem: Is a directory" in error
    assert "--force" in error


def test_rejects_missing_ca_key(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(out) == 0
    before = contents(out)
    (out / "ca-key.pem").unlink()
    capsys.readouterr()
    assert run(out) == 1
    error = capsys.readouterr().err
    assert f"{out}/ca-key.pem not found, but {out}/ca.pem exists" in error
    assert "--force" in error
    assert (out / "server.pem").read_bytes() == before["server.pem"]


def test_rejects_missing_ca_certificate(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(out) == 0
    (out / "ca.pem").unlink()
    capsys.readouterr()
    assert run(out) == 1
    assert f"{out}/ca.pem not found, but {out}/ca-key.pem exists" in capsys.readouterr().err


def test_rejects_garbage_ca(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(out) == 0
    (out / "ca.pem").write_text("not a certificate\n")
    capsys.readouterr()
    assert run(out) == 1
    error = capsys.readouterr().err
    assert f"invalid CA file {out}/ca.pem: not a PEM certificate" in error


def test_rejects_expired_ca(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(out) == 0
    capsys.readouterr()
    assert run(out, now=NOW + 3651 * DAY) == 1
    error = capsys.readouterr().err
    assert f"invalid CA file {out}/ca.pem: expired on" in error
    assert "--force" in error


def test_force_replaces_unusable_ca(out: Path) -> None:
    assert run(out) == 0
    shutil.copyfile(out / "server-key.pem", out / "ca-key.pem")
    assert run(out, "--force") == 0
    [ca] = chain(out / "ca.pem")
    assert ca.public_key() == private_key(out / "ca-key.pem").public_key()
    chain(out / "server.pem")[0].verify_directly_issued_by(ca)


def test_warns_when_ca_expires_soon(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(out) == 0
    [ca] = chain(out / "ca.pem")
    capsys.readouterr()
    late = ca.not_valid_after_utc.timestamp() - 10 * DAY
    assert run(out, now=late) == 0
    output = capsys.readouterr()
    assert "warning: the CA expires on" in output.err
    assert "--force" in output.err
    server = chain(out / "server.pem")[0]
    assert server.not_valid_after_utc == ca.not_valid_after_utc


def test_rejects_out_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "file"
    out.write_text("")
    assert run(out) == 1
    assert f"{out} exists and is not a directory" in capsys.readouterr().err


# A TLS handshake on loopback with the files.


def server_context(out: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(out / "server.pem", out / "server-key.pem")
    context.load_verify_locations(out / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    # Python 3.13 sets this flag by default, so the files must pass it now.
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def client_context(out: Path, certificate: str | None = "client") -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=out / "ca.pem")
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    if certificate is not None:
        context.load_cert_chain(out / f"{certificate}.pem", out / f"{certificate}-key.pem")
    return context


Outcome = dict[str, Any] | Exception


def serve_once(listener: socket.socket, context: ssl.SSLContext) -> dict[str, Any]:
    """Accept one TLS connection, echo one message, and return the client's certificate."""
    connection, _ = listener.accept()
    connection.settimeout(5)
    with context.wrap_socket(connection, server_side=True) as tls:
        tls.sendall(tls.recv(100))
        return dict(tls.getpeercert() or {})


def connect(port: int, context: ssl.SSLContext, server_hostname: str) -> dict[str, Any]:
    """Send one message over TLS and return the server's certificate if it came back."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        tls.sendall(b"ping")
        echoed = tls.recv(100)
        if echoed != b"ping":
            raise ConnectionError(f"expected the echo b'ping', got {echoed!r}")
        return dict(tls.getpeercert() or {})


def exchange(
    server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str
) -> tuple[Outcome, Outcome]:
    """Run one connection on loopback and return what the client and the server saw."""
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        concurrent.futures.ThreadPoolExecutor(1) as executor,
    ):
        listener.settimeout(5)
        served = executor.submit(serve_once, listener, server)
        client_outcome: Outcome
        server_outcome: Outcome
        try:
            client_outcome = connect(listener.getsockname()[1], client, server_hostname)
        except (ssl.SSLError, OSError) as exc:
            client_outcome = exc
        try:
            server_outcome = served.result(timeout=10)
        except (ssl.SSLError, OSError) as exc:
            server_outcome = exc
    return client_outcome, server_outcome


def common_name(peer: Outcome) -> str:
    assert isinstance(peer, dict), peer
    names = [value for entry in peer["subject"] for key, value in entry if key == "commonName"]
    assert len(names) == 1
    return str(names[0])


@pytest.mark.parametrize("server_hostname", ["127.0.0.1", "localhost", "ringwall.localhost", "::1"])
def test_handshake_mutual_tls(out: Path, server_hostname: str) -> None:
    assert run(out, now=None) == 0
    client_saw, server_saw = exchange(server_context(out), client_context(out), server_hostname)
    assert common_name(client_saw) == "localhost"
    assert common_name(server_saw) == "demo-client"


def test_handshake_wrong_hostname_rejected(out: Path) -> None:
    assert run(out, now=None) == 0
    client_saw, _ = exchange(server_context(out), client_context(out), "example.localhost")
    assert isinstance(client_saw, ssl.SSLCertVerificationError)
    assert "Hostname mismatch" in str(client_saw)


def test_handshake_without_client_certificate(out: Path) -> None:
    assert run(out, now=None) == 0
    client_saw, server_saw = exchange(
        server_context(out), client_context(out, certificate=None), "127.0.0.1"
    )
    assert isinstance(server_saw, ssl.SSLError)
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in str(server_saw)
    assert isinstance(client_saw, Exception)


def test_handshake_server_certificate_as_client(out: Path) -> None:
    # server.pem has EKU serverAuth only, so the server rejects it as a client certificate.
    assert run(out, now=None) == 0
    client_saw, server_saw = exchange(
        server_context(out), client_context(out, certificate="server"), "127.0.0.1"
    )
    assert isinstance(server_saw, ssl.SSLCertVerificationError)
    assert "unsuitable certificate purpose" in str(server_saw)
    assert isinstance(client_saw, Exception)


def test_handshake_client_certificate_as_server(out: Path) -> None:
    # client.pem has EKU clientAuth only, so a client rejects it as a server certificate,
    # even for the name that the certificate carries.
    assert run(out, now=None) == 0
    server = server_context(out)
    server.load_cert_chain(out / "client.pem", out / "client-key.pem")
    client_saw, server_saw = exchange(server, client_context(out), "demo-client.ringwall.localhost")
    assert isinstance(client_saw, ssl.SSLCertVerificationError)
    assert "unsuitable certificate purpose" in str(client_saw)
    assert isinstance(server_saw, ssl.SSLError)


def test_handshake_other_ca_rejected(out: Path, tmp_path: Path) -> None:
    assert run(out, now=None) == 0
    other = tmp_path / "other"
    other.mkdir()
    other_ca, _, _ = make_tls_files(other)
    client = ssl.create_default_context(cafile=other_ca)
    client.load_cert_chain(out / "client.pem", out / "client-key.pem")
    client_saw, server_saw = exchange(server_context(out), client, "127.0.0.1")
    assert isinstance(client_saw, ssl.SSLCertVerificationError)
    assert "self-signed certificate in certificate chain" in str(client_saw)
    assert isinstance(server_saw, ssl.SSLError)
