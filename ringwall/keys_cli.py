"""The `ringwall keys` command: create, list and revoke API keys in a key file.

Exit codes: 0 on success, 1 when the key file cannot be read or written,
and 2 for invalid arguments or a malformed key file.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ringwall.gateway.auth.api_keys import (
    ApiKeyNotFound,
    ApiKeyRecord,
    ApiKeyStore,
    KeyFileError,
    is_key_id,
)
from ringwall.revoke_cli import record_admin_action

DEFAULT_KEY_FILE = Path(".ringwall") / "api-keys.json"

_DURATION = re.compile(r"([1-9][0-9]{0,5})([smhd])", re.ASCII)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class _UsageError(Exception):
    """An invalid argument. The message names the problem and the fix."""


def parse_key_lifetime(text: str) -> int:
    """Parse a lifetime such as `90m`, `12h` or `30d` into seconds.

    The number is a positive integer of at most 6 digits, and the unit is
    one of s, m, h and d (seconds, minutes, hours, days).
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: expected a whole number and a unit s, m, h or d, "
            "such as 90m, 12h or 30d"
        )
    return int(match[1]) * _UNIT_SECONDS[match[2]]


def add_keys_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the `keys` command and its `create`, `list` and `revoke` subcommands."""
    keys = subparsers.add_parser("keys", help="create, list and revoke API keys")
    commands = keys.add_subparsers(dest="keys_command", required=True, metavar="KEYS_COMMAND")

    create = commands.add_parser("create", help="create an API key and print it once")
    _add_file_option(create)
    create.add_argument("--owner", required=True, help="subject that the key authenticates as")
    create.add_argument(
        "--role",
        dest="roles",
        action="append",
        default=[],
        metavar="ROLE",
        help="role granted to the key (repeat the option for several)",
    )
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        default=[],
        metavar="SCOPE",
        help="scope granted to the key (repeat the option for several)",
    )
    create.add_argument(
        "--plan",
        help="plan name, recorded with the key; rate limit tiers match roles and scopes, "
        "so give the key a scope such as plan:gold for a tier",
    )
    create.add_argument(
        "--expires-in",
        type=parse_key_lifetime,
        metavar="DURATION",
        help="lifetime such as 90m, 12h or 30d (default: never expires)",
    )
    create.add_argument("--description", default="", help="free text shown to operators")

    listing = commands.add_parser("list", help="list the keys, without secrets")
    _add_file_option(listing)

    revoke = commands.add_parser("revoke", help="revoke a key so it is rejected from now on")
    _add_file_option(revoke)
    revoke.add_argument("key_id", metavar="KEY_ID", help="id of the key, as shown by `list`")
    return keys


def _add_file_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--file",
        type=Path,
        default=DEFAULT_KEY_FILE,
        metavar="PATH",
        help=f"key file (default {DEFAULT_KEY_FILE} in the working directory)",
    )


def run_keys(arguments: argparse.Namespace, *, clock: Callable[[], float] = time.time) -> int:
    """Run the `keys` subcommand in `arguments` and return the exit code."""
    path: Path = arguments.file
    commands = {"create": _create, "list": _list, "revoke": _revoke}
    try:
        commands[arguments.keys_command](arguments, path, clock())
    except (_UsageError, KeyFileError) as exc:
        print(f"ringwall keys: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        filename = exc.filename if exc.filename is not None else path
        print(
            f"ringwall keys: I/O error on {filename}: {exc.strerror or exc}. "
            "Check the path and its permissions",
            file=sys.stderr,
        )
        return 1
    return 0


def _create(arguments: argparse.Namespace, path: Path, now: float) -> None:
    store = _load(path, missing_ok=True)
    expires_at = None if arguments.expires_in is None else now + arguments.expires_in
    try:
        record, key = store.create(
            arguments.owner,
            roles=arguments.roles,
            scopes=arguments.scopes,
            plan=arguments.plan,
            expires_at=expires_at,
            description=arguments.description,
            now=now,
        )
    except ValueError as exc:
        raise _UsageError(_name_option(str(exc))) from None
    _make_private_directory(path.parent)
    store.save(path)
    record_admin_action(path.parent / "audit.log", "api_key.created", record.id, now)
    print(f"key id:  {record.id}")
    print(f"API key: {key.reveal()}")
    print("This API key will not be shown again. Store it now, because the file keeps only a hash.")


# The option that sets each field, for `ApiKeyRecord` errors, which start with a field name.
_FIELD_OPTIONS = {
    "owner": "--owner",
    "roles": "--role",
    "scopes": "--scope",
    "plan": "--plan",
    "expires_at": "--expires-in",
    "description": "--description",
}


def _name_option(message: str) -> str:
    field_name, separator, problem = message.partition(": ")
    option = _FIELD_OPTIONS.get(field_name)
    return f"{option}: {problem}" if separator and option else message


def _list(arguments: argparse.Namespace, path: Path, now: float) -> None:
    records = _load(path).list()
    if not records:
        print(f"no API keys in {path}")
        return
    header = ("ID", "OWNER", "ROLES", "SCOPES", "PLAN", "CREATED", "EXPIRES", "REVOKED")
    rows = [header, *(_row(record) for record in records)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _row(record: ApiKeyRecord) -> tuple[str, ...]:
    return (
        record.id,
        record.owner,
        ",".join(record.roles) or "-",
        ",".join(record.scopes) or "-",
        record.plan or "-",
        _format_time(record.created_at),
        _format_time(record.expires_at),
        _format_time(record.revoked_at),
    )


def _format_time(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _revoke(arguments: argparse.Namespace, path: Path, now: float) -> None:
    key_id: str = arguments.key_id
    if not is_key_id(key_id):
        raise _UsageError(
            "invalid KEY_ID: expected a key id of 12 characters from a-z and 2-7, not a full key. "
            f"Run `ringwall keys list --file {path}` to see the ids"
        )
    store = _load(path)
    try:
        record = store.revoke(key_id, now)
    except ApiKeyNotFound:
        raise _UsageError(
            f"API key {key_id} not found in {path}. "
            f"Run `ringwall keys list --file {path}` to see the ids"
        ) from None
    except ValueError as exc:
        raise _UsageError(f"{exc}, so nothing changed") from None
    store.save(path)
    record_admin_action(path.parent / "audit.log", "api_key.revoked", record.id, now)
    print(f"revoked API key {record.id} of owner {record.owner}")


def _load(path: Path, *, missing_ok: bool = False) -> ApiKeyStore:
    # NOTE: the key file is not locked, so when two commands change the same
    # file at once, the later save drops the change of the earlier one.
    try:
        return ApiKeyStore.load(path)
    except FileNotFoundError:
        if missing_ok:
            return ApiKeyStore()
        raise _UsageError(
            f"key file {path} not found. Pass --file PATH, or create a key first "
            f"with `ringwall keys create --file {path} --owner NAME`"
        ) from None
    except KeyFileError as exc:
        raise KeyFileError(
            exc.source, f"{exc.problem}. Fix the file or restore it from a backup"
        ) from None


def _make_private_directory(directory: Path) -> None:
    """Create `directory` with mode 0700, and any missing parents with default modes."""
    if directory.is_dir():
        return
    directory.mkdir(mode=0o700, parents=True)
    # mkdir applies the umask, so set the mode explicitly.
    directory.chmod(0o700)
