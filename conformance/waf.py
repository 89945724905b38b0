"""Run the OWASP CRS 3.3.4 regression suite against a running Ringwall.

The suite is a folder of FTW YAML files, one per CRS rule. This script starts
a loopback backend that returns 200 for every request, and a `ringwall run`
gateway in front of it. The WAF is set up the way upstream ran the suite:
detect mode, paranoia level 4, rule 910000 removed, three tx variables set.
It sends each test's request bytes over a raw socket, reads the response and
the security-log records of that request, and scores the test's expectations.

Usage: .venv/bin/python conformance/waf.py [--filter RULE_ID] [--jobs N]

The suite is read from $RINGWALL_TESTDATA/crs-3.3.4-regression, where
RINGWALL_TESTDATA defaults to ../shared/testdata relative to the repository
root. Results go to conformance/results/crs-3.3.4-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import h11
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTDATA_ENV = "RINGWALL_TESTDATA"
DEFAULT_TESTDATA = REPO_ROOT.parent / "shared" / "testdata"
SUITE_NAME = "crs-3.3.4-regression"
RESULTS_DIR = REPO_ROOT / "conformance" / "results"
# The same suite against nginx 1.22 with ModSecurity-nginx, libmodsecurity
# 3.0.9 and the Debian modsecurity-crs 3.3.4 rules passed this many of its
# 2,396 enabled tests.
REFERENCE_PASSED = 2344

REQUEST_ID_HEADER = "X-Request-Id"
STARTUP_SECONDS = 30.0
DEFAULT_READ_TIMEOUT = 3.0
_READ_SIZE = 64 * 1024

# Reason categories of a failed test, as written to the results file.
CATEGORY_HTTP_LAYER = (
    "request rejected by Ringwall's HTTP layer before the WAF "
    "(e.g. 400 for invalid header name/path)"
)
CATEGORY_NO_RESPONSE = "no valid HTTP response from Ringwall (timeout or connection closed)"
CATEGORY_MISSING_MATCH = "expected rule did not match (WAF saw the request)"
CATEGORY_UNEXPECTED_MATCH = "rule matched that the test expects not to match"
CATEGORY_STATUS = "status differs from the expected one"
CATEGORY_RESPONSE = "response body differs from the expected one"
CATEGORY_NO_ERROR = "test expects an error, but Ringwall answered normally"
CATEGORY_LIBMODSECURITY = "libmodsecurity v3 difference"

_XML_REQUEST_BODY = (
    "libmodsecurity 3 fills REQUEST_BODY when the XML body processor runs and "
    "ModSecurity 2 does not, so the rule matches element and attribute names in the raw body"
)
_RX_BACKSLASH = (
    "libmodsecurity 3 does not unescape \\\\ in the quoted @rx argument as Apache's "
    "config parser does, so the rule needs two backslashes where it should need one"
)

# Failures whose cause lies in libmodsecurity 3.0.9 itself, keyed by test title.
KNOWN_LIBMODSECURITY_DIFFERENCES: dict[str, str] = {
    **{
        f"{rule}-{number}": _XML_REQUEST_BODY
        for rule, numbers in (
            ("944100", (11, 12, 15, 16)),
            ("944110", (11, 12, 15, 16)),
            ("944120", (5, 6, 22, 23, 39, 40, 56, 57, 73, 74, 90, 91, 107, 108, 124, 125)),
            ("944210", (5, 6, 22, 23, 39, 40)),
        )
        for number in numbers
    },
    **{f"920460-{number}": _RX_BACKSLASH for number in (1, 2, 3, 4)},
}


# --- The suite -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StageInput:
    """The request of one stage, with FTW's defaults for missing fields."""

    method: str = "GET"
    uri: str = "/"
    version: str = "HTTP/1.1"
    # Header names and values as YAML gave them; FTW sends str() of each value.
    headers: tuple[tuple[str, str], ...] = ()
    data: str = ""
    raw_request: str | None = None
    encoded_request: str | None = None
    stop_magic: bool = False


@dataclass(frozen=True, slots=True)
class StageOutput:
    """The expectations of one stage. Any subset may be set."""

    log_contains: str | None = None
    no_log_contains: str | None = None
    # Any of these statuses passes; None: the status is not checked.
    status: tuple[int, ...] | None = None
    response_contains: str | None = None
    expect_error: bool = False


@dataclass(frozen=True, slots=True)
class Stage:
    input: StageInput
    output: StageOutput


@dataclass(frozen=True, slots=True)
class SuiteTest:
    """One test of the suite: its rule file, its title and its stages."""

    # The rule file relative to the suite folder, such as
    # REQUEST-942-APPLICATION-ATTACK-SQLI/942100.yaml.
    rule_file: str
    title: str
    stages: tuple[Stage, ...]


class SuiteError(ValueError):
    """A rule file that is not valid FTW YAML."""


def testdata_root() -> Path:
    """Return the test data folder: $RINGWALL_TESTDATA, else ../shared/testdata."""
    configured = os.environ.get(TESTDATA_ENV)
    return Path(configured) if configured else DEFAULT_TESTDATA


def parse_stage_input(values: dict[str, Any]) -> StageInput:
    headers = values.get("headers") or {}
    if not isinstance(headers, dict):
        raise SuiteError(f"invalid headers {headers!r}: expected a mapping of name to value")
    data = values.get("data", "")
    if data is None:
        data = ""
    if isinstance(data, list):
        data = "\r\n".join(str(line) for line in data)
    return StageInput(
        method=str(values.get("method", "GET")),
        uri=str(values.get("uri", "/")),
        version=str(values.get("version", "HTTP/1.1")),
        headers=tuple((str(name), str(value)) for name, value in headers.items()),
        data=str(data),
        raw_request=values.get("raw_request"),
        encoded_request=values.get("encoded_request"),
        stop_magic=bool(values.get("stop_magic", False)),
    )


def parse_stage_output(values: dict[str, Any]) -> StageOutput:
    status = values.get("status")
    statuses: tuple[int, ...] | None
    if status is None:
        statuses = None
    elif isinstance(status, list):
        statuses = tuple(int(code) for code in status)
    else:
        statuses = (int(status),)
    output = StageOutput(
        log_contains=values.get("log_contains"),
        no_log_contains=values.get("no_log_contains"),
        status=statuses,
        response_contains=values.get("response_contains"),
        expect_error=bool(values.get("expect_error", False)),
    )
    if output == StageOutput():
        raise SuiteError(
            "stage output has none of log_contains, no_log_contains, status, "
            "response_contains or expect_error"
        )
    return output


def parse_rule_file(text: str, rule_file: str) -> tuple[bool, list[SuiteTest]]:
    """Parse one FTW YAML document; return whether it is enabled and its tests."""
    document = yaml.safe_load(text)
    if not isinstance(document, dict) or "tests" not in document:
        raise SuiteError(f"{rule_file}: expected a mapping with meta and tests")
    meta = document.get("meta") or {}
    enabled = bool(meta.get("enabled", True))
    tests = []
    for entry in document["tests"] or []:
        title = str(entry.get("test_title", ""))
        try:
            stages = tuple(
                Stage(
                    parse_stage_input(item["stage"].get("input") or {}),
                    parse_stage_output(item["stage"].get("output") or {}),
                )
                for item in entry.get("stages") or []
            )
        except SuiteError as error:
            raise SuiteError(f"{rule_file}, test {title}: {error}") from error
        if entry.get("enabled", True) is not False:
            tests.append(SuiteTest(rule_file=rule_file, title=title, stages=stages))
    return enabled, tests


@dataclass(slots=True)
class Suite:
    tests: list[SuiteTest]
    # Tests in rule files whose meta sets `enabled: false`; upstream skips them too.
    disabled: int


def load_suite(suite_dir: Path, rule_filter: str | None = None) -> Suite:
    """Load every rule file; `rule_filter` keeps files whose name contains it, such as 942100."""
    if not suite_dir.is_dir():
        raise SuiteError(
            f"suite folder {suite_dir} not found: set {TESTDATA_ENV} to the folder "
            f"that contains {SUITE_NAME}"
        )
    tests: list[SuiteTest] = []
    disabled = 0
    for path in sorted(suite_dir.glob("*/*.yaml")):
        rule_file = path.relative_to(suite_dir).as_posix()
        if rule_filter and rule_filter not in rule_file:
            continue
        enabled, file_tests = parse_rule_file(path.read_text(encoding="utf-8"), rule_file)
        if enabled:
            tests.extend(file_tests)
        else:
            disabled += len(file_tests)
    return Suite(tests, disabled)


# --- Request bytes ----------------------------------------------------------


def _form_encode(data: str) -> str:
    # FTW re-encodes a form body that has no %-escapes, so "a=1 OR 1=1"
    # is sent as "a=1+OR+1%3D1". parse_qsl drops pairs without a value.
    if unquote(data) != data:
        return data
    pairs = parse_qsl(data)
    return urlencode(pairs) if pairs else data


def build_request(stage: StageInput, request_id: str | None = None) -> bytes:
    """Return the bytes that FTW sends for a stage, plus an optional request-id header.

    raw_request is sent after FTW's unicode_escape decoding, so a literal
    backslash-r in it becomes a carriage return. encoded_request is base64 and
    is sent unchanged. Otherwise the request is built from its fields with
    FTW's defaults: a form Content-Type and a Content-Length for a body
    unless stop_magic is set, and the body re-encoded as a form.
    """
    if stage.encoded_request is not None:
        return base64.b64decode(stage.encoded_request)
    if stage.raw_request is not None:
        text = stage.raw_request.encode("utf-8").decode("unicode_escape")
        return text.encode("utf-8")
    headers = dict(stage.headers)
    data = stage.data
    if data and not stage.stop_magic:
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if headers["Content-Type"] == "application/x-www-form-urlencoded":
            data = _form_encode(data)
        # FTW counts characters, not bytes, as the suite was written for it.
        headers.setdefault("Content-Length", str(len(data)))
    if request_id is not None:
        headers[REQUEST_ID_HEADER] = request_id
    lines = [f"{stage.method} {stage.uri} {stage.version}"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    # NOTE: FTW encodes the body in the charset of its Content-Type. Every
    # body in the 3.3.4 suite is ASCII, where that equals UTF-8.
    return ("\r\n".join(lines) + "\r\n\r\n" + data).encode("utf-8")


# --- Responses --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    """The first response read from a connection; status None when none was valid HTTP."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # Why no valid response was read, such as "timed out" or "connection closed".
    error: str | None = None


_STATUS_LINE = re.compile(rb"^HTTP/\d\.\d (\d{3})(?: [^\r\n]*)?$")


def parse_response(data: bytes, error: str | None = None) -> Response:
    """Parse the first response in `data`; a missing or malformed head gives status None."""
    head, separator, rest = data.partition(b"\r\n\r\n")
    if not separator:
        return Response(None, error=error or "connection closed before a complete response")
    lines = head.split(b"\r\n")
    match = _STATUS_LINE.match(lines[0])
    if match is None:
        return Response(None, error=f"invalid status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    length = headers.get("content-length")
    body = rest[: int(length)] if length is not None and length.isdigit() else rest
    return Response(int(match.group(1)), headers, body, error)


def _response_complete(data: bytes) -> bool:
    head, separator, rest = data.partition(b"\r\n\r\n")
    if not separator:
        return False
    match = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
    if match is not None:
        return len(rest) >= int(match.group(1))
    if re.search(rb"\r\ntransfer-encoding:\s*chunked", head, re.IGNORECASE):
        return rest.endswith(b"0\r\n\r\n")
    # Without framing the body ends when the server closes the connection.
    return False


def exchange(port: int, request: bytes, timeout: float) -> Response:
    """Send `request` on a new loopback connection and read the first response."""
    received = bytearray()
    error: str | None = None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
            try:
                connection.sendall(request)
            except OSError as exc:
                # The server may reject and close before the whole request is sent.
                error = f"send failed: {exc}"
            deadline = time.monotonic() + timeout
            while not _response_complete(bytes(received)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    error = error or f"timed out after {timeout:g} s"
                    break
                connection.settimeout(remaining)
                try:
                    chunk = connection.recv(_READ_SIZE)
                except TimeoutError:
                    error = error or f"timed out after {timeout:g} s"
                    break
                except OSError as exc:
                    error = error or f"receive failed: {exc}"
                    break
                if not chunk:
                    break
                received.extend(chunk)
    except OSError as exc:
        return Response(None, error=f"connect failed: {exc}")
    return parse_response(bytes(received), error)


# --- Scoring -----------------------------------------------------------------


def render_log_lines(records: Iterable[dict[str, Any]]) -> list[str]:
    """Render each matched rule of the security-log records as a ModSecurity-style log line."""
    lines = []
    for record in records:
        for rule in record.get("rules", []):
            lines.append(
                f'[id "{rule.get("id")}"] [msg "{rule.get("msg", "")}"] '
                f'[data "{rule.get("data", "")}"] [severity "{rule.get("severity", "")}"]'
            )
    return lines


@dataclass(frozen=True, slots=True)
class Outcome:
    passed: bool
    reason: str = ""
    category: str = ""


def _problem_layer(response: Response) -> str | None:
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return None
    try:
        problem = json.loads(response.body)
    except ValueError:
        return None
    layer = problem.get("layer") if isinstance(problem, dict) else None
    return str(layer) if layer is not None else None


def score_stage(output: StageOutput, response: Response, log_lines: Sequence[str]) -> Outcome:
    """Score one stage's expectations against the response and the request's log lines."""
    if output.expect_error:
        if response.status is None or response.status == 400:
            return Outcome(True)
        return Outcome(False, f"expected an error, got status {response.status}", CATEGORY_NO_ERROR)
    failures: list[tuple[str, str]] = []
    if output.log_contains is not None:
        pattern = re.compile(output.log_contains)
        if not any(pattern.search(line) for line in log_lines):
            failures.append(
                (f"log does not contain {output.log_contains!r}", CATEGORY_MISSING_MATCH)
            )
    if output.no_log_contains is not None:
        pattern = re.compile(output.no_log_contains)
        hits = [line for line in log_lines if pattern.search(line)]
        if hits:
            failures.append(
                (
                    f"log contains {output.no_log_contains!r}: {hits[0][:200]}",
                    CATEGORY_UNEXPECTED_MATCH,
                )
            )
    if output.status is not None and response.status not in output.status:
        failures.append(
            (f"status {response.status}, expected one of {list(output.status)}", CATEGORY_STATUS)
        )
    if output.response_contains is not None and not re.search(
        output.response_contains, response.body.decode("utf-8", "replace")
    ):
        failures.append(
            (f"response does not contain {output.response_contains!r}", CATEGORY_RESPONSE)
        )
    if not failures:
        return Outcome(True)
    reason = "; ".join(message for message, _ in failures)
    return Outcome(False, reason, _categorize(failures[0][1], response))


def _categorize(category: str, response: Response) -> str:
    # A request that never reached the WAF cannot have matched any rule, so
    # that cause outranks the expectation that failed.
    if response.status is None:
        return CATEGORY_NO_RESPONSE
    layer = _problem_layer(response)
    if layer is not None and layer != "waf":
        return CATEGORY_HTTP_LAYER
    return category


# --- Servers -------------------------------------------------------------------


class _BackendHandler(socketserver.BaseRequestHandler):
    """Send 200 with an empty body for every request on the connection."""

    def handle(self) -> None:
        connection = h11.Connection(h11.SERVER)
        sock: socket.socket = self.request
        sock.settimeout(30)
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError:
                return
            if event is h11.NEED_DATA:
                try:
                    data = sock.recv(_READ_SIZE)
                except OSError:
                    return
                connection.receive_data(data)
                continue
            if event is h11.PAUSED:
                if not self._reset(connection):
                    return
                continue
            if isinstance(event, h11.ConnectionClosed):
                return
            if isinstance(event, h11.EndOfMessage):
                response = h11.Response(status_code=200, headers=[("Content-Length", "0")])
                try:
                    sock.sendall(connection.send(response) or b"")
                    sock.sendall(connection.send(h11.EndOfMessage()) or b"")
                except (OSError, h11.LocalProtocolError):
                    return

    @staticmethod
    def _reset(connection: h11.Connection) -> bool:
        if connection.our_state is h11.DONE and connection.their_state is h11.DONE:
            connection.start_next_cycle()
            return True
        return False


class _Backend(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def running_backend() -> Iterator[int]:
    """Run the 200-for-everything backend on a free loopback port; yield the port."""
    server = _Backend(("127.0.0.1", 0), _BackendHandler)
    thread = threading.Thread(target=server.serve_forever, name="waf-conformance-backend")
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# Sets the tx variables that upstream set in crs-setup.conf for the suite.
# Ringwall loads custom rules_files after the CRS files, so this phase 1
# action runs after the CRS phase 1 rules. That is early enough because the
# CRS 3.3.4 rules that read these variables (920250, 920360, 920370) run in
# phase 2, and REQUEST-901 sets no defaults for them.
SUITE_SETUP_RULES = """\
SecAction "id:10900,phase:1,pass,nolog,t:none,\\
setvar:tx.crs_validate_utf8_encoding=1,\\
setvar:tx.arg_name_length=100,\\
setvar:tx.arg_length=400"
"""


def gateway_config(backend_port: int, security_log: Path, setup_rules: Path) -> str:
    """Return the gateway configuration of the suite run, as YAML."""
    config = {
        "server": {
            "workers": 1,
            "trusted_proxies": ["127.0.0.1/32"],
            "request_id_header": REQUEST_ID_HEADER,
            "reject_header_name_variants": False,
            "limits": {
                "max_request_target_bytes": "64KiB",
                "max_header_count": 1000,
                "max_header_bytes": "256KiB",
                "max_body_bytes": "8MiB",
            },
            "timeouts": {"head": "5s", "body_idle": "5s", "drain": "1s"},
        },
        "logging": {
            "level": "warning",
            "access": {"enabled": False},
            "security": str(security_log),
        },
        "waf": {
            "mode": "detect",
            "paranoia": 4,
            "exclusions": {"ids": [910000]},
            "max_body_bytes": "1MiB",
            "rules_files": [str(setup_rules)],
        },
        "upstreams": {"backend": {"targets": [f"http://127.0.0.1:{backend_port}"]}},
        "routes": [{"name": "all", "path": "/", "upstream": "backend", "auth": "none"}],
    }
    return yaml.safe_dump(config, sort_keys=False)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextmanager
def running_gateway(config_path: Path, stderr_path: Path) -> Iterator[int]:
    """Run `ringwall run` with one worker on a free loopback port; yield the port."""
    port = _free_port()
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(  # noqa: S603 - fixed argv without a shell
            [
                sys.executable,
                "-m",
                "ringwall",
                "run",
                "-c",
                str(config_path),
                "--listen",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            _wait_listening(port, process, stderr_path)
            yield port
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_listening(port: int, process: subprocess.Popen[bytes], stderr_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"ringwall exited with status {process.returncode}: "
                f"{stderr_path.read_text(errors='replace')[-2000:]}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"ringwall did not listen on port {port} within {STARTUP_SECONDS:g} s")


# --- Running -------------------------------------------------------------------


class SecurityLogReader:
    """Index the records of the security log by request id, reading new lines on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._pending = b""
        self._records: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def records_for(self, request_id: str) -> list[dict[str, Any]]:
        with self._lock:
            self._read_new()
            return list(self._records.get(request_id, []))

    def _read_new(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as stream:
            stream.seek(self._offset)
            data = stream.read()
        self._offset += len(data)
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            if line.strip():
                record = json.loads(line)
                self._records.setdefault(str(record.get("request_id")), []).append(record)


@dataclass(slots=True)
class TestResult:
    rule_file: str
    title: str
    passed: bool
    reason: str = ""
    category: str = ""
    status: int | None = None
    matched_ids: list[int] = field(default_factory=list)


def run_test(test: SuiteTest, port: int, log: SecurityLogReader, timeout: float) -> TestResult:
    """Send every stage of one test and score it; the test fails at its first failing stage."""
    status: int | None = None
    matched: list[int] = []
    for stage in test.stages:
        request_id = f"crs-{uuid.uuid4().hex}"
        response = exchange(port, build_request(stage.input, request_id), timeout)
        status = response.status
        # The gateway writes the record before it sends the response, so it is in the file now.
        records = log.records_for(request_id)
        matched = [rule["id"] for record in records for rule in record.get("rules", [])]
        outcome = score_stage(stage.output, response, render_log_lines(records))
        if not outcome.passed:
            category = KNOWN_LIBMODSECURITY_DIFFERENCES.get(test.title)
            return TestResult(
                test.rule_file,
                test.title,
                False,
                outcome.reason + (f" ({category})" if category else ""),
                CATEGORY_LIBMODSECURITY if category else outcome.category,
                status,
                matched,
            )
    return TestResult(test.rule_file, test.title, True, status=status, matched_ids=matched)


def run_suite(tests: Sequence[SuiteTest], jobs: int, timeout: float) -> list[TestResult]:
    """Start the backend and the gateway, run `tests` and stop both."""
    with tempfile.TemporaryDirectory(prefix="ringwall-waf-conformance-") as directory:
        workdir = Path(directory)
        setup_rules = workdir / "suite-setup.conf"
        setup_rules.write_text(SUITE_SETUP_RULES)
        security_log = workdir / "security.log"
        config_path = workdir / "ringwall.yaml"
        with running_backend() as backend_port:
            config_path.write_text(gateway_config(backend_port, security_log, setup_rules))
            with running_gateway(config_path, workdir / "ringwall-stderr.log") as port:
                reader = SecurityLogReader(security_log)
                with ThreadPoolExecutor(max_workers=jobs) as pool:
                    return list(pool.map(lambda test: run_test(test, port, reader, timeout), tests))


def summarize(results: Sequence[TestResult]) -> dict[str, Any]:
    """Count passed and failed tests in total, per rule file and per failure category."""
    per_file: dict[str, dict[str, int]] = {}
    for result in results:
        counts = per_file.setdefault(result.rule_file, {"passed": 0, "failed": 0})
        counts["passed" if result.passed else "failed"] += 1
    categories = Counter(result.category for result in results if not result.passed)
    passed = sum(result.passed for result in results)
    return {
        "total": len(results),
        "passed": passed,
        "failed": len(results) - passed,
        "per_file": per_file,
        "failure_categories": dict(categories.most_common()),
    }


def print_summary(summary: dict[str, Any], results: Sequence[TestResult], disabled: int) -> None:
    failed_files = {
        name: counts for name, counts in summary["per_file"].items() if counts["failed"]
    }
    print(f"{'rule file':<60} passed failed")
    for name, counts in sorted(summary["per_file"].items()):
        marker = "  <-" if name in failed_files else ""
        print(f"{name:<60} {counts['passed']:>6} {counts['failed']:>6}{marker}")
    print()
    for result in results:
        if not result.passed:
            print(f"FAIL {result.title}: {result.reason} [{result.category}]")
    print()
    for category, count in summary["failure_categories"].items():
        print(f"{count:>5}  {category}")
    print(
        f"\npassed {summary['passed']} of {summary['total']} tests, failed {summary['failed']}"
        f" ({disabled} tests in disabled rule files not run; reference: {REFERENCE_PASSED})"
    )


def write_results(
    summary: dict[str, Any], results: Sequence[TestResult], disabled: int, directory: Path
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"crs-3.3.4-{stamp}.json"
    document = {
        "suite": SUITE_NAME,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "reference_passed": REFERENCE_PASSED,
        "disabled_tests": disabled,
        **summary,
        "failures": [asdict(result) for result in results if not result.passed],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--filter",
        metavar="RULE_ID",
        help="run only rule files whose path contains this text, such as 942100 or REQUEST-942",
    )
    parser.add_argument("--jobs", type=int, default=4, help="tests sent in parallel (default: 4)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_READ_TIMEOUT,
        help=f"seconds to wait for each response (default: {DEFAULT_READ_TIMEOUT:g})",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help="folder for the results JSON (default: conformance/results)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"invalid --jobs {args.jobs}: expected 1 or more")

    suite_dir = testdata_root() / SUITE_NAME
    try:
        suite = load_suite(suite_dir, args.filter)
    except (SuiteError, yaml.YAMLError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not suite.tests:
        print(f"error: no enabled tests in {suite_dir} match {args.filter!r}", file=sys.stderr)
        return 2

    started = time.monotonic()
    results = run_suite(suite.tests, args.jobs, args.timeout)
    summary = summarize(results)
    print_summary(summary, results, suite.disabled)
    path = write_results(summary, results, suite.disabled, args.results_dir)
    print(f"results: {path} ({time.monotonic() - started:.1f} s)")
    return 0 if summary["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
