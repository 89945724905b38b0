"""Unit tests for the pure parts of the benchmark harness: wrk commands and output, /proc."""

from pathlib import Path

import pytest
from proc_cpu import (
    CLOCK_TICKS_PER_S,
    ProcStatError,
    busy_fractions,
    find_descendants,
    parse_proc_stat,
    read_cpu_times,
    tree_cpu_seconds,
)
from run import SYSTEMS, WRK_TIMEOUTS_S, Settings, wrk_command
from wrk_output import WrkOutputError, parse_metric, parse_time_us, parse_wrk_output

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:8080/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   843.21us  312.40us  12.34ms   91.02%
    Req/Sec    57.12k     2.34k   61.20k    78.00%
  Latency Distribution
     50%  812.00us
     75%    1.01ms
     90%    1.20ms
     99%    1.68ms
  568901 requests in 10.00s, 97.66MB read
Requests/sec:  56889.12
Transfer/sec:      9.77MB
"""

WRK_OUTPUT_WITH_ERRORS = """\
Running 10s test @ http://127.0.0.1:8080/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    32.92ms   40.10ms    1.99s    97.00%
    Req/Sec     1.50k   120.00     1.70k    70.00%
  Latency Distribution
     50%   32.92ms
     75%   33.70ms
     90%   34.52ms
     99%    1.20s
  15012 requests in 10.01s, 2.58MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 17
Requests/sec:   1499.70
Transfer/sec:    264.04KB
"""


def test_wrk_output_counts_and_rate() -> None:
    result = parse_wrk_output(WRK_OUTPUT)

    assert result.requests == 568901
    assert result.duration_s == pytest.approx(10.0)
    assert result.requests_per_s == pytest.approx(56889.12)


def test_wrk_output_latency_percentiles() -> None:
    result = parse_wrk_output(WRK_OUTPUT)

    assert result.latency_percentiles_us == pytest.approx(
        {"50": 812.0, "75": 1010.0, "90": 1200.0, "99": 1680.0}
    )
    assert result.percentile_us("99") == pytest.approx(1680.0)


def test_wrk_output_without_errors_is_valid() -> None:
    result = parse_wrk_output(WRK_OUTPUT)

    assert result.socket_errors.total == 0
    assert result.non_2xx_3xx == 0
    assert result.is_valid


def test_wrk_output_with_errors_is_invalid() -> None:
    result = parse_wrk_output(WRK_OUTPUT_WITH_ERRORS)

    assert result.socket_errors.connect == 1
    assert result.socket_errors.read == 2
    assert result.socket_errors.write == 3
    assert result.socket_errors.timeout == 4
    assert result.socket_errors.total == 10
    assert result.non_2xx_3xx == 17
    assert not result.is_valid


def test_wrk_output_seconds_percentile() -> None:
    result = parse_wrk_output(WRK_OUTPUT_WITH_ERRORS)

    assert result.percentile_us("50") == pytest.approx(32920.0)
    assert result.percentile_us("99") == pytest.approx(1_200_000.0)
    assert result.duration_s == pytest.approx(10.01)


def test_wrk_output_without_latency_flag() -> None:
    without_distribution = "\n".join(
        line for line in WRK_OUTPUT.splitlines() if "%" not in line or "Stdev" in line
    )
    result = parse_wrk_output(without_distribution)

    assert result.latency_percentiles_us == {}
    with pytest.raises(WrkOutputError, match="--latency"):
        result.percentile_us("50")


def test_wrk_output_missing_summary() -> None:
    with pytest.raises(WrkOutputError, match="requests in"):
        parse_wrk_output("unable to connect to 127.0.0.1:8080 Connection refused\n")


@pytest.mark.parametrize(
    ("text", "microseconds"),
    [
        ("812.00us", 812.0),
        ("1.25ms", 1250.0),
        ("2.00s", 2_000_000.0),
        ("1.50m", 90_000_000.0),
        ("1.00h", 3_600_000_000.0),
        ("7us", 7.0),
    ],
)
def test_parse_time_units(text: str, microseconds: float) -> None:
    assert parse_time_us(text) == pytest.approx(microseconds)


@pytest.mark.parametrize("text", ["", "12", "1.0 ms", "1.0ns", "ms"])
def test_parse_time_rejects_invalid(text: str) -> None:
    with pytest.raises(WrkOutputError):
        parse_time_us(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [("120.00", 120.0), ("57.12k", 57_120.0), ("1.20M", 1_200_000.0), ("3G", 3e9)],
)
def test_parse_metric_suffixes(text: str, value: float) -> None:
    assert parse_metric(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "k", "1.2x", "1.2 k"])
def test_parse_metric_rejects_invalid(text: str) -> None:
    with pytest.raises(WrkOutputError):
        parse_metric(text)


def _stat_line(pid: int, comm: str, ppid: int, utime: int, stime: int) -> str:
    # Fields 3 to 52 of proc(5): state, ppid, then zeros except utime (14) and stime (15).
    fields = ["S", str(ppid)] + ["0"] * 9 + [str(utime), str(stime)] + ["0"] * 37
    return f"{pid} ({comm}) " + " ".join(fields) + "\n"


def test_proc_stat_fields() -> None:
    stat = parse_proc_stat(_stat_line(42, "nginx", 1, 150, 25))

    assert stat.pid == 42
    assert stat.ppid == 1
    assert stat.utime_ticks == 150
    assert stat.stime_ticks == 25
    assert stat.cpu_ticks == 175


def test_proc_stat_command_with_parentheses() -> None:
    stat = parse_proc_stat(_stat_line(7, "a) (b c", 3, 10, 20))

    assert stat.pid == 7
    assert stat.ppid == 3
    assert stat.cpu_ticks == 30


def test_proc_stat_real_line() -> None:
    line = (
        "7985 (nginx) S 7984 7984 7984 0 -1 4194624 1466 0 0 0 512 347 0 0 20 0 1 0 "
        "71424 58257408 1711 18446744073709551615 1 1 0 0 0 0 0 4096 134242816 0 0 0 17 "
        "0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
    )
    stat = parse_proc_stat(line)

    assert stat.pid == 7985
    assert stat.ppid == 7984
    assert stat.utime_ticks == 512
    assert stat.stime_ticks == 347


@pytest.mark.parametrize(
    "line", ["", "12 nginx S 1 2 3", "12 (nginx) S 1", "x (nginx) " + "1 " * 20]
)
def test_proc_stat_rejects_invalid(line: str) -> None:
    with pytest.raises(ProcStatError):
        parse_proc_stat(line)


def _fake_proc(root: Path, processes: list[tuple[int, int, int, int]]) -> Path:
    for pid, ppid, utime, stime in processes:
        directory = root / str(pid)
        directory.mkdir()
        (directory / "stat").write_text(_stat_line(pid, "proc", ppid, utime, stime))
    (root / "self").mkdir()
    return root


def test_tree_cpu_sums_descendants(tmp_path: Path) -> None:
    # 10 is the proxy master, 11 and 12 its workers and 13 a worker's child. 20 is unrelated.
    proc = _fake_proc(
        tmp_path,
        [
            (10, 1, 100, 50),
            (11, 10, 300, 100),
            (12, 10, 200, 0),
            (13, 11, 25, 25),
            (20, 1, 9000, 9000),
        ],
    )

    assert sorted(find_descendants(10, proc)) == [11, 12, 13]
    ticks = 100 + 50 + 300 + 100 + 200 + 25 + 25
    assert tree_cpu_seconds(10, proc) == pytest.approx(ticks / CLOCK_TICKS_PER_S)


def test_tree_cpu_of_exited_process(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, [(20, 1, 10, 10)])

    assert tree_cpu_seconds(10, proc) == 0.0


def test_cpu_busy_fractions(tmp_path: Path) -> None:
    # Columns: user nice system idle iowait irq softirq steal guest guest_nice.
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  300 0 100 600 0 0 0 0 0 0\n"
        "cpu0 100 0 50 300 0 0 0 0 0 0\n"
        "cpu1 200 0 50 300 0 0 0 0 0 0\n"
        "intr 12345\n"
    )
    before = read_cpu_times(tmp_path)
    stat.write_text(
        "cpu  500 0 200 900 0 0 0 0 0 0\n"
        "cpu0 190 0 60 300 0 0 0 0 0 0\n"
        "cpu1 210 0 50 350 40 0 0 0 0 0\n"
        "intr 12345\n"
    )
    fractions = busy_fractions(before, read_cpu_times(tmp_path))

    assert before == {0: (150, 450), 1: (250, 550)}
    assert fractions[0] == pytest.approx(1.0)
    assert fractions[1] == pytest.approx(10 / 100)


def test_wrk_command_timeout_only_when_set() -> None:
    settings = Settings(("nginx",), 8, 0, 50, 1, 0, 1, 30.0, False, False)
    default = wrk_command(settings, 8080, 8, {"Host": "localhost"})
    assert "--timeout" not in default
    longer = wrk_command(settings, 8080, 8, {"Host": "localhost"}, timeout_s=10)
    assert longer[longer.index("--timeout") + 1] == "10s"
    assert longer[-1] == "http://127.0.0.1:8080/"


def test_waf_post_pair_shares_wrk_timeout() -> None:
    assert WRK_TIMEOUTS_S["nginx-modsecurity-post"] == WRK_TIMEOUTS_S["ringwall-waf-post"]
    assert set(WRK_TIMEOUTS_S) <= set(SYSTEMS)
