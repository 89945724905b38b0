"""Value types shared by the configuration models: durations, sizes, addresses, secrets."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}


def parse_duration(value: Any) -> float:
    """Parse seconds given as a number or as a string such as "500ms", "10s", "2m", "1h"."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10, 10s or 500ms, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ValueError("expected a duration such as 10, 10s, 500ms, 2m or 1h")
    if not math.isfinite(seconds):
        raise ValueError("expected a duration such as 10s, not NaN or infinity")
    if seconds < 0:
        raise ValueError("expected a duration of 0 or more seconds")
    return seconds


def parse_size(value: Any) -> int:
    """Parse a byte count given as an integer or as a string such as "64KiB" or "10MB"."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 1024, 64KiB or 10MB, not a boolean")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        size = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    else:
        raise ValueError("expected a size in bytes such as 1024, 64KiB, 10MB or 1GiB")
    if size < 0:
        raise ValueError("expected a size of 0 or more bytes")
    return size


def parse_listen_address(value: Any) -> tuple[str, int]:
    """Parse "HOST:PORT" or "[IPV6]:PORT" into a (host, port) pair."""
    if not isinstance(value, str):
        raise ValueError("expected HOST:PORT, for example 127.0.0.1:8080")
    host, separator, port_text = value.rpartition(":")
    if not separator or not host or not port_text.isdigit():
        raise ValueError("expected HOST:PORT, for example 127.0.0.1:8080 or [::1]:8080")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host or "[" in host or "]" in host:
            raise ValueError(
                "expected HOST:PORT with an IPv6 address in brackets, such as [::1]:8080"
            )
    elif "[" in host or "]" in host or ":" in host:
        raise ValueError("expected HOST:PORT with an IPv6 address in brackets, such as [::1]:8080")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError("expected a port between 0 and 65535")
    return host, port


def format_listen_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Secret:
    """A secret string; `repr` and `str` never show it.

    A configuration value written `file:PATH` is replaced by the file's
    contents, without a trailing newline.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def parse_secret(value: Any) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string or file:PATH")
    if value.startswith("file:"):
        path = Path(value[len("file:") :])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from exc
        value = text.rstrip("\r\n")
        if not value:
            raise ValueError(f"secret file {path} is empty")
    return Secret(value)


Duration = Annotated[float, BeforeValidator(parse_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_size)]
ListenAddress = Annotated[
    tuple[str, int],
    BeforeValidator(parse_listen_address),
    PlainSerializer(format_listen_address),
]
SecretValue = Annotated[
    Secret,
    BeforeValidator(parse_secret),
    PlainSerializer(lambda secret: "********"),
]
