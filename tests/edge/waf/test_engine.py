from __future__ import annotations

import os
from pathlib import Path

import pytest

from ringwall.config.waf import WafConfig
from ringwall.edge.waf.engine import (
    RULE_BLOCKING_EVALUATION,
    RULE_BODY_INVALID,
    RULE_TOO_MANY_ARGS,
    WafEngine,
    WafLoadError,
    parse_log_line,
)
from tests.edge.waf.conftest import get, post_json, requires_modsecurity

pytestmark = requires_modsecurity

SQLI = b"/?id=1'%20OR%20'1'='1"
ORDER = (
    b'{"customer": "c-1042", "items": [{"sku": "BOOK-1", "quantity": 2}], '
    b'"note": "Leave it at the door, please."}'
)


def ids(verdict: object) -> set[int]:
    return {rule.id for rule in verdict.rules}  # type: ignore[attr-defined]


def test_sqli_query_blocked(block_engine: WafEngine) -> None:
    verdict = block_engine.inspect(get(SQLI))
    assert verdict.blocked
    assert verdict.status == 403
    assert 942100 in ids(verdict)
    assert verdict.blocking_rule == RULE_BLOCKING_EVALUATION
    assert RULE_BLOCKING_EVALUATION in ids(verdict)
    assert verdict.anomaly_score >= 5


def test_sqli_match_has_message_and_data(block_engine: WafEngine) -> None:
    verdict = block_engine.inspect(get(SQLI))
    rule = next(rule for rule in verdict.rules if rule.id == 942100)
    assert rule.message == "SQL Injection Attack Detected via libinjection"
    assert rule.severity == "CRITICAL"
    assert "ARGS:id" in rule.data


def test_sqli_in_json_field_blocked(block_engine: WafEngine) -> None:
    verdict = block_engine.inspect(
        post_json(b"/api/orders", b'{"note": "1 UNION SELECT password FROM users"}')
    )
    assert verdict.blocked
    assert 942100 in ids(verdict)
    assert any("ARGS:json.note" in rule.data for rule in verdict.rules)


def test_benign_json_post_passes(block_engine: WafEngine) -> None:
    verdict = block_engine.inspect(post_json(b"/api/orders", ORDER))
    assert not verdict.blocked
    assert verdict.status == 200
    assert verdict.rules == ()
    assert verdict.anomaly_score == 0


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_api_methods_allowed(block_engine: WafEngine, method: str) -> None:
    request = get(b"/api/orders/7")
    verdict = block_engine.inspect(
        type(request)(**{**{s: getattr(request, s) for s in request.__slots__}, "method": method})
    )
    assert verdict.rules == ()


def test_merge_patch_json_parsed(block_engine: WafEngine) -> None:
    verdict = block_engine.inspect(
        post_json(
            b"/api/orders/7",
            b'{"note": "<script>alert(1)</script>"}',
            b"application/merge-patch+json",
        )
    )
    assert verdict.blocked
    assert any("ARGS:json.note" in rule.data for rule in verdict.rules)
    assert 920420 not in ids(verdict)


def test_invalid_json_rejected_400(detect_engine: WafEngine) -> None:
    verdict = detect_engine.inspect(post_json(b"/api/orders", b'{"note": '))
    assert verdict.blocked
    assert verdict.status == 400
    assert verdict.blocking_rule == RULE_BODY_INVALID


def test_detect_mode_records_without_block(detect_engine: WafEngine) -> None:
    verdict = detect_engine.inspect(get(SQLI))
    assert not verdict.blocked
    assert verdict.status == 200
    assert 942100 in ids(verdict)
    assert RULE_BLOCKING_EVALUATION in ids(verdict)
    assert verdict.anomaly_score == 5


def test_score_below_threshold_reported() -> None:
    engine = WafEngine.load(WafConfig(inbound_anomaly_threshold=100))
    verdict = engine.inspect(get(SQLI))
    assert not verdict.blocked
    assert 942100 in ids(verdict)
    assert RULE_BLOCKING_EVALUATION not in ids(verdict)
    assert verdict.anomaly_score == 5


@pytest.mark.parametrize(
    "exclusions",
    [
        {"ids": [942100]},
        {"tags": ["attack-sqli"]},
        {"targets": [{"id": 942100, "target": "ARGS:id"}]},
    ],
    ids=["id", "tag", "target"],
)
def test_exclusion_stops_match(exclusions: dict[str, object]) -> None:
    engine = WafEngine.load(WafConfig.model_validate({"exclusions": exclusions}))
    verdict = engine.inspect(get(SQLI))
    assert 942100 not in ids(verdict)
    assert not verdict.blocked


def test_target_exclusion_keeps_other_args() -> None:
    config = {"exclusions": {"targets": [{"id": 942100, "target": "ARGS:id"}]}}
    engine = WafEngine.load(WafConfig.model_validate(config))
    verdict = engine.inspect(get(b"/?name=1'%20OR%20'1'='1"))
    assert 942100 in ids(verdict)
    assert verdict.blocked


def test_too_many_args_rejected_in_detect_mode() -> None:
    engine = WafEngine.load(WafConfig(mode="detect", max_args=3))
    assert not engine.inspect(get(b"/?a=1&b=2&c=3")).blocked
    verdict = engine.inspect(get(b"/?a=1&b=2&c=3&d=4"))
    assert verdict.blocked
    assert verdict.status == 400
    assert verdict.blocking_rule == RULE_TOO_MANY_ARGS


def test_custom_rules_file_applies(tmp_path: Path) -> None:
    rules = tmp_path / "custom.conf"
    rules.write_text(
        'SecRule ARGS:debug "@streq 1" '
        "\"id:20001,phase:2,deny,status:403,log,msg:'debug switch',severity:2\"\n"
    )
    engine = WafEngine.load(WafConfig(rules_files=(rules,)))
    verdict = engine.inspect(get(b"/?debug=1"))
    assert verdict.blocked
    assert verdict.blocking_rule == 20001


def test_rules_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    rules = tmp_path / "broken.conf"
    rules.write_text(
        'SecRule ARGS "@rx x" "id:20001,phase:2,pass,nolog"\n'
        'SecRule ARGS "@rx y" "id:20002,phase:2,nosuchaction"\n'
    )
    with pytest.raises(WafLoadError) as caught:
        WafEngine.load(WafConfig(rules_files=(rules,)))
    assert caught.value.file == str(rules)
    assert caught.value.line == 2
    assert "nosuchaction" in str(caught.value)


def test_many_transactions_do_not_leak(block_engine: WafEngine) -> None:
    def rss_kib() -> int:
        with open(f"/proc/{os.getpid()}/status") as status:
            line = next(line for line in status if line.startswith("VmRSS:"))
        return int(line.split()[1])

    requests = [get(SQLI), post_json(b"/api/orders", ORDER)]
    for request in requests * 100:
        block_engine.inspect(request)
    before = rss_kib()
    for index in range(2000):
        verdict = block_engine.inspect(requests[index % 2])
        assert verdict.blocked == (index % 2 == 0)
    growth = rss_kib() - before
    # A leaked transaction or intervention string costs far more than 4 KiB
    # per request, so 2,000 of them would grow the process by several MiB.
    assert growth < 4096, f"RSS grew by {growth} KiB over 2,000 inspections"


def test_parse_log_line_fields() -> None:
    line = (
        b'ModSecurity: Warning. Matched "Operator `Rx\' with parameter `x\' [file "/r.conf"] '
        b'[line "3"] [id "942100"] [rev ""] [msg "SQL Injection"] '
        b'[data "Matched Data: a"] [b" found"] [severity "2"] [ver "OWASP_CRS/3.3.4"]'
    )
    rule = parse_log_line(line)
    assert rule is not None
    assert rule.id == 942100
    assert rule.message == "SQL Injection"
    assert rule.severity == "CRITICAL"
    assert rule.data == 'Matched Data: a"] [b" found'


def test_parse_log_line_without_id() -> None:
    assert parse_log_line(b"ModSecurity: something else") is None
