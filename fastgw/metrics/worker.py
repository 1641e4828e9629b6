"""Per-worker metrics, counted from the same records (completed Exchanges) the access log is built from.

DESIGN.md: completion -> record (the Exchange) -> completion sinks (``fastgw/sinks/``). A request costs
nothing extra here on the hot path: the listener already appends its record; every CHUNK_RECORDS records
and every tick the metrics sink (``sinks/metrics.py``, first in the list) passes the batch to
:meth:`WorkerMetrics.observe`, then at each publishing point (the tick, every BATCH_RECORDS records)
:meth:`WorkerMetrics.publish` copies what changed into the worker's shard of shared memory
(``metrics/shared.py``) before the access log may release its lines. Counting never
drops (the access log may, and counts that too). The control process reads the counters from the shards, so
they survive the death of a worker and its own; it pulls only gauges (:meth:`WorkerMetrics.export`) over the
control channel. A worker that replaces a dead one starts from its slot's totals
(:meth:`WorkerMetrics.__init__` with a shard).

An llm route's record (``Exchange.llm`` set) is also counted per model and provider: tokens, outcome,
time to first token (``metrics/llm.py``); any other record pays one ``is not None`` test for it.

Histograms are counted per bucket (not cumulative) and exported as ``[b0, ..., bN, +Inf, sum]``. A record
costs two dict lookups with cached hashes (route name, then method) and native arithmetic on a
:class:`Cell` (compiled: unboxed ints and floats), because this runs for every request: a tuple key,
boxed numbers per cell and a ``bisect`` per histogram cost several times as many instructions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from fastgw.metrics.llm import LlmMetrics
from fastgw.metrics.shared import (
    DENIALS,
    EJECTIONS,
    H_OVERFLOW,
    HEADER_INTS,
    OTHER,
    REQUESTS,
    SHADOW,
    MetricsShard,
)

if TYPE_CHECKING:
    from fastgw.exchange import Exchange as Record  # a record is the completed Exchange (sinks/base.py)
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


# Methods with a label of their own; any other (h11 passes any token) is counted as "OTHER", so that a
# client cannot fill the metrics table (and the scraper) with label sets of its choosing.
KNOWN_METHODS: frozenset[bytes] = frozenset(  # not Final: as LATENCY_BUCKETS
    (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH", b"")
)
OTHER_METHOD: Final = b"OTHER"
_OTHER_LABEL: Final = OTHER.encode()


class Cell:
    """The counters of one (route, method, status class): native ints and floats in the compiled build, so
    counting a record allocates nothing but the histogram counts past 256."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "count",
        "published",
        "row",
        "total",
        "total_sum",
        "upstream",
        "upstream_sum",
    )

    def __init__(self) -> None:
        self.count = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.total = [0] * _BUCKETS  # per bucket (not cumulative), +Inf last
        self.total_sum = 0.0
        self.upstream = [0] * _BUCKETS
        self.upstream_sum = 0.0
        self.row = -1  # its row in the worker's shard; -1: none (no shard)
        self.published = 0  # ``count`` when last copied to the shard


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
    __slots__ = (
        "_aliases",
        "_pair_rows",
        "_placed",
        "_pools",
        "_sources",
        "cells",
        "denials",
        "ejections",
        "llm",
        "overflowed",
        "shadow",
        "shard",
        "totals",
    )

    def __init__(self, shard: MetricsShard | None = None) -> None:
        # route name -> method -> a cell per status class (0-9): two lookups with cached hashes instead of
        # building and hashing a tuple key per record.
        self.cells: dict[str, dict[bytes, list[Cell | None]]] = {}
        self.denials: dict[tuple[str, str], int] = {}  # (route, reason) -> count
        self.shadow: dict[tuple[str, str], int] = {}  # (route, reason) -> would-denials
        self.ejections: dict[tuple[str, str], int] = {}  # (upstream, target) -> ejections
        self.shard = shard
        self.totals = [0] * HEADER_INTS  # the shard's header counters (H_*), cumulative for the slot
        self.overflowed = 0  # label sets this worker counted in an OTHER row
        self.llm = LlmMetrics(shard)  # llm routes' tokens, outcomes, time to first token (metrics/llm.py)
        self._placed: list[Cell] = []  # cells with a row, copied to it when they changed
        self._pair_rows: dict[tuple[str, tuple[str, str]], list[int]] = {}  # -> [row, value in the row]
        self._aliases: dict[tuple[str, tuple[str, str]], tuple[str, str]] = {}  # label set -> OTHER's
        self._pools: dict[int, tuple[object, int]] = {}  # id(pool) -> (pool, its ejections last seen)
        self._sources: dict[int, tuple[object, int]] = {}  # header index -> (counting object, value)
        if shard is not None:
            self._inherit(shard)

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
                by_class = self._classes(by_method, r.method)
            status_class = r.status // 100  # llhttp passes any three-digit status: 1-9
            if status_class > 9 or status_class < 0:
                status_class = 0  # not a status a parser lets through; counted, never a crash
            c = by_class[status_class]
            if c is None:
                c = by_class[status_class] = self._new_cell(name, r.method, status_class)
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
                n = self.denials.get(dk)
                if n is None:
                    dk = self._place_pair(DENIALS, dk)
                    n = self.denials.get(dk, 0)
                self.denials[dk] = n + 1
            if r.shadow is not None:
                for reason in r.shadow:
                    sk = (name, reason)
                    n = self.shadow.get(sk)
                    if n is None:
                        sk = self._place_pair(SHADOW, sk)
                        n = self.shadow.get(sk, 0)
                    self.shadow[sk] = n + 1
            # An llm route's record (fastgw/ai/record.py). The only test a proxied record pays; no local:
            # binding ``r.llm`` to one costs a compiled loop ~5% (incref/decref), reading it twice does not.
            if r.llm is not None:
                self.llm.observe(r.llm, r.status)

    # -- label sets (cold: the first record of each) -------------------------------------------------
    def _classes(self, by_method: dict[bytes, list[Cell | None]], method: bytes) -> list[Cell | None]:
        """The cells of a route's method; a method not in KNOWN_METHODS shares the OTHER ones (not cached
        under its own name: a client choosing methods must not grow this dict)."""
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
            by_class = by_method.get(method)
            if by_class is not None:
                return by_class
        by_class = by_method[method] = [None] * 10
        return by_class

    def _new_cell(self, name: str, method: bytes, status_class: int) -> Cell:
        """A cell for a new label set, with a row of its own in the shard, or the overflow cell of its
        status class when the shard is full (shared-memory capacity: metrics/shared.py)."""
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        c = Cell()
        shard = self.shard
        if shard is None:
            return c
        c.row = shard.allocate((REQUESTS, name, method.decode("latin-1"), status_class))
        if c.row >= 0:
            self._placed.append(c)
            return c
        self.overflowed += 1
        other = self.cells.setdefault(OTHER, {}).setdefault(_OTHER_LABEL, [None] * 10)
        o = other[status_class]
        if o is None:
            o = other[status_class] = Cell()
            o.row = shard.allocate((REQUESTS, OTHER, OTHER, status_class), overflow=True)
            if o.row >= 0:
                self._placed.append(o)
        return o

    def _place_pair(self, kind: str, key: tuple[str, str]) -> tuple[str, str]:
        """The key to count a new (route, reason) or (upstream, target) under: itself, with a row of its
        own, or (OTHER, OTHER) when the shard is full."""
        alias = self._aliases.get((kind, key))
        if alias is not None:
            return alias
        shard = self.shard
        if shard is None:
            return key
        row = shard.allocate((kind, key[0], key[1]))
        if row >= 0:
            self._pair_rows[(kind, key)] = [row, 0]
            return key
        other = (OTHER, OTHER)
        if (kind, other) not in self._pair_rows:
            self._pair_rows[(kind, other)] = [shard.allocate((kind, OTHER, OTHER), overflow=True), 0]
        self._aliases[(kind, key)] = other
        self.overflowed += 1
        return other

    # -- shared memory -------------------------------------------------------------------------------
    def _inherit(self, shard: MetricsShard) -> None:
        """Start from what this slot's previous workers counted (nothing, for the first)."""
        for i in range(HEADER_INTS):
            self.totals[i] = shard.header(i)
        tables = {DENIALS: self.denials, SHADOW: self.shadow, EJECTIONS: self.ejections}
        for row, key in shard.rows():
            kind = key[0]
            if kind == REQUESTS and len(key) == 4:
                status_class = int(key[3])
                if not 0 <= status_class <= 9:
                    continue
                counts, total, upstream, total_sum, upstream_sum = shard.read_cell(row)
                c = Cell()
                c.count, c.bytes_in, c.bytes_out = counts[0], counts[1], counts[2]
                c.total = total
                c.upstream = upstream
                c.total_sum = total_sum
                c.upstream_sum = upstream_sum
                c.row = row
                c.published = c.count
                by_method = self.cells.setdefault(str(key[1]), {})
                by_method.setdefault(str(key[2]).encode("latin-1"), [None] * 10)[status_class] = c
                self._placed.append(c)
            elif len(key) == 3 and isinstance(kind, str) and kind in tables:
                pair = (str(key[1]), str(key[2]))
                n = shard.read_count(row)
                tables[kind][pair] = n
                self._pair_rows[(kind, pair)] = [row, n]

    def count_from(self, index: int, source: object, value: int) -> None:
        """Header counter ``index`` (H_*) is kept by another object (the access log's drops, the Redis
        client's errors): add what ``source``'s own counter gained since the last call. A new source (a
        new Redis client after a reload) counts from zero, so the slot's total never goes down."""
        last = self._sources.get(index)
        self.totals[index] += value - last[1] if last is not None and last[0] is source else value
        self._sources[index] = (source, value)

    def publish(self, pools: PoolManager | None = None) -> None:
        """Copy what changed since the last call into the shard (every flush: each tick and each full
        batch). Per changed cell, one struct.pack_into; nothing per record."""
        if pools is not None:
            self._count_ejections(pools)
        shard = self.shard
        if shard is None:
            return
        for c in self._placed:
            if c.count != c.published:
                shard.write_cell(
                    c.row,
                    (c.count, c.bytes_in, c.bytes_out),
                    c.total,
                    c.upstream,
                    (c.total_sum, c.upstream_sum),
                )
                c.published = c.count
        for kind, table in ((DENIALS, self.denials), (SHADOW, self.shadow), (EJECTIONS, self.ejections)):
            for key, n in table.items():
                place = self._pair_rows.get((kind, key))
                if place is not None and place[1] != n and place[0] >= 0:
                    shard.write_count(place[0], n)
                    place[1] = n
        self.llm.publish()
        overflowed = self.overflowed + self.llm.overflowed
        for i in range(1, HEADER_INTS):
            value = self.totals[i] + (overflowed if i == H_OVERFLOW else 0)
            shard.set_header(i, value)

    def _count_ejections(self, pools: PoolManager) -> None:
        """Pools keep their own ejection counts and a reload may replace them: add what each gained."""
        seen: dict[int, tuple[object, int]] = {}
        for p in pools.pools:
            n = p.ejections
            last = self._pools.get(id(p))
            delta = n - last[1] if last is not None and last[0] is p else n
            seen[id(p)] = (p, n)
            if delta:
                key = (p.settings.name, p.label)
                count = self.ejections.get(key)
                if count is None:
                    key = self._place_pair(EJECTIONS, key)
                    count = self.ejections.get(key, 0)
                self.ejections[key] = count + delta
        self._pools = seen

    def export(self, *, connections: int, pools: PoolManager) -> dict[str, Any]:
        """A JSON-able snapshot of this worker's gauges (its counters are in the shard)."""
        return {
            "connections": connections,
            "pools": [[p.settings.name, p.label, p.in_use, len(p.idle), len(p.waiters)] for p in pools.pools],
        }
