"""Fixtures shared by the test packages."""

from collections.abc import Iterator

import pytest

from tests.support.raw_upstream import RawUpstream, running_raw_upstream


@pytest.fixture
def upstream() -> Iterator[RawUpstream]:
    """Start a `RawUpstream` on 127.0.0.1 that responds to every request with 200 and the body `ok`."""
    with running_raw_upstream() as server:
        yield server
