"""The metrics sink: counts every batch (``metrics/worker.py``, compiled) and copies the counts to shared
memory before any later sink sees the batch.

It is first in the worker's list (``sinks/fanout.py``) and copies the counts at each publishing point,
so that a ``kill -9`` loses the counts of at most the records completed since the last (one tick, and
fewer than ``BATCH_RECORDS``), and the access log never shows a request the metrics lost
(``metrics/shared.py``). Counting is synchronous and never drops: its queue is the worker's pending
list. Each publishing point also copies the
other sinks' drop counters (``fastgw_sink_dropped_total{sink}``), the access log's legacy counters, the
shared rate-limit store's errors and the pools' ejections.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastgw.counters.cluster_slot import CLUSTER
from fastgw.metrics.shared import (
    H_ALERTS_DELIVERED,
    H_ALERTS_DROPPED,
    H_ALERTS_FAILED,
    H_LOG_DROPPED,
    H_LOG_FAILED,
    H_REDIS_ERRORS,
    SINK_DROPPED,
    CounterRows,
)
from fastgw.metrics.tallies import BUDGET_ALERTS
from fastgw.metrics.worker import WorkerMetrics
from fastgw.sinks.access_log import AccessLog
from fastgw.sinks.base import Record, Sink
from fastgw.upstream.pool import PoolManager


class MetricsSink(Sink):
    __slots__ = ("_drops", "_log", "_seen", "_watched", "metrics", "pools")
    name = "metrics"

    def __init__(self, metrics: WorkerMetrics, pools: PoolManager) -> None:
        self.metrics = metrics
        self.pools = pools  # their ejection counts are copied at each flush
        # sink name -> its rows; a replacement worker starts from its slot's totals, as the other counters
        self._drops = CounterRows(metrics.shard, SINK_DROPPED)
        self._seen: dict[str, tuple[Sink, int]] = {}  # sink name -> (sink, its ``dropped`` last copied)
        self._watched: tuple[Sink, ...] = ()
        self._log: AccessLog | None = None

    def watch(self, sinks: Sequence[Sink]) -> None:
        """The sinks whose drop counters this one copies at each flush (the whole list, itself included)."""
        self._watched = tuple(sinks)
        self._log = next((s for s in sinks if isinstance(s, AccessLog)), None)

    def take(self, batch: list[Record]) -> None:
        if batch:
            self.metrics.observe(batch)

    def publish(self) -> None:
        """Copy the counters that changed into this worker's shard (metrics/shared.py)."""
        metrics = self.metrics
        for sink in self._watched:
            self._count_dropped(sink)
        log = self._log
        if log is not None:
            metrics.count_from(H_LOG_DROPPED, log, log.dropped)
            metrics.count_from(H_LOG_FAILED, log, log.write_failures)
        cluster = CLUSTER.current
        if cluster is not None:
            metrics.count_from(H_REDIS_ERRORS, cluster, cluster.errors)
        alerts = BUDGET_ALERTS
        metrics.count_from(H_ALERTS_DELIVERED, alerts, alerts.delivered)
        metrics.count_from(H_ALERTS_FAILED, alerts, alerts.failed)
        metrics.count_from(H_ALERTS_DROPPED, alerts, alerts.dropped)
        metrics.publish(self.pools)

    def _count_dropped(self, sink: Sink) -> None:
        """Add what ``sink.dropped`` gained since the last flush (its first flush creates its row, at 0)."""
        value = sink.dropped
        last = self._seen.get(sink.name)
        if last is not None and last[0] is sink:
            if value == last[1]:
                return
            delta = value - last[1]
        else:
            delta = value
        self._seen[sink.name] = (sink, value)
        self._drops.add(sink.name, delta)
