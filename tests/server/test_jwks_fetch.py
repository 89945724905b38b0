"""Tests for ringwall.server.jwks_fetch against loopback servers started by each test."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop
from cryptography.hazmat.primitives.asymmetric import ec

from ringwall.gateway.auth.jwk import VerificationKey
from ringwall.gateway.auth.jwks_cache import DEFAULT_COOLDOWN, DEFAULT_TTL, JwksCache
from ringwall.server.jwks_fetch import (
    HttpLocation,
    JwksFetchError,
    JwksSource,
    parse_location,
)
from tests.support.tls import make_tls_files

Runner = Callable[[Coroutine[Any, Any, None]], None]

EC_KEY_1 = ec.generate_private_key(ec.SECP256R1())
EC_KEY_2 = ec.generate_private_key(ec.SECP256R1())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "kid": kid,
        "crv": "P-256",
        "x": b64(numbers.x.to_bytes(32, "big")),
        "y": b64(numbers.y.to_bytes(32, "big")),
    }


def document(*members: object) -> bytes:
    return json.dumps({"keys": list(members)}).encode()


KEY_SET_1 = document(ec_jwk(EC_KEY_1, "ec-1"))
KEY_SET_2 = document(ec_jwk(EC_KEY_1, "ec-1"), ec_jwk(EC_KEY_2, "ec-2"))


def ok(body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


def chunked(body: bytes, chunk_size: int = 100) -> bytes:
    chunks = [body[i : i + chunk_size] for i in range(0, len(body), chunk_size)]
    encoded = b"".join(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for chunk in chunks)
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + encoded + b"0\r\n\r\n"


def close_delimited(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body


def kids(keys: list[VerificationKey] | None) -> list[str | None] | None:
    return None if keys is None else [key.kid for key in keys]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class JwksServer:
    """A loopback server that sends `response` to every request and counts the requests."""

    def __init__(self, response: bytes, delay: float = 0.0) -> None:
        self.response = response
        self.delay = delay
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    def url(self, path: str = "/jwks.json", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            if self.delay:
                await asyncio.sleep(self.delay)
            writer.write(self.response)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client gave up first
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def serving(
    response: bytes, delay: float = 0.0, tls: ssl.SSLContext | None = None
) -> AsyncIterator[JwksServer]:
    server = JwksServer(response, delay)
    await server.start(tls)
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def source_for(url: str, **options: Any) -> AsyncIterator[JwksSource]:
    source = JwksSource(url, **options)
    try:
        yield source
    finally:
        await source.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    factory = uvloop.new_event_loop if request.param == "uvloop" else None

    def run_coroutine(coroutine: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(coroutine)

    return run_coroutine


# Fetching and caching.


def test_first_lookup_fetches_keys(run: Runner) -> None:
    async def scenario() -> None:
        async with serving(ok(KEY_SET_1)) as server, source_for(server.url()) as source:
            assert source.cached_keys("ec-1", "ES256") is None
            assert kids(await source.keys_for("ec-1", "ES256")) == ["ec-1"]
            assert kids(source.cached_keys("ec-1", "ES256")) == ["ec-1"]
            assert kids(await source.keys_for("ec-1", "ES256")) == ["ec-1"]
            assert len(server.requests) == 1

    run(scenario())


def test_request_head_is_minimal_get(run: Runner) -> None:
    async def scenario() -> None:
        async with (
            serving(ok(KEY_SET_1)) as server,
            source_for(server.url("/keys?tenant=a")) as source,
        ):
            await source.refresh()
            head = server.requests[0]
            assert head.startswith(b"GET /keys?tenant=a HTTP/1.1\r\n")
            assert f"\r\nHost: 127.0.0.1:{server.port}\r\n".encode() in head
            assert b"\r\nConnection: close\r\n" in head

    run(scenario())


def test_chunked_response_accepted(run: Runner) -> None:
    async def scenario() -> None:
        async with serving(chunked(KEY_SET_2)) as server, source_for(server.url()) as source:
            assert await source.fetch_document() == KEY_SET_2

    run(scenario())


def test_close_delimited_response_accepted(run: Runner) -> None:
    async def scenario() -> None:
        async with (
            serving(close_delimited(KEY_SET_1)) as server,
            source_for(server.url()) as source,
        ):
            assert await source.fetch_document() == KEY_SET_1

    run(scenario())


def test_rotated_kid_found_before_ttl(run: Runner) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        async with (
            serving(ok(KEY_SET_1)) as server,
            source_for(server.url(), clock=clock) as source,
        ):
            assert await source.keys_for("ec-2", "ES256") == []
            server.response = ok(KEY_SET_2)
            clock.now += DEFAULT_COOLDOWN
            assert clock.now - 1000.0 < DEFAULT_TTL
            assert kids(await source.keys_for("ec-2", "ES256")) == ["ec-2"]
            assert len(server.requests) == 2

    run(scenario())


def test_concurrent_misses_share_one_fetch(run: Runner) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        async with (
            serving(ok(KEY_SET_1), delay=0.05) as server,
            source_for(server.url(), clock=clock) as source,
        ):
            await source.refresh()
            clock.now += DEFAULT_COOLDOWN
            lookups = [source.keys_for("unknown", "ES256") for _ in range(100)]
            results = await asyncio.gather(*lookups)
            assert results == [[]] * 100
            assert len(server.requests) == 2

    run(scenario())


def test_concurrent_first_lookups_share_one_fetch(run: Runner) -> None:
    async def scenario() -> None:
        async with (
            serving(ok(KEY_SET_1), delay=0.05) as server,
            source_for(server.url()) as source,
        ):
            results = await asyncio.gather(*(source.keys_for("ec-1", "ES256") for _ in range(100)))
            assert all(kids(keys) == ["ec-1"] for keys in results)
            assert len(server.requests) == 1

    run(scenario())


def test_unknown_kid_within_cooldown_no_request(run: Runner) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        async with (
            serving(ok(KEY_SET_1)) as server,
            source_for(server.url(), clock=clock) as source,
        ):
            await source.refresh()
            assert await source.keys_for("unknown", "ES256") == []  # one refetch for the miss
            clock.now += DEFAULT_COOLDOWN - 1
            assert source.cached_keys("other-unknown", "ES256") == []
            assert await source.keys_for("other-unknown", "ES256") == []
            assert len(server.requests) == 2

    run(scenario())


def test_cancelled_waiter_leaves_fetch_running(run: Runner) -> None:
    async def scenario() -> None:
        async with (
            serving(ok(KEY_SET_1), delay=0.1) as server,
            source_for(server.url()) as source,
        ):
            first = asyncio.ensure_future(source.keys_for("ec-1", "ES256"))
            second = asyncio.ensure_future(source.keys_for("ec-1", "ES256"))
            await asyncio.sleep(0.02)
            first.cancel()
            assert kids(await second) == ["ec-1"]
            assert first.cancelled()
            assert len(server.requests) == 1

    run(scenario())


# Responses that are rejected.


def test_redirect_not_followed(run: Runner) -> None:
    async def scenario() -> None:
        async with serving(ok(KEY_SET_1)) as target:
            redirect = (
                f"HTTP/1.1 302 Found\r\nLocation: {target.url()}\r\nContent-Length: 0\r\n\r\n"
            )
            async with serving(redirect.encode()) as server, source_for(server.url()) as source:
                with pytest.raises(JwksFetchError, match="redirects are not followed"):
                    await source.fetch_document()
                assert await source.keys_for("ec-1", "ES256") == []
                assert len(server.requests) == 2
                assert target.requests == []

    run(scenario())


def test_non_200_status_rejected(run: Runner) -> None:
    async def scenario() -> None:
        response = b"HTTP/1.1 204 No Content\r\n\r\n"
        async with serving(response) as server, source_for(server.url()) as source:
            with pytest.raises(JwksFetchError, match="status 204, expected 200"):
                await source.fetch_document()

    run(scenario())


def test_large_content_length_rejected_before_body(run: Runner) -> None:
    async def scenario() -> None:
        response = b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n"
        async with serving(response) as server, source_for(server.url()) as source:
            with pytest.raises(
                JwksFetchError, match="Content-Length 70000 is larger than the limit of 65536"
            ):
                await source.fetch_document()

    run(scenario())


@pytest.mark.parametrize("framing", [chunked, close_delimited])
def test_oversized_body_rejected(run: Runner, framing: Callable[[bytes], bytes]) -> None:
    async def scenario() -> None:
        body = b" " * 70_000
        async with serving(framing(body)) as server, source_for(server.url()) as source:
            with pytest.raises(JwksFetchError, match="response body is larger than 65536 bytes"):
                await source.fetch_document()

    run(scenario())


def test_configured_size_cap_applies(run: Runner) -> None:
    async def scenario() -> None:
        async with (
            serving(ok(KEY_SET_2)) as server,
            source_for(server.url(), max_size=200) as source,
        ):
            with pytest.raises(JwksFetchError, match="larger than the limit of 200"):
                await source.fetch_document()
            assert await source.keys_for("ec-1", "ES256") == []

    run(scenario())


def test_oversized_head_rejected(run: Runner) -> None:
    async def scenario() -> None:
        response = b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 20_000 + b"\r\n\r\n"
        async with serving(response) as server, source_for(server.url()) as source:
            with pytest.raises(JwksFetchError, match="response head is larger than 16384"):
                await source.fetch_document()

    run(scenario())


def test_truncated_body_rejected(run: Runner) -> None:
    async def scenario() -> None:
        response = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{}"
        async with serving(response) as server, source_for(server.url()) as source:
            with pytest.raises(JwksFetchError, match="closed the connection before the response"):
                await source.fetch_document()

    run(scenario())


def test_malformed_response_rejected(run: Runner) -> None:
    async def scenario() -> None:
        async with (
            serving(b"SSH-2.0-OpenSSH\r\n\r\n") as server,
            source_for(server.url()) as source,
        ):
            with pytest.raises(JwksFetchError, match="invalid HTTP response"):
                await source.fetch_document()

    run(scenario())


def test_slow_server_times_out(run: Runner) -> None:
    async def scenario() -> None:
        async with (
            serving(ok(KEY_SET_1), delay=5.0) as server,
            source_for(server.url(), timeout=0.2) as source,
        ):
            started = time.monotonic()
            with pytest.raises(JwksFetchError, match=r"timed out after 0\.2 s"):
                await source.fetch_document()
            assert time.monotonic() - started < 2.0

    run(scenario())


def test_invalid_json_keeps_no_keys(run: Runner) -> None:
    async def scenario() -> None:
        async with (
            serving(ok(b"<html>maintenance</html>")) as server,
            source_for(server.url()) as source,
        ):
            assert await source.keys_for("ec-1", "ES256") == []
            assert source.cached_keys("ec-1", "ES256") == []

    run(scenario())


# Failures after keys were loaded.


def test_server_down_stale_keys_keep_working(run: Runner, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        server = JwksServer(ok(KEY_SET_1))
        await server.start()
        async with source_for(server.url(), clock=clock) as source:
            await source.refresh()
            await server.stop()

            clock.now += DEFAULT_TTL + 1
            assert kids(source.cached_keys("ec-1", "ES256")) == ["ec-1"]
            await source.refresh()  # joins the background refresh started above
            assert kids(await source.keys_for("ec-1", "ES256")) == ["ec-1"]
            assert await source.keys_for("ec-2", "ES256") == []

    with caplog.at_level(logging.WARNING, logger="ringwall.jwks"):
        run(scenario())
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1
    assert "connection failed" in warnings[0]
    assert "Still using 1 keys fetched 601 s ago" in warnings[0]


def test_server_down_past_max_stale_no_keys(run: Runner) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        cache = JwksCache(ttl=60.0, max_stale=120.0)
        server = JwksServer(ok(KEY_SET_1))
        await server.start()
        async with source_for(server.url(), clock=clock, cache=cache) as source:
            await source.refresh()
            await server.stop()

            clock.now += 60.0 + 119.0
            assert kids(await source.keys_for("ec-1", "ES256")) == ["ec-1"]
            clock.now += 1.0
            assert source.cached_keys("ec-1", "ES256") is None
            assert await source.keys_for("ec-1", "ES256") == []

    run(scenario())


# TLS.


def server_tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


def test_https_with_ca_file(run: Runner, tmp_path: Path) -> None:
    ca_file, cert_file, key_file = make_tls_files(tmp_path)

    async def scenario() -> None:
        tls = server_tls_context(cert_file, key_file)
        async with serving(ok(KEY_SET_1), tls=tls) as server:
            url = server.url(scheme="https")
            async with source_for(url, ca_file=str(ca_file)) as source:
                assert kids(await source.keys_for("ec-1", "ES256")) == ["ec-1"]

    run(scenario())


def test_https_untrusted_certificate_rejected(run: Runner, tmp_path: Path) -> None:
    _, cert_file, key_file = make_tls_files(tmp_path)

    async def scenario() -> None:
        tls = server_tls_context(cert_file, key_file)
        async with (
            serving(ok(KEY_SET_1), tls=tls) as server,
            source_for(server.url(scheme="https")) as source,
        ):
            with pytest.raises(JwksFetchError, match="certificate verify failed"):
                await source.fetch_document()
            assert server.requests == []

    run(scenario())


# File sources.


def test_file_source_reads_and_rotates(run: Runner, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(KEY_SET_1)

    async def scenario() -> None:
        clock = FakeClock()
        async with source_for(path.as_uri(), clock=clock) as source:
            assert kids(await source.keys_for("ec-1", "ES256")) == ["ec-1"]
            path.write_bytes(KEY_SET_2)
            clock.now += DEFAULT_COOLDOWN
            assert kids(await source.keys_for("ec-2", "ES256")) == ["ec-2"]

    run(scenario())


def test_file_source_oversized_rejected(run: Runner, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(b" " * 101)

    async def scenario() -> None:
        async with source_for(path.as_uri(), max_size=100) as source:
            with pytest.raises(JwksFetchError, match="is larger than 100 bytes"):
                await source.fetch_document()

    run(scenario())


def test_file_source_missing_rejected(run: Runner, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with source_for((tmp_path / "absent.json").as_uri()) as source:
            with pytest.raises(JwksFetchError, match=r"cannot read .*No such file"):
                await source.fetch_document()
            assert await source.keys_for("ec-1", "ES256") == []

    run(scenario())


def test_file_source_fifo_rejected(run: Runner, tmp_path: Path) -> None:
    path = tmp_path / "jwks.fifo"
    os.mkfifo(path)

    async def scenario() -> None:
        async with source_for(path.as_uri()) as source:
            with pytest.raises(JwksFetchError, match="is not a regular file"):
                await source.fetch_document()

    run(scenario())


# Configured locations.


def test_https_location_parsed() -> None:
    location = parse_location("https://login.example/tenant/keys?v=2")
    assert location == HttpLocation(
        tls=True,
        host="login.example",
        port=443,
        host_header="login.example",
        target="/tenant/keys?v=2",
    )


def test_http_location_defaults() -> None:
    location = parse_location("http://[::1]:8080")
    assert location == HttpLocation(False, "::1", 8080, "[::1]:8080", "/")


def test_file_location_parsed() -> None:
    assert parse_location("file:///etc/ringwall/jwks%20a.json") == Path("/etc/ringwall/jwks a.json")
    assert parse_location("file://localhost/etc/jwks.json") == Path("/etc/jwks.json")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://keys.example/jwks", "must start with http://, https:// or file:"),
        ("keys.json", "must start with http://, https:// or file:"),
        ("file:keys.json", "must contain an absolute path"),
        ("file://fileserver/jwks.json", "names host 'fileserver'"),
        ("https://user:secret@keys.example/", "contains credentials"),
        ("https:///jwks", "has no host"),
        ("http://keys.example:99999/", "has an invalid port"),
        ("http://keys.example/a b", "without spaces or control characters"),
        ("http://keys.example/\r\nX: y", "without spaces or control characters"),
        ("http://kéys.example/", "must be ASCII"),
    ],
)
def test_invalid_location_rejected(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_location(url)
