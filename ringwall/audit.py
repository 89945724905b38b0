"""Audit log: who did what, when and from where, apart from the access log.

Every audit record goes through an `AuditSink`, so a later sink can add a
hash chain or encryption without changing callers. Unlike the access log,
the audit log never drops a record silently: a sink raises `AuditWriteError`
when it could not store a record, and `AuditLog.record` returns False.

Callers pass no credentials. A record contains a key id or a JWT `kid`, never a
token, an API key secret, a password or an Authorization header value.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import select
import stat
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, Protocol

from ringwall.errors import RingwallError

Decision = Literal["allow", "deny"]
AuthMethod = Literal["jwt", "api_key", "mtls"]
FailurePolicy = Literal["reject", "serve"]

# The first second of the year 10000, which `datetime` cannot represent.
_MAX_TIME = 253402300800.0


class AuditWriteError(RingwallError):
    """An audit record that a sink could not store."""


class _AuditFields(NamedTuple):
    time: float
    request_id: str
    subject: str | None
    auth_method: AuthMethod | None
    key_id: str | None
    issuer: str | None
    client_ip: str
    method: str
    path: str
    route: str | None
    decision: Decision
    layer: str
    reason: str | None
    status: int
    action: str | None = None
    target: str | None = None


class AuditRecord(_AuditFields):
    """One audited decision on a request, or one administrative action.

    `time` is in seconds since the epoch. `path` is the canonical path that
    routing matched. `key_id` is the API key id or the JWT `kid`. `layer` is
    the layer that made the decision, such as "authentication", and `reason`
    is text written by Ringwall, never copied from the request. `action`
    (such as "api_key.revoked") and `target` (such as the revoked key's id)
    are set only for administrative actions.

    A record is an immutable tuple. Creating one with keywords validates
    `time`, `decision`, `auth_method` and `status` and raises `ValueError`
    naming the field. `of_request` skips those checks, for the values the
    gateway itself fills in on every request.
    """

    __slots__ = ()

    def __new__(cls, **values: Any) -> AuditRecord:
        record = tuple.__new__(cls, _AuditFields(**values))
        record._validate()
        return record

    @classmethod
    def of_request(
        cls,
        time: float,
        request_id: str,
        identity: tuple[str | None, ...],
        client_ip: str,
        method: str,
        path: str,
        route: str | None,
        decision: Decision,
        layer: str,
        reason: str | None,
        status: int,
    ) -> AuditRecord:
        """Build a request's record from values the gateway produced; `identity` is
        (subject, auth method, key id, issuer)."""
        return tuple.__new__(
            cls,
            (
                time,
                request_id,
                *identity,
                client_ip,
                method,
                path,
                route,
                decision,
                layer,
                reason,
                status,
                None,
                None,
            ),
        )

    def _validate(self) -> None:
        if not (math.isfinite(self.time) and 0 <= self.time < _MAX_TIME):
            raise ValueError(f"time: invalid value {self.time!r}, expected epoch seconds")
        if self.decision not in ("allow", "deny"):
            raise ValueError(f"decision: invalid value {self.decision!r}, expected allow or deny")
        if self.auth_method not in ("jwt", "api_key", "mtls", None):
            raise ValueError(
                f"auth_method: invalid value {self.auth_method!r}, expected jwt, api_key, mtls "
                "or None"
            )
        if not 0 <= self.status <= 999:
            raise ValueError(f"status: invalid value {self.status!r}, expected 0 to 999")

    @classmethod
    def command_action(
        cls,
        *,
        time: float,
        action: str,
        target: str | None,
        subject: str | None = None,
        reason: str | None = None,
    ) -> AuditRecord:
        """Build the record of an administrative action run outside a request.

        Such an action, for example from the `ringwall keys` command, has no
        request, so the request fields are empty strings, `status` is 0 and
        `layer` is "admin".
        """
        return cls(
            time=time,
            request_id="",
            subject=subject,
            auth_method=None,
            key_id=None,
            issuer=None,
            client_ip="",
            method="",
            path="",
            route=None,
            decision="allow",
            layer="admin",
            reason=reason,
            status=0,
            action=action,
            target=target,
        )


class AuditSink(Protocol):
    """A destination for audit records."""

    def write(self, record: AuditRecord) -> None:
        """Store `record`, or raise `AuditWriteError` if it could not be stored."""

    def flush(self) -> None:
        """Write buffered records to the destination. Raises `AuditWriteError` on failure."""

    def close(self) -> None:
        """Flush and release the destination. Later writes raise `AuditWriteError`."""


# Field names in line order. Each line ends with a `truncated` field after these.
AUDIT_FIELDS: tuple[str, ...] = _AuditFields._fields

# Fields cut when a line must fit in one atomic write.
_SHORTENABLE = tuple(
    name for name in AUDIT_FIELDS if name not in ("time", "auth_method", "decision", "status")
)

_JsonValue = str | int | bool | None


def format_audit_line(record: AuditRecord, max_bytes: int | None = None) -> bytes:
    """Format `record` as one ASCII JSON line, ending in a newline.

    Every field is present, in `AUDIT_FIELDS` order, followed by `truncated`.
    When the line is longer than `max_bytes`, string fields other than
    `time`, `auth_method` and `decision` are cut to the largest common length
    that fits, and `truncated` is true.
    """
    line = _encode_fast(record)
    if max_bytes is None or len(line) <= max_bytes:
        return line
    values: dict[str, _JsonValue] = {name: getattr(record, name) for name in AUDIT_FIELDS}
    values["time"] = _format_time(record.time)
    values["truncated"] = False
    return _encode_cut(values, max_bytes)


_time_cache: list[object] = [-1, "", -1, ""]  # second, its text, millisecond, its text


def _format_time(seconds: float) -> str:
    # Same form as the access log's `time`, so the two logs read alike. The
    # date and time to the second are formatted once per second, and the
    # whole text once per millisecond: records of one batch often share it.
    millisecond = int(seconds * 1000)
    cache = _time_cache
    if cache[2] == millisecond:
        return cache[3]  # type: ignore[return-value]
    whole = millisecond // 1000
    if cache[0] != whole:
        cache[0] = whole
        cache[1] = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    text = f"{cache[1]}.{millisecond % 1000:03d}Z"
    cache[2] = millisecond
    cache[3] = text
    return text


_quote = json.encoder.encode_basestring_ascii  # the encoder json.dumps uses for str


def _text(value: str | None) -> str:
    return "null" if value is None else _quote(value)


# JSON text of field runs that repeat from record to record: the caller's
# identity (4 fields), and the route with the decision (7 fields). Cleared
# when it grows past _FRAGMENTS_MAX, so varied input costs time, not memory.
_fragments: dict[tuple[object, ...], str] = {}
_FRAGMENTS_MAX = 4096


def _fragment(values: tuple[object, ...], names: tuple[str, ...]) -> str:
    text = _fragments.get(values)
    if text is None:
        if len(_fragments) >= _FRAGMENTS_MAX:
            _fragments.clear()
        text = ",".join(
            f'"{name}":{value}' if isinstance(value, int) else f'"{name}":{_text(value)}'  # type: ignore[arg-type]
            for name, value in zip(names, values, strict=True)
        )
        _fragments[values] = text
    return text


_IDENTITY_NAMES = ("subject", "auth_method", "key_id", "issuer")
_DECISION_NAMES = ("route", "decision", "layer", "reason", "status", "action", "target")


def _encode_fast(record: AuditRecord) -> bytes:
    """Return the same line as `_encode` of the record's values, without building a dict."""
    return (
        f'{{"time":"{_format_time(record[0])}","request_id":{_quote(record[1])},'
        f"{_fragment(record[2:6], _IDENTITY_NAMES)},"
        f'"client_ip":{_quote(record[6])},"method":{_quote(record[7])},'
        f'"path":{_quote(record[8])},{_fragment(record[9:], _DECISION_NAMES)},"truncated":false}}\n'
    ).encode("ascii")


def _encode(values: dict[str, _JsonValue]) -> bytes:
    text = json.dumps(values, ensure_ascii=True, sort_keys=False, separators=(",", ":"))
    return text.encode("ascii") + b"\n"


def _encode_cut(values: dict[str, _JsonValue], max_bytes: int) -> bytes:
    """Encode `values` with long strings cut to the largest length that fits in `max_bytes`."""
    line = _encode(_cut_strings(values, 0))
    if len(line) > max_bytes:
        raise AuditWriteError(f"audit record does not fit in {max_bytes} bytes")
    # Binary search for the largest length that fits. The full length does not.
    low, high = 0, max(_text_length(values[name]) for name in _SHORTENABLE) - 1
    while low < high:
        middle = (low + high + 1) // 2
        candidate = _encode(_cut_strings(values, middle))
        if len(candidate) <= max_bytes:
            low, line = middle, candidate
        else:
            high = middle - 1
    return line


def _cut_strings(values: dict[str, _JsonValue], length: int) -> dict[str, _JsonValue]:
    cut = dict(values, truncated=True)
    for name in _SHORTENABLE:
        value = values[name]
        if isinstance(value, str):
            cut[name] = value[:length]
    return cut


def _text_length(value: _JsonValue) -> int:
    return len(value) if isinstance(value, str) else 0


class JsonLinesAuditSink:
    """Write each audit record as one JSON line, synchronously, with `os.write`.

    `destination` is "stdout", "stderr" or a file path. A file is opened with
    O_APPEND and, if it does not exist, created with mode 0600. The mode of an
    existing file is left unchanged. Each line is written with one `os.write`
    call, repeated only after a partial write, so on a local file system the
    records of several processes appending to one file do not interleave.
    To a pipe, socket or terminal a line is cut to PIPE_BUF bytes (see
    `format_audit_line`), because only pipe writes of at most PIPE_BUF bytes
    are atomic.

    `write` blocks the calling thread until the kernel accepts the line, so
    a slow reader of a pipe stalls the event loop. With `fsync=True`, each
    line written to a regular file is also flushed to disk with `os.fsync`.
    Other destinations cannot be synced, and the option does nothing there.

    A broken pipe raises `AuditWriteError` only while SIGPIPE is ignored,
    which Python sets at startup. Otherwise the signal ends the process.
    """

    def __init__(self, destination: str, *, fsync: bool = False) -> None:
        self.destination = destination
        self._fd, self._owns_fd = _open_destination(destination)
        self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
        self._max_bytes = None if self._regular else select.PIPE_BUF
        self._fsync = fsync and self._regular
        self._closed = False
        # After a failed partial write, the next line starts on a new line.
        self._line_open = False

    def write(self, record: AuditRecord) -> None:
        """Append `record` as one line, and sync it when `fsync` is set.

        Raises `AuditWriteError` when the write or the sync fails. After a
        failed sync, the line may still be in the file.
        """
        if self._closed:
            raise AuditWriteError(f"audit log {self.destination} is closed")
        line = self._format(record)
        try:
            self._write_all(line)
            if self._fsync:
                os.fsync(self._fd)
        except OSError as exc:
            raise AuditWriteError(
                f"failed to write the audit log {self.destination}: {exc}"
            ) from exc

    def write_many(self, records: list[AuditRecord]) -> None:
        """Append several records; to a regular file in one write call.

        Raises `AuditWriteError` when the write fails; then none, some or all
        of the lines may be in the file.
        """
        if not self._regular:
            for record in records:
                self.write(record)
            return
        if self._closed:
            raise AuditWriteError(f"audit log {self.destination} is closed")
        if self._line_open:
            data = b"".join(self._format(record) for record in records)
        else:
            # A regular file needs no cut to PIPE_BUF, so no `format_audit_line`.
            data = b"".join(map(_encode_fast, records))
        try:
            self._write_all(data)
            if self._fsync:
                os.fsync(self._fd)
        except OSError as exc:
            raise AuditWriteError(
                f"failed to write the audit log {self.destination}: {exc}"
            ) from exc

    def _format(self, record: AuditRecord) -> bytes:
        if not self._line_open:
            return format_audit_line(record, self._max_bytes)
        max_bytes = None if self._max_bytes is None else self._max_bytes - 1
        return b"\n" + format_audit_line(record, max_bytes)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            self._line_open = True
            view = view[written:]
        self._line_open = False

    def flush(self) -> None:
        """Sync a regular file to disk. Lines are never held in a buffer here."""
        if self._closed or not self._regular:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise AuditWriteError(
                f"failed to sync the audit log {self.destination}: {exc}"
            ) from exc

    def close(self) -> None:
        """Close a file destination. Raises `AuditWriteError` if closing reports an error."""
        if self._closed:
            return
        self._closed = True
        if not self._owns_fd:
            return
        try:
            os.close(self._fd)
        except OSError as exc:
            raise AuditWriteError(
                f"failed to close the audit log {self.destination}: {exc}"
            ) from exc


def _open_destination(destination: str) -> tuple[int, bool]:
    """Open `destination` and return its file descriptor and whether to close it."""
    if destination == "stdout":
        return sys.stdout.fileno(), False
    if destination == "stderr":
        return sys.stderr.fileno(), False
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    try:
        return os.open(destination, flags, 0o600), True
    except OSError as exc:
        raise AuditWriteError(f"failed to open the audit log {destination}: {exc}") from exc


class AuditLog:
    """Send audit records to a sink and report the ones it could not store.

    `record` returns False when the sink failed. It then increments
    `failures` and logs an error, at most one line per `ERROR_INTERVAL`
    seconds of `clock`, with the number of failures not logged since the
    previous line.

    With `on_failure="reject"`, `reject_on_failure` is True and the gateway
    must check the return value of `record` before forwarding a request, and
    respond with 503 when it is False. With "serve", requests proceed without
    their audit record.
    """

    ERROR_INTERVAL = 1.0

    def __init__(
        self,
        sink: AuditSink,
        *,
        on_failure: FailurePolicy,
        error_logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if on_failure not in ("reject", "serve"):
            raise ValueError(f"on_failure: invalid value {on_failure!r}, expected reject or serve")
        self.sink = sink
        self.reject_on_failure = on_failure == "reject"
        self.failures = 0
        self._logger = error_logger or logging.getLogger("ringwall.audit")
        self._clock = clock
        self._last_message: float | None = None
        self._unlogged_failures = 0
        self._pending: list[AuditRecord] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def batch_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write records once per iteration of `loop` instead of one by one.

        Only for `on_failure="serve"`: a request then proceeds before its
        record is written, and a failed batch is counted and logged like a
        failed record. With "reject", every record is written before `record`
        returns, so a request can still be refused.
        """
        if not self.reject_on_failure and hasattr(self.sink, "write_many"):
            self._loop = loop

    def record(self, record: AuditRecord) -> bool:
        """Store `record` in the sink, or queue it when batching. Returns whether it was taken."""
        if self._loop is not None:
            if not self._pending:
                self._loop.call_soon(self._write_pending)
            self._pending.append(record)
            return True
        return self._write_one(record)

    def _write_pending(self) -> None:
        records, self._pending = self._pending, []
        if not records:
            return
        try:
            self.sink.write_many(records)  # type: ignore[attr-defined]
        except AuditWriteError as exc:
            for record in records:
                self._report_failure(exc, record.request_id)

    def _write_one(self, record: AuditRecord) -> bool:
        try:
            self.sink.write(record)
        except AuditWriteError as exc:
            self._report_failure(exc, record.request_id)
            return False
        if self._unlogged_failures and self._may_log():
            self._report_unlogged("audit log writes succeed again")
        return True

    def flush(self) -> bool:
        """Write queued records and flush the sink; return False, after reporting, on failure."""
        self._write_pending()
        try:
            self.sink.flush()
        except AuditWriteError as exc:
            self._report_failure(exc, None)
            return False
        return True

    def close(self) -> None:
        """Flush and close the sink, and log failures not logged yet."""
        self.flush()
        try:
            self.sink.close()
        except AuditWriteError as exc:
            self._report_failure(exc, None)
        if self._unlogged_failures:
            self._report_unlogged("audit log closed")

    def _may_log(self) -> bool:
        now = self._clock()
        if self._last_message is not None and now - self._last_message < self.ERROR_INTERVAL:
            return False
        self._last_message = now
        return True

    def _report_failure(self, exc: AuditWriteError, request_id: str | None) -> None:
        self.failures += 1
        if not self._may_log():
            self._unlogged_failures += 1
            return
        self._logger.error(
            "audit record not stored: %s (failures not logged since the previous message: %d)",
            exc,
            self._unlogged_failures,
            extra={"request_id": request_id, "unlogged_failures": self._unlogged_failures},
        )
        self._unlogged_failures = 0

    def _report_unlogged(self, event: str) -> None:
        self._logger.warning(
            "%s, %d audit write failures since the last error message were not logged",
            event,
            self._unlogged_failures,
            extra={"unlogged_failures": self._unlogged_failures},
        )
        self._unlogged_failures = 0


class MemoryAuditSink:
    """Keep audit records in `records`, for tests.

    Set `failing` to make `write` and `flush` raise `AuditWriteError`.
    """

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []
        self.failing = False
        self.flushes = 0
        self.closed = False

    def write(self, record: AuditRecord) -> None:
        self._check()
        self.records.append(record)

    def flush(self) -> None:
        self._check()
        self.flushes += 1

    def close(self) -> None:
        self.closed = True

    def _check(self) -> None:
        if self.closed:
            raise AuditWriteError("memory audit sink is closed")
        if self.failing:
            raise AuditWriteError("memory audit sink is set to fail")
