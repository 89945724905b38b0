"""`ringwall demo`: the demo backend and identity provider, and the gateway in front, on loopback.

State that `ringwall token` and `ringwall keys` share with the running demo
(the issuer key, the API key file) lives in `.ringwall/` in the working
directory, created on first run.
"""

from __future__ import annotations

import datetime
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

from ringwall.certs_cli import ensure_dev_certificates
from ringwall.config.types import format_listen_address
from ringwall.demo.issuer import DEFAULT_STATE_DIR, create_admin_token, load_or_create_issuer
from ringwall.gateway.upstream_token import create_signing_key
from ringwall.server.supervisor import Overrides, bind_socket, serve

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "demo" / "ringwall.yaml"
GATEWAY_KEY_FILE = "gateway-key.pem"
DEFAULT_ADMIN_LISTEN = ("127.0.0.1", 9901)
DEFAULT_TLS_LISTEN = ("127.0.0.1", 8443)
_BACKEND_START_SECONDS = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + _BACKEND_START_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _admin_listen() -> str:
    """Return the admin API address: DEMO_ADMIN_LISTEN, else 127.0.0.1:9901, else a free port."""
    chosen = os.environ.get("DEMO_ADMIN_LISTEN")
    if chosen:
        return chosen
    try:
        bind_socket(DEFAULT_ADMIN_LISTEN).close()
    except OSError:
        return f"127.0.0.1:{_free_port()}"
    return format_listen_address(DEFAULT_ADMIN_LISTEN)


def _banner(
    gateway: str,
    plain: str,
    certs_dir: Path,
    backend_url: str,
    idp_url: str,
    state_dir: Path,
    admin: str,
) -> str:
    base = f"https://{gateway}"
    ca = shlex.quote(str(certs_dir / "ca.pem"))
    client = shlex.quote(str(certs_dir / "client.pem"))
    client_key = shlex.quote(str(certs_dir / "client-key.pem"))
    bans_env = (
        ""
        if admin == format_listen_address(DEFAULT_ADMIN_LISTEN)
        else (f"DEMO_ADMIN_LISTEN={admin} ")
    )
    return f"""
Ringwall demo
  gateway:   {base}  (config {DEMO_CONFIG})
  http:      http://{plain}  (redirects to HTTPS with 308)
  certs:     {certs_dir}  (development CA; curl trusts it with --cacert)
  backend:   {backend_url}  (demo fintech API)
  issuer:    {idp_url}/.well-known/jwks.json  (demo identity provider)
  state:     {state_dir}  (issuer key, API key file)
  access log: JSON lines on stdout; errors on stderr

Try (from this directory; CURL_CA_BUNDLE makes every curl below trust the demo CA):
  export CURL_CA_BUNDLE={ca}
  curl -i {base}/api/products                                   # public
  curl -i --cert {client} --key {client_key} {base}/api/internal/status  # mTLS: 200
  curl -i {base}/api/internal/status                            # 401 without the certificate
  curl -i --http2 {base}/api/products                           # HTTP/2
  curl -i {base}/api/orders                                     # 401 without a token
  TOKEN=$(ringwall token --sub alice --role customer --accounts acc-1001)
  curl -i {base}/api/accounts/acc-1001 -H "Authorization: Bearer $TOKEN"   # 200, own account
  curl -i {base}/api/accounts/acc-2002 -H "Authorization: Bearer $TOKEN"   # 403
  curl -i {base}/api/admin/users -H "Authorization: Bearer $TOKEN"         # 403, needs admin
  curl -s {base}/api/echo -H "Authorization: Bearer $TOKEN" -H 'X-Ringwall-Subject: root'
  KEY=$(ringwall keys create --owner partner-1 --role partner | sed -n 's/^API key: //p')
  curl -i {base}/api/partner/rates -H "X-API-Key: $KEY"
  head -c 2000000 /dev/zero | curl -i --data-binary @- {base}/api/orders   # 413
  curl -i --path-as-is '{base}/api/../etc/passwd'               # 404: judged as /etc/passwd
  curl -i '{base}/api/slow?delay=-1'                            # 400: below the spec's minimum
  for i in $(seq 101); do curl -s -o /dev/null -w '%{{http_code}} ' {base}/api/products; done  # 429
  {bans_env}ringwall bans list -c {DEMO_CONFIG}   # admin API on {admin}

Run ringwall token and ringwall keys from this directory, so they use {state_dir}.
Press Ctrl-C to stop.
"""


def _start_process(module: str, *arguments: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    command = [sys.executable, "-m", module, "--listen", f"127.0.0.1:{port}", *arguments]
    process = subprocess.Popen(command)  # noqa: S603 - fixed arguments, no user input
    return process, port


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_demo(
    listen: tuple[str, int],
    workers: int,
    listen_tls: tuple[str, int] = DEFAULT_TLS_LISTEN,
    state_dir: Path = DEFAULT_STATE_DIR,
) -> int:
    """Start the demo backend and identity provider, then the gateway; return the exit code."""
    if not DEMO_CONFIG.is_file():
        print(f"demo configuration not found at {DEMO_CONFIG}", file=sys.stderr)
        return 1
    for address, option in ((listen, "--listen"), (listen_tls, "--listen-tls")):
        try:
            bind_socket(address).close()
        except OSError as exc:
            text = format_listen_address(address)
            print(
                f"cannot listen on {text}: {exc.strerror}. Stop what uses it, "
                f"or pick another address: ringwall demo {option} 127.0.0.1:PORT",
                file=sys.stderr,
            )
            return 1
    state_dir = state_dir.resolve()
    certs_dir = state_dir / "certs"
    try:
        ensure_dev_certificates(certs_dir, datetime.datetime.now(datetime.UTC))
    except (OSError, ValueError) as exc:
        print(f"cannot create the demo certificates in {certs_dir}: {exc}", file=sys.stderr)
        return 1
    load_or_create_issuer(state_dir)  # the key that `ringwall token` signs with
    create_signing_key(state_dir / GATEWAY_KEY_FILE)  # the gateway's own, for upstream tokens
    create_admin_token(state_dir)  # read by the gateway and by `ringwall bans`
    processes = []
    try:
        backend, backend_port = _start_process("ringwall.demo.backend")
        processes.append(backend)
        idp, idp_port = _start_process("ringwall.demo.idp", "--state", str(state_dir))
        processes.append(idp)
        for process, port, name in (
            (backend, backend_port, "backend"),
            (idp, idp_port, "identity provider"),
        ):
            if not _wait_for_port(port, process):
                print(f"the demo {name} did not start", file=sys.stderr)
                return 1
        backend_url = f"http://127.0.0.1:{backend_port}"
        idp_url = f"http://127.0.0.1:{idp_port}"
        os.environ["DEMO_BACKEND_URL"] = backend_url
        os.environ["DEMO_IDP_URL"] = idp_url
        os.environ["DEMO_STATE_DIR"] = str(state_dir)
        os.environ["DEMO_CERTS_DIR"] = str(certs_dir)
        admin = _admin_listen()
        os.environ["DEMO_ADMIN_LISTEN"] = admin
        print(
            _banner(
                format_listen_address(listen_tls),
                format_listen_address(listen),
                certs_dir,
                backend_url,
                idp_url,
                state_dir,
                admin,
            ),
            flush=True,
        )
        overrides = Overrides(listen=listen, workers=workers, listen_tls=listen_tls)
        return serve(DEMO_CONFIG, overrides)
    finally:
        for process in processes:
            _stop(process)
