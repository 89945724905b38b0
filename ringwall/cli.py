"""The `ringwall` command: run, check, demo, certs, and the state commands.

The state commands are keys, token, revoke and bans.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ringwall import __version__
from ringwall.bans_cli import add_bans_parser, run_bans
from ringwall.certs_cli import add_certs_parser, run_certs
from ringwall.config.load import load_config
from ringwall.config.model import Config
from ringwall.config.types import parse_listen_address
from ringwall.edge.waf.engines import policies as waf_policies
from ringwall.errors import ConfigError
from ringwall.keys_cli import add_keys_parser, run_keys
from ringwall.openapi_cli import add_openapi_parser, run_import_openapi
from ringwall.revoke_cli import add_revoke_parser, run_revoke
from ringwall.server.allocator import restart_with_tuned_allocator
from ringwall.tls.context import check_tls_files
from ringwall.token_cli import add_token_parser, run_token


def _listen(value: str) -> tuple[str, int]:
    try:
        return parse_listen_address(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _workers(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 256:
        raise argparse.ArgumentTypeError("expected a number of processes from 1 to 256")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ringwall", description="Ringwall, a defense-in-depth API security gateway."
    )
    parser.add_argument("--version", action="version", version=f"ringwall {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the gateway with a configuration file")
    run.add_argument("-c", "--config", required=True, type=Path, help="YAML configuration file")
    run.add_argument(
        "--listen", type=_listen, help="HOST:PORT to listen on (overrides server.listen)"
    )
    run.add_argument(
        "--listen-tls",
        type=_listen,
        help="HOST:PORT of the HTTPS listener (overrides server.tls.listen)",
    )
    run.add_argument(
        "--workers", type=_workers, help="number of worker processes (overrides server.workers)"
    )

    check = commands.add_parser("check", help="validate a configuration file and exit")
    check.add_argument("-c", "--config", required=True, type=Path, help="YAML configuration file")

    add_keys_parser(commands)
    add_token_parser(commands)
    add_revoke_parser(commands)
    add_bans_parser(commands)
    add_openapi_parser(commands)
    add_certs_parser(commands)

    demo = commands.add_parser("demo", help="run the demo backend with the gateway in front of it")
    demo.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", 8080),
        help="gateway HOST:PORT (default 127.0.0.1:8080)",
    )
    demo.add_argument(
        "--listen-tls",
        type=_listen,
        default=("127.0.0.1", 8443),
        help="gateway HTTPS HOST:PORT (default 127.0.0.1:8443)",
    )
    demo.add_argument(
        "--workers", type=_workers, default=1, help="number of worker processes (default 1)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    if arguments.command == "check":
        return check(arguments.config)
    if arguments.command == "keys":
        return run_keys(arguments)
    if arguments.command == "token":
        return run_token(arguments)
    if arguments.command == "revoke":
        return run_revoke(arguments)
    if arguments.command == "bans":
        return run_bans(arguments)
    if arguments.command == "import-openapi":
        return run_import_openapi(arguments)
    if arguments.command == "certs":
        return run_certs(arguments)
    if arguments.command == "run":
        from ringwall.server.supervisor import Overrides, serve

        if argv is None and _runs_waf(arguments.config):
            # Started as a program: start again with glibc tuned for the WAF.
            restart_with_tuned_allocator(sys.orig_argv[1:])
        overrides = Overrides(arguments.listen, arguments.workers, arguments.listen_tls)
        return serve(arguments.config, overrides)
    from ringwall.demo.runner import run_demo

    return run_demo(arguments.listen, arguments.workers, arguments.listen_tls)


def check(path: Path) -> int:
    """Print each problem of the file at `path` on its own line; return 0 if valid, else 2."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"{path}: {issue}", file=sys.stderr)
        return 2
    waf_problem = load_waf_rules(config)
    if waf_problem:
        print(f"{path}: {waf_problem}", file=sys.stderr)
        return 2
    tls_problem = check_tls_files(config)
    if tls_problem:
        print(f"{path}: {tls_problem}", file=sys.stderr)
        return 2
    print(
        f"{path}: valid ({len(config.routes)} routes, {len(config.upstreams)} upstreams)",
    )
    return 0


def _runs_waf(path: Path) -> bool:
    """Return whether the configuration at `path` has a WAF policy, or False if it is invalid."""
    try:
        return bool(waf_policies(load_config(path)))
    except ConfigError:
        return False


def load_waf_rules(config: Config) -> str:
    """Load the WAF rules of `config`; return "" or the rule error with its file and line."""
    if not waf_policies(config):
        return ""
    # Imported here: only a configuration with a WAF loads libmodsecurity.
    from ringwall.edge.waf.engine import WafLoadError
    from ringwall.edge.waf.engines import preload

    try:
        preload(config)
    except WafLoadError as exc:
        where = f"{exc.file}:{exc.line}: " if exc.file else ""
        return f"waf: {where}{exc}"
    return ""


if __name__ == "__main__":
    sys.exit(main())
