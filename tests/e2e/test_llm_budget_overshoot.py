"""A spend budget shared by two nodes (two workers each) through one Redis, hammered by concurrent
streams: the real spend stops within docs/llm-budgets.md's bound, the budget is used (not split per node),
and the provider's answers, the ledgers and Redis agree on what was spent. bench/budget_overshoot.py runs
the same at the issue's size (64 streams, 2 nodes x 4 workers, 1 USD)."""

from __future__ import annotations

from pathlib import Path

from tests.support.budget_overshoot import (
    Hammer,
    estimate_usd,
    ledger_usd,
    node_config,
    provider_spend,
    redis_usd,
    request_body,
    start_fake,
    stated_bound_usd,
)
from tests.support.gateways import Gateway, start_gateway
from tests.support.redis_server import RedisServer

STREAMS = 6
FLUSH_INTERVAL = 0.05
CHUNK_DELAY = 0.08  # 7 pieces: a stream lasts over half a second, ten flush intervals


def test_concurrent_streams_on_two_nodes_stop_within_the_stated_bound(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    fake = start_fake(CHUNK_DELAY)
    body = request_body(100)
    budget = 30 * estimate_usd(body)  # about 45 answers (each costs two thirds of its estimate)
    nodes: list[Gateway] = []
    try:
        config = node_config(fake.port, redis_server.url, budget, FLUSH_INTERVAL, secrets)
        nodes = [start_gateway(tmp_path, config, name=f"node{i}", workers=2) for i in range(2)]
        hammer = Hammer([gw.port for gw in nodes], STREAMS, body, deadline=60.0)
        hammer.run()
        assert [gw.stop() for gw in nodes] == [0, 0]
    finally:
        for gw in nodes:
            gw.stop()
        fake.stop_thread()
    answers, spent, largest = provider_spend(fake)
    assert hammer.errors == 0 and hammer.other == {}, (hammer.errors, hammer.other)
    assert hammer.refused > 0 and answers == hammer.admitted
    bound = stated_bound_usd(STREAMS, FLUSH_INTERVAL, min(hammer.durations), largest)
    assert bound == (STREAMS - 1) * largest  # streams outlast the staleness: one answer per other stream
    assert spent <= budget + bound
    # The budget was used, not split per node: the last refusals came with every answer settled, so the
    # next estimate no longer fitted what was really spent.
    assert spent > budget - estimate_usd(body)
    # What the provider answered is what the ledgers hold and what Redis counted (micro-USD).
    assert abs(sum(ledger_usd(gw) for gw in nodes) - spent) < 1e-6
    assert abs(redis_usd(redis_server.url) - spent) < answers * 1e-6
