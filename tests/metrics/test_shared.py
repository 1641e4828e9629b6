"""Metric counters in shared memory: a replacement worker and a restarted control process continue from
the slot's totals; a full table counts new label sets in the overflow rows instead of failing."""

from __future__ import annotations

import os

from fastgw.exchange import Exchange
from fastgw.metrics.exposition import GatewayCollector, Totals
from fastgw.metrics.shared import (
    BUCKETS,
    H_LOG_DROPPED,
    H_OVERFLOW,
    OTHER,
    RESERVED_ROWS,
    ROWS,
    CounterRows,
    SharedMetrics,
)
from fastgw.metrics.worker import LATENCY_BUCKETS, WorkerMetrics
from fastgw.process.shm import METRICS, SharedRegions


def shared(workers: int = 2) -> SharedMetrics:
    regions = SharedRegions()
    return SharedMetrics(regions.create(METRICS, SharedMetrics.region_bytes(workers)), workers)


def record(method: bytes = b"GET", status: int = 200, seconds: float = 0.003, denial: str = "") -> Exchange:
    ex = Exchange(method, b"/", b"1.1", [])
    ex.status = status
    ex.total_s = seconds
    ex.upstream_ms = seconds * 500
    ex.bytes_out = 10
    ex.body_received = 3
    ex.denial = denial
    return ex


def totals(metrics: SharedMetrics) -> Totals:
    t = Totals()
    for shard in metrics.worker_shards():
        t.add_shard(shard)
    return t


def test_a_replacement_worker_continues_its_slots_totals() -> None:
    metrics = shared()
    pid = os.fork()
    if pid == 0:  # the first worker of slot 1 counts, publishes, and dies without a goodbye
        w = WorkerMetrics(metrics.worker(1))
        w.observe([record() for _ in range(5)] + [record(status=403, denial="network.deny")])
        w.count_from(H_LOG_DROPPED, w, 2)
        w.publish()
        w.observe([record()])  # counted after the last publish: lost with the process
        os._exit(0)
    os.waitpid(pid, 0)
    t = totals(metrics)
    assert t.requests == {("", "GET", 2): [5, 15, 50], ("", "GET", 4): [1, 3, 10]}
    assert t.denials == {("", "network.deny"): 1} and t.access_log_dropped == 2
    assert t.latency[""][3] == 6 and abs(t.latency[""][-1] - 6 * 0.003) < 1e-9  # le=0.005

    again = WorkerMetrics(metrics.worker(1))  # its replacement
    again.observe([record(), record(status=403, denial="network.deny")])
    again.count_from(H_LOG_DROPPED, again, 1)  # a new access log counts from zero: added, not set
    again.publish()
    t = totals(metrics)
    assert t.requests[("", "GET", 2)] == [6, 18, 60] and t.requests[("", "GET", 4)] == [2, 6, 20]
    assert t.denials == {("", "network.deny"): 2} and t.access_log_dropped == 3
    assert t.latency[""][3] == 8 and t.upstream_latency[""][2] == 8  # 1.5 ms upstream: le=0.0025


def test_methods_outside_the_known_set_share_one_label() -> None:
    metrics = shared(1)
    w = WorkerMetrics(metrics.worker(0))
    w.observe([record(method=b"M%d" % i) for i in range(500)] + [record(method=b"PATCH")])
    w.publish()
    t = totals(metrics)
    assert t.requests == {("", "OTHER", 2): [500, 1500, 5000], ("", "PATCH", 2): [1, 3, 10]}
    assert metrics.worker(0).used() == 2
    assert list(w.cells[""]) == [b"OTHER", b"PATCH"]  # no entry per invented method either


def test_a_full_table_counts_new_label_sets_as_other_and_keeps_counting() -> None:
    metrics = shared(1)
    shard = metrics.worker(0)
    w = WorkerMetrics(shard)
    w.observe([record()])
    for i in range(ROWS - RESERVED_ROWS - 1):  # label sets of earlier configs fill the table
        assert shard.allocate(("d", f"old-{i}", "x")) >= 0
    assert shard.allocate(("d", "one more", "x")) == -1
    w.observe([record(), record(method=b"POST"), record(method=b"PUT", status=503, denial="limit.x")])
    w.observe([record(method=b"POST")])
    w.publish()
    t = totals(metrics)
    assert t.requests[("", "GET", 2)] == [2, 6, 20]  # an old label set keeps its row
    assert t.requests[(OTHER, OTHER, 2)] == [2, 6, 20]
    assert t.requests[(OTHER, OTHER, 5)] == [1, 3, 10]
    assert t.denials[(OTHER, OTHER)] == 1
    assert t.overflow == 3 and shard.header(H_OVERFLOW) == 3  # POST 2xx, PUT 5xx, the denial
    # A replacement worker finds the overflow rows again instead of making new ones.
    again = WorkerMetrics(shard)
    used = shard.used()
    again.observe([record(method=b"DELETE")])
    again.publish()
    assert shard.used() == used
    t = totals(metrics)
    assert t.requests[(OTHER, OTHER, 2)] == [3, 9, 30] and t.overflow == 4


def test_a_label_set_too_long_for_a_row_is_counted_as_other() -> None:
    metrics = shared(1)
    w = WorkerMetrics(metrics.worker(0))
    w.observe([record(status=429, denial="limit." + "x" * 200), record(status=429, denial="limit.y")])
    w.publish()
    assert totals(metrics).denials == {(OTHER, OTHER): 1, ("", "limit.y"): 1}


def test_control_counters_survive_a_restart_of_the_control_process() -> None:
    metrics = shared(2)
    first = GatewayCollector(metrics)
    first.reloads.add("ok")
    first.reloads.add("ok")
    first.restarts.add("worker 1")
    second = GatewayCollector(metrics)  # the restarted control process: it counts its predecessor's death
    assert second.reloads.counts == {"ok": 2}
    assert second.restarts.counts == {"worker 1": 1, "control": 1}
    rows = CounterRows(metrics.control(), "restart")
    assert rows.counts == {"worker 1": 1, "control": 1}
    assert CounterRows(None, "restart").counts == {}  # no shard: plain counting (unit tests, bench)


def test_the_row_layout_holds_every_latency_bucket() -> None:
    assert len(LATENCY_BUCKETS) + 1 == BUCKETS  # + Inf; change shared.BUCKETS with LATENCY_BUCKETS
