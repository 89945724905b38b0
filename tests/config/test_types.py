"""Tests for ringwall.config.types: durations, sizes, listen addresses and secrets."""

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from ringwall.config.model import Model
from ringwall.config.types import (
    ByteSize,
    Duration,
    ListenAddress,
    Secret,
    SecretValue,
    format_listen_address,
    parse_duration,
    parse_listen_address,
    parse_secret,
    parse_size,
)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (10, 10.0),
        (2.5, 2.5),
        (0, 0.0),
        ("10", 10.0),
        ("10s", 10.0),
        ("1.5s", 1.5),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        (" 10 s ", 10.0),
        ("0ms", 0.0),
    ],
)
def test_duration_valid(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [True, False, None, "", "s", "10x", "1d", "-1", "-1s", "1.s", "10 ms ms", [10]],
)
def test_duration_invalid(value: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", [-1, -0.5])
def test_duration_negative_number(value: float) -> None:
    with pytest.raises(ValueError, match="0 or more seconds"):
        parse_duration(value)


def test_duration_nan_rejected() -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(math.nan)


def test_duration_pydantic_type() -> None:
    assert TypeAdapter(Duration).validate_python("250ms") == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (1024, 1024),
        ("1024", 1024),
        ("1024B", 1024),
        ("5KB", 5000),
        ("64KiB", 64 * 1024),
        ("10MB", 10_000_000),
        ("2MiB", 2 * 1024**2),
        ("1GB", 1000**3),
        ("1GiB", 1024**3),
        (" 5 KiB ", 5 * 1024),
    ],
)
def test_size_valid(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    "value",
    [True, False, None, 1.5, "", "KiB", "1.5MB", "10TB", "-1", "-1KiB", "10 KiB B"],
)
def test_size_invalid(value: object) -> None:
    with pytest.raises(ValueError, match="expected a size"):
        parse_size(value)


def test_size_negative_integer() -> None:
    with pytest.raises(ValueError, match="0 or more bytes"):
        parse_size(-1)


def test_size_pydantic_type() -> None:
    assert TypeAdapter(ByteSize).validate_python("4KiB") == 4096


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::]:443", ("::", 443)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
    ],
)
def test_listen_valid(value: str, address: tuple[str, int]) -> None:
    assert parse_listen_address(value) == address


@pytest.mark.parametrize(
    "value",
    [
        8080,
        None,
        "",
        "127.0.0.1",
        ":8080",
        "127.0.0.1:",
        "127.0.0.1:http",
        "127.0.0.1:-1",
        "127.0.0.1:80 ",
        "[::1]",
    ],
)
def test_listen_invalid(value: object) -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_listen_address(value)


@pytest.mark.parametrize("value", ["127.0.0.1:65536", "[::1]:99999"])
def test_listen_port_range(value: str) -> None:
    with pytest.raises(ValueError, match="between 0 and 65535"):
        parse_listen_address(value)


@pytest.mark.parametrize("value", ["::1:8080", "[::1:8080", "::1]:8080"])
def test_listen_ambiguous_ipv6(value: str) -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_listen_address(value)


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (("127.0.0.1", 8080), "127.0.0.1:8080"),
        (("::1", 8080), "[::1]:8080"),
    ],
)
def test_listen_format(address: tuple[str, int], text: str) -> None:
    assert format_listen_address(address) == text


def test_listen_serializes_brackets() -> None:
    adapter = TypeAdapter(ListenAddress)

    address = adapter.validate_python("[::1]:9000")

    assert adapter.dump_python(address) == "[::1]:9000"


def test_secret_reveal() -> None:
    assert Secret("hunter2").reveal() == "hunter2"


@pytest.mark.parametrize("render", [repr, str, "{}".format, "{!r}".format])
def test_secret_hidden_in_text(render: Callable[[object], str]) -> None:
    text = render(Secret("hunter2"))

    assert "hunter2" not in text
    assert "********" in text


def test_secret_hidden_in_model() -> None:
    class Credentials(Model):
        token: SecretValue

    credentials = Credentials(token="hunter2")

    assert "hunter2" not in repr(credentials)
    assert "hunter2" not in str(credentials)
    assert credentials.model_dump() == {"token": "********"}
    assert "hunter2" not in credentials.model_dump_json()
    assert credentials.token.reveal() == "hunter2"


def test_secret_equality() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert hash(Secret("a")) == hash(Secret("a"))


def test_secret_plain_value() -> None:
    assert parse_secret("hunter2").reveal() == "hunter2"


def test_secret_passes_secret_through() -> None:
    secret = Secret("hunter2")

    assert parse_secret(secret) is secret


@pytest.mark.parametrize("value", ["", None, 42, b"bytes"])
def test_secret_invalid(value: object) -> None:
    with pytest.raises(ValueError, match="non-empty string or file:PATH"):
        parse_secret(value)


@pytest.mark.parametrize(
    ("content", "value"),
    [
        ("hunter2", "hunter2"),
        ("hunter2\n", "hunter2"),
        ("hunter2\r\n", "hunter2"),
        ("hunter2\n\n", "hunter2"),
        ("  spaced value \n", "  spaced value "),
        ("line one\nline two\n", "line one\nline two"),
    ],
)
def test_secret_file(tmp_path: Path, content: str, value: str) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content.encode("utf-8"))

    assert parse_secret(f"file:{path}").reveal() == value


def test_secret_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "absent"

    with pytest.raises(ValueError, match="cannot read secret file") as caught:
        parse_secret(f"file:{path}")

    assert str(path) in str(caught.value)
    assert "No such file" in str(caught.value)


def test_secret_file_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read secret file"):
        parse_secret(f"file:{tmp_path}")


@pytest.mark.parametrize("content", ["", "\n", "\r\n\r\n"])
def test_secret_file_empty(tmp_path: Path, content: str) -> None:
    path = tmp_path / "secret"
    path.write_text(content, encoding="utf-8")

    with pytest.raises(ValueError, match="is empty") as caught:
        parse_secret(f"file:{path}")

    assert str(path) in str(caught.value)


def test_secret_pydantic_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent"

    class Credentials(Model):
        token: SecretValue

    with pytest.raises(ValidationError, match="cannot read secret file"):
        Credentials(token=f"file:{path}")
