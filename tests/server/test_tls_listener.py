"""The HTTPS listener through a running worker: profiles, client certificates, SNI, reload."""

import datetime
import shutil
import socket
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringwall.certs_cli import ensure_dev_certificates
from tests.support.gateway_thread import GatewayThread, proxy_config, running_gateway
from tests.support.h2_client import H2Client, StreamResponse, tls_client_context
from tests.support.raw_upstream import RawUpstream
from tests.support.tls import send_and_half_close, write_crl
from tests.support.waiting import wait_for

TIMEOUT = 5.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls") / "certs"
    ensure_dev_certificates(directory, datetime.datetime.now(datetime.UTC))
    return directory


def tls_config(
    certs: Path, upstream: RawUpstream, extra: str = "", profile: str = "intermediate"
) -> str:
    server = f"""  timeouts: {{drain: 2s}}
  tls:
    listen: 127.0.0.1:0
    profile: {profile}
    certificates:
      - cert: {certs / "server.pem"}
        key: {certs / "server-key.pem"}
{extra}"""
    return proxy_config(upstream.port, server=server)


@pytest.fixture
def gateway(certs: Path, upstream: RawUpstream, tmp_path: Path) -> Iterator[GatewayThread]:
    extra = f"""    client_auth:
      mode: none
    sni:
      - names: [ringwall.localhost]
        client_auth: {{mode: required, ca: {certs / "ca.pem"}}}
"""
    with running_gateway(tls_config(certs, upstream, extra), tmp_path, serve_tls=True) as server:
        yield server


def client_context(certs: Path, *, with_certificate: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if with_certificate:
        context.load_cert_chain(certs / "client.pem", certs / "client-key.pem")
    return context


def https_get(
    port: int,
    context: ssl.SSLContext,
    server_name: str,
    host: str | None = None,
    path: str = "/",
) -> bytes:
    """Send one GET over TLS and return the response head and body as received."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        request = f"GET {path} HTTP/1.1\r\nHost: {host or server_name}\r\nConnection: close\r\n\r\n"
        tls.sendall(request.encode())
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def refused(port: int, context: ssl.SSLContext, server_name: str) -> bool:
    """Return whether the handshake fails or the server closes without a response.

    In TLS 1.3 the server checks the client certificate after the client
    has finished its side of the handshake, so the client may only see the
    connection end.
    """
    try:
        return https_get(port, context, server_name) == b""
    except (ssl.SSLError, ConnectionResetError):
        return True


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_https_request_reaches_upstream(
    gateway: GatewayThread, certs: Path, upstream: RawUpstream
) -> None:
    response = https_get(gateway.tls_port, client_context(certs), "localhost", path="/hello")
    assert status_of(response) == 200
    assert b"Strict-Transport-Security: max-age=31536000" in response
    assert upstream.wait_for_requests(1)[0].request.target == b"/hello"


def test_plain_listener_redirects(gateway: GatewayThread) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=TIMEOUT) as sock:
        sock.sendall(
            b"POST /api/orders?x=1 HTTP/1.1\r\nHost: localhost:8080\r\nContent-Length: 0\r\n\r\n"
        )
        response = sock.recv(65536)
    assert response.startswith(b"HTTP/1.1 308 ")
    location = f"Location: https://localhost:{gateway.tls_port}/api/orders?x=1\r\n"
    assert location.encode() in response


def test_redirect_without_host_is_400(gateway: GatewayThread) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        response = sock.recv(65536)
    assert response.startswith(b"HTTP/1.1 400 ")
    assert b"application/problem+json" in response


def test_redirect_late_head_is_408(certs: Path, upstream: RawUpstream, tmp_path: Path) -> None:
    config = tls_config(certs, upstream).replace(
        "timeouts: {drain: 2s}", "timeouts: {drain: 2s, head: 0.5s}"
    )
    with (
        running_gateway(config, tmp_path, serve_tls=True) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        response = sock.recv(65536)
    assert response.startswith(b"HTTP/1.1 408 ")
    assert b"application/problem+json" in response


@pytest.mark.parametrize(
    ("maximum", "ciphers"),
    [
        (ssl.TLSVersion.TLSv1_1, None),
        (ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA"),
    ],
)
def test_old_clients_refused(
    gateway: GatewayThread, certs: Path, maximum: ssl.TLSVersion, ciphers: str | None
) -> None:
    context = client_context(certs)
    with warnings.catch_warnings():
        # Python deprecates TLS 1.0 and 1.1, and this client must offer them.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = maximum
    # Security level 0 lets OpenSSL offer TLS 1.1 and SHA-1 suites at all.
    context.set_ciphers(f"{ciphers or 'DEFAULT'}:@SECLEVEL=0")
    assert refused(gateway.tls_port, context, "localhost")


def test_modern_profile_refuses_tls12(certs: Path, upstream: RawUpstream, tmp_path: Path) -> None:
    config = tls_config(certs, upstream, profile="modern")
    with running_gateway(config, tmp_path, serve_tls=True) as server:
        context = client_context(certs)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            https_get(server.tls_port, context, "localhost")
        assert status_of(https_get(server.tls_port, client_context(certs), "localhost")) == 200


def test_required_client_certificate(gateway: GatewayThread, certs: Path) -> None:
    with_certificate = client_context(certs, with_certificate=True)
    assert status_of(https_get(gateway.tls_port, with_certificate, "ringwall.localhost")) == 200
    assert refused(gateway.tls_port, client_context(certs), "ringwall.localhost")


def test_domain_fronting_is_421(gateway: GatewayThread, certs: Path, upstream: RawUpstream) -> None:
    # The handshake names localhost, which requests no certificate. The Host
    # names ringwall.localhost, which requires one.
    response = https_get(gateway.tls_port, client_context(certs), "localhost", "ringwall.localhost")
    assert status_of(response) == 421
    assert b"application/problem+json" in response
    assert upstream.requests == []


def test_host_outside_certificate_is_421(gateway: GatewayThread, certs: Path) -> None:
    response = https_get(gateway.tls_port, client_context(certs), "localhost", "api.example.test")
    assert status_of(response) == 421


def test_session_resumed(gateway: GatewayThread, certs: Path) -> None:
    context = client_context(certs)
    with (
        socket.create_connection(("127.0.0.1", gateway.tls_port), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        while tls.recv(65536):
            pass
        session = tls.session
    with (
        socket.create_connection(("127.0.0.1", gateway.tls_port), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname="localhost", session=session) as tls,
    ):
        assert tls.session_reused


def test_certificate_reload(certs: Path, upstream: RawUpstream, tmp_path: Path) -> None:
    live = tmp_path / "live"
    shutil.copytree(certs, live)
    config = tls_config(live, upstream, "    reload_interval: 0.5s\n")
    with running_gateway(config, tmp_path, serve_tls=True) as server:
        context = client_context(certs)
        with (
            socket.create_connection(("127.0.0.1", server.tls_port), timeout=TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as established,
        ):
            first = established.getpeercert(binary_form=True)
            # New files: a new CA and certificates in another directory, copied over.
            fresh = tmp_path / "fresh"
            ensure_dev_certificates(fresh, datetime.datetime.now(datetime.UTC))
            shutil.copy(fresh / "server.pem", live / "server.pem")
            shutil.copy(fresh / "server-key.pem", live / "server-key.pem")
            fresh_context = client_context(fresh)

            def serves_new() -> bool:
                try:
                    return status_of(https_get(server.tls_port, fresh_context, "localhost")) == 200
                except ssl.SSLError:
                    return False

            assert wait_for(serves_new, seconds=5.0)
            # The connection made before the reload still works.
            established.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert established.recv(65536).startswith(b"HTTP/1.1 200 ")
            assert established.getpeercert(binary_form=True) == first


def crl_gateway_config(certs: Path, upstream: RawUpstream, crl: Path) -> str:
    extra = f"""    reload_interval: 0.5s
    sni:
      - names: [ringwall.localhost]
        client_auth: {{mode: required, ca: {certs / "ca.pem"}, crl: {crl}}}
"""
    return tls_config(certs, upstream, extra)


def test_revoked_client_certificate_refused(
    certs: Path, upstream: RawUpstream, tmp_path: Path
) -> None:
    crl = tmp_path / "crl.pem"
    write_crl(certs, crl, revoked=(certs / "client.pem",))
    config = crl_gateway_config(certs, upstream, crl)
    with running_gateway(config, tmp_path, serve_tls=True) as server:
        with_certificate = client_context(certs, with_certificate=True)
        assert refused(server.tls_port, with_certificate, "ringwall.localhost")


def test_crl_reload_revokes_new_connections(
    certs: Path, upstream: RawUpstream, tmp_path: Path
) -> None:
    crl = tmp_path / "crl.pem"
    write_crl(certs, crl)
    config = crl_gateway_config(certs, upstream, crl)
    with running_gateway(config, tmp_path, serve_tls=True) as server:
        with_certificate = client_context(certs, with_certificate=True)
        response = https_get(server.tls_port, with_certificate, "ringwall.localhost")
        assert status_of(response) == 200
        # The CA revokes the client certificate: the next handshakes fail.
        write_crl(certs, crl, revoked=(certs / "client.pem",))
        assert wait_for(
            lambda: refused(server.tls_port, with_certificate, "ringwall.localhost"), seconds=5.0
        )


def h2_get(gateway: GatewayThread, certs: Path, path: bytes, authority: bytes) -> StreamResponse:
    """Send one GET over HTTP/2 to the HTTPS listener, with SNI name localhost."""
    client = H2Client(
        gateway.tls_port, tls=tls_client_context(str(certs / "ca.pem")), server_name="localhost"
    )
    try:
        return client.response(client.request(path=path, authority=authority))
    finally:
        client.close()


def test_http2_negotiated(gateway: GatewayThread, certs: Path, upstream: RawUpstream) -> None:
    response = h2_get(gateway, certs, b"/over-h2", b"localhost")
    assert response.status == 200
    assert response.header(b"strict-transport-security") == [b"max-age=31536000"]
    forwarded = upstream.wait_for_requests(1)[0].request
    assert forwarded.target == b"/over-h2"
    assert (b"x-forwarded-proto", b"https") in forwarded.headers


def test_domain_fronting_over_http2_is_421(
    gateway: GatewayThread, certs: Path, upstream: RawUpstream
) -> None:
    response = h2_get(gateway, certs, b"/", b"ringwall.localhost")
    assert response.status == 421
    assert response.header(b"content-type") == [b"application/problem+json"]
    assert upstream.requests == []


def test_plain_http_on_https_port_is_400(gateway: GatewayThread) -> None:
    with socket.create_connection(("127.0.0.1", gateway.tls_port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)

    assert response.startswith(b"HTTP/1.1 400 ")
    assert b"Content-Type: application/problem+json" in response
    assert b"plain HTTP to the HTTPS listener" in response
    record = gateway.access_records()[-1]
    assert record["status"] == 400
    assert record["layer"] == "tls"
    assert record["tls"] is None
    assert record["request_id"].encode() in response


def test_unfinished_handshake_counts_against_limit(
    certs: Path, upstream: RawUpstream, tmp_path: Path
) -> None:
    config = tls_config(certs, upstream) + "limits:\n  connections: {per_ip: 1}\n"
    with (
        running_gateway(config, tmp_path, serve_tls=True) as gateway,
        socket.create_connection(("127.0.0.1", gateway.tls_port), timeout=TIMEOUT),
    ):
        response = https_get(gateway.tls_port, client_context(certs), "localhost")
        record = gateway.access_records()[-1]

    assert status_of(response) == 429
    assert not upstream.requests
    assert record["status"] == 429
    assert record["tls"] == "TLSv1.3"


def test_ninth_pipelined_body_arrives_later(gateway: GatewayThread, certs: Path) -> None:
    # Eight queued requests pause reading. The ninth becomes active once the
    # others have their responses, and its body, sent later, must still be read.
    requests = [
        b"POST /p%d HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nbody%d" % (i, i)
        for i in range(9)
    ]
    pipelined = b"".join(requests)
    with (
        socket.create_connection(("127.0.0.1", gateway.tls_port), timeout=TIMEOUT) as raw,
        client_context(certs).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(pipelined[:-5])
        received = b""
        while received.count(b"HTTP/1.1 200 ") < 8:
            received += tls.recv(65536)
        tls.sendall(pipelined[-5:])
        while received.count(b"HTTP/1.1 200 ") < 9:
            chunk = tls.recv(65536)
            assert chunk, "the gateway closed the connection before the ninth response"
            received += chunk

    assert received.count(b"HTTP/1.1 200 ") == 9


def test_half_closed_client_gets_response(
    gateway: GatewayThread, certs: Path, upstream: RawUpstream
) -> None:
    # TCP FIN after the request, without close_notify, as with shutdown(SHUT_WR).
    request = b"GET /half HTTP/1.1\r\nHost: localhost\r\n\r\n"
    response = send_and_half_close(
        gateway.tls_port, client_context(certs), request, close_notify=False
    )

    assert response.startswith(b"HTTP/1.1 200 ")
    assert response.endswith(b"ok")
    assert upstream.wait_for_requests(1)[0].request.target == b"/half"


def test_response_made_at_once_survives_close_notify(
    gateway: GatewayThread, certs: Path, upstream: RawUpstream
) -> None:
    # The 421 is made while the request's record is handled and held until
    # the loop ends its poll. The close_notify that follows in the same read
    # must not close the connection before the response goes out.
    request = b"GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n"
    response = send_and_half_close(
        gateway.tls_port, client_context(certs), request, close_notify=True
    )

    assert status_of(response) == 421
    assert upstream.requests == []
