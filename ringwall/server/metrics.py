"""The admin API's `GET /metrics`: counters in the Prometheus text format (version 0.0.4).

The counters live in the embedded store's shared memory, so every worker
returns the totals of the whole gateway, whichever worker serves the scrape.
"""

from __future__ import annotations

from collections.abc import Mapping

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Each metric: name, type, help text, and the store counter or gauge it reads.
_METRICS = (
    (
        "ringwall_limit_store_failures_total",
        "counter",
        "Limit checks that could not reach the limit store (Redis) and used on_store_failure.",
        "store_failures",
    ),
    (
        "ringwall_rate_limit_evictions_total",
        "counter",
        "Rate limit keys evicted from the full embedded table while still counting.",
        "rate_evictions",
    ),
    (
        "ringwall_quota_evictions_total",
        "counter",
        "Quota and ban-rule window keys evicted from the full embedded table.",
        "window_evictions",
    ),
    (
        "ringwall_ban_evictions_total",
        "counter",
        "Bans evicted from the full embedded table.",
        "ban_evictions",
    ),
    (
        "ringwall_connection_table_full_total",
        "counter",
        "Connections rejected because the client's bucket of the connection table was full.",
        "connections_full",
    ),
    (
        "ringwall_connections_open",
        "gauge",
        "Client connections open in all workers.",
        "connections",
    ),
)


def render(values: Mapping[str, int]) -> str:
    """Return the exposition text of `values` (the store's counters), one metric per block."""
    lines = []
    for name, kind, description, source in _METRICS:
        if source not in values:
            continue
        lines.append(f"# HELP {name} {description}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name} {values[source]}")
    return "\n".join(lines) + "\n"
