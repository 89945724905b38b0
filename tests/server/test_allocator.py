"""The restart with a larger glibc tcache for gateways that run the WAF."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ringwall.server.allocator import TCACHE_COUNT, TUNABLE, _uses_glibc, tuned_environment
from tests.edge.waf.conftest import requires_modsecurity
from tests.support.gateway_process import Gateway

requires_glibc = pytest.mark.skipif(not _uses_glibc(), reason="glibc tunables need glibc")
SETTING = f"{TUNABLE}={TCACHE_COUNT}"
# Prints GLIBC_TUNABLES once per run of the interpreter.
PRINT_AFTER_RESTART = (
    "import os, sys\n"
    "from ringwall.server.allocator import restart_with_tuned_allocator\n"
    "restart_with_tuned_allocator(sys.orig_argv[1:])\n"
    "print(os.environ.get('GLIBC_TUNABLES'))\n"
)


def test_tuned_environment_adds_setting() -> None:
    tuned = tuned_environment({"PATH": "/usr/bin"})
    assert tuned == {"PATH": "/usr/bin", "GLIBC_TUNABLES": SETTING}


def test_tuned_environment_keeps_other_tunables() -> None:
    tuned = tuned_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert tuned is not None
    assert tuned["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{SETTING}"


@pytest.mark.parametrize(
    "value", [f"{TUNABLE}=7", f"glibc.malloc.arena_max=2:{TUNABLE}=0"], ids=["alone", "second"]
)
def test_tuned_environment_respects_operator_count(value: str) -> None:
    assert tuned_environment({"GLIBC_TUNABLES": value}) is None


def test_tuned_environment_does_not_change_input() -> None:
    environ = {"GLIBC_TUNABLES": ""}
    assert tuned_environment(environ) == {"GLIBC_TUNABLES": SETTING}
    assert environ == {"GLIBC_TUNABLES": ""}


def run_snippet(environ: dict[str, str]) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PRINT_AFTER_RESTART],
        capture_output=True,
        text=True,
        env=environ,
        check=True,
        timeout=30,
    )
    return result.stdout.splitlines()


@requires_glibc
def test_restart_sets_tunable_once() -> None:
    environ = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    assert run_snippet(environ) == [SETTING]


@requires_glibc
def test_restart_skipped_when_count_set() -> None:
    environ = {**os.environ, "GLIBC_TUNABLES": f"{TUNABLE}=7"}
    assert run_snippet(environ) == [f"{TUNABLE}=7"]


def environment_of(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (entry.decode().split("=", 1) for entry in entries if b"=" in entry)
    return dict(pairs)


def write_config(tmp_path: Path, waf: bool) -> Path:
    config = tmp_path / "gateway.yaml"
    text = (
        "upstreams:\n  app:\n    targets: ['http://127.0.0.1:9']\n"
        "routes:\n  - {name: all, path: /, upstream: app, auth: none}\n"
    )
    if waf:
        text = (
            f"logging: {{security: '{tmp_path / 'security.log'}'}}\nwaf: {{mode: block}}\n" + text
        )
    config.write_text(text)
    return config


@requires_glibc
@requires_modsecurity
def test_gateway_with_waf_runs_tuned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    gateway = Gateway(write_config(tmp_path, waf=True), workers=1)
    try:
        [worker] = gateway.worker_pids()
        assert environment_of(gateway.process.pid).get("GLIBC_TUNABLES") == SETTING
        assert environment_of(worker).get("GLIBC_TUNABLES") == SETTING
    finally:
        assert gateway.stop() == 0


@requires_glibc
def test_gateway_without_waf_not_restarted(tmp_path: Path) -> None:
    gateway = Gateway(write_config(tmp_path, waf=False), workers=1)
    try:
        expected = os.environ.get("GLIBC_TUNABLES")
        assert environment_of(gateway.process.pid).get("GLIBC_TUNABLES") == expected
    finally:
        assert gateway.stop() == 0
