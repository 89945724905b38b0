"""The Prometheus text of the admin API's /metrics."""

from ringwall.server.metrics import render


def test_render_counters_and_gauge() -> None:
    text = render({"store_failures": 3, "rate_evictions": 0, "connections": 2})
    lines = text.splitlines()
    assert "# TYPE ringwall_limit_store_failures_total counter" in lines
    assert "ringwall_limit_store_failures_total 3" in lines
    assert "ringwall_rate_limit_evictions_total 0" in lines
    assert "# TYPE ringwall_connections_open gauge" in lines
    assert "ringwall_connections_open 2" in lines
    assert text.endswith("\n")


def test_render_skips_missing_values() -> None:
    text = render({"store_failures": 1})
    assert "ringwall_ban_evictions_total" not in text
    assert text.count("# HELP") == 1


def test_every_help_line_names_its_metric() -> None:
    text = render(
        {
            "store_failures": 0,
            "rate_evictions": 0,
            "window_evictions": 0,
            "ban_evictions": 0,
            "connections_full": 0,
            "connections": 0,
        }
    )
    lines = text.splitlines()
    assert len(lines) == 18
    for help_line, type_line, sample in zip(lines[0::3], lines[1::3], lines[2::3], strict=True):
        name = sample.split(" ")[0]
        assert help_line.startswith(f"# HELP {name} ")
        assert type_line.startswith(f"# TYPE {name} ")
