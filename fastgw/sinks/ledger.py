"""The usage ledger's worker half: LLM exchanges summed per (day, consumer, key, team, model, provider,
route), handed to the control process every ``FLUSH_SECONDS`` and on graceful shutdown. The book
itself is sinks/ledger_book.py (compiled); this module is the sink that fills it.

The sink adds each completed exchange that has an llm record (``Exchange.llm``, fastgw/ai/record.py) to
this worker's book: requests, each token kind, the cost (``cost_usd``; an unknown cost counts in
``unpriced`` instead, never as 0) and errors. The control link (process/control_link.py) takes the book
on the tick and sends it as one ``LedgerReport``; the control process, the store's only writer, adds it
to the store in one transaction (store/usage_sql.py). A delta is sent once and then forgotten, so it is
never counted twice; a send that cannot happen (the control process is away) keeps it for the next one.

Crash bound: a worker killed -9 loses what its book held (at most ``FLUSH_SECONDS`` of its exchanges)
plus the records of the tick not yet delivered to the sinks (``TICK_SECONDS``); docs/llm-usage.md.
"""

from __future__ import annotations

from fastgw.metrics.llm_spend import SpendMetrics
from fastgw.sinks.base import Record, Sink
from fastgw.sinks.ledger_book import LEDGER, LedgerBook


class LedgerSink(Sink):
    """Adds each batch's llm exchanges to ``LEDGER`` and to the tokens-and-cost-by-consumer counters
    (metrics/llm_spend.py); cheap enough for the loop (a dict update or two each)."""

    __slots__ = ("book", "spend")
    name = "ledger"

    def __init__(self, book: LedgerBook = LEDGER, spend: SpendMetrics | None = None) -> None:
        self.book = book
        self.spend = spend

    def take(self, batch: list[Record]) -> None:
        self.book.add_batch(batch, self.spend)

    def publish(self) -> None:
        if self.spend is not None:
            self.spend.publish()  # the counters into this worker's shard, as the metrics sink's
