"""Certificates, configs and the wrk wrapper for the HTTPS systems of the benchmark.

The nginx-tls and ringwall-tls systems serve the same ECDSA P-256 certificate
from `ringwall certs dev`. The *-tls-handshake systems run wrk with
`Connection: close` and with the LD_PRELOAD library built from
bench/wrk_full_handshakes.c, so that every request opens a new connection
with a full handshake.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

# nginx gets the cipher list of Ringwall's `profile: intermediate`: Mozilla's
# intermediate list without its DHE suites.
from ringwall.tls.context import INTERMEDIATE_CIPHERS

BENCH_DIR = Path(__file__).resolve().parent
FULL_HANDSHAKES_SOURCE = BENCH_DIR / "wrk_full_handshakes.c"
# The environment variable that names the file the wrapper writes its counts to.
HANDSHAKE_COUNTS_ENV = "WRK_HANDSHAKE_COUNTS"

# The groups of Ringwall's listener (X25519:P-256:P-384) in nginx's spelling.
NGINX_ECDH_CURVE = "X25519:prime256v1:secp384r1"


class TlsSetupError(RuntimeError):
    """Raised when the certificates or the wrk wrapper cannot be made."""


@dataclass(frozen=True)
class TlsFiles:
    """The server certificate chain, its key and the CA that clients trust."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class HandshakeCounts:
    """Handshakes that wrk completed during one run, as the wrapper counted them."""

    full: int
    resumed: int


def make_certificates(ringwall_bin: Path, prefix: Path) -> TlsFiles:
    """Create the dev CA and server certificate in PREFIX/certs, once per run."""
    directory = prefix / "certs"
    files = TlsFiles(directory / "server.pem", directory / "server-key.pem", directory / "ca.pem")
    if files.cert.exists() and files.key.exists():
        return files
    completed = subprocess.run(
        [str(ringwall_bin), "certs", "dev", "--out", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise TlsSetupError(
            f"`ringwall certs dev` exited with status {completed.returncode}: "
            + (completed.stderr or completed.stdout).strip()
        )
    return files


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """Return a client context that trusts only the dev CA, for the readiness probes."""
    return ssl.create_default_context(cafile=str(files.ca))


def nginx_tls_directives(files: TlsFiles) -> str:
    """Return the ssl_* directives of the nginx-tls systems: Mozilla intermediate, tickets on."""
    lines = (
        f"ssl_certificate {files.cert};",
        f"ssl_certificate_key {files.key};",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        f"ssl_ciphers {INTERMEDIATE_CIPHERS};",
        "ssl_prefer_server_ciphers off;",
        f"ssl_ecdh_curve {NGINX_ECDH_CURVE};",
        "ssl_session_cache shared:MozSSL:10m;",
        "ssl_session_timeout 1d;",
        "ssl_session_tickets on;",
    )
    return "\n".join(f"        {line}" for line in lines)


def ringwall_tls_config(files: TlsFiles, session_tickets: bool = True) -> dict[str, object]:
    """Return the ringwall-tls config: the route of examples/minimal.yaml behind server.tls.

    `redirect_http: false` keeps the plain listener serving the route, which
    the harness does not measure. `run.py` sets both listen addresses on the
    command line.
    """
    return {
        "server": {
            "tls": {
                "profile": "intermediate",
                "certificates": [{"cert": str(files.cert), "key": str(files.key)}],
                "redirect_http": False,
                "session_tickets": session_tickets,
            }
        },
        "upstreams": {"app": {"targets": ["${UPSTREAM_URL}"]}},
        "routes": [{"name": "all", "path": "/", "upstream": "app", "auth": "none"}],
    }


def write_ringwall_tls_config(prefix: Path, files: TlsFiles) -> Path:
    path = prefix / "ringwall-tls.yaml"
    path.write_text(yaml.safe_dump(ringwall_tls_config(files), sort_keys=False))
    return path


def build_full_handshakes_library(prefix: Path) -> Path:
    """Compile bench/wrk_full_handshakes.c into PREFIX, once per run, and return the library."""
    library = prefix / "wrk_full_handshakes.so"
    if library.exists():
        return library
    compiler = shutil.which("gcc")
    if compiler is None:
        raise TlsSetupError("gcc not found on PATH. Run `make setup` to install it.")
    completed = subprocess.run(
        [
            compiler,
            "-shared",
            "-fPIC",
            "-O2",
            "-Wall",
            "-o",
            str(library),
            str(FULL_HANDSHAKES_SOURCE),
            "-ldl",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise TlsSetupError(f"gcc failed to build {FULL_HANDSHAKES_SOURCE}: {completed.stderr}")
    return library


def parse_handshake_counts(text: str) -> HandshakeCounts:
    """Parse the "full N" and "resumed N" lines that the wrk wrapper writes."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key in ("full", "resumed") and value.strip().isdigit():
            counts[key] = int(value)
    if set(counts) != {"full", "resumed"}:
        raise ValueError(f"invalid handshake counts, expected full and resumed lines: {text!r}")
    return HandshakeCounts(full=counts["full"], resumed=counts["resumed"])
