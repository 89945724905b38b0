"""Parse request bodies as strict JSON and validate them against a JSON Schema.

A gateway that accepts a body its upstream reads differently has checked the
wrong document. `parse_strict_json` therefore rejects the inputs that
common JSON parsers disagree on, instead of picking one reading:

- Duplicate object keys, compared after decoding, so `{"a":1,"\\u0061":2}`
  is a duplicate. Parsers differ on whether the first or the last one wins.
- `NaN`, `Infinity` and `-Infinity`, which are not JSON (RFC 8259, section
  6) but which Python's `json` module accepts by default.
- Bytes that are not UTF-8 (RFC 8259, section 8.1), a UTF-8 byte order
  mark, and `\\uD800`-style escapes that leave a lone surrogate. A lone
  surrogate cannot be encoded as UTF-8, and RFC 8259, section 8.2 calls
  the behaviour of parsers that receive one unpredictable: some reject it,
  others replace it with U+FFFD. Escaped surrogate pairs and noncharacters
  such as U+FFFF are accepted.
- Integers outside the signed 64-bit range, the common integer type of
  backends (Java `long`, Go `int64`, SQL `bigint`). Python itself has no
  limit, apart from the 4300-digit cap on converting a string to an int.
  Literals of more than 20 characters are rejected before any conversion,
  so that cap never comes into play.
- Numbers with a fraction or exponent that overflow a 64-bit float, such as
  `1e400`. Python reads them as infinity. Values that lose precision or
  underflow to zero are accepted, like in most parsers.
- Nesting deeper than `max_depth` containers, and objects or arrays with
  more than `max_members` entries.
- Anything after the top-level value other than JSON whitespace.

Any top-level value is allowed, as RFC 8259 allows. A schema can require
an object.

The C extension `_strict_json` (see `_strict_json.c`) parses a body in one
pass and returns the document only when this module would accept it. The
Python parser below runs for the bodies it rejects, to name the first
problem, and for every body where the extension is not built.

The Python parser finds duplicate keys by comparing the members of the
parsed objects with the colons in the body (see `_scan_counting`), which is
cheaper than a hook that receives every object's key-value pairs. A body
that fails any check is parsed again with such hooks, so that every
rejection names the first problem in document order.

Costs, measured with timeit (best of 9 runs of process CPU time) on a
2-core AMD EPYC VM with CPython 3.11.7 that other jobs shared, for the
998-byte order body of `bench/validated.py` with 11 objects. A plain
`json.loads` took 7.7 µs in the same runs. `parse_strict_json` took about
2.1 µs with the C parser, and the Python parser alone 11 µs (12 µs when a
string contains a colon). Rejecting a duplicate key in that body took about
47 µs, because the Python parser parses it three times. Validation with
jsonschema-rs 0.58.3 took about 1.7 µs. `check_json_body` with the schema of
`bench/validated.py` took 1.2 µs, against 4.0 µs for the C parser and
jsonschema-rs, because the C check (`_strict_json.check`) accepts the body
without building the document. A body with more brackets than `max_depth`
also pays for the exact depth scan, about 150 µs for 2,500 nested arrays
(5 KB).
"""

from __future__ import annotations

import json
import json.scanner
import math
import re
import threading
from collections.abc import Callable, Iterator
from itertools import accumulate
from typing import Any, NoReturn, cast

import jsonschema_rs
from jsonschema_rs import ValidationErrorKind

from ringwall.errors import RingwallError

try:
    from ringwall.gateway.validation import _strict_json
except ImportError:  # not built: `pip install -e .` compiles it, and the Python parser runs
    _strict_json = None  # type: ignore[assignment]

DEFAULT_MAX_DEPTH = 64
DEFAULT_MAX_MEMBERS = 10_000
# In CPython 3.11, json's C scanner counts each nesting level against the
# interpreter's recursion limit (1000 by default), which the caller's Python
# frames share, so a larger max_depth could raise RecursionError in the
# parser. 500 leaves the caller 500 frames.
MAX_DEPTH_LIMIT = 500

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# "-9223372036854775808" is the longest literal in the signed 64-bit range.
_INT64_MAX_LITERAL_LENGTH = 20

_JSON_WHITESPACE = " \t\n\r"
_UTF8_BOM = b"\xef\xbb\xbf"
_SURROGATE = re.compile("[\ud800-\udfff]")

# Tables for the depth scan: keep only brackets, then map openers to +1 and
# closers to 0xFF, which a signed-byte memoryview reads as -1.
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


class BodyInvalid(RingwallError):
    """A request body that is not strict JSON or does not match its schema.

    `reason` is written by Ringwall and never quotes the body, so it is safe
    to send to the client and to log. `pointer` is the RFC 6901 JSON pointer
    of the failing value, such as `/items/3`. It is "" for the whole
    document, which is also used when the location is unknown (encoding,
    syntax and nesting-depth errors). Pointer tokens come from the body, so
    a token longer than 64 characters or with characters outside printable
    ASCII is shown as a short escaped excerpt.
    """

    def __init__(self, reason: str, pointer: str) -> None:
        super().__init__(f"{reason} at {pointer}" if pointer else reason)
        self.reason = reason
        self.pointer = pointer


# ---------------------------------------------------------------------------
# Strict parsing


def parse_strict_json(
    body: bytes,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> object:
    """Parse `body` as strict JSON and return the document.

    Raises BodyInvalid for the inputs listed in the module docstring, and
    ValueError when `max_depth` is not between 1 and MAX_DEPTH_LIMIT or
    `max_members` is less than 1.
    """
    if not 1 <= max_depth <= MAX_DEPTH_LIMIT:
        raise ValueError(f"max_depth must be between 1 and {MAX_DEPTH_LIMIT}, got {max_depth}")
    if max_members < 1:
        raise ValueError(f"max_members must be at least 1, got {max_members}")
    if _strict_json is not None:
        document = _strict_json.parse(body, max_depth, max_members)
        if document is not _strict_json.REJECTED:
            return document
    return _parse_in_python(body, max_depth, max_members)


def _parse_in_python(body: bytes, max_depth: int, max_members: int) -> object:
    """Parse `body` like parse_strict_json, without the C parser.

    This is the reference that the C parser must match, and the only code
    that writes the reason of a rejection.
    """
    # 1. Encoding. RFC 8259 lets a parser ignore a byte order mark, so some
    # upstreams would skip it and others would reject the body.
    if body.startswith(_UTF8_BOM):
        raise BodyInvalid("invalid JSON: a UTF-8 byte order mark is not allowed", "")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyInvalid(f"invalid UTF-8 at byte {exc.start}", "") from None

    # 2. Depth, before parsing, so that a deeply nested body costs one linear
    # scan. A body with no more brackets than max_depth cannot be deeper.
    # The checks below count and search `shapes` (see `_SHAPES`) instead of
    # scanning the body again.
    shapes = body.translate(_SHAPES)
    if shapes.count(b"[") > max_depth and _nesting_depth(body) > max_depth:
        raise BodyInvalid(f"JSON nesting deeper than {max_depth} levels", "")

    # 3. Syntax, with hooks that reject NaN, Infinity, float overflow and,
    # when the body has a long enough digit run, integers outside the signed
    # 64-bit range. The fast scan counts object members instead of building
    # pairs for a duplicate-key hook. When it cannot vouch for the body, the
    # exact scan parses it again and raises the error of the first problem.
    check_integers = _LONG_DIGIT_RUN in shapes
    document = _scan_counting(text, body, shapes, check_integers=check_integers)
    if document is _UNDECIDED:
        document = _scan(text, _INTEGER_CHECKING_DECODER if check_integers else _DECODER)

    # 4. Sizes. An array of n values needs at least 2n + 1 bytes and an
    # object of n members more, so a short body cannot exceed the limit.
    if len(body) > 2 * max_members + 1:
        _check_member_counts(document, max_members)

    # 5. Lone surrogates can only come from \u escapes. `\ud` also matches
    # escapes of U+D000 to U+D7FF, which only costs the full check below.
    if b"\\" in body and b"\\ud" in body.lower():
        _check_surrogates(document)

    return document


def _nesting_depth(body: bytes) -> int:
    """Return the deepest container nesting of `body`, exact for valid JSON.

    Brackets inside strings do not count. For invalid JSON the result may be
    wrong, but the parser then rejects the body before it nests deeper than
    the valid prefix that this scan counted correctly.
    """
    steps = _outside_strings(body).translate(_BRACKET_STEPS, _NOT_BRACKETS)
    return max(accumulate(memoryview(steps).cast("b")), default=0)


def _outside_strings(body: bytes) -> bytes:
    """Return the bytes of `body` outside JSON strings, exact for valid JSON."""
    # Drop escaped backslashes first, so that in `"\\"` the second backslash
    # is not read as escaping the closing quote. Then drop escaped quotes, so
    # that splitting at the remaining quotes alternates between text outside
    # strings (even indexes) and string contents (odd indexes).
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(body.split(b'"')[::2])


class _Violation:
    """A value the strict hooks rejected, kept in its place to find its pointer."""

    __slots__ = ("member", "reason")

    def __init__(self, reason: str, member: str | None) -> None:
        self.reason = reason
        # The key of the offending member, for a duplicate key.
        self.member = member


class _ViolationFound(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _raise_violation(reason: str, member: str | None) -> NoReturn:
    raise _ViolationFound(reason)


def _make_decoder(
    on_violation: Callable[[str, str | None], object], *, check_integers: bool
) -> json.JSONDecoder:
    """Build a decoder whose hooks pass each rejected value to `on_violation`.

    The exact decoders raise at the first violation. The locating decoder
    leaves a _Violation in place of the value, so that a walk over the
    finished document can name its pointer. json calls object hooks from
    the innermost object outward, so a hook cannot see the path.

    Without `check_integers`, json's C code converts integers, which costs
    about 80 ns less per integer than a Python hook.
    """

    def build_object(pairs: list[tuple[str, Any]]) -> object:
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        return on_violation("duplicate key", _first_duplicate_key(pairs))

    def parse_int(literal: str) -> object:
        if len(literal) < 19:
            return int(literal)
        if len(literal) <= _INT64_MAX_LITERAL_LENGTH:
            value = int(literal)
            if INT64_MIN <= value <= INT64_MAX:
                return value
        return on_violation("integer outside the signed 64-bit range", None)

    def parse_float(literal: str) -> object:
        value = float(literal)
        if math.isfinite(value):
            return value
        return on_violation("number too large for a 64-bit float", None)

    def parse_constant(name: str) -> object:
        return on_violation(f"{name} is not valid JSON", None)

    return json.JSONDecoder(
        object_pairs_hook=build_object,
        parse_int=parse_int if check_integers else None,
        parse_float=parse_float,
        parse_constant=parse_constant,
        strict=True,
    )


_DECODER = _make_decoder(_raise_violation, check_integers=False)
_INTEGER_CHECKING_DECODER = _make_decoder(_raise_violation, check_integers=True)
_LOCATING_DECODER = _make_decoder(_Violation, check_integers=True)


# A byte map for the checks that need no parser. Digits become "0", so that
# one substring search finds a literal of 19 or more digits, the shortest
# that can fall outside the signed 64-bit range. Digits inside strings, such
# as a long id, also count, and only make the parser check integers with the
# slower hook. "[" and "{" become "[", so one count finds the openers. ":"
# stays, and the quote and JSON whitespace become a quote, so counts find the
# colons and the colons after a quote or whitespace (see `_scan_counting`).
# Every other byte becomes a space.
def _shape_table() -> bytes:
    table = bytearray(b" " * 256)
    for digit in b"0123456789":
        table[digit] = ord("0")
    table[ord("[")] = table[ord("{")] = ord("[")
    table[ord(":")] = ord(":")
    for byte in b'"' + _JSON_WHITESPACE.encode("ascii"):
        table[byte] = ord('"')
    return bytes(table)


_SHAPES = _shape_table()
_LONG_DIGIT_RUN = b"0" * 19


class _Undecided:
    """The fast scan's result when only the exact scan can judge the body."""


_UNDECIDED = _Undecided()


class _CountingScanner:
    """A json scanner whose object hook counts the members of every parsed object.

    The scanner reads its hooks from this object, which typeshed cannot
    express, so it is passed as Any. Building a scanner costs about 0.6 µs,
    so each thread keeps one per integer mode (see `_take_scanner`).
    """

    __slots__ = (
        "busy",
        "members",
        "memo",
        "object_hook",
        "object_pairs_hook",
        "parse_constant",
        "parse_float",
        "parse_int",
        "scan_once",
        "strict",
    )

    def __init__(self, check_integers: bool) -> None:
        self.busy = False
        self.members = 0
        self.strict = True
        self.object_hook = self._count_members
        self.object_pairs_hook = None
        self.parse_float = _CHECKED_FLOAT
        self.parse_int = _CHECKED_INT if check_integers else int
        self.parse_constant = _REJECT_CONSTANT
        self.memo: dict[str, str] = {}  # used by the pure-Python scanner only
        self.scan_once = json.scanner.make_scanner(cast(Any, self))

    def _count_members(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.members += len(obj)
        return obj


# The raising hooks of the exact decoders, shared with the fast scan.
_CHECKED_FLOAT = _DECODER.parse_float
_CHECKED_INT = _INTEGER_CHECKING_DECODER.parse_int
_REJECT_CONSTANT = _DECODER.parse_constant

_THREAD_SCANNERS = threading.local()


def _take_scanner(check_integers: bool) -> _CountingScanner:
    """Return this thread's counting scanner, or a new one while it is in use.

    It is in use only when a parse on this thread runs inside another one,
    such as from a signal handler, which must not reset the outer count.
    """
    try:
        scanners: tuple[_CountingScanner, _CountingScanner] = _THREAD_SCANNERS.scanners
    except AttributeError:
        scanners = (_CountingScanner(check_integers=False), _CountingScanner(check_integers=True))
        _THREAD_SCANNERS.scanners = scanners
    scanner = scanners[check_integers]
    return _CountingScanner(check_integers) if scanner.busy else scanner


def _scan_counting(text: str, body: bytes, shapes: bytes, *, check_integers: bool) -> object:
    """Parse `text` without a duplicate-key hook, or return _UNDECIDED.

    Returns the document only when the exact scan with the same `check_integers`
    would return an equal one. Any error, trailing data or a possible duplicate
    key gives _UNDECIDED, so that the exact scan reports the first problem.

    Duplicate keys are found by counting. In valid JSON, every ":" outside a
    string separates one object member from its key, so the colons outside
    strings count the members written in the body. An object with a duplicate
    key has fewer members than the body wrote for it. So the body has no
    duplicate key exactly when the parsed objects hold as many members as
    there are colons outside strings.

    The members never exceed the colons outside strings, and two cheaper
    counts are upper bounds of those colons. So when either count equals the
    members, the exact count does too. The first counts all colons. The
    second counts colons right after a quote or whitespace, because a colon
    outside a string follows its key's closing quote, with optional
    whitespace between them. It still matches when strings contain colons
    elsewhere, as in times and URLs. Only when neither matches are the
    strings split off.
    """
    scanner = _take_scanner(check_integers)
    stripped = text.strip(_JSON_WHITESPACE)
    scanner.busy = True
    scanner.members = 0
    try:
        document, end = scanner.scan_once(stripped, 0)
        members = scanner.members
    except (StopIteration, json.JSONDecodeError, _ViolationFound, RecursionError):
        return _UNDECIDED
    finally:
        scanner.busy = False
    if end != len(stripped):
        return _UNDECIDED
    if (
        members == shapes.count(b":")
        or members == shapes.count(b'":')
        or members == _outside_strings(body).count(b":")
    ):
        return document
    return _UNDECIDED


def _first_duplicate_key(pairs: list[tuple[str, Any]]) -> str:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return key
        seen.add(key)
    raise AssertionError("no duplicate key among the pairs")


def _scan(text: str, decoder: json.JSONDecoder) -> object:
    """Parse `text` with the strict hooks of `decoder` and reject trailing data."""
    stripped = text.strip(_JSON_WHITESPACE)
    try:
        document, end = decoder.raw_decode(stripped)
    except _ViolationFound as exc:
        raise _locate_violation(stripped, exc.reason) from None
    except json.JSONDecodeError as exc:
        leading = len(text) - len(text.lstrip(_JSON_WHITESPACE))
        raise _syntax_error(text, exc.msg, leading + exc.pos) from None
    except RecursionError:
        # Unreachable after the depth scan unless the caller's own stack is
        # already close to the recursion limit.
        raise BodyInvalid("JSON nesting too deep", "") from None

    if end != len(stripped):
        leading = len(text) - len(text.lstrip(_JSON_WHITESPACE))
        rest = stripped[end:]
        gap = len(rest) - len(rest.lstrip(_JSON_WHITESPACE))
        raise _syntax_error(text, "Extra data", leading + end + gap)
    return document


def _syntax_error(text: str, message: str, position: int) -> BodyInvalid:
    # json's messages ("Expecting ',' delimiter", "Invalid control character
    # at") never quote the input. The position is a character index,
    # reported in bytes.
    byte_offset = len(text[:position].encode("utf-8"))
    message = message.removesuffix(" at")
    message = message[:1].lower() + message[1:]
    return BodyInvalid(f"invalid JSON: {message} at byte {byte_offset}", "")


def _locate_violation(text: str, reason: str) -> BodyInvalid:
    """Parse again with the locating decoder and return the first violation."""
    try:
        document, _ = _LOCATING_DECODER.raw_decode(text)
    except json.JSONDecodeError:
        # A syntax error after the violation. The violation is still the
        # first problem in the body, so report it without a location.
        return BodyInvalid(reason, "")

    for value, path in _walk(document):
        if isinstance(value, _Violation):
            if value.member is not None:
                path = (*path, value.member)
            return BodyInvalid(value.reason, format_pointer(path))
    return BodyInvalid(reason, "")


def _check_member_counts(document: object, max_members: int) -> None:
    for value, path in _walk(document):
        if isinstance(value, (dict, list)) and len(value) > max_members:
            if isinstance(value, dict):
                reason = f"object has more than {max_members} members"
            else:
                reason = f"array has more than {max_members} elements"
            raise BodyInvalid(reason, format_pointer(path))


def _check_surrogates(document: object) -> None:
    for value, path in _walk(document):
        if isinstance(value, str) and _SURROGATE.search(value):
            raise BodyInvalid("string contains a lone surrogate", format_pointer(path))
        if isinstance(value, dict):
            for key in value:
                if _SURROGATE.search(key):
                    raise BodyInvalid("key contains a lone surrogate", format_pointer((*path, key)))


Path = tuple[str | int, ...]


def _walk(document: object) -> Iterator[tuple[object, Path]]:
    """Yield every value of `document` with its path, in document order.

    Iterative, because the strict hooks may leave a _Violation anywhere and
    the caller may have a deep stack of its own.
    """
    stack: list[tuple[object, Path]] = [(document, ())]
    while stack:
        value, path = stack.pop()
        yield value, path
        if isinstance(value, dict):
            members = [(member, (*path, key)) for key, member in value.items()]
            stack.extend(reversed(members))
        elif isinstance(value, list):
            elements = [(element, (*path, index)) for index, element in enumerate(value)]
            stack.extend(reversed(elements))


# ---------------------------------------------------------------------------
# JSON pointers


_POINTER_TOKEN_LIMIT = 64


def format_pointer(path: Path) -> str:
    """Format `path` as an RFC 6901 JSON pointer that is safe to display.

    A token longer than 64 characters or with characters outside printable
    ASCII is replaced with a short escaped excerpt, so the result then no
    longer resolves in the document.
    """
    return "".join("/" + _format_token(token) for token in path)


def _format_token(token: str | int) -> str:
    if isinstance(token, int):
        return str(token)
    if len(token) > _POINTER_TOKEN_LIMIT or not (token.isascii() and token.isprintable()):
        token = _excerpt(token, 32)
    return token.replace("~", "~0").replace("/", "~1")


def _excerpt(text: str, limit: int = 64) -> str:
    """Return the first `limit` characters of `text`, escaped to printable ASCII.

    Unlike `ringwall.errors.excerpt`, this accepts any surrogate, which a
    JSON string can hold through a \\u escape.
    """
    escaped = text[:limit].encode("ascii", "backslashreplace").decode("ascii")
    printable = "".join(ch if " " <= ch <= "~" else f"\\x{ord(ch):02x}" for ch in escaped)
    return printable + ("..." if len(text) > limit else "")


# ---------------------------------------------------------------------------
# JSON Schema validation


_DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


class JsonSchemaValidator:
    """A JSON Schema (draft 2020-12), compiled once, that checks parsed bodies.

    The schema is compiled with jsonschema-rs with these choices:

    - `format` is asserted for the formats jsonschema-rs implements (email,
      date-time, uuid, ipv4 and others), because a gateway that declares a
      format means it. Unknown formats, such as OpenAPI's `int32` and
      `int64`, are ignored.
    - `pattern` uses the linear-time `regex` engine, so no body can make a
      pattern backtrack. A schema with look-around or back-references is
      rejected at load.
    - A `$ref` to another document is rejected at load, because nothing is
      fetched over the network.
    - A `$schema` other than draft 2020-12 is rejected.

    NOTE: unknown keywords are ignored, as draft 2020-12 allows, so a
    misspelled keyword such as `minimun` does not fail the load.
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        if not isinstance(schema, dict):
            raise ValueError(f"a JSON Schema must be an object, got {type(schema).__name__}")
        declared = schema.get("$schema", _DRAFT_2020_12)
        if declared not in (_DRAFT_2020_12, _DRAFT_2020_12 + "#"):
            raise ValueError(
                f"unsupported $schema {_excerpt(str(declared))}: only draft 2020-12 "
                f"({_DRAFT_2020_12}) is supported"
            )

        try:
            self._compiled = _compile_schema(schema)
        except jsonschema_rs.ValidationError as exc:
            # The schema failed the metaschema, or a $ref or pattern did not
            # compile. The instance path is the location inside the schema.
            location = format_pointer(tuple(exc.instance_path)) or "/"
            first_line = exc.message.splitlines()[0] if exc.message else "invalid"
            raise ValueError(f"invalid JSON Schema at {location}: {first_line}") from exc
        except ValueError as exc:
            raise ValueError(f"invalid JSON Schema: {exc}") from exc

        # The C check of bodies against this schema, or None when the
        # extension is not built or the schema uses a keyword outside the
        # subset that the check implements (see `_strict_json.c`).
        self._checker: _strict_json.CompiledSchema | None = None
        if _strict_json is not None:
            self._checker = _strict_json.compile_schema(schema, _compile_schema)

    def validate(self, document: object) -> None:
        """Check `document` against the schema, raising BodyInvalid for the first error."""
        try:
            self._compiled.validate(document)
        except jsonschema_rs.ValidationError as exc:
            raise _schema_error(exc) from None


def _compile_schema(schema: dict[str, Any]) -> jsonschema_rs.Draft202012Validator:
    """Compile `schema` with the options that JsonSchemaValidator documents."""
    return jsonschema_rs.Draft202012Validator(
        schema,
        validate_formats=True,
        pattern_options=jsonschema_rs.RegexOptions(),
        offline=True,
    )


def check_json_body(
    body: bytes, validator: JsonSchemaValidator | None, max_depth: int, max_members: int
) -> None:
    """Check `body` with parse_strict_json and then with `validator` if given.

    Raises BodyInvalid for the first problem, like the two steps called one
    after the other. An accepted body costs fewer Python calls, because this
    calls the C parser and the compiled schema directly. Where the C check
    of the validator accepts the body, no document is built at all.
    """
    native = _strict_json
    if native is None:
        document = parse_strict_json(body, max_depth=max_depth, max_members=max_members)
    else:
        checker = validator._checker if validator is not None else None
        if checker is not None and native.check(body, checker, max_depth, max_members):
            return
        document = native.parse(body, max_depth, max_members)
        if document is native.REJECTED:
            document = _parse_in_python(body, max_depth, max_members)
    if validator is not None:
        try:
            validator._compiled.validate(document)
        except jsonschema_rs.ValidationError as exc:
            raise _schema_error(exc) from None


def _schema_error(error: jsonschema_rs.ValidationError) -> BodyInvalid:
    """Describe `error` without quoting the document's values."""
    path: Path = tuple(error.instance_path)
    kind = error.kind
    if (
        isinstance(
            kind,
            ValidationErrorKind.AdditionalProperties | ValidationErrorKind.UnevaluatedProperties,
        )
        and kind.unexpected
    ):
        return BodyInvalid("unexpected property", format_pointer((*path, kind.unexpected[0])))
    if isinstance(kind, ValidationErrorKind.UnevaluatedItems) and kind.unexpected:
        return BodyInvalid("unexpected array item", format_pointer((*path, kind.unexpected[0])))
    if isinstance(kind, ValidationErrorKind.FalseSchema) and error.schema_path:
        # jsonschema-rs 0.58 reports `additionalProperties: false` without
        # `properties` as a false schema at the object, not at the member.
        keyword = error.schema_path[-1]
        if keyword in ("additionalProperties", "unevaluatedProperties"):
            return BodyInvalid("unexpected property", format_pointer(path))
        if keyword in ("items", "unevaluatedItems"):
            return BodyInvalid("unexpected array item", format_pointer(path))
    return BodyInvalid(_schema_reason(kind, error.instance), format_pointer(path))


def _schema_reason(kind: ValidationErrorKind, instance: object) -> str:
    # Limits and names below come from the schema, which is configuration.
    if isinstance(kind, ValidationErrorKind.Type):
        return f"expected {' or '.join(kind.types)}, got {_json_type(instance)}"
    if isinstance(kind, ValidationErrorKind.Required):
        return f"missing required property {_excerpt(json.dumps(kind.property), 66)}"

    if isinstance(kind, ValidationErrorKind.Minimum):
        return f"must be >= {kind.limit}"
    if isinstance(kind, ValidationErrorKind.Maximum):
        return f"must be <= {kind.limit}"
    if isinstance(kind, ValidationErrorKind.ExclusiveMinimum):
        return f"must be > {kind.limit}"
    if isinstance(kind, ValidationErrorKind.ExclusiveMaximum):
        return f"must be < {kind.limit}"
    if isinstance(kind, ValidationErrorKind.MultipleOf):
        return f"must be a multiple of {kind.multiple_of}"

    if isinstance(kind, ValidationErrorKind.MinLength):
        return f"must be at least {_count(kind.limit, 'character')} long"
    if isinstance(kind, ValidationErrorKind.MaxLength):
        return f"must be at most {_count(kind.limit, 'character')} long"
    if isinstance(kind, ValidationErrorKind.MinItems):
        return f"must have at least {_count(kind.limit, 'item')}"
    if isinstance(kind, ValidationErrorKind.MaxItems | ValidationErrorKind.AdditionalItems):
        return f"must have at most {_count(kind.limit, 'item')}"
    if isinstance(kind, ValidationErrorKind.MinProperties):
        return f"must have at least {_count(kind.limit, 'property', 'properties')}"
    if isinstance(kind, ValidationErrorKind.MaxProperties):
        return f"must have at most {_count(kind.limit, 'property', 'properties')}"

    if isinstance(kind, ValidationErrorKind.Pattern):
        return f"does not match the pattern {_excerpt(kind.pattern)}"
    if isinstance(kind, ValidationErrorKind.Format):
        return f"not a valid {_excerpt(kind.format)}"
    return _KEYWORD_REASONS.get(kind.name, f"failed the {_excerpt(kind.name)} keyword")


_KEYWORD_REASONS = {
    "anyOf": "does not match any of the schemas in anyOf",
    "oneOf": "does not match exactly one of the schemas in oneOf",
    "not": "matches the schema in not",
    "enum": "not one of the allowed values",
    "const": "not the allowed constant value",
    "contains": "no item matches the contains schema",
    "uniqueItems": "array items are not unique",
    "propertyNames": "a property name is invalid",
    "falseSchema": "no value is allowed here",
    "contentEncoding": "content encoding is invalid",
    "contentMediaType": "content media type is invalid",
}


def _count(number: int, noun: str, plural: str | None = None) -> str:
    if number == 1:
        return f"1 {noun}"
    return f"{number} {plural or noun + 's'}"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
