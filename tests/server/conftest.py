from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway_thread import GatewayThread, proxy_config, running_gateway
from tests.support.raw_upstream import RawUpstream


@pytest.fixture
def gateway(upstream: RawUpstream, tmp_path: Path) -> Iterator[GatewayThread]:
    config = proxy_config(
        upstream.port,
        server="  timeouts: {drain: 2s}\n"
        "  limits: {max_body_bytes: 1KiB, max_request_target_bytes: 512,"
        " max_header_count: 20, max_header_bytes: 2KiB}",
    )
    with running_gateway(config, tmp_path) as server:
        yield server
