"""Cumulative metric counters in shared memory, so that counts outlive the process that counted them.

The ``metrics`` region (``process/shm.py``) is created by the supervisor before it forks anything and lives
as long as it does. It holds one shard per worker slot and one for the control process (the last); each
shard has one writer at a time, the process in that slot. A worker counts into its own objects on the hot
path (``metrics/worker.py``, unchanged in cost) and copies what changed into its shard at each publishing
point of its records (``sinks/metrics.py``, the first completion sink): every tick (``TICK_SECONDS``,
100 ms) and every ``BATCH_RECORDS`` records. A replacement
worker starts from its slot's totals instead of zero, and the control process reads every shard on a
scrape instead of keeping sums of its own, so neither a worker's nor the control process's death makes a
counter go down. A ``kill -9`` of a worker loses only the records it completed since its last point: at
most one tick's worth and fewer than ``BATCH_RECORDS``.

Layout of a shard: ``HEADER_INTS`` int64 (rows in use, then the scalar counters ``H_*``), then ``ROWS``
rows of ``KEY_BYTES`` (a 2-byte length, then the label set as JSON: ``[kind, label, ...]``) and
``VALUE_BYTES`` of values (``CELL``: the counts and histograms of one (route, method, status class);
``LLM`` rows hold ``metrics/llm.py``'s ``LLM_CELL``; other kinds use the first int64). Rows are never
freed while the supervisor lives: a label set that a reload removed keeps its row, because its counter
must not go back to zero. A row is filled (key first) before the header counts it, so a reader never sees
half a key; every value is an aligned 8-byte store, so a reader sees each value old or new, never torn (a
scrape may see a count one flush ahead of its histogram; the next settles it).

Capacity: ``ROWS - RESERVED_ROWS`` label sets per worker. Past that, a new label set is counted in an
overflow row labelled route ``OTHER`` (one row per status class for requests, one per denial kind, one
for ejections, one for sink drops, one for llm counters), and the shard's ``H_OVERFLOW`` counts the label
sets so redirected (exported as ``fastgw_metrics_overflow``). A label set whose JSON does not fit
``KEY_BYTES`` (a route name of more than ~100 characters) is redirected the same way. Nothing is dropped
and nothing raises.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from typing import Final

import orjson

# Label-set kinds (the first element of a row's key).
REQUESTS: Final = "r"  # [route, method, status class]: a CELL
DENIALS: Final = "d"  # [route, reason]
SHADOW: Final = "s"  # [route, reason]
EJECTIONS: Final = "e"  # [upstream, target]
SINK_DROPPED: Final = "sd"  # [sink]: completed exchanges a sink dropped (its queue was full)
LLM: Final = "l"  # [model, provider, outcome]: an LLM_CELL (metrics/llm.py) of an llm route's records
RELOADS: Final = "reload"  # [result]: the control process's shard
RESTARTS: Final = "restart"  # [child]: the control process's shard

OTHER: Final = "(other)"  # the route label of the overflow rows

# Header ints of a shard.
H_ROWS: Final = 0  # rows in use
H_LOG_DROPPED: Final = 1  # access-log records dropped under pressure (also its SINK_DROPPED row)
H_LOG_FAILED: Final = 2  # access-log records whose write failed
H_REDIS_ERRORS: Final = 3  # failed flushes to the shared rate-limit store
H_OVERFLOW: Final = 4  # label sets counted in an OTHER row for want of a row of their own
H_ALERTS_DELIVERED: Final = 5  # LLM budget alerts a webhook accepted (metrics/tallies.py)
H_ALERTS_FAILED: Final = 6  # refused, or given up after every try
H_ALERTS_DROPPED: Final = 7  # never sent
HEADER_INTS: Final = 8  # full: one more changes the layout (every reader of a shard at once)
H_CONTROL_STARTS: Final = 1  # in the control process's shard: how many control processes started

# 8192 rows of 408 bytes: 3.3 MB of address space per worker, of which only the pages of rows in use
# are ever touched (an anonymous mapping is allocated on first write). A route answered with 3 methods and
# 4 status classes takes 12 rows, so ~650 such routes fit per worker before the overflow rows take over.
ROWS: Final = 8192
# the overflow rows: 10 status classes, denials, shadow, ejections, sink drops, llm (15), one spare
RESERVED_ROWS: Final = 16
KEY_BYTES: Final = 128  # a 2-byte length and the JSON label set; longer ones go to the overflow rows
_KEY_MAX: Final = KEY_BYTES - 2
BUCKETS: Final = 15  # latency buckets + +Inf (metrics/worker.py LATENCY_BUCKETS)
# count, bytes in, bytes out, total-latency buckets, upstream-latency buckets, then the two sums
CELL: Final = struct.Struct(f"<{3 + 2 * BUCKETS}q2d")
VALUE_BYTES: Final = CELL.size
ROW_BYTES: Final = KEY_BYTES + VALUE_BYTES
SHARD_BYTES: Final = HEADER_INTS * 8 + ROWS * ROW_BYTES
_INT: Final = struct.Struct("<q")
_LEN: Final = struct.Struct("<H")

Key = tuple[str | int, ...]


class MetricsShard:
    """One slot's part of the region: written by the process in that slot, read by anyone."""

    __slots__ = ("_base", "_buf", "_decoded")

    def __init__(self, region: mmap.mmap, base: int) -> None:
        self._buf = region
        self._base = base
        self._decoded: dict[bytes, Key] = {}  # key bytes -> label set (a reader decodes each once)

    # -- header ------------------------------------------------------------------------------------------
    def header(self, index: int) -> int:
        return int(_INT.unpack_from(self._buf, self._base + index * 8)[0])

    def set_header(self, index: int, value: int) -> None:
        _INT.pack_into(self._buf, self._base + index * 8, value)

    def used(self) -> int:
        return min(max(self.header(H_ROWS), 0), ROWS)

    # -- rows --------------------------------------------------------------------------------------------
    def _row(self, row: int) -> int:
        return self._base + HEADER_INTS * 8 + row * ROW_BYTES

    def allocate(self, key: Key, *, overflow: bool = False) -> int:
        """A fresh row for ``key``, or -1 when the key is too long or the shard is full. Ordinary label sets
        get the first ROWS - RESERVED_ROWS rows; ``overflow`` rows may also take the reserved ones."""
        data = orjson.dumps(key)
        used = self.used()
        if len(data) > _KEY_MAX or used >= (ROWS if overflow else ROWS - RESERVED_ROWS):
            return -1
        at = self._row(used)
        self._buf[at + 2 : at + 2 + len(data)] = data
        _LEN.pack_into(self._buf, at, len(data))
        self.set_header(H_ROWS, used + 1)  # last: the row exists for readers once it is complete
        return used

    def rows(self) -> Iterator[tuple[int, Key]]:
        """Every row in use, with its label set."""
        buf = self._buf
        for row in range(self.used()):
            at = self._row(row)
            (length,) = _LEN.unpack_from(buf, at)
            if not 0 < length <= _KEY_MAX:
                continue  # never written whole (cannot happen below H_ROWS); skipped, not fatal
            raw = buf[at + 2 : at + 2 + length]
            key = self._decoded.get(raw)
            if key is None:
                try:
                    key = tuple(orjson.loads(raw))
                except orjson.JSONDecodeError:
                    continue
                self._decoded[raw] = key
            yield row, key

    def write_cell(
        self,
        row: int,
        counts: tuple[int, int, int],
        total: list[int],
        upstream: list[int],
        sums: tuple[float, float],
    ) -> None:
        CELL.pack_into(self._buf, self._row(row) + KEY_BYTES, *counts, *total, *upstream, *sums)

    def read_cell(self, row: int) -> tuple[list[int], list[int], list[int], float, float]:
        """(count, bytes in, bytes out), total-latency buckets, upstream buckets, total sum, upstream sum."""
        values = CELL.unpack_from(self._buf, self._row(row) + KEY_BYTES)
        ints: list[int] = list(values[: 3 + 2 * BUCKETS])
        return ints[:3], ints[3 : 3 + BUCKETS], ints[3 + BUCKETS :], values[-2], values[-1]

    def write_count(self, row: int, value: int) -> None:
        _INT.pack_into(self._buf, self._row(row) + KEY_BYTES, value)

    def read_count(self, row: int) -> int:
        return int(_INT.unpack_from(self._buf, self._row(row) + KEY_BYTES)[0])

    def write_struct(self, row: int, layout: struct.Struct, values: tuple[int | float, ...]) -> None:
        """The values of a row kind with a layout of its own (at most ``VALUE_BYTES``: ``LLM_CELL``)."""
        layout.pack_into(self._buf, self._row(row) + KEY_BYTES, *values)

    def read_struct(self, row: int, layout: struct.Struct) -> tuple[int | float, ...]:
        return tuple(layout.unpack_from(self._buf, self._row(row) + KEY_BYTES))


class CounterRows:
    """Plain counters keyed by a label set, kept in a shard: what a process counts outside the record
    batches (the control process's reloads and restarts). Starts from the shard's totals."""

    def __init__(self, shard: MetricsShard | None, kind: str) -> None:
        self._shard = shard
        self._kind = kind
        self._rows: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        if shard is not None:
            for row, key in shard.rows():
                if key[0] == kind and len(key) == 2:
                    self._rows[str(key[1])] = row
                    self.counts[str(key[1])] = shard.read_count(row)

    def add(self, label: str, n: int = 1) -> None:
        if label not in self._rows:
            label = self._place(label)
        value = self.counts[label] = self.counts.get(label, 0) + n
        row = self._rows[label]
        if row >= 0 and self._shard is not None:
            self._shard.write_count(row, value)

    def _place(self, label: str) -> str:
        """Give a new label its row (-1: none, without a shard); past capacity it is counted as OTHER."""
        row = -1 if self._shard is None else self._shard.allocate((self._kind, label))
        if row >= 0 or self._shard is None:
            self._rows[label] = row
            return label
        if OTHER not in self._rows:
            self._rows[OTHER] = self._shard.allocate((self._kind, OTHER), overflow=True)
        return OTHER


class SharedMetrics:
    """The whole region: a shard per worker slot, and the control process's shard after them."""

    def __init__(self, region: mmap.mmap, workers: int) -> None:
        self.workers = workers
        self._shards = [MetricsShard(region, i * SHARD_BYTES) for i in range(workers + 1)]

    @staticmethod
    def region_bytes(workers: int) -> int:
        return (workers + 1) * SHARD_BYTES

    def worker(self, slot: int) -> MetricsShard:
        return self._shards[slot]

    def control(self) -> MetricsShard:
        return self._shards[self.workers]

    def worker_shards(self) -> list[MetricsShard]:
        return self._shards[: self.workers]
