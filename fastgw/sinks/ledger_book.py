"""The usage ledger's worker book: LLM exchanges summed per (day, consumer, key, team, model, provider,
route) until the control link hands them on (sinks/ledger.py fills it, process/control_link.py empties
it). Its own module so that mypyc compiles it (fastgw/native.py): ``add`` runs once per llm exchange.
"""

from __future__ import annotations

import time
from typing import Any, Final

from fastgw.metrics.llm_spend import SpendMetrics
from fastgw.sinks.base import Record

# How often a worker hands its deltas on: the most a worker killed -9 loses is this much of its traffic.
# Each flush is one message per worker with one row per active (consumer, model, ...) combination and one
# store transaction at the control process: at 2 s, four workers cost SQLite two small commits a second,
# and a crash loses two seconds of accounting (the issue asks for "at least every few seconds").
FLUSH_SECONDS: Final = 2.0
# Distinct rows a book holds before it is flushed early: a flood of distinct consumers or models (each a
# row) is sent on rather than grown without bound; 4096 rows are ~1 MiB of message.
BOOK_ROWS_MAX: Final = 4096

Dims = tuple[str, str, str, str, str, str, str]  # day, consumer, key, team, model, provider, route
_DAY_SECONDS: Final = 86400
NANO_USD: Final = 1e9  # costs travel and are stored as integers of 1e-9 USD (a token costs >= ~1e-8 USD)
UNKNOWN_MODEL: Final = "(unknown)"  # as metrics/llm.py labels it
# A provider's count past this is no count (a hundred thousand times the largest context window), and a
# cost past this no exchange's ($1M): clamped, so that one absurd answer can neither overflow the store's
# 64-bit sums, which would hold every later batch behind it (control/ledger.py), nor the report's JSON.
TOKENS_MAX: Final = 1 << 40
COST_NANOUSD_MAX: Final = 10**15
_PRICED: Final = frozenset({"chat", "messages", "embeddings", "prompt_api"})  # count_tokens, models: free


def _iso_day(epoch_seconds: float, cache: list[Any]) -> str:
    number = int(epoch_seconds // _DAY_SECONDS)
    if number != cache[0]:
        cache[0] = number
        cache[1] = time.strftime("%Y-%m-%d", time.gmtime(number * _DAY_SECONDS))
    day: str = cache[1]
    return day


class LedgerBook:
    """This worker's sums since its last hand-off: dims -> [requests, prompt, completion, cached,
    reasoning, cost (1e-9 USD: integers, so sums are exact), unpriced, errors]."""

    __slots__ = ("_day", "due", "pending")

    def __init__(self) -> None:
        self.pending: dict[Dims, list[int]] = {}
        self.due = 0.0  # monotonic time of the next hand-off
        self._day: list[Any] = [-1, ""]

    def add(self, ex: Record) -> None:
        llm = ex.llm
        identity = ex.consumer
        route = ex.route
        dims = (
            _iso_day(ex.ended or time.time(), self._day),
            "" if identity is None else str(identity.consumer),
            str(getattr(identity, "key_id", "")),
            "" if identity is None else str(identity.team),
            # A model no provider was picked for is the client's string, not a configured name: one row.
            str(llm.model) if llm.provider else UNKNOWN_MODEL,
            str(llm.provider),
            "" if route is None else str(route.name),
        )
        row = self.pending.get(dims)
        if row is None:
            row = self.pending[dims] = [0, 0, 0, 0, 0, 0, 0, 0]
        usage = llm.usage
        row[0] += 1
        if usage.reported:
            row[1] += min(usage.prompt_tokens, TOKENS_MAX)
            row[2] += min(usage.completion_tokens, TOKENS_MAX)
            row[3] += min(usage.cached_tokens, TOKENS_MAX)
            row[4] += min(usage.reasoning_tokens, TOKENS_MAX)
        cost = llm.cost_usd
        failed = bool(llm.error) or ex.status >= 400
        if cost is not None:
            nano = cost * NANO_USD
            if not 0.0 <= nano <= COST_NANOUSD_MAX:  # NaN too: neither comparison holds
                nano = COST_NANOUSD_MAX if nano > 0.0 else 0.0
            row[5] += round(nano)
        elif usage.reported or (not failed and llm.endpoint in _PRICED):
            row[6] += 1  # tokens (or an answer) whose price is unknown: never counted as free
        if failed:
            row[7] += 1

    @property
    def full(self) -> bool:
        return len(self.pending) >= BOOK_ROWS_MAX

    def add_batch(self, batch: list[Record], spend: SpendMetrics | None) -> None:
        """The batch's llm exchanges, into this book and into the tokens-and-cost-by-consumer counters
        (metrics/llm_spend.py): the ledger sink's whole work, here so that its loop is compiled too."""
        for ex in batch:
            llm = ex.llm
            if llm is not None:
                self.add(ex)
                usage = llm.usage
                if spend is not None and usage.reported:
                    identity = ex.consumer
                    consumer = "" if identity is None else str(identity.consumer)
                    spend.observe(
                        consumer, llm.model, usage.prompt_tokens, usage.completion_tokens, llm.cost_usd
                    )

    def take(self) -> list[tuple[Any, ...]]:
        """The rows to send, ``(*dims, *sums)`` each, and an empty book."""
        pending, self.pending = self.pending, {}
        return [(*dims, *sums) for dims, sums in pending.items()]


# The worker's ledger book. Process-global like counters/quota.QUOTAS: the sink fills it, the control
# link (process/control_link.py) empties it, and its sums must outlive reloads.
LEDGER: Final = LedgerBook()
