"""Sum the workers' counters and render them in the Prometheus exposition format.

Runs in the control process. The text format (escaping, histogram ``_bucket``/``_sum``/``_count``,
OpenMetrics negotiation) comes from ``prometheus_client``; its metric objects are not used for counting,
because each increment takes a lock and its multi-process mode needs a directory of mmap files per
process, while our workers already count plain integers from their record batches
(``fastgw.metrics.worker``).

Counters are read from shared memory (``fastgw.metrics.shared``) on each scrape: a shard per worker slot,
cumulative for the life of the supervisor (a replacement worker continues its slot's totals), and the
control process's own counters (reloads, restarts) in its shard. So no counter goes down when a worker
or the control process dies; a killed worker loses only what it completed since its last flush (one
tick). Gauges (connections, pool states, Redis up) come from the workers' latest pulled exports.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from fastgw.metrics.llm import Labels, add_row
from fastgw.metrics.llm_exposition import llm_families, spend_families
from fastgw.metrics.llm_spend import SPEND, add_spend_row
from fastgw.metrics.shared import (
    BUCKETS,
    DENIALS,
    EJECTIONS,
    H_ALERTS_DELIVERED,
    H_ALERTS_DROPPED,
    H_ALERTS_FAILED,
    H_CONTROL_STARTS,
    H_LOG_DROPPED,
    H_LOG_FAILED,
    H_OVERFLOW,
    H_REDIS_ERRORS,
    LLM,
    RELOADS,
    REQUESTS,
    RESTARTS,
    SHADOW,
    SINK_DROPPED,
    CounterRows,
    MetricsShard,
    SharedMetrics,
)
from fastgw.metrics.worker import LATENCY_BUCKETS

Export = dict[str, Any]


class Totals:
    """Counters keyed by label tuples, summed over the workers' shards."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], list[int]] = {}
        self.latency: dict[str, list[float]] = {}
        self.upstream_latency: dict[str, list[float]] = {}
        self.denials: dict[tuple[str, str], int] = {}
        self.shadow: dict[tuple[str, str], int] = {}
        self.ejections: dict[tuple[str, str], int] = {}
        self.sink_dropped: dict[str, int] = {}  # sink -> records its full queue refused
        self.llm: dict[Labels, list[float]] = {}  # (model, provider, outcome) -> metrics/llm.py's sums
        self.spend: dict[tuple[str, str], list[int]] = {}  # (consumer, model) -> metrics/llm_spend.py's
        self.access_log_dropped = 0
        self.access_log_failed = 0
        self.redis_errors = 0
        self.overflow = 0
        self.alerts = {"delivered": 0, "failed": 0, "dropped": 0}  # LLM budget alerts, by outcome

    def add_shard(self, shard: MetricsShard) -> None:
        pairs = {DENIALS: self.denials, SHADOW: self.shadow, EJECTIONS: self.ejections}
        for row, key in shard.rows():
            kind = key[0]
            if kind == REQUESTS and len(key) == 4:
                route, method, status = str(key[1]), str(key[2]), int(key[3])
                counts, total, upstream, total_sum, upstream_sum = shard.read_cell(row)
                cell = self.requests.setdefault((route, method, status), [0, 0, 0])
                for i in range(3):
                    cell[i] += counts[i]
                _add_histogram(self.latency, route, total, total_sum)
                if any(upstream):
                    _add_histogram(self.upstream_latency, route, upstream, upstream_sum)
            elif len(key) == 3 and isinstance(kind, str) and kind in pairs:
                pair = (str(key[1]), str(key[2]))
                pairs[kind][pair] = pairs[kind].get(pair, 0) + shard.read_count(row)
            elif kind == SINK_DROPPED and len(key) == 2:
                sink = str(key[1])
                self.sink_dropped[sink] = self.sink_dropped.get(sink, 0) + shard.read_count(row)
            elif kind == LLM and len(key) == 4:
                add_row(self.llm, (str(key[1]), str(key[2]), str(key[3])), shard, row)
            elif kind == SPEND and len(key) == 3:
                add_spend_row(self.spend, key, shard, row)
        self.access_log_dropped += shard.header(H_LOG_DROPPED)
        self.access_log_failed += shard.header(H_LOG_FAILED)
        self.redis_errors += shard.header(H_REDIS_ERRORS)
        self.overflow += shard.header(H_OVERFLOW)
        for outcome, index in (
            ("delivered", H_ALERTS_DELIVERED),
            ("failed", H_ALERTS_FAILED),
            ("dropped", H_ALERTS_DROPPED),
        ):
            self.alerts[outcome] += shard.header(index)


def _add_histogram(table: dict[str, list[float]], route: str, counts: list[int], total: float) -> None:
    hist = table.setdefault(route, [0.0] * (BUCKETS + 1))  # the buckets, then the sum
    for i, n in enumerate(counts):
        hist[i] += n
    hist[BUCKETS] += total


def _policy_reason(reason: str) -> tuple[str, str]:
    policy, _, detail = reason.partition(".")
    return policy, detail or reason


class GatewayCollector(Collector):
    """Yields the gateway's metric families from the latest pulled exports."""

    def __init__(self, shared: SharedMetrics | None = None) -> None:
        self.shared = shared
        self.exports: list[Export] = []  # live workers' latest exports (gauges)
        self.gauges: dict[str, float] = {}  # control-process facts (workers, uptime, ...)
        control = shared.control() if shared is not None else None
        self.reloads = CounterRows(control, RELOADS)  # result -> count, kept across our restarts
        self.restarts = CounterRows(control, RESTARTS)  # child -> count
        if control is not None:
            # The supervisor cannot tell a dead control process that it died: its successor counts it.
            starts = control.header(H_CONTROL_STARTS)
            control.set_header(H_CONTROL_STARTS, starts + 1)
            if starts:
                self.restarts.add("control")
        self.health: dict[tuple[str, str], int] = {}  # (upstream, target) -> 1 healthy / 0 down
        self.snapshot = ""

    def collect(self) -> Iterator[Metric]:
        totals = Totals()
        if self.shared is not None:
            for shard in self.shared.worker_shards():
                totals.add_shard(shard)
        yield from self._traffic(totals)
        yield from llm_families(totals.llm)
        yield from spend_families(totals.spend)
        yield from self._pools(totals)
        yield from self._process()

    def _traffic(self, t: Totals) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "fastgw_requests",
            "Requests answered, by route, method and status class",
            labels=["route", "method", "code"],
        )
        bytes_in = CounterMetricFamily(
            "fastgw_request_body_bytes", "Request body bytes received", labels=["route"]
        )
        bytes_out = CounterMetricFamily("fastgw_response_bytes", "Response bytes sent", labels=["route"])
        per_route_in: dict[str, int] = {}
        per_route_out: dict[str, int] = {}
        for (route, method, status), (count, b_in, b_out) in sorted(t.requests.items()):
            requests.add_metric([route or "-", method or "-", f"{status}xx"], count)
            per_route_in[route] = per_route_in.get(route, 0) + b_in
            per_route_out[route] = per_route_out.get(route, 0) + b_out
        for route, value in sorted(per_route_in.items()):
            bytes_in.add_metric([route or "-"], value)
        for route, value in sorted(per_route_out.items()):
            bytes_out.add_metric([route or "-"], value)
        yield requests
        yield bytes_in
        yield bytes_out
        yield _histogram(
            "fastgw_request_duration_seconds", "Time from request start to response end", t.latency
        )
        yield _histogram(
            "fastgw_upstream_duration_seconds",
            "Time from forwarding to the upstream's response head",
            t.upstream_latency,
        )
        for name, doc, table in (
            ("fastgw_denials", "Requests denied, by policy and reason", t.denials),
            ("fastgw_shadow_denials", "Would-be denials of policies in shadow mode", t.shadow),
        ):
            family = CounterMetricFamily(name, doc, labels=["route", "policy", "reason"])
            for (route, reason), n in sorted(table.items()):
                family.add_metric([route or "-", *_policy_reason(reason)], n)
            yield family
        sinks = CounterMetricFamily(
            "fastgw_sink_dropped",
            "Completed exchanges a completion sink dropped because its queue was full",
            labels=["sink"],
        )
        for sink, n in sorted(t.sink_dropped.items()):
            sinks.add_metric([sink], n)
        yield sinks
        dropped = CounterMetricFamily(
            "fastgw_access_log_dropped_records", "Access-log records dropped under pressure"
        )
        dropped.add_metric([], t.access_log_dropped)
        yield dropped
        failed = CounterMetricFamily(
            "fastgw_access_log_write_failures", "Access-log records whose write failed"
        )
        failed.add_metric([], t.access_log_failed)
        yield failed
        if any(t.alerts.values()):  # as every llm series: none on a gateway that never raised one
            alerts = CounterMetricFamily(
                "fastgw_llm_budget_alerts",
                "LLM budget alerts by what became of them: delivered, failed (refused or given up), dropped",
                labels=["outcome"],
            )
            for outcome, n in t.alerts.items():
                alerts.add_metric([outcome], n)
            yield alerts
        overflow = CounterMetricFamily(
            "fastgw_metrics_overflow",
            'Label sets counted under route="(other)": a worker\'s metrics table was full',
        )
        overflow.add_metric([], t.overflow)
        yield overflow
        up = [e["ratelimit_redis_up"] for e in self.exports if "ratelimit_redis_up" in e]
        if up:
            gauge = GaugeMetricFamily(
                "fastgw_ratelimit_redis_up", "Workers whose last flush to the shared rate-limit store worked"
            )
            gauge.add_metric([], sum(up))
            yield gauge
            errors = CounterMetricFamily(
                "fastgw_ratelimit_redis_errors", "Failed flushes to the shared rate-limit store"
            )
            errors.add_metric([], t.redis_errors)
            yield errors
        yield self._jwks_stale()

    def _jwks_stale(self) -> Metric:
        """Per issuer, the age of the oldest keys a worker serves although its fetches fail (alert on it)."""
        oldest: dict[str, float] = {}
        for export in self.exports:
            for issuer, fetched_at in export.get("jwks_stale", {}).items():
                oldest[issuer] = min(fetched_at, oldest.get(issuer, fetched_at))
        gauge = GaugeMetricFamily(
            "fastgw_jwks_stale_seconds",
            "Age of JWKS keys still served while the identity provider cannot be reached",
            labels=["issuer"],
        )
        now = time.time()
        for issuer, fetched_at in sorted(oldest.items()):
            gauge.add_metric([issuer], max(0.0, now - fetched_at))
        return gauge

    def _pools(self, t: Totals) -> Iterator[Metric]:
        connections = GaugeMetricFamily("fastgw_client_connections", "Open client connections")
        connections.add_metric([], sum(e.get("connections", 0) for e in self.exports))
        yield connections
        pool = GaugeMetricFamily(
            "fastgw_upstream_connections", "Upstream pool connections", labels=["upstream", "target", "state"]
        )
        waiters = GaugeMetricFamily(
            "fastgw_upstream_waiters",
            "Requests queued for an upstream connection",
            labels=["upstream", "target"],
        )
        gauges: dict[tuple[str, str], list[int]] = {}
        for export in self.exports:
            for upstream, target, in_use, idle, queued in export.get("pools", ()):
                cell = gauges.setdefault((upstream, target), [0, 0, 0])
                cell[0] += in_use
                cell[1] += idle
                cell[2] += queued
        for (upstream, target), (in_use, idle, queued) in sorted(gauges.items()):
            pool.add_metric([upstream, target, "in_use"], in_use)
            pool.add_metric([upstream, target, "idle"], idle)
            waiters.add_metric([upstream, target], queued)
        yield pool
        yield waiters
        ejections = CounterMetricFamily(
            "fastgw_upstream_ejections",
            "Targets ejected by passive health checks",
            labels=["upstream", "target"],
        )
        for (upstream, target), n in sorted(t.ejections.items()):
            ejections.add_metric([upstream, target], n)
        yield ejections
        healthy = GaugeMetricFamily(
            "fastgw_upstream_healthy",
            "Active health check verdict (1 healthy, 0 down)",
            labels=["upstream", "target"],
        )
        for (upstream, target), value in sorted(self.health.items()):
            healthy.add_metric([upstream, target], value)
        yield healthy

    def _process(self) -> Iterator[Metric]:
        reloads = CounterMetricFamily("fastgw_reloads", "Config reloads by result", labels=["result"])
        for result, n in sorted(self.reloads.counts.items()):
            reloads.add_metric([result], n)
        yield reloads
        restarts = CounterMetricFamily(
            "fastgw_child_restarts", "Children restarted after dying", labels=["child"]
        )
        for child, n in sorted(self.restarts.counts.items()):
            restarts.add_metric([child], n)
        yield restarts
        info = GaugeMetricFamily("fastgw_snapshot_info", "The config snapshot in force", labels=["snapshot"])
        info.add_metric([self.snapshot], 1)
        yield info
        for name, value in sorted(self.gauges.items()):
            family = GaugeMetricFamily(name, name.replace("_", " "))
            family.add_metric([], value)
            yield family


def _histogram(name: str, doc: str, table: dict[str, list[float]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["route"])
    for route, hist in sorted(table.items()):
        running = 0.0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), hist[:-1], strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        family.add_metric([route or "-"], buckets, sum_value=hist[-1])
    return family


def make_registry(collector: GatewayCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """Exposition bytes and content type, OpenMetrics when the scraper asks for it."""
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
