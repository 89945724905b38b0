"""Held writes: order per transport, sending at the end of a poll, and the early cases."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import uvloop

from ringwall.server.write_batch import HOLD_LIMIT, MAX_HOLD, WriteBatch, write_batch


class Sink:
    """A write transport that records its writes, and can fail or be closing."""

    def __init__(self, fail: bool = False) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.fail = fail

    def write(self, data: bytes) -> None:
        if self.fail:
            raise RuntimeError("broken transport")
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def batch_on(loop: asyncio.AbstractEventLoop, clock: Clock | None = None) -> WriteBatch:
    return WriteBatch(loop, clock or Clock())


def sink() -> Any:
    return Sink()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = uvloop.new_event_loop()
    yield loop
    loop.close()


def end_poll(loop: asyncio.AbstractEventLoop) -> None:
    """Run the callbacks that the loop runs after a poll's events."""
    loop.run_until_complete(asyncio.sleep(0))


def test_writes_joined_at_poll_end(
    loop: asyncio.AbstractEventLoop,
) -> None:
    batch = batch_on(loop)
    client, upstream = sink(), sink()
    batch.write(client, b"HTTP/1.1 200 OK\r\n")
    batch.write(upstream, b"GET / HTTP/1.1\r\n")
    batch.write(client, b"\r\nbody")
    assert client.writes == []
    assert upstream.writes == []
    end_poll(loop)
    assert client.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    assert upstream.writes == [b"GET / HTTP/1.1\r\n"]


def test_writes_sent_per_poll(loop: asyncio.AbstractEventLoop) -> None:
    batch = batch_on(loop)
    client = sink()
    batch.write(client, b"first")
    end_poll(loop)
    batch.write(client, b"second")
    end_poll(loop)
    assert client.writes == [b"first", b"second"]


def test_send_now_one_transport(loop: asyncio.AbstractEventLoop) -> None:
    batch = batch_on(loop)
    client, other = sink(), sink()
    batch.write(client, b"a")
    batch.write(client, b"b")
    batch.write(other, b"c")
    batch.send_now(client)
    assert client.writes == [b"ab"]
    assert other.writes == []
    batch.send_now(client)  # a second call has nothing to send
    end_poll(loop)
    assert client.writes == [b"ab"]
    assert other.writes == [b"c"]


def test_large_write_sent_at_once(loop: asyncio.AbstractEventLoop) -> None:
    batch = batch_on(loop)
    client, fresh = sink(), sink()
    large = b"x" * HOLD_LIMIT
    batch.write(client, b"head")
    batch.write(client, large)
    assert client.writes == [b"head" + large]
    batch.write(fresh, large)
    assert fresh.writes == [large]
    end_poll(loop)
    assert len(client.writes) == 1
    assert len(fresh.writes) == 1


def test_closing_transport_drops_held_bytes(loop: asyncio.AbstractEventLoop) -> None:
    batch = batch_on(loop)
    client = sink()
    batch.write(client, b"late")
    client.closing = True
    batch.send_now(client)
    batch.write(client, b"later")
    end_poll(loop)
    assert client.writes == []


def test_failing_transport_spares_others(
    loop: asyncio.AbstractEventLoop,
    caplog: pytest.LogCaptureFixture,
) -> None:
    batch = batch_on(loop)
    broken, healthy = Sink(fail=True), sink()
    batch.write(broken, b"lost")  # type: ignore[arg-type]
    batch.write(healthy, b"kept")
    with caplog.at_level(logging.ERROR, logger="ringwall.server"):
        end_poll(loop)
    assert healthy.writes == [b"kept"]
    assert "a held write failed" in caplog.text


def test_hold_limit_sends_early(
    loop: asyncio.AbstractEventLoop,
) -> None:
    clock = Clock()
    batch = batch_on(loop, clock)
    first, second, third = sink(), sink(), sink()
    batch.write(first, b"1")
    clock.now += MAX_HOLD / 2
    batch.write(second, b"2")
    assert first.writes == []
    assert second.writes == []
    clock.now += MAX_HOLD  # a slow request ran in between
    batch.write(third, b"3")
    assert first.writes == [b"1"]
    assert second.writes == [b"2"]
    assert third.writes == []
    end_poll(loop)
    assert third.writes == [b"3"]


def test_write_batch_one_per_loop(loop: asyncio.AbstractEventLoop) -> None:
    other = uvloop.new_event_loop()
    try:
        assert write_batch(loop) is write_batch(loop)
        assert write_batch(other) is not write_batch(loop)
    finally:
        other.close()


def test_write_batch_freed_with_its_loop() -> None:
    other = uvloop.new_event_loop()
    write_batch(other)
    freed = weakref.ref(other)
    other.close()
    del other
    gc.collect()
    assert freed() is None
