"""LLM tokens and cost by consumer and model (the usage ledger's Prometheus side), with a cardinality
guard: each worker gives at most ``TOP_CONSUMERS`` consumers series of their own, the heaviest by tokens
when a place is free, and counts every other consumer as ``OTHER``.

Consumers are not a bounded label like models (which come from the config): a gateway can have
thousands. The guard keeps a scrape small whatever their number. A consumer, once given its series,
keeps it for the life of the supervisor (a counter that moved to ``OTHER`` would go backwards); until then
its tokens count in ``OTHER`` and as a candidate: at each flush the candidates with the most tokens take
the free places. So the named series are the heaviest consumers as each place was filled (top-N while
places last, sticky afterwards); the exact per-consumer numbers are the ledger's (``fastgw usage``).

Counts live in the worker's shard (metrics/shared.py, row kind ``SPEND``), so a replacement worker
continues its slot's totals; cost is kept in 1e-9 USD, exported in USD.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from fastgw.metrics.shared import OTHER, MetricsShard

SPEND: Final = "ls"  # row kind: [consumer, model]
# Consumers with series of their own, per worker: with a few models each, 20 consumers keep the families
# under ~200 series per worker (a scrape stays well under 100 KiB with 16 workers); the rest are OTHER.
TOP_CONSUMERS: Final = 20
# Consumers tracked as candidates for a free place: beyond this the lightest are forgotten (they stay in
# OTHER), so a flood of new consumers costs bounded memory.
CANDIDATES_MAX: Final = 1024
ANONYMOUS: Final = "(anonymous)"
SPEND_CELL: Final = struct.Struct("<3q")  # prompt tokens, completion tokens, cost in 1e-9 USD
NANO_USD: Final = 1e9

Pair = tuple[str, str]  # consumer (or OTHER), model


class SpendMetrics:
    """One worker's spend counters: :meth:`observe` per llm record, :meth:`publish` at each flush."""

    __slots__ = ("admitted", "candidates", "cells", "rows", "shard")

    def __init__(self, shard: MetricsShard | None) -> None:
        self.shard = shard
        self.cells: dict[Pair, list[int]] = {}  # -> [prompt, completion, cost nano-USD]
        self.rows: dict[Pair, int] = {}  # -> its row in the shard (-1: none could be had)
        self.admitted: set[str] = set()  # consumers with series of their own
        self.candidates: dict[str, int] = {}  # consumer -> tokens counted under OTHER
        if shard is not None:
            self._inherit(shard)

    def observe(
        self, consumer: str, model: str, prompt: int, completion: int, cost_usd: float | None
    ) -> None:
        name = consumer or ANONYMOUS
        if name not in self.admitted:
            if len(self.candidates) >= CANDIDATES_MAX and name not in self.candidates:
                lightest = min(self.candidates, key=self.candidates.__getitem__)
                del self.candidates[lightest]
            self.candidates[name] = self.candidates.get(name, 0) + prompt + completion
            name = OTHER
        cell = self.cells.get((name, model))
        if cell is None:
            cell = self.cells[(name, model)] = [0, 0, 0]
        cell[0] += prompt
        cell[1] += completion
        if cost_usd is not None:
            cell[2] += round(cost_usd * NANO_USD)

    def publish(self) -> None:
        """Give free places to the heaviest candidates, then copy the cells into the shard."""
        free = TOP_CONSUMERS - len(self.admitted)
        if free > 0 and self.candidates:
            for name in sorted(self.candidates, key=self.candidates.__getitem__, reverse=True)[:free]:
                self.admitted.add(name)
                del self.candidates[name]
        shard = self.shard
        if shard is None:
            return
        for pair, cell in self.cells.items():
            row = self.rows.get(pair)
            if row is None:
                row = self.rows[pair] = shard.allocate((SPEND, *pair), overflow=pair[0] == OTHER)
            if row >= 0:
                shard.write_struct(row, SPEND_CELL, tuple(cell))

    def _inherit(self, shard: MetricsShard) -> None:
        """Start from this slot's previous workers: their counts and their admitted consumers."""
        for row, key in shard.rows():
            if key[0] != SPEND or len(key) != 3:
                continue
            pair = (str(key[1]), str(key[2]))
            self.cells[pair] = [int(v) for v in shard.read_struct(row, SPEND_CELL)]
            self.rows[pair] = row
            if pair[0] != OTHER:
                self.admitted.add(pair[0])


def add_spend_row(table: dict[Pair, list[int]], key: Any, shard: MetricsShard, row: int) -> None:
    """Add one shard's spend row to the scrape's sums (the control process)."""
    sums = table.setdefault((str(key[1]), str(key[2])), [0, 0, 0])
    for i, value in enumerate(shard.read_struct(row, SPEND_CELL)):
        sums[i] += int(value)
