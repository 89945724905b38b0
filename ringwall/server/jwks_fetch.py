"""Fetch an issuer's JWK set over HTTP(S) or from a file, following `JwksCache`'s policy.

The key set location is fixed when a `JwksSource` is built from configuration.
No URL from a token (`jku`, `x5u`) is ever fetched.

The HTTP client is deliberately small. It sends one GET with
`Connection: close`, follows no redirect, accepts only status 200, and reads
a body framed by Content-Length, chunked encoding or the end of the
connection. The connection, request and response share one total timeout,
and the body is capped while it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httptools

from ringwall.errors import excerpt
from ringwall.gateway.auth.jwk import MAX_JWKS_SIZE, VerificationKey
from ringwall.gateway.auth.jwks_cache import FetchEvent, FetchNeed, FetchOutcome, JwksCache

log = logging.getLogger("ringwall.jwks")

DEFAULT_FETCH_TIMEOUT = 3.0
# Maximum size of a response's status line and headers. JWKS servers usually
# send a few hundred bytes of headers.
MAX_RESPONSE_HEAD_SIZE = 16_384
READ_CHUNK_SIZE = 65_536


class JwksFetchError(Exception):
    """A JWK set that could not be fetched, with the cause in `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HttpLocation:
    """Host, port, Host header and request target of an http:// or https:// key set URL."""

    tls: bool
    host: str
    port: int
    host_header: str
    target: str


def parse_location(url: str) -> HttpLocation | Path:
    """Check a configured key set URL: http://, https:// or file: with an absolute path.

    Raises ValueError naming the problem.
    """
    if not url.isascii() or any(ch <= " " or ch == "\x7f" for ch in url):
        raise ValueError(
            f"key set URL {url!r} must be ASCII without spaces or control characters. "
            "Percent-encode them"
        )
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(
                f"file URL {url!r} names host {parts.netloc!r}. Use file:///path for a local file"
            )
        path = Path(unquote(parts.path))
        if not path.is_absolute():
            raise ValueError(f"file URL {url!r} must contain an absolute path")
        return path
    if scheme not in ("http", "https"):
        raise ValueError(f"key set URL {url!r} must start with http://, https:// or file:")
    if not parts.hostname:
        raise ValueError(f"key set URL {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"key set URL {url!r} contains credentials, which are not supported")
    tls = scheme == "https"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError as err:
        raise ValueError(f"key set URL {url!r} has an invalid port") from err
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return HttpLocation(tls, parts.hostname, port, parts.netloc, target)


class JwksSource:
    """An issuer's JWK set, fetched from a fixed URL when its `JwksCache` requests a fetch.

    Use it from the event loop thread, and call `close` before the loop stops.
    Concurrent lookups that need a fetch share one in-flight fetch.
    `cached_keys` returns keys without I/O when the cache can, and `keys_for`
    waits for a fetch when one is needed.
    """

    def __init__(
        self,
        url: str,
        *,
        cache: JwksCache | None = None,
        timeout: float = DEFAULT_FETCH_TIMEOUT,
        max_size: int = MAX_JWKS_SIZE,
        ca_file: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        if max_size <= 0:
            raise ValueError(f"max_size must be positive, not {max_size}")
        self.url = url
        self.location = parse_location(url)
        self.cache = cache if cache is not None else JwksCache(max_size=max_size)
        self.timeout = timeout
        self.max_size = max_size
        self.clock = clock
        self._ssl_context: ssl.SSLContext | None = None
        if isinstance(self.location, HttpLocation) and self.location.tls:
            # check_hostname and CERT_REQUIRED are the defaults of this context.
            self._ssl_context = ssl.create_default_context(cafile=ca_file)
        self._in_flight: asyncio.Task[None] | None = None

    def cached_keys(self, kid: str | None, alg: str) -> list[VerificationKey] | None:
        """Return the keys for a token from the cache, or None when a fetch must come first.

        A list, possibly empty, is the final result. When the keys are stale
        this starts a background refresh and still returns them.
        """
        result = self.cache.lookup(kid, alg, self.clock())
        if result.fetch is FetchNeed.WAIT:
            # Started here, because the cache counts this miss once: a later
            # lookup within the cooldown would not request the fetch again.
            self._start_fetch()
            return None
        in_flight = self._in_flight
        if not result.keys and in_flight is not None and not in_flight.done():
            return None  # a fetch that may bring this key is under way: wait for it
        if result.fetch is FetchNeed.BACKGROUND:
            self._start_fetch()
        return list(result.keys)

    async def keys_for(self, kid: str | None, alg: str) -> list[VerificationKey]:
        """Return the keys for a token, fetching the key set first when the cache requests it."""
        keys = self.cached_keys(kid, alg)
        if keys is not None:
            return keys
        # A waiter that is cancelled (its client went away) leaves the shared fetch running.
        await asyncio.shield(self._start_fetch())
        return list(self.cache.lookup(kid, alg, self.clock()).keys)

    async def refresh(self) -> None:
        """Fetch the key set now, or wait for the fetch in flight, whatever the cache state.

        Call it at startup to load keys before the first token arrives.
        """
        await asyncio.shield(self._start_fetch())

    async def close(self) -> None:
        """Cancel a fetch in flight and wait for it to end."""
        task, self._in_flight = self._in_flight, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _start_fetch(self) -> asyncio.Task[None]:
        if self._in_flight is None or self._in_flight.done():
            loop = asyncio.get_running_loop()
            self._in_flight = loop.create_task(self._fetch_and_record())
        return self._in_flight

    async def _fetch_and_record(self) -> None:
        try:
            document = await self.fetch_document()
        except JwksFetchError as err:
            outcome = self.cache.record_fetch_failure(err.reason, self.clock())
        except Exception as err:
            log.exception("fetching the JWK set from %s failed unexpectedly", self.url)
            outcome = self.cache.record_fetch_failure(f"unexpected error: {err!r}", self.clock())
        else:
            outcome = self.cache.record_fetch_success(document, self.clock())
        self._log_outcome(outcome)

    async def fetch_document(self) -> bytes:
        """Fetch the key set document once, without consulting the cache.

        Raises `JwksFetchError`.
        """
        if isinstance(self.location, Path):
            # A blocking read, which is short for a local file of at most max_size bytes.
            return read_file_capped(self.location, self.max_size)
        try:
            async with asyncio.timeout(self.timeout):
                return await fetch_http(self.location, self._ssl_context, self.max_size)
        except TimeoutError:
            raise JwksFetchError(f"timed out after {self.timeout} s") from None
        except OSError as err:
            # Connection refused or reset, DNS failures and TLS errors (ssl.SSLError).
            raise JwksFetchError(f"connection failed: {err}") from None

    def _log_outcome(self, outcome: FetchOutcome) -> None:
        # An unchanged set skips the same keys as before, so they are not logged again.
        skipped_keys = () if outcome.event is FetchEvent.KEYS_UNCHANGED else outcome.skipped
        for skipped in skipped_keys:
            log.info(
                "JWK set %s: keys[%d] (kid %r) skipped: %s",
                self.url,
                skipped.index,
                skipped.kid,
                skipped.reason,
            )
        if outcome.event is FetchEvent.FAILED_KEEPING_KEYS:
            log.warning(
                "fetching the JWK set from %s failed (%d in a row): %s. "
                "Still using %d keys fetched %.0f s ago",
                self.url,
                outcome.consecutive_failures,
                outcome.error,
                outcome.key_count,
                outcome.keys_age,
            )
        elif outcome.event is FetchEvent.FAILED_WITHOUT_KEYS:
            log.error(
                "fetching the JWK set from %s failed (%d in a row): %s. "
                "No key is usable, so tokens of this issuer are rejected",
                self.url,
                outcome.consecutive_failures,
                outcome.error,
            )
        elif outcome.event is FetchEvent.KEYS_UNCHANGED:
            log.debug("JWK set %s refreshed, %d keys unchanged", self.url, outcome.key_count)
        elif outcome.event is FetchEvent.KEYS_CHANGED:
            log.info("JWK set %s changed, now %d keys", self.url, outcome.key_count)
        else:
            log.info("JWK set %s loaded with %d keys", self.url, outcome.key_count)


def read_file_capped(path: Path, max_size: int) -> bytes:
    """Read a regular file of at most `max_size` bytes. Raises `JwksFetchError`."""
    try:
        # O_NONBLOCK keeps open() from waiting for a writer when the path is a FIFO.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with open(descriptor, "rb") as file:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise JwksFetchError(f"{path} is not a regular file")
            data = file.read(max_size + 1)
    except OSError as err:
        raise JwksFetchError(f"cannot read {path}: {err.strerror or err}") from None
    if len(data) > max_size:
        raise JwksFetchError(f"{path} is larger than {max_size} bytes")
    return data


async def fetch_http(
    location: HttpLocation, context: ssl.SSLContext | None, max_size: int
) -> bytes:
    """GET the key set and return the body of a 200 response.

    The caller applies the timeout. Raises `JwksFetchError` and OSError.
    """
    reader, writer = await asyncio.open_connection(
        location.host,
        location.port,
        ssl=context,
        server_hostname=location.host if context is not None else None,
    )
    try:
        writer.write(_request_bytes(location))
        return await _read_response(reader, max_size)
    finally:
        # abort() skips the TLS close_notify exchange, which could wait on a
        # stalled server. Nothing is lost, because the response was read in full
        # or rejected.
        writer.transport.abort()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _request_bytes(location: HttpLocation) -> bytes:
    return (
        f"GET {location.target} HTTP/1.1\r\n"
        f"Host: {location.host_header}\r\n"
        "Accept: application/jwk-set+json, application/json\r\n"
        "Accept-Encoding: identity\r\n"
        "User-Agent: ringwall\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii")


async def _read_response(reader: asyncio.StreamReader, max_size: int) -> bytes:
    response = _Response(max_size)
    parser = httptools.HttpResponseParser(response)
    response.parser = parser
    head_budget = MAX_RESPONSE_HEAD_SIZE
    while not response.complete:
        data = await reader.read(READ_CHUNK_SIZE)
        if not data:
            return response.body_at_eof()
        if not response.head_complete:
            # Feed at most the head budget, so that a head that never ends is
            # rejected after MAX_RESPONSE_HEAD_SIZE bytes.
            head_part = data[:head_budget]
            head_budget -= len(head_part)
            _feed(parser, head_part)
            data = data[len(head_part) :]
            if not response.head_complete and head_budget == 0:
                raise JwksFetchError(f"response head is larger than {MAX_RESPONSE_HEAD_SIZE} bytes")
        if data and not response.complete:
            _feed(parser, data)
    return bytes(response.body)


def _feed(parser: httptools.HttpResponseParser, data: bytes) -> None:
    try:
        parser.feed_data(data)
    except httptools.HttpParserCallbackError as err:
        # httptools wraps an exception raised in a callback and keeps it as the context.
        if isinstance(err.__context__, JwksFetchError):
            raise err.__context__ from None
        raise
    except httptools.HttpParserError as err:
        raise JwksFetchError(f"invalid HTTP response: {err}") from None


class _Response:
    """httptools callbacks that check and collect one response."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.parser: httptools.HttpResponseParser | None = None
        self.headers: dict[bytes, bytes] = {}
        self.head_complete = False
        self.complete = False
        self.body = bytearray()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.head_complete = True
        assert self.parser is not None
        status = self.parser.get_status_code()
        if 300 <= status < 400:
            location = excerpt(self.headers.get(b"location", b""), 100)
            raise JwksFetchError(
                f"status {status} redirects to {location!r}, and redirects are not followed. "
                "Configure the final URL"
            )
        if status != 200:
            raise JwksFetchError(f"status {status}, expected 200")
        length = self.headers.get(b"content-length")
        if length is not None and int(length) > self.max_size:
            raise JwksFetchError(
                f"Content-Length {int(length)} is larger than the limit of {self.max_size} bytes"
            )

    def on_body(self, body: bytes) -> None:
        if len(self.body) + len(body) > self.max_size:
            raise JwksFetchError(f"response body is larger than {self.max_size} bytes")
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True

    def body_at_eof(self) -> bytes:
        """Return the body of a response that the server ended by closing the connection."""
        # With asyncio and uvloop on Python 3.11, a TLS connection closed without
        # close_notify also ends here, so the body may be truncated. parse_jwks
        # still rejects it, because a JSON object cut before its closing brace is
        # invalid JSON.
        delimited_by_close = (
            b"content-length" not in self.headers
            and b"chunked" not in self.headers.get(b"transfer-encoding", b"").lower()
        )
        if not self.head_complete or not delimited_by_close:
            raise JwksFetchError(
                "the server closed the connection before the response was complete"
            )
        return bytes(self.body)
