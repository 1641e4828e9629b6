"""Per-worker metrics, counted from the same record tuples the access log is built from.

DESIGN.md: completion -> record (a tuple) -> log writer | metrics. A request costs nothing extra here on
the hot path: the listener already appends its record tuple; every tick (or every BATCH_RECORDS records)
the worker passes the batch to :meth:`WorkerMetrics.observe` and then to the access log. Counting never
drops (the access log may, and counts that too). The control process pulls :meth:`WorkerMetrics.export`
over the control channel and sums the workers (``fastgw.metrics.exposition``).

Histograms are stored per bucket (not cumulative) as lists: ``[b0, ..., bN, +Inf, sum]``. Measured with
``bench/micro.py``: 0.43 us a record (one dict lookup per record: the route/method/class cell holds the
counters and both histograms; a dict per metric cost 0.56 us).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from fastgw.access_log import Record
    from fastgw.upstream.pool import PoolManager

# Seconds; Prometheus' "le" is inclusive, hence bisect_left.
LATENCY_BUCKETS: tuple[float, ...] = (  # not Final: mypyc (fastgw/native.py) fails to initialise it
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


# One cell per (route, method, status class): counters, then both histograms, so a record costs one lookup.
_COUNT, _BYTES_IN, _BYTES_OUT = 0, 1, 2
_TOTAL: Final = 3  # total-latency buckets start here: len(LATENCY_BUCKETS) + 1 (+Inf), then the sum
_UPSTREAM: Final = _TOTAL + _HIST_LEN  # upstream-latency buckets, +Inf, sum
_CELL_LEN: Final = _UPSTREAM + _HIST_LEN


class WorkerMetrics:
    __slots__ = ("cells", "denials", "shadow")

    def __init__(self) -> None:
        self.cells: dict[tuple[str, bytes, int], list[float]] = {}
        self.denials: dict[tuple[str, str], int] = {}  # (route, reason) -> count
        self.shadow: dict[tuple[str, str], int] = {}  # (route, reason) -> would-denials

    def observe(self, batch: list[Record]) -> None:
        """Count a batch of access-log records (completed Exchanges); ~0.4 us a record."""
        cells = self.cells
        bounds = LATENCY_BUCKETS
        total_sum = _TOTAL + _HIST_LEN - 1
        upstream_sum = _UPSTREAM + _HIST_LEN - 1
        for r in batch:
            route = r.route
            name = route.name if route is not None else ""
            key = (name, r.method, r.status // 100)
            c = cells.get(key)
            if c is None:
                c = cells[key] = [0] * _CELL_LEN
            c[0] += 1  # _COUNT, _BYTES_IN, _BYTES_OUT: literal indexes are faster
            c[1] += r.body_received
            c[2] += r.bytes_out
            seconds = r.total_s
            c[_TOTAL + bisect_left(bounds, seconds)] += 1
            c[total_sum] += seconds
            ms = r.upstream_ms
            if ms >= 0.0:
                seconds = ms * 0.001
                c[_UPSTREAM + bisect_left(bounds, seconds)] += 1
                c[upstream_sum] += seconds
            if r.denial and r.status >= 400:  # a CORS preflight answer (204) is not a denial
                dk = (name, r.denial)
                self.denials[dk] = self.denials.get(dk, 0) + 1
            if r.shadow is not None:
                for reason in r.shadow:
                    sk = (name, reason)
                    self.shadow[sk] = self.shadow.get(sk, 0) + 1

    def export(
        self, *, connections: int, pools: PoolManager, log_dropped: int, log_failed: int
    ) -> dict[str, Any]:
        """A JSON-able snapshot of this worker's cumulative counters and current gauges."""
        latency: dict[str, list[float]] = {}
        upstream: dict[str, list[float]] = {}
        for (route, _m, _s), c in self.cells.items():
            for table, start in ((latency, _TOTAL), (upstream, _UPSTREAM)):
                h = table.setdefault(route, [0.0] * _HIST_LEN)
                for i in range(_HIST_LEN):
                    h[i] += c[start + i]
        return {
            "requests": [
                [r, m.decode("latin-1"), s, int(c[0]), int(c[1]), int(c[2])]
                for (r, m, s), c in self.cells.items()
            ],
            "latency": [[r, h] for r, h in latency.items()],
            "upstream_latency": [[r, h] for r, h in upstream.items() if any(h[:-1])],
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
