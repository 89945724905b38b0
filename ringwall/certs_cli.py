"""The `ringwall certs dev` command: a local development CA and the certificates it signs.

A run keeps a valid CA, so clients that trust its `ca.pem` keep working. It
issues the server and client certificates again when their files are
missing, when they expire within 30 days, or when they do not match the CA.
`--force` replaces the CA and both certificates.

Exit codes: 0 on success, 1 when the CA files cannot be used or a file
cannot be read or written, and 2 for invalid arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import itertools
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from ringwall.gateway.auth.api_keys import write_file_atomically
from ringwall.tls.devca import (
    CA_FILE,
    CA_KEY_FILE,
    CLIENT_FILE,
    CLIENT_KEY_FILE,
    LEAF_PROFILES,
    RENEW_BEFORE,
    SERVER_FILE,
    SERVER_KEY_FILE,
    CaInvalid,
    CertifiedKey,
    LeafProfile,
    certificate_pem,
    create_ca,
    issue_leaf,
    leaf_file_pem,
    leaf_reissue_reason,
    load_ca,
    private_key_pem,
)

DEFAULT_CERTS_DIR = Path(".ringwall") / "certs"
# The address in the printed curl commands: loopback, on the usual alternative HTTPS port.
EXAMPLE_URL = "https://127.0.0.1:8443/api/products"

_PRIVATE_MODE = 0o600
_PUBLIC_MODE = 0o644


class _CertsError(Exception):
    """A run that cannot go on. The message names the path and the fix."""


@dataclass(frozen=True, slots=True)
class _Outcome:
    """The action a run took on one pair of files, for the printed summary."""

    files: str
    action: str
    not_after: datetime.datetime
    subject: str


def add_certs_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the `certs` command and its `dev` subcommand."""
    certs = subparsers.add_parser("certs", help="create TLS certificates for development")
    commands = certs.add_subparsers(dest="certs_command", required=True, metavar="CERTS_COMMAND")
    dev = commands.add_parser(
        "dev",
        help="create a development CA and a server and client certificate signed by it",
        description="Create a local development CA (ca.pem, ca-key.pem), a server certificate "
        "for localhost, ringwall.localhost, 127.0.0.1 and ::1 (server.pem with the CA after "
        "it, server-key.pem) and a client certificate for mutual TLS (client.pem, "
        "client-key.pem). A run keeps an existing CA and issues the other certificates again "
        "when they are missing, expire within 30 days or do not match the CA. The keys are "
        "not encrypted: use these files for development only.",
    )
    dev.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_CERTS_DIR,
        metavar="DIR",
        help=f"directory for the files, created with mode 0700 if missing "
        f"(default {DEFAULT_CERTS_DIR} in the working directory)",
    )
    dev.add_argument(
        "--force",
        action="store_true",
        help="create a new CA and new certificates even if the existing ones are valid; "
        "clients must then trust the new ca.pem",
    )
    return certs


def run_certs(arguments: argparse.Namespace, *, clock: Callable[[], float] = time.time) -> int:
    """Run the `certs` subcommand in `arguments` and return the exit code."""
    directory: Path = arguments.out
    now = datetime.datetime.fromtimestamp(clock(), datetime.UTC)
    try:
        outcomes = _write_dev_files(directory, now, force=arguments.force)
    except _CertsError as exc:
        print(f"ringwall certs dev: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        filename = exc.filename if exc.filename is not None else directory
        print(
            f"ringwall certs dev: I/O error on {filename}: {exc.strerror or exc}. "
            "Check the path and its permissions",
            file=sys.stderr,
        )
        return 1
    _print_summary(directory, outcomes, now, force=arguments.force)
    return 0


def ensure_dev_certificates(directory: Path, now: datetime.datetime) -> None:
    """Create the development CA and certificates in `directory` where missing or expiring.

    Raises OSError, or ValueError with the fix, when the directory cannot be used.
    """
    try:
        _write_dev_files(directory, now, force=False)
    except _CertsError as exc:
        raise ValueError(str(exc)) from None


def _write_dev_files(directory: Path, now: datetime.datetime, *, force: bool) -> list[_Outcome]:
    _make_private_directory(directory)
    with _locked(directory):
        if force:
            ca, ca_action = _create_ca(directory, now), "created"
        else:
            ca, ca_action = _load_or_create_ca(directory, now)
        outcomes = [_Outcome(f"{CA_FILE}, {CA_KEY_FILE}", ca_action, _not_after(ca), "")]
        for profile in LEAF_PROFILES:
            outcomes.append(
                _refresh_leaf(directory, ca, profile, now, ca_is_new=ca_action != "kept")
            )
    return outcomes


def _load_or_create_ca(directory: Path, now: datetime.datetime) -> tuple[CertifiedKey, str]:
    certificate_path = directory / CA_FILE
    key_path = directory / CA_KEY_FILE
    certificate = _read_ca_file(directory, certificate_path)
    key = _read_ca_file(directory, key_path)
    if certificate is None and key is None:
        return _create_ca(directory, now), "created"
    if certificate is None or key is None:
        missing, present = (
            (certificate_path, key_path) if certificate is None else (key_path, certificate_path)
        )
        raise _CertsError(f"{missing} not found, but {present} exists. {_ca_fix(directory)}")
    try:
        return load_ca(certificate, key, now), "kept"
    except CaInvalid as exc:
        raise _CertsError(
            f"invalid CA file {directory / exc.file_name}: {exc.problem}. {_ca_fix(directory)}"
        ) from None


def _read_ca_file(directory: Path, path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _CertsError(
            f"cannot read {path}: {exc.strerror or exc}. {_ca_fix(directory)}"
        ) from None


def _ca_fix(directory: Path) -> str:
    return (
        f"Restore readable, matching {CA_FILE} and {CA_KEY_FILE} files, or run "
        f"`{_force_command(directory)}` to create a new CA, which clients must then trust "
        f"in place of the old {CA_FILE}"
    )


def _force_command(directory: Path) -> str:
    return shlex.join(["ringwall", "certs", "dev", "--out", str(directory), "--force"])


def _create_ca(directory: Path, now: datetime.datetime) -> CertifiedKey:
    ca = create_ca(now)
    # A run that stops between the two writes leaves a missing or mismatched
    # file, which the next run reports with the fix (--force).
    _write(directory / CA_KEY_FILE, private_key_pem(ca.key), _PRIVATE_MODE)
    _write(directory / CA_FILE, certificate_pem(ca.certificate), _PUBLIC_MODE)
    return ca


def _refresh_leaf(
    directory: Path,
    ca: CertifiedKey,
    profile: LeafProfile,
    now: datetime.datetime,
    *,
    ca_is_new: bool,
) -> _Outcome:
    certificate_path = directory / profile.certificate_file
    key_path = directory / profile.key_file
    files = f"{profile.certificate_file}, {profile.key_file}"
    subject = ", ".join(str(name.value) for name in profile.names)
    reason = "the CA is new" if ca_is_new else _missing_reason(certificate_path, key_path)
    if reason is None:
        chain_pem = certificate_path.read_bytes()
        reason = leaf_reissue_reason(chain_pem, key_path.read_bytes(), ca.certificate, profile, now)
        if reason is None:
            # leaf_reissue_reason parsed the same bytes without an error.
            leaf = x509.load_pem_x509_certificates(chain_pem)[0]
            return _Outcome(files, "kept", leaf.not_valid_after_utc, subject)

    issued = issue_leaf(ca, profile, now)
    # A run that stops between the two writes leaves the certificate missing or
    # not matching the new key, so the next run issues both again.
    _write(key_path, private_key_pem(issued.key), _PRIVATE_MODE)
    _write(
        certificate_path, leaf_file_pem(profile, issued.certificate, ca.certificate), _PUBLIC_MODE
    )
    return _Outcome(files, f"issued because {reason}", _not_after(issued), subject)


def _missing_reason(certificate_path: Path, key_path: Path) -> str | None:
    for path in (certificate_path, key_path):
        if not path.exists():
            return f"{path.name} is missing"
    return None


def _make_private_directory(directory: Path) -> None:
    """Create `directory` and each missing parent with mode 0700."""
    if directory.is_dir():
        return
    if directory.exists():
        raise _CertsError(
            f"{directory} exists and is not a directory. Pass --out DIR with a directory"
        )
    missing = [directory]
    missing.extend(itertools.takewhile(lambda parent: not parent.exists(), directory.parents))
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        # mkdir applies the umask, so set the mode explicitly.
        path.chmod(0o700)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on `directory` until the block ends.

    Two runs at once could otherwise each create a CA, and leave the
    certificate of one next to the key of the other.
    """
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        # Closing the descriptor releases the lock.
        os.close(descriptor)


def _write(path: Path, pem: bytes, mode: int) -> None:
    # Atomic: a temporary file in the same directory, flushed, then renamed over `path`.
    write_file_atomically(path, pem.decode("ascii"), mode)


def _print_summary(
    directory: Path, outcomes: list[_Outcome], now: datetime.datetime, *, force: bool
) -> None:
    print(f"Development CA and certificates in {directory} (not for production use):")
    for outcome in outcomes:
        line = f"  {outcome.files}: {outcome.action}, valid until {_format_date(outcome.not_after)}"
        print(f"{line} for {outcome.subject}" if outcome.subject else line)

    ca = outcomes[0]
    if ca.action == "created" and force:
        print(f"The CA is new: clients that trusted the old {CA_FILE} must trust this one.")
    if ca.not_after - now < RENEW_BEFORE:
        print(
            f"warning: the CA expires on {_format_date(ca.not_after)}, and certificates it signs "
            f"end then too. Run `{_force_command(directory)}` to create a new CA",
            file=sys.stderr,
        )

    ca_path = shlex.quote(str(directory / CA_FILE))
    client_path = shlex.quote(str(directory / CLIENT_FILE))
    client_key_path = shlex.quote(str(directory / CLIENT_KEY_FILE))
    print()
    print(
        f"For a Ringwall HTTPS listener on 127.0.0.1:8443 (server.tls) with {SERVER_FILE}\n"
        f"and {SERVER_KEY_FILE}, curl verifies the server with the CA, and the second\n"
        "command adds the client certificate for mutual TLS:"
    )
    print(f"  curl --cacert {ca_path} {EXAMPLE_URL}")
    print(f"  curl --cacert {ca_path} --cert {client_path} --key {client_key_path} {EXAMPLE_URL}")


def _not_after(certified: CertifiedKey) -> datetime.datetime:
    return certified.certificate.not_valid_after_utc


def _format_date(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%d")
