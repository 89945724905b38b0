"""RequestBody: limits, backpressure and the reader's view."""

import asyncio

import pytest

from ringwall.errors import BadRequest, PayloadTooLarge
from ringwall.server.body import HIGH_WATER, RequestBody


class Switch:
    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pause(self) -> None:
        self.paused += 1

    def resume(self) -> None:
        self.resumed += 1


def test_limit_counts_across_chunks() -> None:
    switch = Switch()
    body = RequestBody(10, switch.pause, switch.resume)
    body.feed(b"12345")
    with pytest.raises(PayloadTooLarge) as info:
        body.feed(b"123456")
    assert info.value.layer == "limits"
    assert info.value.close


def test_backpressure_pauses_and_resumes() -> None:
    switch = Switch()
    body = RequestBody(10 * HIGH_WATER, switch.pause, switch.resume)
    body.feed(b"x" * (HIGH_WATER + 1))
    assert switch.paused == 1
    body.feed(b"y")
    assert switch.paused == 1

    async def drain() -> None:
        assert await body.read() == b"x" * (HIGH_WATER + 1)

    asyncio.run(drain())
    assert switch.resumed == 1


def test_read_returns_none_at_end() -> None:
    switch = Switch()
    body = RequestBody(100, switch.pause, switch.resume)

    async def scenario() -> list[bytes | None]:
        reads = []
        waiter = asyncio.ensure_future(body.read())
        await asyncio.sleep(0)
        body.feed(b"abc")
        reads.append(await waiter)
        body.finish()
        reads.append(await body.read())
        return reads

    assert asyncio.run(scenario()) == [b"abc", None]


def test_failure_reaches_reader() -> None:
    switch = Switch()
    body = RequestBody(100, switch.pause, switch.resume)

    async def scenario() -> None:
        waiter = asyncio.ensure_future(body.read())
        await asyncio.sleep(0)
        body.fail(BadRequest("protocol", "client gone"))
        await waiter

    with pytest.raises(BadRequest):
        asyncio.run(scenario())


def test_wait_buffered_until_threshold_or_end() -> None:
    switch = Switch()
    body = RequestBody(100, switch.pause, switch.resume)

    async def scenario() -> bool:
        waiter = asyncio.ensure_future(body.wait_buffered(5))
        await asyncio.sleep(0)
        body.feed(b"ab")
        await asyncio.sleep(0)
        first = waiter.done()
        body.feed(b"cdef")
        await waiter
        return first

    assert asyncio.run(scenario()) is False


def test_whole_joins_chunks_and_keeps_them_queued() -> None:
    switch = Switch()
    body = RequestBody(100, switch.pause, switch.resume)
    body.feed(b"ab")
    body.feed(b"cd")
    body.finish()
    assert body.whole() == b"abcd"
    assert body.whole() == b"abcd"

    async def drain() -> list[bytes | None]:
        return [await body.read(), await body.read()]

    assert asyncio.run(drain()) == [b"abcd", None]


def test_whole_of_one_chunk_is_that_chunk() -> None:
    switch = Switch()
    body = RequestBody(100, switch.pause, switch.resume)
    chunk = b"x" * 50
    body.feed(chunk)
    body.finish()
    assert body.whole() is chunk


def test_whole_of_empty_body() -> None:
    switch = Switch()
    body = RequestBody(100, switch.pause, switch.resume)
    body.finish()
    assert body.whole() == b""

    async def drain() -> bytes | None:
        return await body.read()

    assert asyncio.run(drain()) is None


def test_collect_waits_then_returns_whole_body() -> None:
    switch = Switch()
    body = RequestBody(100, switch.pause, switch.resume)

    async def scenario() -> bytes:
        collecting = asyncio.ensure_future(body.collect())
        body.feed(b"ab")
        await asyncio.sleep(0)
        assert not collecting.done()
        body.feed(b"cd")
        body.finish()
        return await collecting

    assert asyncio.run(scenario()) == b"abcd"


@pytest.mark.parametrize("data", [b"x" * 300, b""])
def test_replace_sets_body_and_received(data: bytes) -> None:
    switch = Switch()
    body = RequestBody(100, switch.pause, switch.resume)
    body.feed(b"ab")
    body.feed(b"cd")
    body.finish()
    body.replace(data)
    # The replacement may exceed `limit`: it is the decoded body, which has its own limit.
    assert body.received == len(data)
    assert body.buffered == len(data)
    assert body.whole() == data

    async def drain() -> list[bytes | None]:
        chunks: list[bytes | None] = []
        while (chunk := await body.read()) is not None:
            chunks.append(chunk)
        return chunks

    assert asyncio.run(drain()) == ([data] if data else [])
