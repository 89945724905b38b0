"""The `ringwall keys` command: create, list and revoke API keys."""

import argparse
import json
import os
import re
import stat
from pathlib import Path

import pytest

from ringwall.gateway.auth.api_keys import REVOKED, ApiKeyInvalid, ApiKeyStore
from ringwall.keys_cli import DEFAULT_KEY_FILE, add_keys_parser, parse_key_lifetime, run_keys

NOW = 1_800_000_000.0
KEY_LINE = re.compile(r"^API key: (rw_[a-z2-7]{12}_[A-Za-z0-9_-]{43})$", re.MULTILINE)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ringwall")
    add_keys_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def run(argv: list[str], now: float = NOW) -> int:
    arguments = build_parser().parse_args(["keys", *argv])
    return run_keys(arguments, clock=lambda: now)


def create_key(
    capsys: pytest.CaptureFixture[str], file: Path, *extra: str, now: float = NOW
) -> str:
    assert run(["create", "--file", str(file), "--owner", "alice", *extra], now=now) == 0
    match = KEY_LINE.search(capsys.readouterr().out)
    assert match is not None
    return match[1]


# create


def test_create_prints_key_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "keys.json"
    assert run(["create", "--file", str(file), "--owner", "alice"]) == 0
    output = capsys.readouterr()
    keys = KEY_LINE.findall(output.out)
    assert len(keys) == 1
    key = keys[0]
    key_id = key[3:15]
    secret = key[-43:]
    assert output.out.count(secret) == 1
    assert f"key id:  {key_id}\n" in output.out
    assert "will not be shown again" in output.out
    assert output.err == ""
    assert secret not in file.read_text()


def test_create_key_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "keys.json"
    key = create_key(
        capsys,
        file,
        "--role",
        "admin",
        "--role",
        "reader",
        "--scope",
        "orders:read",
        "--plan",
        "gold",
        "--description",
        "nightly export",
    )
    record = ApiKeyStore.load(file).verify(key, NOW)
    assert record.owner == "alice"
    assert record.roles == ("admin", "reader")
    assert record.scopes == ("orders:read",)
    assert record.plan == "gold"
    assert record.description == "nightly export"
    assert record.created_at == NOW
    assert record.expires_at is None


def test_create_adds_to_existing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "keys.json"
    first = create_key(capsys, file)
    second = create_key(capsys, file)
    store = ApiKeyStore.load(file)
    assert len(store) == 2
    assert store.verify(first, NOW).id == first[3:15]
    assert store.verify(second, NOW).id == second[3:15]


def test_create_file_mode_0600(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "keys.json"
    create_key(capsys, file)
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    create_key(capsys, file)
    assert stat.S_IMODE(file.stat().st_mode) == 0o600


def test_create_leaves_no_temporary_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "keys.json"
    for _ in range(3):
        create_key(capsys, file)
    assert sorted(os.listdir(tmp_path)) == ["audit.log", "keys.json"]


def test_create_default_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(["create", "--owner", "alice"]) == 0
    capsys.readouterr()
    directory = tmp_path / ".ringwall"
    assert Path(".ringwall/api-keys.json") == DEFAULT_KEY_FILE
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "api-keys.json").stat().st_mode) == 0o600
    assert sorted(os.listdir(directory)) == ["api-keys.json", "audit.log"]


def test_create_keeps_existing_directory_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "shared"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    create_key(capsys, directory / "keys.json")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755


def test_create_nested_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "a" / "b" / "keys.json"
    create_key(capsys, file)
    assert stat.S_IMODE(file.parent.stat().st_mode) == 0o700
    assert file.exists()


def test_create_expires_in(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "keys.json"
    key = create_key(capsys, file, "--expires-in", "1h")
    store = ApiKeyStore.load(file)
    assert store.verify(key, NOW + 3599).expires_at == NOW + 3600
    with pytest.raises(ApiKeyInvalid) as caught:
        store.verify(key, NOW + 3600)
    assert caught.value.reason == "API key expired"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--owner", "alice smith", "--owner: invalid value 'alice smith'"),
        ("--role", "read write", "--role: invalid value 'read write'"),
        ("--scope", "", "--scope: invalid value ''"),
        ("--plan", "gold!", "--plan: invalid value 'gold!'"),
        ("--description", "a\nb", "--description: contains control"),
    ],
)
def test_create_rejects_invalid_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    file = tmp_path / "keys.json"
    argv = ["create", "--file", str(file), "--owner", "alice", option, value]
    assert run(argv) == 2
    output = capsys.readouterr()
    assert output.out == ""
    assert output.err.startswith(f"ringwall keys: {message}")
    assert output.err.count("\n") == 1
    assert not file.exists()


def test_create_rejects_duplicate_role(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["create", "--file", str(tmp_path / "k.json"), "--owner", "a", "--role", "x"]
    assert run([*argv, "--role", "x"]) == 2
    assert capsys.readouterr().err == "ringwall keys: --role: duplicate value 'x'\n"


def test_create_requires_owner(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        run(["create", "--file", str(tmp_path / "keys.json")])
    assert caught.value.code == 2


# Durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("90m", 5400), ("12h", 43200), ("30d", 2_592_000), ("999999d", 86_399_913_600)],
)
def test_parse_key_lifetime(text: str, seconds: int) -> None:
    assert parse_key_lifetime(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "30", "d", "0d", "030d", "1.5h", "-1d", "30D", "30 d", " 30d", "1w", "1000000d"]
)
def test_parse_key_lifetime_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected a whole number and a unit"):
        parse_key_lifetime(text)


def test_create_invalid_expires_in(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        run(["create", "--file", str(tmp_path / "k.json"), "--owner", "a", "--expires-in", "2w"])
    assert caught.value.code == 2
    assert "invalid duration '2w'" in capsys.readouterr().err


# list


def test_list_shows_metadata_without_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "keys.json"
    key = create_key(capsys, file, "--role", "admin", "--role", "ops", "--plan", "gold")
    create_key(capsys, file, "--scope", "orders:read", "--expires-in", "1d", now=NOW + 60)
    assert run(["list", "--file", str(file)]) == 0
    lines = capsys.readouterr().out.splitlines()

    assert lines[0].split() == [
        "ID",
        "OWNER",
        "ROLES",
        "SCOPES",
        "PLAN",
        "CREATED",
        "EXPIRES",
        "REVOKED",
    ]
    assert len(lines) == 3
    first = lines[1].split()
    assert first == [key[3:15], "alice", "admin,ops", "-", "gold", "2027-01-15T08:00:00Z", "-", "-"]
    second = lines[2].split()
    assert second[3] == "orders:read"
    assert second[5] == "2027-01-15T08:01:00Z"
    assert second[6] == "2027-01-16T08:01:00Z"

    output = "\n".join(lines)
    entries = json.loads(file.read_text())["keys"]
    assert key[-43:] not in output
    for entry in entries:
        assert entry["secret_sha256"] not in output


def test_list_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "keys.json"
    file.write_text('{"version": 1, "keys": []}')
    assert run(["list", "--file", str(file)]) == 0
    assert capsys.readouterr().out == f"no API keys in {file}\n"


def test_list_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "absent.json"
    assert run(["list", "--file", str(file)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"ringwall keys: key file {file} not found.")
    assert "ringwall keys create" in error


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "invalid JSON at line 1 column 2"),
        ('{"version": 1, "keys": [], "keys": []}', "duplicate member 'keys'"),
        ('{"version": 1, "keys": [{"id": "x"}]}', "$.keys[0].created_at: missing member"),
    ],
)
def test_list_malformed_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, problem: str
) -> None:
    file = tmp_path / "keys.json"
    file.write_text(text)
    assert run(["list", "--file", str(file)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"ringwall keys: {file}: ")
    assert problem in error
    assert error.endswith(". Fix the file or restore it from a backup\n")
    assert error.count("\n") == 1


def test_list_unreadable_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A directory cannot be read as a file, even by root.
    assert run(["list", "--file", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"ringwall keys: I/O error on {tmp_path}: Is a directory.")


def test_create_unwritable_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert run(["create", "--file", str(blocker / "keys.json"), "--owner", "a"]) == 1
    output = capsys.readouterr()
    assert "rw_" not in output.out
    assert output.err.startswith("ringwall keys: I/O error on")


# revoke


def test_revoke_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "keys.json"
    key = create_key(capsys, file)
    key_id = key[3:15]
    assert run(["revoke", "--file", str(file), key_id], now=NOW + 60) == 0
    assert capsys.readouterr().out == f"revoked API key {key_id} of owner alice\n"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["audit.log", "keys.json"]
    actions = [
        json.loads(line)["action"] for line in (tmp_path / "audit.log").read_text().splitlines()
    ]
    assert actions == ["api_key.created", "api_key.revoked"]

    store = ApiKeyStore.load(file)
    assert store.list()[0].revoked_at == NOW + 60
    with pytest.raises(ApiKeyInvalid) as caught:
        store.verify(key, NOW + 61)
    assert caught.value.reason == REVOKED

    assert run(["list", "--file", str(file)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[-1] == "2027-01-15T08:01:00Z"


def test_revoke_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "keys.json"
    key_id = create_key(capsys, file)[3:15]
    assert run(["revoke", "--file", str(file), key_id]) == 0
    capsys.readouterr()
    assert run(["revoke", "--file", str(file), key_id]) == 2
    assert capsys.readouterr().err == (
        f"ringwall keys: API key {key_id} is already revoked, so nothing changed\n"
    )


def test_revoke_unknown_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "keys.json"
    create_key(capsys, file)
    before = file.read_text()
    assert run(["revoke", "--file", str(file), "abcdefgh2345"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"ringwall keys: API key abcdefgh2345 not found in {file}.")
    assert "ringwall keys list" in error
    assert file.read_text() == before


def test_revoke_full_key_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "keys.json"
    key = create_key(capsys, file)
    assert run(["revoke", "--file", str(file), key]) == 2
    error = capsys.readouterr().err
    assert "invalid KEY_ID: expected a key id of 12 characters" in error
    assert key not in error


def test_revoke_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["revoke", "--file", str(tmp_path / "absent.json"), "abcdefgh2345"]) == 2
    assert "not found" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
