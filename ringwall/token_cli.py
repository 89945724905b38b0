"""The `ringwall token` command: mint a JWT signed by the demo issuer's key.

The command only reads the key that `ringwall demo` created in the state
directory, and never creates one, so its tokens always match the key that a
running demo publishes.

Exit codes: 0 on success, 1 when the key file cannot be read, and 2 for
invalid arguments, a missing key or an invalid key file.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ringwall.demo.issuer import (
    DEFAULT_STATE_DIR,
    DEFAULT_TTL,
    DEMO_AUDIENCE,
    DEMO_ISSUER,
    MAX_TTL,
    IssuerKeyMissing,
    IssuerStateError,
    load_issuer,
)

# The option that sets each `DemoIssuer.mint` parameter, for its errors,
# which start with the parameter name.
_PARAMETER_OPTIONS = {
    "subject": "--sub",
    "roles": "--role",
    "scopes": "--scope",
    "accounts": "--accounts",
    "audience": "--aud",
    "ttl": "--ttl",
}


def parse_ttl(text: str) -> int:
    """Parse a token lifetime in whole seconds, from -MAX_TTL to MAX_TTL."""
    try:
        seconds = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid lifetime {text!r}: expected whole seconds, such as 300 or -120"
        ) from None
    if not -MAX_TTL <= seconds <= MAX_TTL:
        raise argparse.ArgumentTypeError(
            f"invalid lifetime {seconds}: expected {-MAX_TTL} to {MAX_TTL} seconds"
        )
    return seconds


def parse_accounts(text: str) -> list[str]:
    """Parse a comma-separated list of account ids, such as `acc-1001,acc-1002`."""
    accounts = [account.strip() for account in text.split(",")]
    if not all(accounts):
        raise argparse.ArgumentTypeError(
            f"invalid account list {text!r}: expected account ids separated by commas, "
            "such as acc-1001,acc-1002"
        )
    return accounts


def add_token_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the `token` command."""
    token = subparsers.add_parser(
        "token",
        help="print a JWT signed by the demo issuer, for requests to the demo",
        description=f"Print a JWT (RS256) from the demo issuer {DEMO_ISSUER}, signed with the "
        "key that `ringwall demo` created in the state directory.",
    )
    token.add_argument(
        "--sub", required=True, metavar="SUBJECT", help="subject (sub claim), such as a user id"
    )
    token.add_argument(
        "--role",
        dest="roles",
        action="append",
        default=[],
        metavar="ROLE",
        help="role for the roles claim (repeat the option for several)",
    )
    token.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        default=[],
        metavar="SCOPE",
        help="scope for the space-separated scope claim (repeat the option for several)",
    )
    token.add_argument(
        "--accounts",
        type=parse_accounts,
        action="extend",
        default=[],
        metavar="ID[,ID...]",
        help="comma-separated account ids for the accounts claim",
    )
    token.add_argument("--aud", default=DEMO_AUDIENCE, help=f"aud claim (default: {DEMO_AUDIENCE})")
    token.add_argument(
        "--ttl",
        type=parse_ttl,
        default=DEFAULT_TTL,
        metavar="SECONDS",
        help=f"lifetime in seconds, {-MAX_TTL} to {MAX_TTL} (default: {DEFAULT_TTL}). "
        "A negative value gives a token that expired that many seconds ago. Verifiers "
        "allow some clock skew (Ringwall 30 seconds by default), so use -60 or less "
        "to get a token that they reject as expired",
    )
    token.add_argument(
        "--state",
        type=Path,
        default=DEFAULT_STATE_DIR,
        metavar="DIR",
        help=f"demo state directory with the issuer key "
        f"(default: {DEFAULT_STATE_DIR} in the working directory)",
    )
    return token


def run_token(arguments: argparse.Namespace, *, clock: Callable[[], float] = time.time) -> int:
    """Print one token for the `token` command in `arguments` and return the exit code."""
    state_dir: Path = arguments.state
    try:
        issuer = load_issuer(state_dir)
        token = issuer.mint(
            arguments.sub,
            roles=arguments.roles,
            scopes=arguments.scopes,
            accounts=arguments.accounts,
            audience=arguments.aud,
            ttl=arguments.ttl,
            now=clock(),
        )
    except IssuerKeyMissing as exc:
        print(
            f"ringwall token: no demo issuer key in {state_dir} ({exc.key_path} not found). "
            "Run `ringwall demo` first, which creates the key, or pass --state DIR "
            "with the state directory of the running demo",
            file=sys.stderr,
        )
        return 2
    except IssuerStateError as exc:
        print(f"ringwall token: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"ringwall token: {_name_option(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        filename = exc.filename if exc.filename is not None else state_dir
        print(
            f"ringwall token: I/O error on {filename}: {exc.strerror or exc}. "
            "Check the path and its permissions",
            file=sys.stderr,
        )
        return 1
    print(token)
    return 0


def _name_option(message: str) -> str:
    parameter, separator, problem = message.partition(": ")
    option = _PARAMETER_OPTIONS.get(parameter)
    return f"{option}: {problem}" if separator and option else message
