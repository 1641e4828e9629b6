"""LLM counters (issue 22): requests by outcome, tokens by kind, answers without usage and time to first
token, per (model, provider), counted from the records of llm routes (``Exchange.llm``, an LlmRecord of
``fastgw/ai/record.py``, read here through :class:`LlmFacts`: this layer is below the handler kinds).

Only records with ``Exchange.llm`` set reach this module: ``WorkerMetrics.observe`` tests ``r.llm is not
None`` once per record and nothing else, so a proxied request pays one compiled attribute test. The counts
go to shared memory with the other counters (``metrics/shared.py``, row kind ``LLM``), at the same flush,
so they survive a worker's death the same way: a replacement continues its slot's totals.

Label values are bounded: model and provider names come from the ``[llm]`` config, never from a client.
A model the gateway did not find (or the client may not use) has no provider picked and is counted as
model ``UNKNOWN_MODEL``, not under the name the client sent, whatever outcome the handler recorded. An
outcome is ``OK``, ``CACHED`` (answered by the route's response cache), an error kind of the provider
adapters and the handler (a fixed set in code), or the class of the gateway's own refusal. A label set
too long for a row (``KEY_BYTES``) or past the shard's capacity is counted in the overflow row
``[OTHER, OTHER, OTHER]`` and raises ``fastgw_metrics_overflow``, as route names do.
"""

from __future__ import annotations

import bisect
import struct
from typing import Final, Protocol

from fastgw.metrics.shared import LLM, OTHER, VALUE_BYTES, MetricsShard

# Seconds from the request reaching the handler to the first content chunk sent (streams only): a cached
# or small model answers in tens of milliseconds, a large reasoning model can think for tens of seconds.
# Typed: compiled, a bare Final tuple was unset when the next line read it (mypyc).
TTFT_BUCKETS: Final[tuple[float, ...]] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TTFT_COUNTS: Final = len(TTFT_BUCKETS) + 1  # per bucket (not cumulative), +Inf last

# The integer counters of a cell, in row order; the TTFT buckets follow them, then the TTFT sum.
REQUESTS: Final = 0
TOKEN_KINDS: Final = ("prompt", "completion", "cached", "reasoning")  # indices 1-4, as exported (kind=)
USAGE_MISSING: Final = 5
COUNTERS: Final = 6
LLM_CELL: Final = struct.Struct(f"<{COUNTERS + TTFT_COUNTS}qd")
assert LLM_CELL.size <= VALUE_BYTES, "an llm cell must fit a shared-memory row"

OK: Final = "ok"
INVALID_REQUEST: Final = "invalid_request"  # the gateway refused it (4xx) before any provider answered
GATEWAY_ERROR: Final = "gateway_error"  # a 5xx of the gateway's own, without a provider error kind
UNKNOWN_MODEL: Final = "(unknown)"  # the model label when no provider was picked for the request
NO_TARGET: Final = "no_target"  # the handler's error kind for a configured model with no target to try
CACHED: Final = "cached"  # answered by the route's response cache (ai/cache.py): no provider call, 0 tokens

Labels = tuple[str, str, str]  # model, provider, outcome


class UsageFacts(Protocol):
    """What the counters read of ``fastgw.ai.adapter.Usage``."""

    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def cached_tokens(self) -> int: ...
    @property
    def reasoning_tokens(self) -> int: ...
    @property
    def reported(self) -> bool: ...


class LlmFacts(Protocol):
    """What the counters read of ``fastgw.ai.record.LlmRecord``."""

    @property
    def model(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def error(self) -> str: ...
    @property
    def ttft_ms(self) -> float: ...
    @property
    def usage(self) -> UsageFacts: ...
    @property
    def cache_hit(self) -> bool: ...


def labels(llm: LlmFacts, status: int) -> Labels:
    """The (model, provider, outcome) an llm record is counted under.

    The handler records the model name the client asked for before it looks it up: unless a provider was
    picked (or the model was found but had none to try, ``NO_TARGET``), that name is the client's and is
    not a label."""
    outcome = llm.error or (OK if status < 400 else INVALID_REQUEST if status < 500 else GATEWAY_ERROR)
    if llm.cache_hit and outcome == OK:
        outcome = CACHED
    if not llm.provider and outcome != NO_TARGET:
        return UNKNOWN_MODEL, "", outcome
    return llm.model, llm.provider, outcome


class LlmCell:
    """The counters of one (model, provider, outcome), as laid out in its row (``LLM_CELL``)."""

    __slots__ = ("counts", "published", "row", "ttft", "ttft_sum")

    def __init__(self, row: int = -1) -> None:
        self.counts = [0] * COUNTERS
        self.ttft = [0] * TTFT_COUNTS
        self.ttft_sum = 0.0
        self.row = row  # -1: no row (no shard, or the overflow row could not be had)
        self.published = 0  # ``counts[REQUESTS]`` when last copied to the row

    def values(self) -> tuple[int | float, ...]:
        return (*self.counts, *self.ttft, self.ttft_sum)


class LlmMetrics:
    """One worker's llm counters; owned by ``WorkerMetrics``, which calls :meth:`observe` for llm records
    and :meth:`publish` at each flush."""

    __slots__ = ("_placed", "_shard", "cells", "overflowed")

    def __init__(self, shard: MetricsShard | None = None) -> None:
        # label set -> its cell; a label set without a row of its own maps to the overflow cell
        self.cells: dict[Labels, LlmCell] = {}
        self.overflowed = 0  # label sets this worker counted in the overflow row
        self._placed: list[LlmCell] = []  # cells with a row, copied to it when they changed
        self._shard = shard
        if shard is not None:
            self._inherit(shard)

    def observe(self, llm: LlmFacts, status: int) -> None:
        key = labels(llm, status)
        cell = self.cells.get(key)
        if cell is None:
            cell = self._new_cell(key)
        counts = cell.counts
        counts[REQUESTS] += 1
        usage = llm.usage
        if usage.reported:
            counts[1] += usage.prompt_tokens
            counts[2] += usage.completion_tokens
            counts[3] += usage.cached_tokens
            counts[4] += usage.reasoning_tokens
        elif key[2] == OK:  # a failed call has no answer to carry usage: only answers count as missing
            counts[USAGE_MISSING] += 1
        if llm.ttft_ms >= 0.0:
            seconds = llm.ttft_ms / 1000.0  # exactly rounded: 5 ms is the bound 0.005, not just above it
            cell.ttft[bisect.bisect_left(TTFT_BUCKETS, seconds)] += 1  # first bound >= it: "le"
            cell.ttft_sum += seconds

    def _new_cell(self, key: Labels) -> LlmCell:
        """A cell with a row of its own, or the overflow cell when the label set does not fit a row or the
        shard is full (the label set then maps to it, so it is placed once)."""
        shard = self._shard
        if shard is None:
            cell = self.cells[key] = LlmCell()
            return cell
        row = shard.allocate((LLM, *key))
        if row >= 0:
            cell = self.cells[key] = LlmCell(row)
            self._placed.append(cell)
            return cell
        self.overflowed += 1
        other = (OTHER, OTHER, OTHER)
        overflow = self.cells.get(other)
        if overflow is None:
            overflow = self.cells[other] = LlmCell(shard.allocate((LLM, *other), overflow=True))
            if overflow.row >= 0:
                self._placed.append(overflow)
        self.cells[key] = overflow
        return overflow

    def _inherit(self, shard: MetricsShard) -> None:
        """Start from what this slot's previous workers counted."""
        for row, key in shard.rows():
            if key[0] != LLM or len(key) != 4:
                continue
            values = shard.read_struct(row, LLM_CELL)
            cell = LlmCell(row)
            cell.counts = [int(v) for v in values[:COUNTERS]]
            cell.ttft = [int(v) for v in values[COUNTERS : COUNTERS + TTFT_COUNTS]]
            cell.ttft_sum = float(values[-1])
            cell.published = cell.counts[REQUESTS]
            self.cells[(str(key[1]), str(key[2]), str(key[3]))] = cell
            self._placed.append(cell)

    def publish(self) -> None:
        """Copy the cells that changed since the last flush into the shard: one pack per changed cell."""
        shard = self._shard
        if shard is None:
            return
        for cell in self._placed:
            if cell.counts[REQUESTS] != cell.published:
                shard.write_struct(cell.row, LLM_CELL, cell.values())
                cell.published = cell.counts[REQUESTS]


def add_row(table: dict[Labels, list[float]], key: Labels, shard: MetricsShard, row: int) -> None:
    """Add one shard's llm row to the scrape's sums (the control process): counters, TTFT buckets, sum."""
    values = shard.read_struct(row, LLM_CELL)
    sums = table.setdefault(key, [0.0] * len(values))
    for i, value in enumerate(values):
        sums[i] += value
