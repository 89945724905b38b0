"""The layer pipeline: order, synchronous rejections, and layers that await."""

import asyncio
import types
from collections.abc import Awaitable
from typing import Any

import pytest

from ringwall.config.model import Route
from ringwall.errors import NotFound, Rejection
from ringwall.exchange import Exchange
from ringwall.gateway.routing import CompiledRoute
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


class StubRouting:
    """Routes every request to one route."""

    name = "routing"

    def __init__(self, route: CompiledRoute, calls: list[str]) -> None:
        self.route = route
        self.calls = calls

    def check_head(self, exchange: Exchange) -> None:
        self.calls.append("routing")
        exchange.route = self.route


class SkippedLayer(RecordingLayer):
    def applies_to(self, route: CompiledRoute) -> bool:
        return False


def pipeline_of(before: list[Any], after: list[Any], calls: list[str]) -> Pipeline:
    route = CompiledRoute(Route(path="/", upstream="app", auth="none"), 0)
    return Pipeline(before, StubRouting(route, calls), after, [route])


def test_layers_after_routing_per_route() -> None:
    calls: list[str] = []
    pipeline = pipeline_of(
        [RecordingLayer("edge", calls)],
        [RecordingLayer("a", calls), SkippedLayer("skipped", calls), RecordingLayer("b", calls)],
        calls,
    )
    assert pipeline.check_head(make_exchange()) is None
    assert calls == ["edge", "routing", "a", "b"]


def test_await_before_routing_continues() -> None:
    calls: list[str] = []
    pipeline = pipeline_of(
        [RecordingLayer("edge", calls, wait=True)],
        [RecordingLayer("a", calls, wait=True), RecordingLayer("b", calls)],
        calls,
    )
    pending = pipeline.check_head(make_exchange())
    assert pending is not None
    asyncio.run(_await(pending))
    assert calls == ["edge", "routing", "a", "b"]


def test_sync_layers_run_in_order() -> None:
    calls: list[str] = []
    pipeline = pipeline_of([RecordingLayer("a", calls), RecordingLayer("b", calls)], [], calls)
    assert pipeline.check_head(make_exchange()) is None
    assert calls == ["a", "b", "routing"]


def test_rejection_stops_later_layers() -> None:
    calls: list[str] = []
    pipeline = pipeline_of(
        [RecordingLayer("a", calls, reject=True)], [RecordingLayer("b", calls)], calls
    )
    with pytest.raises(Rejection) as info:
        pipeline.check_head(make_exchange())
    assert info.value.layer == "a"
    assert calls == ["a"]


def test_awaiting_layer_continues_after_io() -> None:
    calls: list[str] = []
    pipeline = pipeline_of(
        [RecordingLayer("a", calls), RecordingLayer("b", calls, wait=True)],
        [RecordingLayer("c", calls, wait=True), RecordingLayer("d", calls)],
        calls,
    )
    pending = pipeline.check_head(make_exchange())
    assert pending is not None
    assert calls == ["a", "b"]
    asyncio.run(_await(pending))
    assert calls == ["a", "b", "routing", "c", "d"]


def test_rejection_after_await() -> None:
    calls: list[str] = []
    pipeline = pipeline_of(
        [RecordingLayer("a", calls, wait=True), RecordingLayer("b", calls, reject=True)], [], calls
    )
    pending = pipeline.check_head(make_exchange())
    assert pending is not None
    with pytest.raises(Rejection):
        asyncio.run(_await(pending))
    assert calls == ["a", "b"]


def test_last_layer_awaitable_returned_as_is() -> None:
    # No layer runs after it, so no coroutine needs to wrap it.
    calls: list[str] = []
    last = RecordingLayer("c", calls, wait=True)
    pipeline = pipeline_of([], [RecordingLayer("b", calls), last], calls)
    pending = pipeline.check_head(make_exchange())
    assert isinstance(pending, types.CoroutineType)
    assert pending.cr_code is asyncio.sleep.__code__
    asyncio.run(_await(pending))
    assert calls == ["routing", "b", "c"]


async def _await(pending: Awaitable[None]) -> None:
    await pending
