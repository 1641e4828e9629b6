"""The llm metric families (issue 22), rendered by the control process from the shards' ``LLM`` rows
summed per (model, provider, outcome) (``metrics/llm.py`` counts them in the workers). Apart from
``exposition.py`` so that the worker side never imports ``prometheus_client``."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from fastgw.metrics.llm import (
    COUNTERS,
    REQUESTS,
    TOKEN_KINDS,
    TTFT_BUCKETS,
    TTFT_COUNTS,
    USAGE_MISSING,
    Labels,
)
from fastgw.metrics.llm_spend import NANO_USD


def llm_families(table: dict[Labels, list[float]]) -> Iterator[Metric]:
    """``fastgw_llm_requests_total{model,provider,outcome}``, ``fastgw_llm_tokens_total{model,provider,
    kind}``, ``fastgw_llm_usage_missing_total{model,provider}`` and the histogram
    ``fastgw_llm_time_to_first_token_seconds{model,provider}`` (streams only)."""
    requests = CounterMetricFamily(
        "fastgw_llm_requests",
        "LLM requests by model, provider and outcome (ok, or the error kind that ended them)",
        labels=["model", "provider", "outcome"],
    )
    pairs: dict[tuple[str, str], list[float]] = {}  # (model, provider) -> the sums over its outcomes
    for (model, provider, outcome), sums in sorted(table.items()):
        requests.add_metric([model, provider or "-", outcome], int(sums[REQUESTS]))
        pair = pairs.setdefault((model, provider), [0.0] * len(sums))
        for i, value in enumerate(sums):
            pair[i] += value
    yield requests
    tokens = CounterMetricFamily(
        "fastgw_llm_tokens",
        "Tokens the providers reported, by kind (cached is part of prompt, reasoning part of completion)",
        labels=["model", "provider", "kind"],
    )
    missing = CounterMetricFamily(
        "fastgw_llm_usage_missing",
        "Provider answers that carried no token usage (their tokens are not in fastgw_llm_tokens)",
        labels=["model", "provider"],
    )
    ttft = HistogramMetricFamily(
        "fastgw_llm_time_to_first_token_seconds",
        "Streams: time from the request reaching the gateway's handler to the first content chunk",
        labels=["model", "provider"],
    )
    for (model, provider), sums in sorted(pairs.items()):
        if not provider:  # no provider was picked: no tokens, no answer, no first token
            continue
        for index, kind in enumerate(TOKEN_KINDS, start=1):
            tokens.add_metric([model, provider, kind], int(sums[index]))
        missing.add_metric([model, provider], int(sums[USAGE_MISSING]))
        counts = sums[COUNTERS : COUNTERS + TTFT_COUNTS]
        if any(counts):
            running = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*TTFT_BUCKETS, float("inf")), counts, strict=True):
                running += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            ttft.add_metric([model, provider], buckets, sum_value=sums[-1])
    yield tokens
    yield missing
    yield ttft


def spend_families(table: dict[tuple[str, str], list[int]]) -> Iterator[Metric]:
    """``fastgw_llm_consumer_tokens_total{consumer,model,kind}`` and
    ``fastgw_llm_consumer_cost_usd_total{consumer,model}`` (metrics/llm_spend.py: at most TOP_CONSUMERS
    named consumers per worker, the rest "(other)"; priced requests only in the cost)."""
    tokens = CounterMetricFamily(
        "fastgw_llm_consumer_tokens",
        "LLM tokens by consumer and model (the heaviest consumers per worker; the rest are (other))",
        labels=["consumer", "model", "kind"],
    )
    cost = CounterMetricFamily(
        "fastgw_llm_consumer_cost_usd",
        "LLM cost in USD by consumer and model, of the requests with a known price (docs/llm-usage.md)",
        labels=["consumer", "model"],
    )
    for (consumer, model), (prompt, completion, nanos) in sorted(table.items()):
        tokens.add_metric([consumer, model, "prompt"], prompt)
        tokens.add_metric([consumer, model, "completion"], completion)
        cost.add_metric([consumer, model], nanos / NANO_USD)
    yield tokens
    yield cost
