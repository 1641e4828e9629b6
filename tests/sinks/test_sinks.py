"""Completion sinks: the metrics sink's counts reach shared memory before any later sink sees a batch; a
sink whose consumer stalls drops whole batches, counts them, and never blocks the caller; the drops are
exported as ``fastgw_sink_dropped_total{sink}`` and survive a worker's replacement."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgw.exchange import Exchange
from fastgw.metrics.exposition import GatewayCollector, Totals, make_registry, render
from fastgw.metrics.shared import SharedMetrics
from fastgw.metrics.worker import WorkerMetrics
from fastgw.process.shm import METRICS, SharedRegions
from fastgw.sinks.access_log import AccessLog
from fastgw.sinks.base import Backlog, Record, Sink
from fastgw.sinks.fanout import CompletionSinks
from fastgw.sinks.metrics import MetricsSink
from fastgw.snapshot import AccessLogSettings
from fastgw.upstream.pool import PoolManager


def shared(workers: int = 1) -> SharedMetrics:
    return SharedMetrics(SharedRegions().create(METRICS, SharedMetrics.region_bytes(workers)), workers)


def records(n: int) -> list[Record]:
    out = []
    for _ in range(n):
        ex = Exchange(b"GET", b"/", b"1.1", [])
        ex.status = 200
        ex.total_s = 0.001
        out.append(ex)
    return out


@pytest.fixture
def pools() -> Iterator[PoolManager]:
    loop = asyncio.new_event_loop()
    yield PoolManager(loop)
    loop.close()


def counted(metrics: SharedMetrics) -> int:
    """Requests counted in shared memory (what a scrape would read)."""
    t = Totals()
    for shard in metrics.worker_shards():
        t.add_shard(shard)
    return sum(cell[0] for cell in t.requests.values())


class ShardReader(Sink):
    """A sink after the metrics one that notes, at each publishing point (where the access log may release
    its lines), what shared memory already counts."""

    name = "reader"

    def __init__(self, metrics: SharedMetrics) -> None:
        self.metrics = metrics
        self.seen: list[tuple[int, int]] = []  # (records taken so far, requests counted in shared memory)
        self.taken = 0

    def take(self, batch: list[Record]) -> None:
        self.taken += len(batch)

    def publish(self) -> None:
        self.seen.append((self.taken, counted(self.metrics)))


class StalledSink(Sink):
    """A sink whose consumer never finishes anything: its Backlog fills, then every batch is dropped."""

    name = "stalled"

    def __init__(self, limit: int) -> None:
        self.backlog = Backlog(limit)

    @property
    def dropped(self) -> int:
        return self.backlog.dropped

    def take(self, batch: list[Record]) -> None:
        if batch:
            self.backlog.admit(len(batch))


def test_counts_reach_shared_memory_before_a_later_sink_sees_the_batch(pools: PoolManager) -> None:
    metrics = shared()
    reader = ShardReader(metrics)
    sinks = CompletionSinks(MetricsSink(WorkerMetrics(metrics.worker(0)), pools), reader)
    sinks.deliver(records(3), tick=False)  # a chunk between ticks: counted, copied at the next point
    assert reader.seen == [] and counted(metrics) == 0
    for n, tick in ((256, False), (0, True), (5, True), (16, False)):
        sinks.deliver(records(n), tick=tick)
    # Points: BATCH_RECORDS (256) records since the last, and each tick; never a point without its counts.
    assert reader.seen == [(259, 259), (259, 259), (264, 264)]
    assert counted(metrics) == 264


def test_a_stalled_sinks_drops_are_exported_and_survive_its_worker(pools: PoolManager) -> None:
    metrics = shared()
    stalled = StalledSink(limit=5)
    sinks = CompletionSinks(MetricsSink(WorkerMetrics(metrics.worker(0)), pools), stalled)
    for _ in range(3):
        sinks.deliver(records(4), tick=True)  # 4 fit; the next two batches would pass 5: dropped whole
    assert stalled.dropped == 8
    sinks.deliver([], tick=True)  # the drops of the last batch are copied at the next flush

    again = StalledSink(limit=0)  # the slot's replacement worker, with a sink that drops everything
    sinks = CompletionSinks(MetricsSink(WorkerMetrics(metrics.worker(0)), pools), again)
    sinks.deliver(records(3), tick=True)
    sinks.deliver([], tick=True)
    text = render(make_registry(GatewayCollector(metrics)), "text/plain")[0].decode()
    assert 'fastgw_sink_dropped_total{sink="stalled"} 11.0' in text  # 8 + 3: added, never reset
    assert 'fastgw_sink_dropped_total{sink="metrics"} 0.0' in text  # counting never drops
    assert counted(metrics) == 15  # every record was counted, dropped by a sink or not


@given(st.integers(0, 50), st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=40))
def test_a_backlog_is_bounded_and_accounts_for_every_record(limit: int, steps: list[tuple[int, int]]) -> None:
    backlog = Backlog(limit)
    offered = 0
    for count, done in steps:
        fits = backlog.pending + count <= limit
        assert backlog.admit(count) is fits
        offered += count
        backlog.finish(min(done, backlog.pending))
        assert 0 <= backlog.pending <= limit
    assert backlog.accepted + backlog.dropped == offered


def test_an_access_log_stuck_on_a_full_pipe_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that does not read (yet): ~64 KiB fit
    log = AccessLog(
        AccessLogSettings(target=str(fifo), include_query=False, redact_query=frozenset(), max_pending=1000)
    )
    taken = 0

    def feed() -> None:
        nonlocal taken
        for _ in range(60):
            batch = records(100)
            log.take(batch)
            log.flush()
            taken += len(batch)

    feeder = threading.Thread(target=feed)
    feeder.start()
    feeder.join(timeout=10)
    assert not feeder.is_alive(), "take() blocked on a stalled writer"
    assert log.dropped > 0 and log.backlog.pending <= 1000

    received = bytearray()
    os.set_blocking(reader, True)

    def drain() -> None:
        while chunk := os.read(reader, 1 << 16):
            received.extend(chunk)

    drainer = threading.Thread(target=drain)
    drainer.start()
    log.close()  # writes what was accepted, then closes the pipe: the drainer sees the end
    drainer.join(timeout=10)
    os.close(reader)
    lines = bytes(received).count(b"\n")
    assert lines + log.dropped == taken and log.write_failures == 0
