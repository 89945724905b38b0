"""Unit tests for the HTTPS systems: configs, ratios, handshake and resumption counts."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from nginx_conf import write_proxy_conf
from report import LAYER_BASES, LAYER_TARGETS, format_layer_lines, layer_ratios
from run import CLOSE_HEADERS, RINGWALL_BIN, SYSTEMS, Settings, _check_handshakes, wrk_command
from tls_handshake_cost import contexts, server_handshake_seconds
from tls_resumption import (
    Attempt,
    find_socket_inode,
    ipv4_socket_address,
    response_status,
    summarize,
    worker_of_socket,
)
from tls_setup import (
    INTERMEDIATE_CIPHERS,
    NGINX_ECDH_CURVE,
    HandshakeCounts,
    TlsFiles,
    build_full_handshakes_library,
    client_context,
    make_certificates,
    nginx_tls_directives,
    parse_handshake_counts,
    ringwall_tls_config,
)

from ringwall.config import parse_config
from ringwall.tls import context as ringwall_tls
from tests.support.bench_results import system_result

PEM = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"


def _files(directory: Path) -> TlsFiles:
    files = TlsFiles(directory / "server.pem", directory / "server-key.pem", directory / "ca.pem")
    for path in (files.cert, files.key, files.ca):
        path.write_text(PEM)
    return files


def test_ciphers_match_ringwall_intermediate() -> None:
    assert INTERMEDIATE_CIPHERS == ringwall_tls.INTERMEDIATE_CIPHERS


def test_curves_match_ringwall_groups() -> None:
    nginx_names = {"prime256v1": "P-256", "secp384r1": "P-384"}
    groups = [nginx_names.get(name, name) for name in NGINX_ECDH_CURVE.split(":")]

    assert ":".join(groups) == ringwall_tls.GROUPS


def test_nginx_tls_directives_mozilla_intermediate(tmp_path: Path) -> None:
    files = _files(tmp_path)

    lines = [line.strip() for line in nginx_tls_directives(files).splitlines()]

    assert f"ssl_certificate {files.cert};" in lines
    assert f"ssl_certificate_key {files.key};" in lines
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in lines
    assert f"ssl_ciphers {INTERMEDIATE_CIPHERS};" in lines
    assert "ssl_ecdh_curve X25519:prime256v1:secp384r1;" in lines
    assert "ssl_session_tickets on;" in lines


def test_proxy_conf_with_tls(tmp_path: Path) -> None:
    directives = nginx_tls_directives(_files(tmp_path))

    conf = write_proxy_conf(tmp_path, "nginx-tls", 8443, 9000, None, directives).read_text()

    assert "listen 127.0.0.1:8443 ssl;" in conf
    assert directives in conf
    assert "modsecurity on;" not in conf


def test_proxy_conf_without_tls(tmp_path: Path) -> None:
    conf = write_proxy_conf(tmp_path, "nginx", 8080, 9000, None).read_text()

    assert "listen 127.0.0.1:8080;" in conf
    assert "ssl_certificate" not in conf


def test_ringwall_tls_config_accepted(tmp_path: Path) -> None:
    files = _files(tmp_path)
    text = yaml.safe_dump(ringwall_tls_config(files))

    config = parse_config(text, {"UPSTREAM_URL": "http://127.0.0.1:9"})

    tls = config.server.tls
    assert tls is not None
    assert tls.profile == "intermediate"
    assert tls.certificates[0].cert == files.cert
    assert tls.certificates[0].key == files.key
    assert tls.redirect_http is False
    assert tls.session_tickets is True
    assert config.routes[0].path == "/"


def test_ringwall_tls_config_without_tickets(tmp_path: Path) -> None:
    text = yaml.safe_dump(ringwall_tls_config(_files(tmp_path), session_tickets=False))

    config = parse_config(text, {"UPSTREAM_URL": "http://127.0.0.1:9"})

    assert config.server.tls is not None
    assert config.server.tls.session_tickets is False


def test_wrk_command_https() -> None:
    settings = Settings(("nginx-tls",), 8, 0, 50, 1, 0, 1, 30.0, False, False)

    command = wrk_command(settings, 8443, 8, CLOSE_HEADERS, scheme="https")

    assert command[-1] == "https://127.0.0.1:8443/"
    assert "Connection: close" in command


def test_tls_systems_listed() -> None:
    for name in ("nginx-tls", "ringwall-tls", "nginx-tls-handshake", "ringwall-tls-handshake"):
        assert name in SYSTEMS


def test_tls_pairs_targets() -> None:
    assert LAYER_TARGETS["ringwall-tls"] == pytest.approx(0.40)
    assert LAYER_BASES["ringwall-tls"] == "nginx-tls"
    assert LAYER_TARGETS["ringwall-tls-handshake"] == pytest.approx(0.50)
    assert LAYER_BASES["ringwall-tls-handshake"] == "nginx-tls-handshake"


def test_tls_ratio_divides_nginx_by_ringwall() -> None:
    # 20 µs per request for nginx and 40 µs for Ringwall, then 300 and 500 µs per handshake.
    results = [
        system_result("nginx-tls", 500_000, 10.0),
        system_result("ringwall-tls", 250_000, 10.0),
        system_result("nginx-tls-handshake", 10_000, 3.0),
        system_result("ringwall-tls-handshake", 10_000, 5.0),
    ]

    ratios = layer_ratios(results)

    assert ratios["ringwall-tls"] == pytest.approx(0.5)
    assert ratios["ringwall-tls-handshake"] == pytest.approx(0.6)


def test_tls_ratio_lines() -> None:
    lines = format_layer_lines({"ringwall-tls": 0.39, "ringwall-tls-handshake": None})

    assert lines.splitlines() == [
        "ringwall-tls (nginx-tls CPU/request / ringwall-tls CPU/request): 0.39: FAIL, "
        "target >= 0.40",
        "ringwall-tls-handshake (nginx-tls-handshake CPU/request / ringwall-tls-handshake "
        "CPU/request): not measured",
    ]


def test_tls_ratio_needs_valid_nginx() -> None:
    results = [
        system_result("nginx-tls", 500_000, 10.0, status="invalid"),
        system_result("ringwall-tls", 250_000, 10.0),
    ]

    assert layer_ratios(results)["ringwall-tls"] is None


def test_handshake_counts_parse() -> None:
    assert parse_handshake_counts("full 1377\nresumed 0\n") == HandshakeCounts(1377, 0)


@pytest.mark.parametrize("text", ["", "full 3\n", "full x\nresumed 0\n", "resumed 1\n"])
def test_handshake_counts_reject_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="invalid handshake counts"):
        parse_handshake_counts(text)


def test_check_handshakes_all_full(tmp_path: Path) -> None:
    counts = tmp_path / "counts.txt"
    counts.write_text("full 900\nresumed 0\n")
    result = system_result("ringwall-tls-handshake", 880, 0.5)

    _check_handshakes(result, counts)

    assert result.status == "ok"
    assert result.setup == {"handshakes": {"full": 900, "resumed": 0}}


def test_check_handshakes_resumed_invalid(tmp_path: Path) -> None:
    counts = tmp_path / "counts.txt"
    counts.write_text("full 5\nresumed 895\n")
    result = system_result("nginx-tls-handshake", 880, 0.5)

    _check_handshakes(result, counts)

    assert result.status == "invalid"
    assert result.reason == "wrk resumed 895 of 900 TLS sessions"


def test_check_handshakes_missing_counts(tmp_path: Path) -> None:
    result = system_result("nginx-tls-handshake", 880, 0.5)

    _check_handshakes(result, tmp_path / "missing.txt")

    assert result.status == "invalid"
    assert result.reason.startswith("wrk's handshake counts could not be read")


def test_check_handshakes_keeps_earlier_reason(tmp_path: Path) -> None:
    result = system_result("nginx-tls-handshake", 880, 0.5, status="invalid")
    result.reason = "wrk reported socket errors or non-2xx/3xx responses"

    _check_handshakes(result, tmp_path / "missing.txt")

    assert result.reason == "wrk reported socket errors or non-2xx/3xx responses"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_full_handshakes_library_exports_ssl_connect(tmp_path: Path) -> None:
    library = build_full_handshakes_library(tmp_path)

    symbols = subprocess.run(
        ["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True
    ).stdout
    assert " T SSL_connect" in symbols


def test_ipv4_socket_address() -> None:
    assert ipv4_socket_address("127.0.0.1", 8443) == "0100007F:20FB"


def test_find_socket_inode() -> None:
    proc_net_tcp = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
        "   uid  timeout inode\n"
        "   0: 0100007F:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000"
        "     0        0 1111 1 0000000000000000 100 0 0 10 0\n"
        "   1: 0100007F:20FB 0100007F:D431 01 00000000:00000000 00:00000000 00000000"
        "     0        0 2222 1 0000000000000000 20 4 30 10 -1\n"
        "   2: 0100007F:D431 0100007F:20FB 01 00000000:00000000 00:00000000 00000000"
        "     0        0 3333 1 0000000000000000 20 4 30 10 -1\n"
    )

    assert find_socket_inode(proc_net_tcp, "0100007F:20FB", "0100007F:D431") == 2222
    assert find_socket_inode(proc_net_tcp, "0100007F:20FB", "0100007F:0001") is None


def test_worker_of_socket(tmp_path: Path) -> None:
    for pid, target in ((11, "socket:[1111]"), (12, "socket:[2222]")):
        (tmp_path / str(pid) / "fd").mkdir(parents=True)
        os.symlink(target, tmp_path / str(pid) / "fd" / "7")

    assert worker_of_socket(2222, [11, 12], tmp_path) == 12
    assert worker_of_socket(3333, [11, 12], tmp_path) is None
    assert worker_of_socket(2222, [13], tmp_path) is None


@pytest.mark.parametrize(
    ("response", "status"),
    [(b"HTTP/1.1 200 OK\r\n\r\n", 200), (b"HTTP/1.1 421 \r\n", 421), (b"", 0), (b"junk", 0)],
)
def test_response_status(response: bytes, status: int) -> None:
    assert response_status(response) == status


def test_resumption_summary_splits_by_worker() -> None:
    attempts = [
        Attempt("TLSv1_3", 11, None, False),
        Attempt("TLSv1_3", 12, 11, True),
        Attempt("TLSv1_3", 12, 12, True),
        Attempt("TLSv1_3", 11, 12, False),
        Attempt("TLSv1_3", None, 11, True),
    ]

    summary = summarize(attempts)

    assert summary.offered == 4
    assert summary.resumed == 3
    assert summary.cross_worker_offered == 2
    assert summary.cross_worker_resumed == 1
    assert summary.unknown_worker == 1
    assert summary.rate == pytest.approx(0.75)
    assert summary.cross_worker_rate == pytest.approx(0.5)


def test_resumption_summary_without_offers() -> None:
    summary = summarize([Attempt("TLSv1_2", 11, None, False)])

    assert summary.offered == 0
    assert summary.rate is None
    assert summary.cross_worker_rate is None


def test_make_certificates_once(tmp_path: Path) -> None:
    files = make_certificates(RINGWALL_BIN, tmp_path)
    first = files.cert.read_bytes()

    again = make_certificates(RINGWALL_BIN, tmp_path)

    assert again == files
    assert files.key.exists()
    assert files.ca.exists()
    assert files.cert.read_bytes() == first


def test_handshake_cost_both_contexts(tmp_path: Path) -> None:
    files = make_certificates(RINGWALL_BIN, tmp_path)
    client = client_context(files)

    for name, server in contexts(files).items():
        for server_name in ("127.0.0.1", "localhost"):
            seconds = server_handshake_seconds(server, client, server_name)
            assert 0 < seconds < 1, (name, server_name)
