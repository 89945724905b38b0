"""Active health checks: probe each target of an upstream on an interval.

A target is marked down after `unhealthy_threshold` failed probes in a row
and up again after `healthy_threshold` successes in a row. A probe passes
when the target responds to `GET path` with a status from 200 to 399 within
`timeout`. Targets start as up, so a gateway serves at once after start.
Probes of https:// targets use the upstream's TLS settings, pins included,
so a target whose certificate the proxy would reject is marked down.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from ringwall.config.model import ActiveHealth
from ringwall.proxy.balancer import TargetState
from ringwall.tls.client_context import ClientTls, PinMismatch, describe_tls_error

log = logging.getLogger("ringwall.health")

_MAX_STATUS_LINE = 1024


class HealthChecker:
    def __init__(
        self,
        upstream_name: str,
        states: tuple[TargetState, ...],
        config: ActiveHealth,
        loop: asyncio.AbstractEventLoop,
        tls: ClientTls | None = None,
    ) -> None:
        self.upstream_name = upstream_name
        self.config = config
        self.tls = tls
        self._tasks = [loop.create_task(self._watch(state)) for state in states]

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _watch(self, state: TargetState) -> None:
        successes = failures = 0
        while True:
            healthy, detail = await self.probe(state)
            if healthy:
                successes, failures = successes + 1, 0
                if state.probe_down and successes >= self.config.healthy_threshold:
                    state.probe_down = False
                    self._log_change(state, "up", detail)
            else:
                successes, failures = 0, failures + 1
                if not state.probe_down and failures >= self.config.unhealthy_threshold:
                    state.probe_down = True
                    self._log_change(state, "down", detail)
            await asyncio.sleep(self.config.interval)

    async def probe(self, state: TargetState) -> tuple[bool, str]:
        """Probe one target once; return whether it passed and why."""
        target = state.target
        request = (
            f"GET {self.config.path} HTTP/1.1\r\nHost: {target.authority}\r\n"
            "User-Agent: ringwall-health-check\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        tls = self.tls
        writer = None
        try:
            async with asyncio.timeout(self.config.timeout):
                if tls is None:
                    reader, writer = await asyncio.open_connection(target.host, target.port)
                else:
                    reader, writer = await asyncio.open_connection(
                        target.host,
                        target.port,
                        ssl=tls.context,
                        server_hostname=tls.server_hostname(target.host),
                    )
                    tls.check_pins(writer.get_extra_info("ssl_object"))
                writer.write(request)
                line = await reader.readline()
        except TimeoutError:
            return False, "timed out"
        except PinMismatch as exc:
            return False, str(exc)
        except ssl.SSLError as exc:
            return False, describe_tls_error(exc)
        except OSError as exc:
            return False, exc.strerror or type(exc).__name__
        finally:
            if writer is not None:
                writer.close()
        parts = line[:_MAX_STATUS_LINE].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            return False, "invalid status line"
        status = int(parts[1])
        return 200 <= status < 400, f"status {status}"

    def _log_change(self, state: TargetState, now: str, detail: str) -> None:
        log.warning(
            f"target is {now}",
            extra={
                "upstream": self.upstream_name,
                "target": state.target.authority,
                "detail": detail,
            },
        )
