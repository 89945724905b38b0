"""The layer pipeline: order, synchronous rejections, and layers that await."""

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from ringwall.errors import NotFound, Rejection
from ringwall.exchange import Exchange
from ringwall.pipeline import Pipeline


class RecordingLayer:
    def __init__(self, name: str, calls: list[str], *, reject: bool = False, wait: bool = False):
        self.name = name
        self.calls = calls
        self.reject = reject
        self.wait = wait

    def check_head(self, exchange: Exchange) -> Awaitable[None] | None:
        self.calls.append(self.name)
        if self.reject:
            raise NotFound(self.name, "rejected by a test layer")
        if self.wait:
            return asyncio.sleep(0)
        return None


def make_exchange() -> Exchange:
    no_runtime: Any = None
    return Exchange(no_runtime, "127.0.0.1", 0.0, 0.0)


def test_sync_layers_run_in_order() -> None:
    calls: list[str] = []
    pipeline = Pipeline([RecordingLayer("a", calls), RecordingLayer("b", calls)])
    assert pipeline.check_head(make_exchange()) is None
    assert calls == ["a", "b"]


def test_rejection_stops_later_layers() -> None:
    calls: list[str] = []
    pipeline = Pipeline([RecordingLayer("a", calls, reject=True), RecordingLayer("b", calls)])
    with pytest.raises(Rejection) as info:
        pipeline.check_head(make_exchange())
    assert info.value.layer == "a"
    assert calls == ["a"]


def test_awaiting_layer_continues_after_io() -> None:
    calls: list[str] = []
    pipeline = Pipeline(
        [
            RecordingLayer("a", calls),
            RecordingLayer("b", calls, wait=True),
            RecordingLayer("c", calls, wait=True),
            RecordingLayer("d", calls),
        ]
    )
    pending = pipeline.check_head(make_exchange())
    assert pending is not None
    assert calls == ["a", "b"]
    asyncio.run(_await(pending))
    assert calls == ["a", "b", "c", "d"]


def test_rejection_after_await() -> None:
    calls: list[str] = []
    pipeline = Pipeline(
        [RecordingLayer("a", calls, wait=True), RecordingLayer("b", calls, reject=True)]
    )
    pending = pipeline.check_head(make_exchange())
    assert pending is not None
    with pytest.raises(Rejection):
        asyncio.run(_await(pending))
    assert calls == ["a", "b"]


async def _await(pending: Awaitable[None]) -> None:
    await pending
