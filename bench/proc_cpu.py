"""Measure the CPU time of a process tree from /proc (Linux only)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


class ProcStatError(ValueError):
    """Raised when a /proc/PID/stat line cannot be parsed."""


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat that the benchmark uses. Times are in clock ticks."""

    pid: int
    ppid: int
    utime_ticks: int
    stime_ticks: int

    @property
    def cpu_ticks(self) -> int:
        return self.utime_ticks + self.stime_ticks


def parse_proc_stat(line: str) -> ProcStat:
    """Parse one /proc/PID/stat line as proc(5) describes it.

    The command name (field 2) is in parentheses and may itself contain spaces
    and ")", so the fields after it are found from the last ")".
    """
    head, separator, tail = line.rpartition(")")
    if not separator:
        raise ProcStatError(f"invalid /proc/PID/stat line, no ')' after the command: {line!r}")
    pid_text = head.partition("(")[0].strip()
    # Fields after the command, numbered as in proc(5): 3 state, 4 ppid,
    # 14 utime, 15 stime. tail_fields[0] is field 3.
    tail_fields = tail.split()
    if not pid_text.isdigit() or len(tail_fields) < 13:
        raise ProcStatError(f"invalid /proc/PID/stat line, too few fields: {line!r}")
    try:
        return ProcStat(
            pid=int(pid_text),
            ppid=int(tail_fields[1]),
            utime_ticks=int(tail_fields[11]),
            stime_ticks=int(tail_fields[12]),
        )
    except ValueError as error:
        raise ProcStatError(f"invalid /proc/PID/stat line: {line!r}") from error


def read_proc_stat(pid: int, proc: Path = PROC) -> ProcStat | None:
    """Read /proc/PID/stat, or return None when the process has exited."""
    try:
        line = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return parse_proc_stat(line)


def find_descendants(root_pid: int, proc: Path = PROC) -> list[int]:
    """Return the pids of all descendants of `root_pid`, found by walking /proc.

    /proc/PID/task/*/children is not used because kernels built without
    CONFIG_PROC_CHILDREN lack it.
    """
    children_by_parent: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = read_proc_stat(int(entry.name), proc)
        if stat is not None:
            children_by_parent.setdefault(stat.ppid, []).append(stat.pid)

    descendants: list[int] = []
    pending = [root_pid]
    while pending:
        children = children_by_parent.get(pending.pop(), [])
        descendants.extend(children)
        pending.extend(children)
    return descendants


def tree_cpu_seconds(root_pid: int, proc: Path = PROC) -> float:
    """Return utime + stime, in seconds, summed over `root_pid` and its descendants.

    Each process's own times include all its threads. A process that exited
    before this call is not counted.
    """
    ticks = 0
    for pid in [root_pid, *find_descendants(root_pid, proc)]:
        stat = read_proc_stat(pid, proc)
        if stat is not None:
            ticks += stat.cpu_ticks
    return ticks / CLOCK_TICKS_PER_S


def read_cpu_times(proc: Path = PROC) -> dict[int, tuple[int, int]]:
    """Return (busy, total) clock ticks since boot for each CPU, from /proc/stat."""
    times: dict[int, tuple[int, int]] = {}
    for line in (proc / "stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(value) for value in values]
        # proc(5): user nice system idle iowait irq softirq steal ... Idle and
        # iowait count as not busy.
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        times[int(name[3:])] = (sum(ticks[:8]) - idle, sum(ticks[:8]))
    return times


def busy_fractions(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]
) -> dict[int, float]:
    """Return the busy fraction of each CPU between two read_cpu_times() samples."""
    fractions: dict[int, float] = {}
    for cpu, (busy_after, total_after) in after.items():
        busy_before, total_before = before.get(cpu, (0, 0))
        elapsed = total_after - total_before
        fractions[cpu] = (busy_after - busy_before) / elapsed if elapsed > 0 else 0.0
    return fractions
