"""Per-worker metrics, counted from the same record tuples the access log is built from.

DESIGN.md: completion -> record (a tuple) -> log writer | metrics. A request costs nothing extra here on
the hot path: the listener already appends its record tuple; every tick (or every BATCH_RECORDS records)
the worker passes the batch to :meth:`WorkerMetrics.observe` and then to the access log. Counting never
drops (the access log may, and counts that too). The control process pulls :meth:`WorkerMetrics.export`
over the control channel and sums the workers (``fastgw.metrics.exposition``).

Histograms are stored per bucket (not cumulative) as lists: ``[b0, ..., bN, +Inf, sum]``.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from fastgw.access_log import Record
    from fastgw.upstream.pool import PoolManager

# Seconds; Prometheus' "le" is inclusive, hence bisect_left.
LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_HIST_LEN: Final = len(LATENCY_BUCKETS) + 2  # buckets, +Inf, sum


class WorkerMetrics:
    __slots__ = ("denials", "latency", "requests", "shadow", "upstream_latency")

    def __init__(self) -> None:
        # (route, method, status class) -> [requests, bytes in, bytes out]
        self.requests: dict[tuple[str, bytes, int], list[int]] = {}
        self.latency: dict[str, list[float]] = {}  # route -> histogram of total seconds
        self.upstream_latency: dict[str, list[float]] = {}  # route -> histogram of upstream seconds
        self.denials: dict[tuple[str, str], int] = {}  # (route, reason) -> count
        self.shadow: dict[tuple[str, str], int] = {}  # (route, reason) -> would-denials

    def observe(self, batch: list[Record]) -> None:
        """Count a batch of access-log records (field order: ``access_log.FIELDS``)."""
        requests = self.requests
        latency = self.latency
        upstream = self.upstream_latency
        bounds = LATENCY_BUCKETS
        for r in batch:
            route = r[7]
            key = (route, r[4], r[8] // 100)
            c = requests.get(key)
            if c is None:
                c = requests[key] = [0, 0, 0]
            c[0] += 1
            c[1] += r[12]
            c[2] += r[13]
            seconds = r[11]
            h = latency.get(route)
            if h is None:
                h = latency[route] = [0.0] * _HIST_LEN
            h[bisect_left(bounds, seconds)] += 1
            h[-1] += seconds
            ms = r[10]
            if ms >= 0.0:
                seconds = ms / 1000.0
                h = upstream.get(route)
                if h is None:
                    h = upstream[route] = [0.0] * _HIST_LEN
                h[bisect_left(bounds, seconds)] += 1
                h[-1] += seconds
            if r[14]:
                dk = (route, r[14])
                self.denials[dk] = self.denials.get(dk, 0) + 1
            if r[15] is not None:
                for reason in r[15]:
                    sk = (route, reason)
                    self.shadow[sk] = self.shadow.get(sk, 0) + 1

    def export(
        self, *, connections: int, pools: PoolManager, log_dropped: int, log_failed: int
    ) -> dict[str, Any]:
        """A JSON-able snapshot of this worker's cumulative counters and current gauges."""
        return {
            "requests": [[r, m.decode("latin-1"), s, *v] for (r, m, s), v in self.requests.items()],
            "latency": [[r, h] for r, h in self.latency.items()],
            "upstream_latency": [[r, h] for r, h in self.upstream_latency.items()],
            "denials": [[r, reason, n] for (r, reason), n in self.denials.items()],
            "shadow": [[r, reason, n] for (r, reason), n in self.shadow.items()],
            "connections": connections,
            "pools": [
                [p.settings.name, p.label, p.in_use, len(p.idle), len(p.waiters), p.ejections]
                for p in pools.pools
            ],
            "access_log_dropped": log_dropped,
            "access_log_failed": log_failed,
        }
