"""A binding to libmodsecurity 3 that runs the OWASP Core Rule Set.

Rule sets are loaded through ctypes. Each transaction runs in one call to the
C extension `ringwall.edge.waf._transaction`, which releases the GIL for the
whole transaction. Where the extension is not built, every libmodsecurity
call of a transaction goes through ctypes instead.

`WafEngine.load(config)` compiles one rule set for one WAF policy: Ringwall's
main file (rules/ringwall-main.conf), the policy's settings, crs-setup.conf,
every CRS rule file, the policy's custom files and its exclusions. Each
policy has its own rule set because libmodsecurity 3.0.9 has no API to set
the engine mode or a tx variable of one transaction from outside the rules.

Thread safety (libmodsecurity 3.0.9): rule loading is not thread-safe, and
the in-memory collections that CRS uses lock only on writes. Load every
engine once in the supervisor before the workers fork, and never run two
transactions of one process at the same time. `inspect` holds a process-wide
lock to enforce the second rule.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ringwall.config.waf import WafConfig
from ringwall.errors import RingwallError

try:
    from ringwall.edge.waf import _transaction
except ImportError:  # not built: setup.py needs the libmodsecurity headers for it
    _transaction = None  # type: ignore[assignment]

log = logging.getLogger("ringwall.waf")

LIBRARY = "libmodsecurity.so.3"
MAIN_FILE = Path(__file__).resolve().parents[3] / "rules" / "ringwall-main.conf"
CRS_SETUP = Path("/etc/modsecurity/crs/crs-setup.conf")
CRS_RULES_DIR = Path("/usr/share/modsecurity-crs/rules")
CRS_EXCLUSIONS_BEFORE = Path("/etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf")
CRS_EXCLUSIONS_AFTER = Path("/etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf")

# Ringwall's own rule ids. Ids 10000-10007 are in rules/ringwall-main.conf, the others
# are written by `build_rules_text`.
RULE_BODY_INVALID = 10002
RULE_MULTIPART_STRICT = 10003
RULE_MULTIPART_BOUNDARY = 10004
RULE_INTERNAL_ERROR = 10005
RULE_POLICY = 10010
RULE_TOO_MANY_ARGS = 10011
RULE_ANOMALY_SCORE = 10012
FIRST_TARGET_EXCLUSION = 10100
RULE_BLOCKING_EVALUATION = 949110

# Rules that reject a request the WAF could not fully inspect. Ringwall
# enforces them in detect mode too, with this status.
ENFORCED_RULES = {
    RULE_BODY_INVALID: 400,
    RULE_MULTIPART_STRICT: 400,
    RULE_MULTIPART_BOUNDARY: 400,
    RULE_INTERNAL_ERROR: 400,
    RULE_TOO_MANY_ARGS: 400,
}

# Syslog severities, as libmodsecurity 3.0.9 writes them in a log line.
SEVERITIES = ("EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG")
_TOTAL_SCORE = re.compile(rb"Total Score: (\d+)")
# libmodsecurity 3.0.9 reports a rule error as "Rules error. File: F. Line: N. ..."
_RULE_ERROR_LOCATION = re.compile(r"File: (.*?)\. Line: (\d+)\.")


class WafLoadError(RingwallError):
    """Rules that libmodsecurity could not load; `file` and `line` locate the first error."""

    def __init__(self, message: str, file: str | None, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line


@dataclass(frozen=True, slots=True)
class WafRequest:
    """One request to inspect: the connection, the head as sent and the whole body."""

    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    method: str
    # The request target as sent: path and query, still percent-encoded.
    uri: bytes
    version: str = "1.1"
    headers: Sequence[tuple[bytes, bytes]] = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class MatchedRule:
    id: int
    message: str
    # A syslog severity name such as CRITICAL, or "" when the rule sets none.
    severity: str
    # The rule's logdata, as libmodsecurity wrote it (up to 200 bytes in 3.0.9).
    data: str


@dataclass(frozen=True, slots=True)
class WafVerdict:
    blocked: bool
    # The status to reject with when blocked, otherwise 200.
    status: int
    rules: tuple[MatchedRule, ...]
    anomaly_score: int
    # The rule whose disruptive action blocked the request, such as 949110.
    blocking_rule: int | None = None


class _Intervention(ctypes.Structure):
    # ModSecurityIntervention from modsecurity/intervention.h (3.0.9). `url`
    # and `log` are malloc'ed by the library and freed by the caller.
    _fields_ = (
        ("status", ctypes.c_int),
        ("pause", ctypes.c_int),
        ("url", ctypes.c_void_p),
        ("log", ctypes.c_void_p),
        ("disruptive", ctypes.c_int),
    )


_LOG_CALLBACK_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p)


class _Library:
    """The loaded shared library, one ModSecurity instance and its log callback.

    With `native`, the C extension `_transaction` receives the instance's log
    lines and runs every transaction with one call. Otherwise each
    libmodsecurity call of a transaction goes through ctypes.
    """

    def __init__(self, native: bool) -> None:
        self.lib = ctypes.CDLL(LIBRARY)
        libc_name = ctypes.util.find_library("c") or "libc.so.6"
        self.libc = ctypes.CDLL(libc_name)
        self.libc.free.argtypes = (ctypes.c_void_p,)
        self.libc.free.restype = None
        self._declare()
        self.native = native
        # Log lines of the running ctypes transactions, keyed by the logCbData pointer value.
        self.collectors: dict[int, list[bytes]] = {}
        # ctypes must keep the callback object alive as long as the library can call it.
        self._callback = _LOG_CALLBACK_TYPE(self._on_log)
        self.instance = self.lib.msc_init()
        if not self.instance:
            raise WafLoadError("msc_init failed: libmodsecurity could not start", None, None)
        self.lib.msc_set_connector_info(self.instance, b"Ringwall")
        if native:
            _transaction.install_log_callback(self.instance)
        else:
            self.lib.msc_set_log_cb(self.instance, self._callback)

    def _declare(self) -> None:
        lib = self.lib
        vp, cp, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int  # void *, char *, int
        error_out = ctypes.POINTER(ctypes.c_void_p)
        prototypes: dict[str, tuple[tuple[type, ...], type | None]] = {
            "msc_init": ((), vp),
            "msc_set_connector_info": ((vp, cp), None),
            "msc_set_log_cb": ((vp, _LOG_CALLBACK_TYPE), None),
            "msc_create_rules_set": ((), vp),
            "msc_rules_add_file": ((vp, cp, error_out), i),
            "msc_rules_add": ((vp, cp, error_out), i),
            "msc_rules_cleanup": ((vp,), i),
            "msc_new_transaction_with_id": ((vp, vp, cp, vp), vp),
            "msc_process_connection": ((vp, cp, i, cp, i), i),
            "msc_process_uri": ((vp, cp, cp, cp), i),
            "msc_add_n_request_header": (
                (vp, cp, ctypes.c_size_t, cp, ctypes.c_size_t),
                i,
            ),
            "msc_process_request_headers": ((vp,), i),
            "msc_append_request_body": ((vp, cp, ctypes.c_size_t), i),
            "msc_process_request_body": ((vp,), i),
            "msc_intervention": ((vp, ctypes.POINTER(_Intervention)), i),
            "msc_process_logging": ((vp,), i),
            "msc_transaction_cleanup": ((vp,), None),
            "msc_cleanup": ((vp,), None),
        }
        for name, (argtypes, restype) in prototypes.items():
            function = getattr(lib, name)
            function.argtypes = argtypes
            function.restype = restype

    def _on_log(self, data: int | None, line: bytes | None) -> None:
        # Called by libmodsecurity in the inspecting thread, once per matched rule
        # that logs. Exceptions cannot cross the C boundary, so none is raised here.
        collector = self.collectors.get(data or 0)
        if collector is not None and line is not None:
            collector.append(line)

    def take_string(self, pointer: int | None) -> str:
        """Decode a malloc'ed C string from the library and free it."""
        if not pointer:
            return ""
        try:
            return ctypes.string_at(pointer).decode("utf-8", "backslashreplace")
        finally:
            self.libc.free(pointer)


# The process's libraries, keyed by whether they run transactions in the C extension.
_libraries: dict[bool, _Library] = {}
_library_lock = threading.Lock()
# One transaction at a time per process (see the module docstring).
_transaction_lock = threading.Lock()
_transaction_keys = itertools.count(1)


def _get_library(native: bool) -> _Library:
    """Return the process's library, with the C extension if `native` and it is built."""
    with _library_lock:
        if native and _transaction is None:
            native = False
            if native not in _libraries:
                log.warning(
                    "the C extension ringwall.edge.waf._transaction is not built, so WAF "
                    "transactions call libmodsecurity through ctypes, which costs more CPU. "
                    "Install libmodsecurity-dev and reinstall with `pip install -e .` to build it."
                )
        library = _libraries.get(native)
        if library is None:
            library = _libraries[native] = _Library(native)
        return library


def _transaction_id(key: int) -> bytes:
    # Without an id from the caller, libmodsecurity 3.0.9 seeds a new
    # std::mt19937 from std::random_device for each transaction. That took
    # 28 µs per transaction in a tight loop on a 2-vCPU Xeon VM, where creating
    # and freeing a transaction with an id took 10 µs. CRS 3.3.4 reads the id
    # (UNIQUE_ID) only to sample requests, which Ringwall does not configure.
    return b"%d" % key


def crs_rule_files() -> list[Path]:
    """Return the installed CRS files in the order of Debian's owasp-crs.load."""
    files = [CRS_EXCLUSIONS_BEFORE] if CRS_EXCLUSIONS_BEFORE.is_file() else []
    files.extend(sorted(CRS_RULES_DIR.glob("*.conf")))
    if CRS_EXCLUSIONS_AFTER.is_file():
        files.append(CRS_EXCLUSIONS_AFTER)
    return files


def build_rules_text(config: WafConfig, main_file: Path = MAIN_FILE) -> str:
    """Return the SecLang text that loads the rules of one policy."""
    engine = "On" if config.mode == "block" else "DetectionOnly"
    # The body limit is one byte above the policy's so that a body of exactly
    # max_body_bytes is inspected. WafLayer rejects larger bodies before inspection.
    body_limit = config.max_body_bytes + 1
    lines = [
        f"Include {_quote_path(main_file)}",
        f"SecRuleEngine {engine}",
        f"SecRequestBodyLimit {body_limit}",
        f"SecRequestBodyNoFilesLimit {body_limit}",
        # One argument above the limit is parsed, so rule 10011 can see that
        # the limit was exceeded.
        f"SecArgumentsLimit {config.max_args + 1}",
        # CRS rule 901 sets its defaults only for tx variables still unset, so
        # this phase 1 action must come before the CRS files.
        f'SecAction "id:{RULE_POLICY},phase:1,pass,nolog,t:none,'
        f"setvar:tx.paranoia_level={config.paranoia},"
        f'setvar:tx.inbound_anomaly_score_threshold={config.inbound_anomaly_threshold}"',
        f'SecRule &ARGS "@gt {config.max_args}" "id:{RULE_TOO_MANY_ARGS},phase:2,t:none,'
        f"log,deny,status:400,msg:'Too many arguments',severity:2\"",
    ]

    for offset, exclusion in enumerate(config.exclusions.targets):
        lines.append(
            f'SecAction "id:{FIRST_TARGET_EXCLUSION + offset},phase:1,pass,nolog,t:none,'
            f'ctl:ruleRemoveTargetById={exclusion.id};{exclusion.target}"'
        )

    lines.append(f"Include {_quote_path(CRS_SETUP)}")
    lines.extend(f"Include {_quote_path(path)}" for path in crs_rule_files())
    lines.extend(f"Include {_quote_path(path.resolve())}" for path in config.rules_files)
    lines.extend(f"SecRuleRemoveById {rule_id}" for rule_id in config.exclusions.ids)
    lines.extend(f'SecRuleRemoveByTag "{tag}"' for tag in config.exclusions.tags)

    # Reports the total score of a request that scored below the threshold.
    # A request at or above it reports its score in the message of rule 949110.
    lines.append(
        f'SecRule TX:ANOMALY_SCORE "@gt 0" "id:{RULE_ANOMALY_SCORE},phase:2,pass,log,t:none,'
        f"msg:'Anomaly score',logdata:'%{{tx.anomaly_score}}'\""
    )
    return "\n".join(lines) + "\n"


def _quote_path(path: Path) -> str:
    text = str(path)
    if any(char in text for char in '"\n\r') or not path.is_absolute():
        raise WafLoadError(
            f"unusable rules path {text[:200]!r}: expected an absolute path "
            "without quotes or line breaks",
            text,
            None,
        )
    return f'"{text}"'


def parse_rule_error(message: str) -> tuple[str | None, int | None]:
    """Return the file and line that a libmodsecurity rule error names, if it names them."""
    match = _RULE_ERROR_LOCATION.search(message)
    if match is None:
        return None, None
    return match.group(1), int(match.group(2))


def _rule_files(config: WafConfig, main_file: Path) -> list[Path]:
    return [main_file, CRS_SETUP, *crs_rule_files(), *config.rules_files]


def _add_file(library: _Library, path: Path) -> str | None:
    """Load one file into a throwaway rule set; return the error message, if any."""
    rules = library.lib.msc_create_rules_set()
    error = ctypes.c_void_p()
    try:
        with _transaction_lock:
            loaded = library.lib.msc_rules_add_file(rules, bytes(path), ctypes.byref(error))
        message = library.take_string(error.value).strip()
    finally:
        library.lib.msc_rules_cleanup(rules)
    return message if loaded < 0 else None


def _locate_error(
    library: _Library, config: WafConfig, main_file: Path, message: str
) -> WafLoadError:
    # Rules loaded from a string with Include lines report the line of the
    # composed text and no file name (libmodsecurity 3.0.9), so each file is
    # loaded on its own to find the one that fails and its line.
    for path in _rule_files(config, main_file):
        file_message = _add_file(library, path)
        if file_message is not None:
            file, line = parse_rule_error(file_message)
            return WafLoadError(
                f"failed to load the WAF rules: {file_message}", file or str(path), line
            )
    file, line = parse_rule_error(message)
    if file is not None and file.startswith("<<"):
        file = None
    return WafLoadError(f"failed to load the WAF rules: {message}", file, line)


# libmodsecurity 3.0.9 writes [msg], [data] and [severity] in this order in
# every log line, and does not escape the values. A value that can hold
# request bytes therefore ends where the next fixed field starts.
_FIELD_ENDS = {b"msg": b'"] [data "', b"data": b'"] [severity "'}


def _field(line: bytes, name: bytes) -> bytes | None:
    start = line.find(b" [" + name + b' "')
    if start < 0:
        return None
    start += len(name) + 4
    end = line.find(_FIELD_ENDS.get(name, b'"] ['), start)
    if end < 0:
        end = line.find(b'"]', start)
    if end < 0:
        return None
    return line[start:end]


def parse_log_line(line: bytes) -> MatchedRule | None:
    """Parse one libmodsecurity 3.0.9 log or intervention line into a matched rule."""
    rule_id = _field(line, b"id")
    if rule_id is None or not rule_id.isdigit():
        return None
    severity_field = _field(line, b"severity")
    severity = ""
    if severity_field is not None and severity_field.isdigit():
        number = int(severity_field)
        severity = SEVERITIES[number] if number < len(SEVERITIES) else str(number)
    elif severity_field:
        severity = severity_field.decode("ascii", "backslashreplace")
    return MatchedRule(
        id=int(rule_id),
        message=(_field(line, b"msg") or b"").decode("utf-8", "backslashreplace"),
        severity=severity,
        data=(_field(line, b"data") or b"").decode("utf-8", "backslashreplace"),
    )


@dataclass(slots=True)
class _Transaction:
    """The state that `inspect` gathers while one transaction runs."""

    lines: list[bytes] = field(default_factory=list)
    status: int = 200
    blocking_line: bytes | None = None


class WafEngine:
    """One compiled rule set: the WAF policy of one or more routes."""

    def __init__(self, library: _Library, rules: int, config: WafConfig) -> None:
        self._library = library
        self._rules: int | None = rules
        self.config = config

    @property
    def native(self) -> bool:
        """Whether transactions run in the C extension instead of through ctypes."""
        return self._library.native

    @classmethod
    def load(
        cls, config: WafConfig, main_file: Path = MAIN_FILE, *, native: bool = True
    ) -> WafEngine:
        """Compile the rules of one policy; raise WafLoadError naming the file and line.

        With `native`, transactions run in the C extension when it is built.
        `native=False` makes every libmodsecurity call go through ctypes.
        """
        library = _get_library(native)
        text = build_rules_text(config, main_file)
        rules = library.lib.msc_create_rules_set()
        if not rules:
            raise WafLoadError("msc_create_rules_set failed", None, None)
        error = ctypes.c_void_p()
        with _transaction_lock:
            loaded = library.lib.msc_rules_add(rules, text.encode("utf-8"), ctypes.byref(error))
        if loaded < 0:
            message = library.take_string(error.value).strip()
            library.lib.msc_rules_cleanup(rules)
            raise _locate_error(library, config, main_file, message)
        library.take_string(error.value)
        return cls(library, rules, config)

    def close(self) -> None:
        """Free the rule set after the running transaction; the engine cannot inspect afterwards."""
        with _transaction_lock:
            if self._rules is not None:
                self._library.lib.msc_rules_cleanup(self._rules)
                self._rules = None

    def inspect(self, request: WafRequest) -> WafVerdict:
        """Run the request through the rules; block only as the policy's mode allows."""
        key = next(_transaction_keys)
        state = _Transaction()
        library = self._library
        with _transaction_lock:
            rules = self._rules
            if rules is None:
                raise RuntimeError("inspect() called on a closed WafEngine")
            if library.native:
                self._run_native(rules, request, key, state)
            else:
                library.collectors[key] = state.lines
                try:
                    self._run(rules, request, key, state)
                finally:
                    del library.collectors[key]
        return self._verdict(state)

    def _run_native(self, rules: int, request: WafRequest, key: int, state: _Transaction) -> None:
        status, blocking_line, lines = _transaction.run(
            self._library.instance,
            rules,
            _transaction_id(key),
            request.client_ip.encode("ascii"),
            request.client_port,
            request.server_ip.encode("ascii"),
            request.server_port,
            request.method.encode("ascii"),
            request.uri,
            request.version.encode("ascii"),
            request.headers,
            request.body,
        )
        state.lines.extend(lines)
        state.status = status
        state.blocking_line = blocking_line

    def _run(self, rules: int, request: WafRequest, key: int, state: _Transaction) -> None:
        lib = self._library.lib
        transaction = lib.msc_new_transaction_with_id(
            self._library.instance, rules, _transaction_id(key), key
        )
        if not transaction:
            raise MemoryError("msc_new_transaction_with_id failed")
        try:
            for _ in self._phases(lib, transaction, request):
                if self._intervened(transaction, state):
                    break
            lib.msc_process_logging(transaction)
        finally:
            lib.msc_transaction_cleanup(transaction)

    @staticmethod
    def _phases(lib: ctypes.CDLL, transaction: int, request: WafRequest) -> Iterator[None]:
        # Each step is one ModSecurity phase; the caller checks for an
        # intervention after each, as libmodsecurity 3.0.9 requires.
        lib.msc_process_connection(
            transaction,
            request.client_ip.encode("ascii"),
            request.client_port,
            request.server_ip.encode("ascii"),
            request.server_port,
        )
        yield
        lib.msc_process_uri(
            transaction, request.uri, request.method.encode("ascii"), request.version.encode()
        )
        yield
        for name, value in request.headers:
            lib.msc_add_n_request_header(transaction, name, len(name), value, len(value))
        lib.msc_process_request_headers(transaction)
        yield
        if request.body:
            lib.msc_append_request_body(transaction, request.body, len(request.body))
        lib.msc_process_request_body(transaction)
        yield

    def _intervened(self, transaction: int, state: _Transaction) -> bool:
        intervention = _Intervention(status=200, pause=0, url=None, log=None, disruptive=0)
        disruptive = self._library.lib.msc_intervention(transaction, ctypes.byref(intervention))
        self._library.take_string(intervention.url)
        log = self._library.take_string(intervention.log)
        if not disruptive and not intervention.disruptive:
            return False
        state.status = intervention.status
        state.blocking_line = log.encode("utf-8", "backslashreplace") if log else None
        return True

    def _verdict(self, state: _Transaction) -> WafVerdict:
        lines = list(state.lines)
        if state.blocking_line is not None:
            lines.append(state.blocking_line)
        rules: list[MatchedRule] = []
        seen: set[tuple[int, str]] = set()
        score = 0
        for line in lines:
            rule = parse_log_line(line)
            if rule is None:
                continue
            if rule.id == RULE_ANOMALY_SCORE:
                score = max(score, int(rule.data) if rule.data.isdigit() else 0)
                continue
            if rule.id == RULE_BLOCKING_EVALUATION and (found := _TOTAL_SCORE.search(line)):
                score = max(score, int(found.group(1)))
            if (rule.id, rule.data) not in seen:
                seen.add((rule.id, rule.data))
                rules.append(rule)
        blocking_rule = parse_log_line(state.blocking_line) if state.blocking_line else None
        blocked = blocking_rule is not None or state.status != 200
        status = state.status
        if not blocked:
            enforced = [rule.id for rule in rules if rule.id in ENFORCED_RULES]
            if enforced:
                blocked, status = True, ENFORCED_RULES[enforced[0]]
                blocking_rule = next(rule for rule in rules if rule.id == enforced[0])
        return WafVerdict(
            blocked=blocked,
            status=status if blocked else 200,
            rules=tuple(rules),
            anomaly_score=score,
            blocking_rule=blocking_rule.id if blocking_rule else None,
        )
