"""`ringwall bans`: list, add and remove bans through a running gateway's admin API.

The command reads `admin.listen` and `admin.token` from the gateway's
configuration file, so it needs no other settings. The gateway does the
work and writes the audit records, so a ban made here reaches every worker
at once, and with a Redis store every instance within a second.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ringwall.config.load import load_config
from ringwall.errors import ConfigError

TIMEOUT_SECONDS = 5.0


def add_bans_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("bans", help="list, add or remove client IP bans")
    actions = parser.add_subparsers(dest="bans_action", required=True, metavar="ACTION")
    for name, help_text in (
        ("list", "list the bans in force"),
        ("add", "ban a client IP"),
        ("remove", "lift the ban of a client IP"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument(
            "-c", "--config", required=True, type=Path, help="the gateway's YAML configuration"
        )
        if name != "list":
            action.add_argument("client", help="client IP address, such as 203.0.113.7")
        if name == "add":
            action.add_argument("--duration", default="1h", help="ban length (default 1h)")
            action.add_argument(
                "--reason", default="banned by an administrator", help="reason for the record"
            )


def run_bans(arguments: argparse.Namespace) -> int:
    try:
        config = load_config(arguments.config)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"{arguments.config}: {issue}", file=sys.stderr)
        return 2
    if config.admin is None:
        print(
            f"{arguments.config}: admin: missing; add an admin section with a token to manage bans",
            file=sys.stderr,
        )
        return 2
    host, port = config.admin.listen
    # A wildcard listener is reached on loopback.
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    token = config.admin.token.reveal()
    action = arguments.bans_action
    try:
        if action == "list":
            status, body = _call(host, port, token, "GET", "/bans", None)
        elif action == "add":
            document = {"duration": arguments.duration, "reason": arguments.reason}
            path = "/bans/" + quote(arguments.client, safe="")
            status, body = _call(host, port, token, "PUT", path, document)
        else:
            path = "/bans/" + quote(arguments.client, safe="")
            status, body = _call(host, port, token, "DELETE", path, None)
    except OSError as exc:
        print(f"cannot reach the admin API at {host}:{port}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        detail = body.get("detail", "") if isinstance(body, dict) else ""
        print(f"admin API request failed with status {status}: {detail}", file=sys.stderr)
        return 1
    _print(action, body)
    return 0


def _call(
    host: str, port: int, token: str, method: str, path: str, document: dict[str, Any] | None
) -> tuple[int, Any]:
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT_SECONDS)
    try:
        payload = json.dumps(document) if document is not None else None
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        connection.request(method, path, payload, headers)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, {}


def _print(action: str, body: Any) -> None:
    if action == "list":
        bans = body.get("bans", [])
        if not bans:
            print("no bans in force")
        for ban in bans:
            left = max(0, round(ban["until"] - time.time()))
            print(f"{ban['client']}\t{left} s left\tlevel {ban['level']}\t{ban['reason']}")
    elif action == "add":
        ban = body["ban"]
        print(f"banned {ban['client']} for {round(ban['until'] - time.time())} s")
    else:
        print(f"lifted the ban of {body['removed']}")
