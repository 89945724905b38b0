"""Tests for ringwall.logs: JsonFormatter, the error log format, and AccessLog lines."""

import asyncio
import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ringwall.config.model import LogConfig
from ringwall.exchange import Exchange
from ringwall.logs import AccessLog, JsonFormatter
from ringwall.tls.handshake import HandshakeInfo


def make_record(
    message: str = "hello %s", args: tuple[object, ...] = ("world",), **extra: Any
) -> logging.LogRecord:
    logger = logging.getLogger("ringwall.test")
    return logger.makeRecord(
        "ringwall.test", logging.WARNING, __file__, 1, message, args, None, extra=extra
    )


def make_error_record() -> logging.LogRecord:
    """Build an error record carrying the exception being handled."""
    logger = logging.getLogger("ringwall.test")
    return logger.makeRecord(
        "ringwall.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
    )


def formatted(record: logging.LogRecord) -> dict[str, Any]:
    document = json.loads(JsonFormatter().format(record))
    assert isinstance(document, dict)
    return document


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ringwall.test.captured")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def test_standard_fields() -> None:
    document = formatted(make_record())

    assert document["message"] == "hello world"
    assert document["level"] == "warning"
    assert document["logger"] == "ringwall.test"
    assert isinstance(document["pid"], int)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", document["time"])


def test_no_standard_attributes() -> None:
    document = formatted(make_record())

    assert set(document) == {"time", "level", "logger", "message", "pid"}


def test_one_line_per_record() -> None:
    text = JsonFormatter().format(make_record("line one\nline two\r\n%s"))

    assert "\n" not in text
    assert json.loads(text)["message"] == "line one\nline two\r\nworld"


def test_one_object_per_record(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured

    logger.info("first")
    logger.error("second\nwith a newline", extra={"upstream": "api"})

    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["first", "second\nwith a newline"]
    assert json.loads(lines[1])["upstream"] == "api"


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("api", "api"),
        (3, 3),
        (2.5, 2.5),
        (True, True),
        (None, None),
        (("a", 1), "('a', 1)"),
        (b"raw", "b'raw'"),
    ],
)
def test_extra_field(value: object, encoded: object) -> None:
    document = formatted(make_record(field=value))

    assert document["field"] == encoded


def test_several_extra_fields() -> None:
    document = formatted(make_record(request_id="r-1", worker=2, route="accounts"))

    assert document["request_id"] == "r-1"
    assert document["worker"] == 2
    assert document["route"] == "accounts"


def test_extra_cannot_replace_fields() -> None:
    document = formatted(make_record(time="forged", level="forged", pid="forged"))

    assert document["time"] != "forged"
    assert document["level"] == "warning"
    assert document["pid"] != "forged"


def test_message_capped() -> None:
    document = formatted(make_record("x" * 5000, ()))

    assert document["message"] == "x" * 2000


def test_message_ascii() -> None:
    text = JsonFormatter().format(make_record("caf\u00e9 %s", ("\u2603",)))

    assert text.isascii()
    assert json.loads(text)["message"] == "caf\u00e9 \u2603"


def test_exception_included() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        record = make_error_record()

    document = formatted(record)

    assert document["exception"].startswith("Traceback")
    assert document["exception"].endswith("ValueError: broken")


def test_exception_capped() -> None:
    try:
        raise ValueError("y" * 10_000)
    except ValueError:
        record = make_error_record()

    document = formatted(record)

    assert len(document["exception"]) == 4000
    assert document["exception"].endswith("y" * 100)


def access_line(tmp_path: Path, **fields: object) -> dict[str, Any]:
    """Record one exchange with `fields` set in an access log file, and return the parsed line."""
    path = tmp_path / "access.log"
    loop = asyncio.new_event_loop()
    try:
        log = AccessLog(loop, LogConfig(access={"destination": str(path)}))
        no_runtime: Any = None
        exchange = Exchange(no_runtime, "127.0.0.1", 0.0, 1_700_000_000.25)
        for name, value in fields.items():
            setattr(exchange, name, value)
        log.record(exchange)
        log.close()
    finally:
        loop.close()
    record: dict[str, Any] = json.loads(path.read_text(encoding="ascii"))
    return record


def test_access_log_lines(tmp_path: Path) -> None:
    record = access_line(
        tmp_path,
        request_id="abc-1",
        method="GET",
        target=b'/a"b\x01?q=1',
        status=400,
        layer="protocol",
        reason='bad "value"',
    )

    assert record["time"] == "2023-11-14T22:13:20.250Z"
    assert record["path"] == '/a"b\\x01'
    assert record["route"] is None
    assert record["reason"] == 'bad "value"'
    assert record["status"] == 400
    assert record["protocol"] == "HTTP/1.1"
    assert record["tls"] is None


def test_access_log_escapes_raw_method(tmp_path: Path) -> None:
    # A request the parser refused is described from its raw bytes, latin-1 decoded.
    record = access_line(tmp_path, method='G\x8c"T', version='9\x8c"', status=400)

    assert record["method"] == 'G\x8c"T'
    assert record["protocol"] == 'HTTP/9\x8c"'


def test_access_log_https_fields(tmp_path: Path) -> None:
    handshake = HandshakeInfo(
        "api.example.test", -1, "TLSv1.3", "TLS_AES_128_GCM_SHA256", "h2", False
    )
    record = access_line(tmp_path, method="GET", version="2", status=200, tls=handshake)

    assert record["protocol"] == "HTTP/2"
    assert record["tls"] == "TLSv1.3"
