"""The worker's list of completion sinks, compiled from config, and the one loop that feeds it.

Order is the contract: the metrics sink is first, so the counts of a batch are in shared memory before
any other sink (the access log, and next a usage ledger or an anomaly detector) sees it; the rest follow
in the order of ``open_sinks``. The fan-out runs once per batch (each ``CHUNK_RECORDS`` records, and at
each tick), never per request: a request costs one list append in ``Worker.record``.
"""

from __future__ import annotations

from fastgw.metrics.llm_spend import SpendMetrics
from fastgw.metrics.worker import WorkerMetrics
from fastgw.sinks.access_log import AccessLog
from fastgw.sinks.base import BATCH_RECORDS, Record, Sink
from fastgw.sinks.ledger import LedgerSink
from fastgw.sinks.metrics import MetricsSink
from fastgw.snapshot import Snapshot
from fastgw.upstream.pool import PoolManager


class CompletionSinks:
    """The sinks of one worker, for its life (a reload keeps them: ``config/validate.py`` refuses a reload
    that changes what they were opened with)."""

    __slots__ = ("metrics", "sinks", "unpublished")

    def __init__(self, metrics: MetricsSink, *others: Sink) -> None:
        self.metrics = metrics
        self.sinks: tuple[Sink, ...] = (metrics, *others)
        self.unpublished = 0  # records taken since the last publishing point
        metrics.watch(self.sinks)

    def deliver(self, batch: list[Record], *, tick: bool) -> None:
        """Hand a batch (possibly empty) to every sink in order; at a publishing point (the ``tick``, or
        BATCH_RECORDS records since the last) each sink then publishes, and at the tick it flushes: a
        sink publishes before the next one takes, so the access log never releases a line whose counts
        the metrics sink has not copied to shared memory."""
        self.unpublished += len(batch)
        point = tick or self.unpublished >= BATCH_RECORDS
        if point:
            self.unpublished = 0
        for sink in self.sinks:
            sink.take(batch)
            if point:
                sink.publish()
            if tick:
                sink.flush()

    def reopen(self) -> None:
        for sink in self.sinks:
            sink.reopen()

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def open_sinks(snapshot: Snapshot, metrics: WorkerMetrics, pools: PoolManager) -> CompletionSinks:
    """The sinks the config asks for, opened (the access log's file and writer thread start here, so a
    file that cannot be opened fails the worker's start, not a request). A new sink is one more line."""
    # Always on: a batch without llm exchanges costs one check each.
    others: list[Sink] = [LedgerSink(spend=SpendMetrics(metrics.shard))]
    if snapshot.access_log.target != "off":
        others.append(AccessLog(snapshot.access_log))
    return CompletionSinks(MetricsSink(metrics, pools), *others)
