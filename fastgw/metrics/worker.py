"""Per-worker metrics, counted from the same record tuples the access log is built from.

DESIGN.md: completion -> record (a tuple) -> log writer | metrics. A request costs nothing extra here on
the hot path: the listener already appends its record tuple; every tick (or every BATCH_RECORDS records)
the worker passes the batch to :meth:`WorkerMetrics.observe` and then to the access log. Counting never
drops (the access log may, and counts that too). The control process pulls :meth:`WorkerMetrics.export`
over the control channel and sums the workers (``fastgw.metrics.exposition``).

Histograms are counted per bucket (not cumulative) and exported as ``[b0, ..., bN, +Inf, sum]``. A record
costs two dict lookups with cached hashes (route name, then method) and native arithmetic on a
:class:`Cell` (compiled: unboxed ints and floats); callgrind on ``bench/pipeline.py`` counted 4,800
instructions a record with a tuple key and a list of boxed numbers per cell, and ``bisect`` per histogram.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from fastgw.access_log import Record
    from fastgw.upstream.pool import PoolManager

# Seconds; Prometheus' "le" is inclusive (bucket_index).
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
_HIST_LEN: Final = len(LATENCY_BUCKETS) + 2  # buckets, +Inf, sum (as exported)
_BUCKETS: Final = len(LATENCY_BUCKETS) + 1  # the bounds, then +Inf


class Cell:
    """The counters of one (route, method, status class): native ints and floats in the compiled build, so
    counting a record allocates nothing but the histogram counts past 256."""

    __slots__ = ("bytes_in", "bytes_out", "count", "total", "total_sum", "upstream", "upstream_sum")

    def __init__(self) -> None:
        self.count = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.total = [0] * _BUCKETS  # per bucket (not cumulative), +Inf last
        self.total_sum = 0.0
        self.upstream = [0] * _BUCKETS
        self.upstream_sum = 0.0


def bucket_index(bounds: tuple[float, ...], seconds: float) -> int:
    """The histogram bucket of ``seconds``: the first bound >= it (Prometheus' "le"), else +Inf. A linear
    scan: most requests land in the first buckets, and a compiled loop beats a call to bisect."""
    i = 0
    for bound in bounds:
        if seconds <= bound:
            return i
        i += 1
    return i


class WorkerMetrics:
    __slots__ = ("cells", "denials", "shadow")

    def __init__(self) -> None:
        # route name -> method -> a cell per status class (0-9): two lookups with cached hashes instead of
        # building and hashing a tuple key per record.
        self.cells: dict[str, dict[bytes, list[Cell | None]]] = {}
        self.denials: dict[tuple[str, str], int] = {}  # (route, reason) -> count
        self.shadow: dict[tuple[str, str], int] = {}  # (route, reason) -> would-denials

    def observe(self, batch: list[Record]) -> None:
        """Count a batch of access-log records (completed Exchanges)."""
        cells = self.cells
        bounds = LATENCY_BUCKETS
        for r in batch:
            route = r.route
            name = route.name if route is not None else ""
            by_method = cells.get(name)
            if by_method is None:
                by_method = cells[name] = {}
            by_class = by_method.get(r.method)
            if by_class is None:
                by_class = by_method[r.method] = [None] * 10
            status_class = r.status // 100  # llhttp passes any three-digit status: 1-9
            if status_class > 9 or status_class < 0:
                status_class = 0  # not a status a parser lets through; counted, never a crash
            c = by_class[status_class]
            if c is None:
                c = by_class[status_class] = Cell()
            c.count += 1
            c.bytes_in += r.body_received
            c.bytes_out += r.bytes_out
            seconds = r.total_s
            c.total[bucket_index(bounds, seconds)] += 1
            c.total_sum += seconds
            ms = r.upstream_ms
            if ms >= 0.0:
                seconds = ms * 0.001
                c.upstream[bucket_index(bounds, seconds)] += 1
                c.upstream_sum += seconds
            if r.denial and r.status >= 400:  # a CORS preflight answer (204) is not a denial
                dk = (name, r.denial)
                self.denials[dk] = self.denials.get(dk, 0) + 1
            if r.shadow is not None:
                for reason in r.shadow:
                    sk = (name, reason)
                    self.shadow[sk] = self.shadow.get(sk, 0) + 1

    def _each_cell(self) -> list[tuple[str, bytes, int, Cell]]:
        return [
            (route, method, status_class, cell)
            for route, by_method in self.cells.items()
            for method, by_class in by_method.items()
            for status_class, cell in enumerate(by_class)
            if cell is not None
        ]

    def export(
        self, *, connections: int, pools: PoolManager, log_dropped: int, log_failed: int
    ) -> dict[str, Any]:
        """A JSON-able snapshot of this worker's cumulative counters and current gauges."""
        cells = self._each_cell()
        latency: dict[str, list[float]] = {}
        upstream: dict[str, list[float]] = {}
        for route, _m, _s, c in cells:
            for table, counts, total in (
                (latency, c.total, c.total_sum),
                (upstream, c.upstream, c.upstream_sum),
            ):
                h = table.setdefault(route, [0.0] * _HIST_LEN)
                for i in range(_BUCKETS):
                    h[i] += counts[i]
                h[_BUCKETS] += total
        return {
            "requests": [
                [r, m.decode("latin-1"), s, c.count, c.bytes_in, c.bytes_out] for r, m, s, c in cells
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
