"""Tokens and cost by consumer and model in Prometheus: at most TOP_CONSUMERS consumers per worker get
series of their own (the heaviest candidates when a place is free, kept once given), the rest count as
"(other)"; nothing is lost in between (the sums over all series equal what was observed), and a
replacement worker continues its slot's series."""

from __future__ import annotations

import mmap

from prometheus_client.core import Metric

from fastgw.metrics.llm_exposition import spend_families
from fastgw.metrics.llm_spend import TOP_CONSUMERS, SpendMetrics, add_spend_row
from fastgw.metrics.shared import OTHER, SHARD_BYTES, MetricsShard


def shard() -> MetricsShard:
    return MetricsShard(mmap.mmap(-1, SHARD_BYTES), 0)


def scrape(*shards: MetricsShard) -> dict[str, Metric]:
    table: dict[tuple[str, str], list[int]] = {}
    for one in shards:
        for row, key in one.rows():
            if key[0] == "ls":
                add_spend_row(table, key, one, row)
    return {family.name: family for family in spend_families(table)}


def samples(family: Metric) -> dict[tuple[str, ...], float]:
    return {tuple(s.labels.values()): s.value for s in family.samples}


def test_the_heaviest_consumers_get_series_and_the_rest_are_other() -> None:
    region = shard()
    spend = SpendMetrics(region)
    # More consumers than places, all seen before the first flush: the heaviest take the places.
    for i in range(TOP_CONSUMERS + 10):
        spend.observe(f"c{i}", "m", prompt=i, completion=1, cost_usd=i / 1e6)
    spend.publish()  # places given: what they counted before stays in (other), counters never move
    for i in range(TOP_CONSUMERS + 10):
        spend.observe(f"c{i}", "m", prompt=1, completion=0, cost_usd=None)
    spend.publish()
    tokens = samples(scrape(region)["fastgw_llm_consumer_tokens"])
    consumers = {labels[0] for labels in tokens}
    assert len(consumers) == TOP_CONSUMERS + 1 and OTHER in consumers
    assert "c29" in consumers and "c10" in consumers and "c9" not in consumers
    # Nothing lost: every token observed is in some series.
    observed = sum(i + 1 for i in range(TOP_CONSUMERS + 10)) + TOP_CONSUMERS + 10
    assert sum(tokens.values()) == observed
    cost = samples(scrape(region)["fastgw_llm_consumer_cost_usd"])
    assert round(sum(cost.values()), 9) == round(sum(i / 1e6 for i in range(TOP_CONSUMERS + 10)), 9)


def test_a_replacement_worker_continues_its_slots_series() -> None:
    region = shard()
    first = SpendMetrics(region)
    first.observe("acme", "m", prompt=1, completion=0, cost_usd=None)  # in (other): no place yet
    first.publish()  # now it has one
    first.observe("acme", "m", prompt=10, completion=5, cost_usd=0.5)
    first.publish()
    second = SpendMetrics(region)  # the slot's next worker
    assert "acme" in second.admitted
    second.observe("acme", "m", prompt=1, completion=1, cost_usd=0.25)
    second.publish()
    scraped = scrape(region)
    assert samples(scraped["fastgw_llm_consumer_tokens"])[("acme", "m", "prompt")] == 11
    assert samples(scraped["fastgw_llm_consumer_cost_usd"])[("acme", "m")] == 0.75


def test_anonymous_callers_are_named_so() -> None:
    region = shard()
    spend = SpendMetrics(region)
    spend.observe("", "m", prompt=1, completion=1, cost_usd=None)
    spend.publish()
    spend.observe("", "m", prompt=1, completion=1, cost_usd=None)
    spend.publish()
    tokens = samples(scrape(region)["fastgw_llm_consumer_tokens"])
    assert tokens[("(anonymous)", "m", "prompt")] == 1 and tokens[(OTHER, "m", "prompt")] == 1
