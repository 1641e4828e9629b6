"""Active health checks, run once per node by the control process; results are pushed to every worker.

One probe loop per (upstream, target) with a ``health_check`` table: ``GET path`` with
``Connection: close`` (over TLS when the upstream uses TLS, verified like traffic), healthy when the status
is in ``expect_status`` within ``timeout``. ``unhealthy_threshold`` consecutive failures take a target out,
``healthy_threshold`` consecutive successes bring it back; targets start healthy so a restart does not
black-hole traffic. Transitions are logged, counted (``fastgw_upstream_healthy``) and sent to workers as
``health`` messages; a worker that connects later is told every target currently down.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from fastgw.snapshot import HealthCheckSettings, Snapshot, Target, UpstreamSettings

Key = tuple[str, str]  # (upstream name, target label)


@dataclass(slots=True)
class TargetHealth:
    healthy: bool = True
    successes: int = 0
    failures: int = 0


async def probe(settings: UpstreamSettings, check: HealthCheckSettings, target: Target) -> tuple[bool, str]:
    """One probe: (healthy, why not)."""
    tls = settings.tls
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(check.timeout):
            reader, writer = await asyncio.open_connection(
                target.host,
                target.port,
                ssl=tls.context if tls is not None else None,
                server_hostname=tls.server_hostname(target.host) if tls is not None else None,
            )
            host = check.host or (target.host if target.port in (80, 443) else target.label)
            writer.write(
                f"GET {check.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fastgw-health-check\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            line = await reader.readline()
    except TimeoutError:
        return False, f"no answer within {check.timeout:g}s"
    except (OSError, ssl.SSLError) as exc:
        return False, getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    finally:
        if writer is not None:
            writer.close()
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return False, "not an HTTP/1 response"
    status = int(parts[1])
    if not check.status_min <= status <= check.status_max:
        return False, f"status {status}"
    return True, ""


class HealthProber:
    def __init__(self, on_change: Callable[[str, str, bool, str], None]) -> None:
        self._on_change = on_change
        self.state: dict[Key, TargetHealth] = {}
        self._tasks: dict[Key, tuple[asyncio.Task[None], UpstreamSettings]] = {}

    def configure(self, snapshot: Snapshot) -> None:
        """(Re)start probe loops for the snapshot's checks; state of kept targets carries over."""
        wanted: dict[Key, tuple[UpstreamSettings, Target]] = {}
        for upstream in snapshot.upstreams.values():
            if upstream.health is None:
                continue
            for target in upstream.targets:
                wanted[(upstream.name, target.label)] = (upstream, target)
        for key, (task, _settings) in list(self._tasks.items()):
            task.cancel()
            del self._tasks[key]
            if key not in wanted:
                health = self.state.pop(key, None)
                if health is not None and not health.healthy:
                    self._on_change(key[0], key[1], True, "no longer checked")
        for key, (upstream, target) in wanted.items():
            self.state.setdefault(key, TargetHealth())
            task = asyncio.get_running_loop().create_task(self._loop(key, upstream, target))
            self._tasks[key] = (task, upstream)

    def down(self) -> list[Key]:
        return [key for key, health in self.state.items() if not health.healthy]

    def stop(self) -> None:
        for task, _settings in self._tasks.values():
            task.cancel()
        self._tasks.clear()

    async def _loop(self, key: Key, upstream: UpstreamSettings, target: Target) -> None:
        check = upstream.health
        assert check is not None
        while True:
            ok, why = await probe(upstream, check, target)
            self._record(key, check, ok, why)
            await asyncio.sleep(check.interval)

    def _record(self, key: Key, check: HealthCheckSettings, ok: bool, why: str) -> None:
        health = self.state.get(key)
        if health is None:
            return
        if ok:
            health.successes += 1
            health.failures = 0
            if not health.healthy and health.successes >= check.healthy_threshold:
                health.healthy = True
                self._on_change(key[0], key[1], True, f"{health.successes} probes succeeded")
        else:
            health.failures += 1
            health.successes = 0
            if health.healthy and health.failures >= check.unhealthy_threshold:
                health.healthy = False
                self._on_change(key[0], key[1], False, f"{health.failures} probes failed, last: {why}")
