"""LLM metrics (issue 22): the records of llm routes (``Exchange.llm``) are counted per model and provider
(tokens by kind, requests by outcome, answers without usage, time to first token) in shared memory, read
back by a scrape, kept across a worker's death; proxied records count exactly as before."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from fastgw.ai.adapter import Usage
from fastgw.ai.record import LlmRecord
from fastgw.exchange import Exchange
from fastgw.metrics.exposition import GatewayCollector, make_registry, render
from fastgw.metrics.llm import TTFT_BUCKETS
from fastgw.metrics.shared import H_OVERFLOW, LLM, OTHER, REQUESTS, SINK_DROPPED, SharedMetrics
from fastgw.metrics.worker import WorkerMetrics
from fastgw.process.shm import METRICS, SharedRegions
from fastgw.sinks.base import Record
from fastgw.sinks.fanout import CompletionSinks
from fastgw.sinks.metrics import MetricsSink
from fastgw.upstream.pool import PoolManager

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def shared(workers: int = 1) -> SharedMetrics:
    return SharedMetrics(SharedRegions().create(METRICS, SharedMetrics.region_bytes(workers)), workers)


def plain(status: int = 200) -> Exchange:
    ex = Exchange(b"POST", b"/v1/chat/completions", b"1.1", [])
    ex.status = status
    ex.total_s = 0.002
    ex.bytes_out = 10
    ex.body_received = 3
    return ex


def llm(
    model: str = "gpt",
    provider: str = "openai",
    *,
    prompt: int = 0,
    completion: int = 0,
    cached: int = 0,
    reasoning: int = 0,
    reported: bool = True,
    ttft_ms: float = -1.0,
    error: str = "",
    status: int = 200,
) -> Exchange:
    ex = plain(status)
    ex.llm = LlmRecord(
        model=model,
        endpoint="chat",
        stream=ttft_ms >= 0,
        provider=provider,
        provider_model=f"{model}-2026",
        attempts=1 if provider else 0,
        usage=Usage(prompt, completion, cached, reasoning, reported),
        ttft_ms=ttft_ms,
        duration_ms=max(ttft_ms, 0.0) + 100.0,
        error=error,
    )
    return ex


@pytest.fixture
def pools() -> Iterator[PoolManager]:
    loop = asyncio.new_event_loop()
    yield PoolManager(loop)
    loop.close()


def scrape(metrics: SharedMetrics, prefix: str = "fastgw_llm_") -> Samples:
    """The samples a Prometheus scrape of the control process reads, those named ``prefix...``."""
    text = render(make_registry(GatewayCollector(metrics)), "text/plain")[0].decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith(prefix):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_llm_records_are_counted_by_model_provider_and_outcome(pools: PoolManager) -> None:
    metrics = shared()
    sinks = CompletionSinks(MetricsSink(WorkerMetrics(metrics.worker(0)), pools))
    batch: list[Record] = [
        llm(prompt=10, completion=20, cached=4, reasoning=5, ttft_ms=120.0),  # a stream
        llm(prompt=1, completion=2),  # a whole answer
        llm(reported=False),  # an answer without usage: missing, not zero tokens
        llm(provider="azure", prompt=7, completion=3),
        llm(error="rate_limited", status=429, reported=False),  # failed: not an answer without usage
        llm(provider="azure", prompt=2, completion=1, error="stream_broken", ttft_ms=50.0),  # cut mid-way
        llm(model="no-such-model-from-a-client", provider="", status=404),  # the lookup failed
        llm(model="another-from-a-client", provider="", error="model_not_found", status=404),
        llm(model="gpt", provider="", error="no_target", status=503),
        llm(status=400),  # a parameter the provider cannot take: refused before it was sent
        plain(),
    ]
    sinks.deliver(batch, tick=True)
    s = scrape(metrics)
    requests = {key[1]: value for key, value in s.items() if key[0] == "fastgw_llm_requests_total"}
    assert requests == {
        (("model", "gpt"), ("outcome", "ok"), ("provider", "openai")): 3,
        (("model", "gpt"), ("outcome", "rate_limited"), ("provider", "openai")): 1,
        (("model", "gpt"), ("outcome", "invalid_request"), ("provider", "openai")): 1,
        (("model", "gpt"), ("outcome", "ok"), ("provider", "azure")): 1,
        (("model", "gpt"), ("outcome", "stream_broken"), ("provider", "azure")): 1,
        (("model", "(unknown)"), ("outcome", "invalid_request"), ("provider", "-")): 1,
        (("model", "(unknown)"), ("outcome", "model_not_found"), ("provider", "-")): 1,
        (("model", "gpt"), ("outcome", "no_target"), ("provider", "-")): 1,  # found, but nothing to try
    }
    tokens = "fastgw_llm_tokens_total"
    assert sample(s, tokens, model="gpt", provider="openai", kind="prompt") == 11
    assert sample(s, tokens, model="gpt", provider="openai", kind="completion") == 22
    assert sample(s, tokens, model="gpt", provider="openai", kind="cached") == 4
    assert sample(s, tokens, model="gpt", provider="openai", kind="reasoning") == 5
    assert sample(s, tokens, model="gpt", provider="azure", kind="prompt") == 9  # 2 of them before the cut
    assert sample(s, tokens, model="gpt", provider="azure", kind="completion") == 4
    missing = "fastgw_llm_usage_missing_total"
    assert sample(s, missing, model="gpt", provider="openai") == 1
    assert sample(s, missing, model="gpt", provider="azure") == 0
    assert not [key for key in s if ("model", "no-such-model-from-a-client") in key[1]]
    assert not [key for key in s if ("model", "another-from-a-client") in key[1]]
    assert not [key for key in s if key[0] != "fastgw_llm_requests_total" and ("provider", "-") in key[1]]
    ttft = "fastgw_llm_time_to_first_token_seconds"
    assert sample(s, ttft + "_count", model="gpt", provider="openai") == 1  # streams only
    assert sample(s, ttft + "_sum", model="gpt", provider="openai") == pytest.approx(0.12)
    assert sample(s, ttft + "_bucket", model="gpt", provider="openai", le="0.1") == 0
    assert sample(s, ttft + "_bucket", model="gpt", provider="openai", le="0.25") == 1
    assert sample(s, ttft + "_count", model="gpt", provider="azure") == 1


def test_time_to_first_token_buckets_are_inclusive_from_5_ms_to_30_s() -> None:
    metrics = shared()
    w = WorkerMetrics(metrics.worker(0))
    seconds = [0.001, 0.005, 0.0051, 0.5, 30.0, 31.0, 300.0]
    w.observe([llm(ttft_ms=x * 1000.0) for x in seconds] + [llm()])  # the last one streamed nothing
    w.publish()
    s = scrape(metrics, "fastgw_llm_time_to_first_token_seconds")
    name = "fastgw_llm_time_to_first_token_seconds_bucket"
    buckets = {
        bound: sample(s, name, model="gpt", provider="openai", le=repr(bound)) for bound in TTFT_BUCKETS
    }
    assert TTFT_BUCKETS[0] == 0.005 and TTFT_BUCKETS[-1] == 30.0
    assert buckets == {
        0.005: 2,  # 1 ms, and 5 ms itself ("le" is inclusive)
        0.01: 3,
        0.025: 3,
        0.05: 3,
        0.1: 3,
        0.25: 3,
        0.5: 4,
        1.0: 4,
        2.5: 4,
        5.0: 4,
        10.0: 4,
        30.0: 5,
    }
    assert sample(s, name, model="gpt", provider="openai", le="+Inf") == 7
    assert sample(s, name.replace("bucket", "count"), model="gpt", provider="openai") == 7
    assert sample(s, name.replace("bucket", "sum"), model="gpt", provider="openai") == pytest.approx(
        sum(seconds)
    )


def test_plain_proxy_records_count_exactly_as_before(pools: PoolManager) -> None:
    with_llm, without = shared(), shared()
    for metrics, extra in ((with_llm, True), (without, False)):
        sinks = CompletionSinks(MetricsSink(WorkerMetrics(metrics.worker(0)), pools))
        batch: list[Record] = [plain(), plain(503), plain()]
        sinks.deliver(batch, tick=True)
        if extra:
            sinks.deliver([llm(prompt=1, completion=1)], tick=True)
    assert not scrape(without)  # no llm series at all without llm records
    assert [key for _, key in without.worker(0).rows()] == [
        (REQUESTS, "", "POST", 2),
        (REQUESTS, "", "POST", 5),
        (SINK_DROPPED, "metrics"),
    ]  # no llm row
    # An llm record is also a request like any other: the route's counts grow by exactly one.
    requests_without = scrape(without, "fastgw_requests_total")
    requests_with = scrape(with_llm, "fastgw_requests_total")
    ok = ("fastgw_requests_total", (("code", "2xx"), ("method", "POST"), ("route", "-")))
    assert requests_without[ok] == 2 and requests_with[ok] == 3
    assert {k: v for k, v in requests_with.items() if k != ok} == {
        k: v for k, v in requests_without.items() if k != ok
    }


def test_a_replacement_worker_continues_its_slots_llm_totals() -> None:
    metrics = shared(2)
    pid = os.fork()
    if pid == 0:  # the first worker of slot 1 counts, publishes, and dies without a goodbye
        w = WorkerMetrics(metrics.worker(1))
        w.observe([llm(prompt=10, completion=5, ttft_ms=40.0), llm(reported=False)])
        w.publish()
        w.observe([llm(prompt=1000, completion=1000)])  # counted after the last publish: lost with it
        os._exit(0)
    os.waitpid(pid, 0)
    s = scrape(metrics)
    tokens = "fastgw_llm_tokens_total"
    assert sample(s, tokens, model="gpt", provider="openai", kind="prompt") == 10
    assert sample(s, "fastgw_llm_requests_total", model="gpt", provider="openai", outcome="ok") == 2

    again = WorkerMetrics(metrics.worker(1))  # its replacement
    again.observe([llm(prompt=3, completion=4, ttft_ms=40.0), llm(error="timeout", status=504)])
    again.publish()
    s = scrape(metrics)
    assert sample(s, tokens, model="gpt", provider="openai", kind="prompt") == 13
    assert sample(s, tokens, model="gpt", provider="openai", kind="completion") == 9
    assert sample(s, "fastgw_llm_requests_total", model="gpt", provider="openai", outcome="ok") == 3
    assert sample(s, "fastgw_llm_requests_total", model="gpt", provider="openai", outcome="timeout") == 1
    assert sample(s, "fastgw_llm_usage_missing_total", model="gpt", provider="openai") == 1
    ttft = "fastgw_llm_time_to_first_token_seconds"
    assert sample(s, ttft + "_bucket", model="gpt", provider="openai", le="0.05") == 2
    assert sample(s, ttft + "_sum", model="gpt", provider="openai") == pytest.approx(0.08)
    rows = [key for _, key in metrics.worker(1).rows() if key[0] == LLM]
    assert rows == [(LLM, "gpt", "openai", "ok"), (LLM, "gpt", "openai", "timeout")]  # ok's found again


def test_a_label_set_too_long_for_a_row_is_counted_in_the_overflow_row() -> None:
    metrics = shared()
    shard = metrics.worker(0)
    w = WorkerMetrics(shard)
    long_name = "m" * 200  # config names are not length-limited; a row key is (KEY_BYTES)
    w.observe([llm(model=long_name, prompt=1), llm(model=long_name, prompt=2), llm(prompt=4)])
    w.publish()
    s = scrape(metrics)
    tokens = "fastgw_llm_tokens_total"
    assert sample(s, tokens, model=OTHER, provider=OTHER, kind="prompt") == 3
    assert sample(s, tokens, model="gpt", provider="openai", kind="prompt") == 4
    assert sample(s, "fastgw_llm_requests_total", model=OTHER, provider=OTHER, outcome=OTHER) == 2
    assert shard.header(H_OVERFLOW) == 1  # one label set redirected, however many records it had
    again = WorkerMetrics(shard)  # a replacement finds the overflow row instead of taking another
    used = shard.used()
    again.observe([llm(model=long_name, prompt=5)])
    again.publish()
    assert shard.used() == used and shard.header(H_OVERFLOW) == 2
    assert sample(scrape(metrics), tokens, model=OTHER, provider=OTHER, kind="prompt") == 8


TokenRecord = tuple[str, str, int, int, bool, str]  # model, provider, prompt, completion, reported, error


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["gpt", "claude"]),
            st.sampled_from(["openai", "anthropic"]),
            st.integers(0, 10**6),
            st.integers(0, 10**6),
            st.booleans(),
            st.sampled_from(["", "", "timeout", "rate_limited"]),
        ),
        max_size=30,
    ),
    st.integers(1, 4),
)
def test_scraped_totals_equal_the_sums_of_the_records(records: list[TokenRecord], flushes: int) -> None:
    metrics = shared()
    w = WorkerMetrics(metrics.worker(0))
    step = max(1, len(records) // flushes)
    for start in range(0, len(records), step):  # published in several flushes: deltas add up
        w.observe(
            [
                llm(m, p, prompt=a, completion=b, reported=r, error=e, status=504 if e else 200)
                for m, p, a, b, r, e in records[start : start + step]
            ]
        )
        w.publish()
    s = scrape(metrics)
    for model in ("gpt", "claude"):
        for provider in ("openai", "anthropic"):
            mine = [r for r in records if r[0] == model and r[1] == provider]
            if not mine:
                assert not [k for k in s if ("model", model) in k[1] and ("provider", provider) in k[1]]
                continue
            prompt = sum(r[2] for r in mine if r[4])
            missing = sum(1 for r in mine if not r[4] and not r[5])
            assert (
                sample(s, "fastgw_llm_tokens_total", model=model, provider=provider, kind="prompt") == prompt
            )
            assert sample(s, "fastgw_llm_usage_missing_total", model=model, provider=provider) == missing
            outcomes = {
                k[1]: v
                for k, v in s.items()
                if k[0] == "fastgw_llm_requests_total"
                and ("model", model) in k[1]
                and ("provider", provider) in k[1]
            }
            assert sum(outcomes.values()) == len(mine)
