from __future__ import annotations

from pathlib import Path

import pytest

from ringwall.config.waf import WafConfig
from ringwall.edge.waf import engine as engine_module
from ringwall.edge.waf.engine import CRS_RULES_DIR, LIBRARY, WafEngine, WafRequest


def _installed() -> bool:
    import ctypes

    try:
        ctypes.CDLL(LIBRARY)
    except OSError:
        return False
    return Path(CRS_RULES_DIR).is_dir()


requires_modsecurity = pytest.mark.skipif(
    not _installed(), reason="libmodsecurity3 and modsecurity-crs are not installed"
)
requires_native = pytest.mark.skipif(
    engine_module._transaction is None,
    reason="the C extension ringwall.edge.waf._transaction is not built",
)

HEADERS = [(b"Host", b"api.example.com"), (b"User-Agent", b"curl/8.0"), (b"Accept", b"*/*")]


def get(uri: bytes) -> WafRequest:
    return WafRequest("192.0.2.10", 50000, "127.0.0.1", 8080, "GET", uri, "1.1", HEADERS)


def post_json(uri: bytes, body: bytes, content_type: bytes = b"application/json") -> WafRequest:
    headers = [
        *HEADERS,
        (b"Content-Type", content_type),
        (b"Content-Length", str(len(body)).encode()),
    ]
    return WafRequest("192.0.2.10", 50000, "127.0.0.1", 8080, "POST", uri, "1.1", headers, body)


# Engines that run transactions in the C extension, and engines that call
# libmodsecurity through ctypes, as where the extension is not built.
BINDINGS = [
    pytest.param(True, id="native", marks=requires_native),
    pytest.param(False, id="ctypes"),
]


@pytest.fixture(scope="session", params=BINDINGS)
def block_engine(request: pytest.FixtureRequest) -> WafEngine:
    engine = WafEngine.load(WafConfig(), native=request.param)
    assert engine.native is request.param
    return engine


@pytest.fixture(scope="session", params=BINDINGS)
def detect_engine(request: pytest.FixtureRequest) -> WafEngine:
    engine = WafEngine.load(WafConfig(mode="detect"), native=request.param)
    assert engine.native is request.param
    return engine
