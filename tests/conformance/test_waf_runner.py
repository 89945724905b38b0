"""The CRS regression-suite runner: FTW parsing, request bytes, scoring, and one real run."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from conformance import waf
from tests.edge.waf.conftest import requires_modsecurity

RULE_FILE = """\
---
  meta:
    author: "test"
    enabled: true
    name: 942100.yaml
  tests:
  -
    test_title: 942100-1
    stages:
    -
      stage:
        input:
          dest_addr: 127.0.0.1
          headers:
            Host: localhost
            Content-Length: 5
          method: POST
          port: 80
          uri: "/"
          data:
            - "line1"
            - "line2"
          version: HTTP/1.0
        output:
          log_contains: id "942100"
  -
    test_title: 942100-2
    stages:
    -
      stage:
        input:
          dest_addr: 127.0.0.1
          port: 80
        output:
          status: [200, 403]
"""


def stage_input(**values: object) -> waf.StageInput:
    return waf.parse_stage_input(dict(values))


def test_parse_rule_file_fields() -> None:
    enabled, tests = waf.parse_rule_file(RULE_FILE, "REQUEST-942/942100.yaml")
    assert enabled is True
    assert [test.title for test in tests] == ["942100-1", "942100-2"]
    first = tests[0].stages[0]
    assert first.input.method == "POST"
    assert first.input.version == "HTTP/1.0"
    assert first.input.data == "line1\r\nline2"
    assert ("Content-Length", "5") in first.input.headers
    assert first.output.log_contains == 'id "942100"'
    assert tests[1].stages[0].output.status == (200, 403)


def test_parse_defaults_follow_ftw() -> None:
    _, tests = waf.parse_rule_file(RULE_FILE, "REQUEST-942/942100.yaml")
    request = tests[1].stages[0].input
    assert request.method == "GET"
    assert request.uri == "/"
    assert request.version == "HTTP/1.1"
    assert request.data == ""


def test_parse_disabled_file() -> None:
    enabled, tests = waf.parse_rule_file(
        RULE_FILE.replace("enabled: true", "enabled: false"), "x.yaml"
    )
    assert enabled is False
    assert len(tests) == 2


def test_parse_output_without_expectation() -> None:
    with pytest.raises(waf.SuiteError, match="942100-2"):
        waf.parse_rule_file(RULE_FILE.replace("status: [200, 403]", "{}"), "x.yaml")


def test_parse_single_status() -> None:
    assert waf.parse_stage_output({"status": 403}).status == (403,)


def test_build_request_form_body() -> None:
    request = waf.build_request(
        stage_input(method="POST", headers={"Host": "localhost"}, data="var=1234 OR 1=1")
    )
    assert request == (
        b"POST / HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 17\r\n\r\nvar=1234+OR+1%3D1"
    )


def test_build_request_keeps_percent_escapes() -> None:
    request = waf.build_request(stage_input(method="POST", data="a=%27x y"))
    assert request.endswith(b"Content-Length: 8\r\n\r\na=%27x y")


def test_build_request_stop_magic() -> None:
    request = waf.build_request(stage_input(method="POST", data="x", stop_magic=True))
    assert request == b"POST / HTTP/1.1\r\n\r\nx"


def test_build_request_keeps_given_headers() -> None:
    request = waf.build_request(
        stage_input(
            method="POST",
            headers={"Content-Type": "application/json", "Content-Length": 1},
            data='{"a": 1}',
        )
    )
    assert b"Content-Type: application/json\r\nContent-Length: 1\r\n\r\n" in request
    assert request.endswith(b'{"a": 1}')


def test_build_request_adds_request_id() -> None:
    request = waf.build_request(stage_input(uri="/x", version="1.1"), request_id="crs-1")
    assert request == b"GET /x 1.1\r\nX-Request-Id: crs-1\r\n\r\n"


def test_build_request_raw_unescapes() -> None:
    request = waf.build_request(stage_input(raw_request="GET / HTTP/1.0\\r\\n\\r\\n"))
    assert request == b"GET / HTTP/1.0\r\n\r\n"


def test_build_request_encoded_verbatim() -> None:
    raw = b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\n\xac\xed"
    request = waf.build_request(
        stage_input(encoded_request=base64.b64encode(raw).decode(), raw_request="ignored")
    )
    assert request == raw


def test_parse_response_status_and_body() -> None:
    response = waf.parse_response(
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\nX-A: b\r\n\r\nnoEXTRA"
    )
    assert response.status == 403
    assert response.headers["x-a"] == "b"
    assert response.body == b"no"


def test_parse_response_incomplete() -> None:
    response = waf.parse_response(b"HTTP/1.1 200 OK\r\n", error="timed out after 3 s")
    assert response.status is None
    assert response.error == "timed out after 3 s"


def test_render_log_lines() -> None:
    records = [{"rules": [{"id": 942100, "msg": "SQLi", "severity": "CRITICAL", "data": "x"}]}]
    assert waf.render_log_lines(records) == [
        '[id "942100"] [msg "SQLi"] [data "x"] [severity "CRITICAL"]'
    ]


OK = waf.Response(200, {}, b"")
LINES = ['[id "942100"] [msg "SQLi"] [data ""] [severity "CRITICAL"]']


def test_score_log_contains() -> None:
    assert waf.score_stage(waf.StageOutput(log_contains='id "942100"'), OK, LINES).passed
    missing = waf.score_stage(waf.StageOutput(log_contains='id "942101"'), OK, LINES)
    assert not missing.passed
    assert missing.category == waf.CATEGORY_MISSING_MATCH


def test_score_no_log_contains() -> None:
    outcome = waf.score_stage(waf.StageOutput(no_log_contains='id "942100"'), OK, LINES)
    assert not outcome.passed
    assert outcome.category == waf.CATEGORY_UNEXPECTED_MATCH
    assert waf.score_stage(waf.StageOutput(no_log_contains='id "942101"'), OK, LINES).passed


def test_score_status_list() -> None:
    output = waf.StageOutput(status=(403, 400))
    assert waf.score_stage(output, waf.Response(400), []).passed
    assert not waf.score_stage(output, OK, []).passed


def test_score_response_contains() -> None:
    output = waf.StageOutput(response_contains="hello")
    assert waf.score_stage(output, waf.Response(200, {}, b"well hello"), []).passed
    assert not waf.score_stage(output, OK, []).passed


def test_score_expect_error() -> None:
    output = waf.StageOutput(expect_error=True)
    assert waf.score_stage(output, waf.Response(None, error="timed out"), []).passed
    assert waf.score_stage(output, waf.Response(400), []).passed
    assert not waf.score_stage(output, OK, []).passed


def test_score_http_layer_rejection() -> None:
    problem = waf.Response(
        400,
        {"content-type": "application/problem+json"},
        json.dumps({"layer": "framing"}).encode(),
    )
    outcome = waf.score_stage(waf.StageOutput(log_contains='id "921190"'), problem, [])
    assert outcome.category == waf.CATEGORY_HTTP_LAYER


def test_testdata_root_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(waf.TESTDATA_ENV, str(tmp_path))
    assert waf.testdata_root() == tmp_path
    monkeypatch.delenv(waf.TESTDATA_ENV)
    assert waf.testdata_root() == waf.REPO_ROOT.parent / "shared" / "testdata"


def test_load_suite_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(waf.SuiteError, match="RINGWALL_TESTDATA"):
        waf.load_suite(tmp_path / "absent")


SUITE_DIR = waf.testdata_root() / waf.SUITE_NAME
requires_suite = pytest.mark.skipif(
    not SUITE_DIR.is_dir(), reason=f"CRS regression suite not found at {SUITE_DIR}"
)


@requires_suite
def test_load_suite_counts() -> None:
    suite = waf.load_suite(SUITE_DIR)
    assert len(suite.tests) == 2396
    assert suite.disabled == 7


@requires_suite
@requires_modsecurity
@pytest.mark.timeout(30)
def test_runner_rule_942100(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = waf.main(["--filter", "942100.yaml", "--results-dir", str(tmp_path)])
    output = capsys.readouterr().out
    assert status == 0, output
    assert "passed 14 of 14 tests" in output
    [results] = tmp_path.glob("crs-3.3.4-*.json")
    document = json.loads(results.read_text())
    assert document["passed"] == 14
    assert document["failures"] == []


@requires_suite
def test_full_suite_keeps_its_pass_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The whole CRS 3.3.4 suite takes a few seconds, so CI runs all of it. The
    # count may rise; a fall means a change broke WAF coverage.
    waf.main(["--results-dir", str(tmp_path)])
    capsys.readouterr()
    [results] = tmp_path.glob("crs-3.3.4-*.json")
    document = json.loads(results.read_text())
    assert document["passed"] >= 2351
