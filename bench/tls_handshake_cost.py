"""Time the server side of a full TLS handshake in memory, with Ringwall's contexts and without.

Client and server run in this process and exchange their records through
`ssl.MemoryBIO` pairs, so no socket or event loop is involved. The script
counts only the server's CPU time (`time.thread_time`): creating its
`SSLObject` and its `do_handshake` calls. It compares Ringwall's
`ServerTls` context (SNI callback, per-certificate contexts, session
tickets) with a plain `ssl.SSLContext` that loads the same certificate, for
a client that sends a server name and one that sends none. The certificate
comes from `ringwall certs dev` in a temp dir.

    .venv/bin/python bench/tls_handshake_cost.py [--handshakes 300]
"""

from __future__ import annotations

import argparse
import ssl
import sys
import tempfile
import time
from pathlib import Path

from run import RINGWALL_BIN
from tls_setup import TlsFiles, make_certificates

from ringwall.config.tls import CertificateFiles, TlsListenerConfig
from ringwall.tls.context import ServerTls, new_ticket_secret

RUNS = 3


def server_handshake_seconds(
    server: ssl.SSLContext, client: ssl.SSLContext, server_name: str
) -> float:
    """Run one full handshake in memory and return the server side's CPU seconds."""
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(client_in, client_out, server_hostname=server_name)

    started = time.thread_time()
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    elapsed = time.thread_time() - started

    client_done = server_done = False
    while not (client_done and server_done):
        if not client_done:
            try:
                client_side.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        server_in.write(client_out.read())
        if not server_done:
            started = time.thread_time()
            try:
                server_side.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
            elapsed += time.thread_time() - started
        client_in.write(server_out.read())
    return elapsed


def best_microseconds(
    server: ssl.SSLContext, client: ssl.SSLContext, server_name: str, handshakes: int
) -> float:
    """Return the lowest mean over RUNS runs of `handshakes` handshakes, in microseconds."""
    means = []
    for _ in range(RUNS):
        total = sum(
            server_handshake_seconds(server, client, server_name) for _ in range(handshakes)
        )
        means.append(total / handshakes)
    return min(means) * 1_000_000


def contexts(files: TlsFiles) -> dict[str, ssl.SSLContext]:
    config = TlsListenerConfig(
        certificates=(CertificateFiles(cert=files.cert, key=files.key),),
        redirect_http=False,
    )
    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    plain.load_cert_chain(files.cert, files.key)
    return {"Ringwall ServerTls": ServerTls(config, new_ticket_secret()).context, "plain": plain}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--handshakes", type=int, default=300, help="handshakes per run (default: 300)"
    )
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ringwall-tls-handshake-cost-") as temp:
        files = make_certificates(RINGWALL_BIN, Path(temp))
        client = ssl.create_default_context(cafile=str(files.ca))
        # Python's client sends no server name for an IP address, though wrk
        # sends "127.0.0.1", so "localhost" is the case with a server name.
        for server_name, label in (("127.0.0.1", "no server name"), ("localhost", "localhost")):
            for name, server in contexts(files).items():
                cost = best_microseconds(server, client, server_name, arguments.handshakes)
                print(f"{name} context, {label}: {cost:.0f} µs server CPU per full handshake")
    return 0


if __name__ == "__main__":
    sys.exit(main())
