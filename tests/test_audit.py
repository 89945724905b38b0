"""Tests for ringwall.audit: record checks, the JSON line format, sinks and AuditLog."""

import errno
import json
import logging
import os
import select
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ringwall.audit import (
    AUDIT_FIELDS,
    AuditLog,
    AuditRecord,
    AuditWriteError,
    JsonLinesAuditSink,
    MemoryAuditSink,
    format_audit_line,
)


def make_record(**changes: Any) -> AuditRecord:
    fields: dict[str, Any] = {
        "time": 1700000000.25,
        "request_id": "req-1",
        "subject": "alice",
        "auth_method": "api_key",
        "key_id": "abcdefgh",
        "issuer": None,
        "client_ip": "203.0.113.9",
        "method": "GET",
        "path": "/orders/7",
        "route": "orders",
        "decision": "allow",
        "layer": "authorization",
        "reason": None,
        "status": 200,
    }
    fields.update(changes)
    return AuditRecord(**fields)


def parse(line: bytes) -> dict[str, Any]:
    document = json.loads(line)
    assert isinstance(document, dict)
    return document


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def error_log() -> Iterator[tuple[logging.Logger, ListHandler]]:
    handler = ListHandler()
    logger = logging.getLogger("ringwall.test.audit")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# Records


def test_record_immutable_without_dict() -> None:
    record = make_record()
    with pytest.raises(AttributeError):
        record.status = 500  # type: ignore[misc]
    assert not hasattr(record, "__dict__")


def test_request_record_matches_checked_record() -> None:
    checked = make_record()
    trusted = AuditRecord.of_request(
        checked.time,
        checked.request_id,
        (checked.subject, checked.auth_method, checked.key_id, checked.issuer),
        checked.client_ip,
        checked.method,
        checked.path,
        checked.route,
        checked.decision,
        checked.layer,
        checked.reason,
        checked.status,
    )
    assert trusted == checked
    assert type(trusted) is AuditRecord
    assert format_audit_line(trusted) == format_audit_line(checked)


def test_record_admin_fields_default_none() -> None:
    record = make_record()
    assert record.action is None
    assert record.target is None


@pytest.mark.parametrize(
    ("changes", "field_name"),
    [
        ({"decision": "maybe"}, "decision"),
        ({"auth_method": "password"}, "auth_method"),
        ({"time": float("nan")}, "time"),
        ({"time": -1.0}, "time"),
        ({"time": 1e20}, "time"),
        ({"status": 1000}, "status"),
        ({"status": -1}, "status"),
    ],
)
def test_record_invalid_field(changes: dict[str, Any], field_name: str) -> None:
    with pytest.raises(ValueError, match=f"^{field_name}: "):
        make_record(**changes)


def test_command_action_record() -> None:
    record = AuditRecord.command_action(
        time=1700000000.0, action="api_key.revoked", target="abcdefgh", subject="ops"
    )
    assert record.action == "api_key.revoked"
    assert record.target == "abcdefgh"
    assert record.subject == "ops"
    assert record.request_id == ""
    assert record.client_ip == ""
    assert record.status == 0
    assert record.decision == "allow"
    assert record.layer == "admin"


# Line format


def test_line_fields_in_order() -> None:
    line = format_audit_line(make_record())
    assert list(parse(line)) == [*AUDIT_FIELDS, "truncated"]
    assert AUDIT_FIELDS[:3] == ("time", "request_id", "subject")
    assert AUDIT_FIELDS[-2:] == ("action", "target")


def test_line_values() -> None:
    document = parse(format_audit_line(make_record()))
    assert document["time"] == "2023-11-14T22:13:20.250Z"
    assert document["request_id"] == "req-1"
    assert document["auth_method"] == "api_key"
    assert document["path"] == "/orders/7"
    assert document["decision"] == "allow"
    assert document["status"] == 200
    assert document["truncated"] is False


def test_line_single_compact_line() -> None:
    line = format_audit_line(make_record())
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert b", " not in line
    assert b'"time":"2023-11-14T22:13:20.250Z","request_id":"req-1",' in line


def test_line_none_as_null() -> None:
    line = format_audit_line(make_record(subject=None, auth_method=None, key_id=None))
    assert b'"subject":null' in line
    assert b'"auth_method":null' in line
    assert b'"issuer":null' in line
    assert b'"action":null' in line
    assert parse(line)["target"] is None


def test_line_escapes_unicode() -> None:
    path = "/caf\u00e9/\U0001f600/\u2028"
    line = format_audit_line(make_record(path=path, reason='quote " and \\'))
    assert line.isascii()
    assert b"/caf\\u00e9/\\ud83d\\ude00/\\u2028" in line
    assert parse(line)["path"] == path
    assert parse(line)["reason"] == 'quote " and \\'


def test_line_admin_action() -> None:
    record = AuditRecord.command_action(
        time=1700000000.0, action="api_key.created", target="abcdefgh"
    )
    document = parse(format_audit_line(record))
    assert document["action"] == "api_key.created"
    assert document["target"] == "abcdefgh"
    assert document["request_id"] == ""
    assert document["status"] == 0


def test_line_request_with_action() -> None:
    record = make_record(action="token.revoked", target="jti-42", auth_method="jwt")
    document = parse(format_audit_line(record))
    assert document["action"] == "token.revoked"
    assert document["target"] == "jti-42"


def test_line_cut_to_max_bytes() -> None:
    record = make_record(path="/" + "p" * 5000, reason="r" * 3000, subject="\u00e9" * 500)
    line = format_audit_line(record, 4096)
    document = parse(line)
    assert len(line) <= 4096
    assert list(document) == [*AUDIT_FIELDS, "truncated"]
    assert document["truncated"] is True
    assert document["path"].startswith("/ppp")
    assert document["reason"].startswith("rrr")
    assert document["subject"].startswith("\u00e9")
    assert document["request_id"] == "req-1"
    assert document["status"] == 200


def test_line_cut_escaped_characters() -> None:
    # Each "\u00e9" escapes to 6 bytes, so the cut must count escaped bytes.
    line = format_audit_line(make_record(path="\u00e9" * 2000), 1000)
    assert len(line) <= 1000
    assert parse(line)["truncated"] is True


def test_line_short_enough_not_cut() -> None:
    record = make_record()
    line = format_audit_line(record, len(format_audit_line(record)))
    assert parse(line)["truncated"] is False
    assert parse(line)["path"] == "/orders/7"


# JsonLinesAuditSink


def test_file_created_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    sink = JsonLinesAuditSink(str(path))
    sink.write(make_record())
    sink.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_file_write_is_synchronous(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    sink = JsonLinesAuditSink(str(path))
    sink.write(make_record())
    assert parse(path.read_bytes())["request_id"] == "req-1"
    sink.close()


def test_file_appends_across_sinks(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b'{"existing":true}\n')
    first = JsonLinesAuditSink(str(path))
    second = JsonLinesAuditSink(str(path))
    first.write(make_record(request_id="a"))
    second.write(make_record(request_id="b"))
    first.write(make_record(request_id="c"))
    first.close()
    second.close()
    lines = path.read_bytes().splitlines()
    assert lines[0] == b'{"existing":true}'
    assert [parse(line)["request_id"] for line in lines[1:]] == ["a", "b", "c"]


def test_file_long_line_not_cut(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    sink = JsonLinesAuditSink(str(path))
    sink.write(make_record(path="/" + "p" * 10000))
    sink.close()
    document = parse(path.read_bytes())
    assert len(document["path"]) == 10001
    assert document["truncated"] is False


def test_file_fsync_each_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    sink = JsonLinesAuditSink(str(tmp_path / "audit.log"), fsync=True)
    sink.write(make_record())
    sink.write(make_record())
    assert len(synced) == 2
    sink.flush()
    assert len(synced) == 3
    sink.close()


def test_file_no_fsync_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    sink = JsonLinesAuditSink(str(tmp_path / "audit.log"))
    sink.write(make_record())
    assert synced == []
    sink.close()


def test_open_failure_raises(tmp_path: Path) -> None:
    with pytest.raises(AuditWriteError, match="failed to open the audit log"):
        JsonLinesAuditSink(str(tmp_path / "missing" / "audit.log"))


def test_write_after_close_raises(tmp_path: Path) -> None:
    sink = JsonLinesAuditSink(str(tmp_path / "audit.log"))
    sink.close()
    sink.close()
    with pytest.raises(AuditWriteError, match="is closed"):
        sink.write(make_record())


def test_stdout_destination(capfd: pytest.CaptureFixture[str]) -> None:
    sink = JsonLinesAuditSink("stdout")
    sink.write(make_record(request_id="to-stdout"))
    sink.close()
    output = capfd.readouterr().out
    assert json.loads(output)["request_id"] == "to-stdout"
    # The sink does not close a standard stream.
    os.fstat(1)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_device_raises() -> None:
    sink = JsonLinesAuditSink("/dev/full")
    with pytest.raises(AuditWriteError, match="/dev/full") as caught:
        sink.write(make_record())
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == errno.ENOSPC
    sink.close()


def test_broken_pipe_raises(tmp_path: Path) -> None:
    # Python ignores SIGPIPE at startup, so a write to a pipe without a
    # reader fails with EPIPE instead of ending the test process.
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    sink = JsonLinesAuditSink(str(fifo))
    os.close(reader)
    with pytest.raises(AuditWriteError) as caught:
        sink.write(make_record())
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == errno.EPIPE
    sink.close()


def test_pipe_line_fits_pipe_buf(tmp_path: Path) -> None:
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        sink = JsonLinesAuditSink(str(fifo))
        sink.write(make_record(path="/" + "p" * 10000))
        sink.write(make_record(request_id="short"))
        sink.close()
        lines = os.read(reader, 65536).splitlines(keepends=True)
    finally:
        os.close(reader)
    assert len(lines) == 2
    assert len(lines[0]) <= select.PIPE_BUF
    assert parse(lines[0])["truncated"] is True
    assert parse(lines[1])["truncated"] is False
    assert parse(lines[1])["request_id"] == "short"


def test_partial_write_failure_ends_fragment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.log"
    sink = JsonLinesAuditSink(str(path))
    real_write = os.write
    calls: list[int] = []

    def write_then_fail(fd: int, data: Any) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", write_then_fail)
    with pytest.raises(AuditWriteError):
        sink.write(make_record(request_id="lost"))
    monkeypatch.setattr(os, "write", real_write)
    sink.write(make_record(request_id="kept"))
    sink.close()
    lines = path.read_bytes().split(b"\n")
    assert len(lines[0]) == 10
    assert parse(lines[1])["request_id"] == "kept"
    assert lines[2] == b""


def test_partial_write_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "audit.log"
    sink = JsonLinesAuditSink(str(path))
    real_write = os.write

    def write_ten_bytes(fd: int, data: Any) -> int:
        return real_write(fd, bytes(data[:10]))

    monkeypatch.setattr(os, "write", write_ten_bytes)
    sink.write(make_record(request_id="slow"))
    monkeypatch.setattr(os, "write", real_write)
    sink.close()
    assert parse(path.read_bytes())["request_id"] == "slow"


# MemoryAuditSink


def test_memory_sink_stores_records() -> None:
    sink = MemoryAuditSink()
    record = make_record()
    sink.write(record)
    sink.flush()
    assert sink.records == [record]
    assert sink.flushes == 1


def test_memory_sink_failing() -> None:
    sink = MemoryAuditSink()
    sink.failing = True
    with pytest.raises(AuditWriteError, match="set to fail"):
        sink.write(make_record())
    with pytest.raises(AuditWriteError):
        sink.flush()
    assert sink.records == []


def test_memory_sink_closed() -> None:
    sink = MemoryAuditSink()
    sink.close()
    assert sink.closed
    with pytest.raises(AuditWriteError, match="closed"):
        sink.write(make_record())


# AuditLog


def test_audit_log_policy_flag() -> None:
    rejecting = AuditLog(MemoryAuditSink(), on_failure="reject")
    serving = AuditLog(MemoryAuditSink(), on_failure="serve")
    assert rejecting.reject_on_failure is True
    assert serving.reject_on_failure is False


def test_audit_log_invalid_policy() -> None:
    with pytest.raises(ValueError, match="on_failure"):
        AuditLog(MemoryAuditSink(), on_failure="ignore")  # type: ignore[arg-type]


def test_audit_log_stores_record() -> None:
    sink = MemoryAuditSink()
    log = AuditLog(sink, on_failure="reject")
    record = make_record()
    assert log.record(record) is True
    assert sink.records == [record]
    assert log.failures == 0


def test_audit_log_failure_returns_false(
    error_log: tuple[logging.Logger, ListHandler],
) -> None:
    logger, handler = error_log
    sink = MemoryAuditSink()
    sink.failing = True
    log = AuditLog(sink, on_failure="serve", error_logger=logger)
    assert log.record(make_record(request_id="req-9")) is False
    assert log.failures == 1
    assert len(handler.records) == 1
    message = handler.records[0]
    assert message.levelno == logging.ERROR
    assert "set to fail" in message.getMessage()
    assert message.request_id == "req-9"  # type: ignore[attr-defined]


def test_audit_log_error_rate_limited(
    error_log: tuple[logging.Logger, ListHandler],
) -> None:
    logger, handler = error_log
    clock = FakeClock()
    sink = MemoryAuditSink()
    sink.failing = True
    log = AuditLog(sink, on_failure="reject", error_logger=logger, clock=clock)

    assert log.record(make_record()) is False
    clock.now = 0.5
    assert log.record(make_record()) is False
    clock.now = 0.99
    assert log.record(make_record()) is False
    assert len(handler.records) == 1
    assert handler.records[0].unlogged_failures == 0  # type: ignore[attr-defined]

    clock.now = 1.2
    assert log.record(make_record()) is False
    assert len(handler.records) == 2
    assert handler.records[1].unlogged_failures == 2  # type: ignore[attr-defined]
    assert "since the previous message: 2" in handler.records[1].getMessage()
    assert log.failures == 4


def test_audit_log_reports_unlogged_on_recovery(
    error_log: tuple[logging.Logger, ListHandler],
) -> None:
    logger, handler = error_log
    clock = FakeClock()
    sink = MemoryAuditSink()
    log = AuditLog(sink, on_failure="reject", error_logger=logger, clock=clock)
    sink.failing = True
    log.record(make_record())
    clock.now = 0.1
    log.record(make_record())
    sink.failing = False

    # A success within the interval logs nothing, so alternating results
    # cannot produce a message per request.
    clock.now = 0.2
    assert log.record(make_record()) is True
    assert len(handler.records) == 1

    clock.now = 1.5
    assert log.record(make_record()) is True
    assert len(handler.records) == 2
    recovery = handler.records[1]
    assert recovery.levelno == logging.WARNING
    assert recovery.unlogged_failures == 1  # type: ignore[attr-defined]
    assert "succeed again" in recovery.getMessage()

    clock.now = 3.0
    assert log.record(make_record()) is True
    assert len(handler.records) == 2


def test_audit_log_close_reports_unlogged(
    error_log: tuple[logging.Logger, ListHandler],
) -> None:
    logger, handler = error_log
    clock = FakeClock()
    sink = MemoryAuditSink()
    log = AuditLog(sink, on_failure="serve", error_logger=logger, clock=clock)
    sink.failing = True
    log.record(make_record())
    log.record(make_record())
    sink.failing = False
    log.close()
    assert sink.closed
    assert sink.flushes == 1
    assert len(handler.records) == 2
    assert handler.records[1].unlogged_failures == 1  # type: ignore[attr-defined]
    assert "closed" in handler.records[1].getMessage()


def test_audit_log_flush_failure(error_log: tuple[logging.Logger, ListHandler]) -> None:
    logger, handler = error_log
    sink = MemoryAuditSink()
    sink.failing = True
    log = AuditLog(sink, on_failure="serve", error_logger=logger)
    assert log.flush() is False
    assert log.failures == 1
    assert len(handler.records) == 1


def test_audit_log_with_file_sink(
    tmp_path: Path, error_log: tuple[logging.Logger, ListHandler]
) -> None:
    logger, handler = error_log
    path = tmp_path / "audit.log"
    log = AuditLog(JsonLinesAuditSink(str(path)), on_failure="reject", error_logger=logger)
    assert log.record(make_record(decision="deny", layer="authentication", status=401))
    log.close()
    assert log.record(make_record()) is False
    document = parse(path.read_bytes())
    assert document["decision"] == "deny"
    assert document["status"] == 401
    assert len(handler.records) == 1


@pytest.mark.parametrize(
    "text", ["plain", 'quote " and \\ slash', "caf\u00e9 \u2603 \U0001f600", "ctl\x00\x1f\n"]
)
def test_fast_line_matches_json(text: str) -> None:
    import json as json_module

    from ringwall.audit import AUDIT_FIELDS, AuditRecord, format_audit_line

    record = AuditRecord(
        time=1_700_000_000.5,
        request_id=text,
        subject=text,
        auth_method="jwt",
        key_id=None,
        issuer=text,
        client_ip="127.0.0.1",
        method="GET",
        path="/" + text,
        route=None,
        decision="deny",
        layer="authorization",
        reason=text,
        status=403,
    )
    line = format_audit_line(record)
    parsed = json_module.loads(line)
    assert list(parsed) == [*AUDIT_FIELDS, "truncated"]
    assert parsed["subject"] == text
    assert parsed["time"] == "2023-11-14T22:13:20.500Z"
    assert line.isascii()
