"""The security log: one JSON line per request on which WAF rules matched.

The log feeds people and the auto-ban rules, so every string from the
request is cut to a fixed size and written with JSON's ASCII escaping: a
record is always exactly one line, whatever bytes the attacker sent.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from ringwall.edge.waf.engine import MatchedRule

# Characters kept of a rule's data excerpt and message; longer ones end in "...".
MAX_DATA_CHARS = 200
MAX_MESSAGE_CHARS = 200


@dataclass(frozen=True, slots=True)
class SecurityRecord:
    time: float
    request_id: str
    client_ip: str
    route: str | None
    rules: tuple[MatchedRule, ...]
    anomaly_score: int
    blocked: bool
    # The status the request was rejected with, or 0 when it continued.
    status: int = 0


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def format_record(record: SecurityRecord) -> str:
    """Return the record as one JSON line, ending in a newline."""
    values = {
        "time": datetime.fromtimestamp(record.time, UTC).isoformat(timespec="milliseconds"),
        "request_id": record.request_id,
        "client_ip": record.client_ip,
        "route": record.route,
        "rules": [
            {
                "id": rule.id,
                "msg": _truncate(rule.message, MAX_MESSAGE_CHARS),
                "severity": rule.severity,
                "data": _truncate(rule.data, MAX_DATA_CHARS),
            }
            for rule in record.rules
        ],
        "anomaly_score": record.anomaly_score,
        "blocked": record.blocked,
        "status": record.status,
    }
    return json.dumps(values, ensure_ascii=True, separators=(",", ":")) + "\n"


class SecurityLog:
    """Writes security records to a text stream, such as stdout or an opened file."""

    def __init__(self, stream: TextIO, close: Callable[[], None] | None = None) -> None:
        self._stream = stream
        self._close = close
        self._lock = threading.Lock()

    @classmethod
    def to_file(cls, path: Path) -> SecurityLog:
        """Append to `path`, one flushed line per record."""
        stream = path.open("a", encoding="ascii", buffering=1)
        return cls(stream, stream.close)

    @classmethod
    def to_stdout(cls) -> SecurityLog:
        return cls(sys.stdout)

    def write(self, record: SecurityRecord) -> None:
        # NOTE: the write blocks the calling thread; a file on a local disk
        # costs microseconds, but a full pipe on stdout stalls the event loop.
        line = format_record(record)
        with self._lock:
            self._stream.write(line)
            self._stream.flush()

    def close(self) -> None:
        if self._close is not None:
            self._close()
