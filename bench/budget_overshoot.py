"""Issue 23's budget bar: a 1 USD daily budget, ``--nodes`` gateways of ``--workers`` workers sharing one
real redis-server (``[rate_limits.redis]``), hammered by ``--streams`` concurrent streaming clients until
the budget refuses them all. How far over the budget did the real spend go?

    .venv/bin/python bench/budget_overshoot.py                      # the bar: 2 nodes x 4 workers, 64 streams
    .venv/bin/python bench/budget_overshoot.py --nodes 2 --workers 1 --streams 8 --usd 0.2   # a smoke run

The fake OpenAI provider (tests/support/fake_openai.py, in a thread of this process) streams each answer
in 7 pieces ``--chunk-delay`` apart with its usage; the model is gpt-4o at its shipped price; each
request carries ``--prompt-words`` words and ``max_tokens`` = 7. Real spend: what the fake answered,
priced the same way; the ledgers' total (``fastgw usage`` on each node after it stops) and Redis's count
are printed beside it. The stated bound is docs/llm-budgets.md's for this load: (streams - 1) answers,
times the admissions one stream can make within two flush intervals, at the largest answer's cost.

Prints one JSON object; exit status 0 when the spend is within the stated bound, 1 otherwise (the bar's
2 % target is reported beside it). Needs redis-server (scripts/dev.sh system test). Uses tests/support.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.budget_overshoot import (  # noqa: E402
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
from tests.support.gateways import Gateway, start_gateway  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

TARGET_PERCENT = 2.0  # the target: spend stops less than 2 % over the budget


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--usd", type=float, default=1.0, help="the daily budget")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4, help="workers per node")
    parser.add_argument("--streams", type=int, default=64, help="concurrent streaming clients")
    parser.add_argument("--prompt-words", type=int, default=100, help="prompt tokens per request")
    parser.add_argument("--chunk-delay", type=float, default=0.05, help="seconds between streamed pieces")
    parser.add_argument("--flush-interval", type=float, default=0.05, help="[rate_limits.redis]")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fastgw-budget-bench-"))
    secrets = work / "secrets"
    secrets.mkdir()
    redis = RedisServer(work)
    fake = start_fake(args.chunk_delay)
    body = request_body(args.prompt_words)
    nodes: list[Gateway] = []
    try:
        config = node_config(fake.port, redis.url, args.usd, args.flush_interval, secrets)
        for i in range(args.nodes):
            nodes.append(start_gateway(work, config, name=f"node{i}", workers=args.workers))
        hammer = Hammer([gw.port for gw in nodes], args.streams, body)
        hammer.run()
        for gw in nodes:
            gw.stop()
        answers, spent, largest = provider_spend(fake)
        stored = redis_usd(redis.url)
        ledgers = sum(ledger_usd(gw) for gw in nodes)
    finally:
        for gw in nodes:
            if gw.proc.poll() is None:
                gw.stop()
        fake.stop_thread()
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    shortest = min(hammer.durations, default=0.0)
    bound = stated_bound_usd(args.streams, args.flush_interval, shortest, largest)
    over = spent - args.usd
    report = {
        "budget_usd": args.usd,
        "nodes": args.nodes,
        "workers_per_node": args.workers,
        "streams": args.streams,
        "flush_interval_s": args.flush_interval,
        "admitted": hammer.admitted,
        "refused": hammer.refused,
        "other_statuses": hammer.other,
        "client_errors": hammer.errors,
        "provider_answers": answers,
        "request_usd": {"estimate": round(estimate_usd(body), 9), "largest_real": round(largest, 9)},
        "shortest_stream_s": round(shortest, 4),
        "spend_usd": {"provider": round(spent, 9), "ledgers": round(ledgers, 9), "redis": round(stored, 6)},
        "over_usd": round(over, 9),
        "over_percent": round(100 * over / args.usd, 3),
        "stated_bound_usd": round(bound, 9),
        "stated_bound_percent": round(100 * bound / args.usd, 3),
        "target_percent": TARGET_PERCENT,
        "within_stated_bound": over <= bound,
        "within_target": over < args.usd * TARGET_PERCENT / 100,
    }
    print(json.dumps(report, indent=2))
    return 0 if report["within_stated_bound"] else 1


if __name__ == "__main__":
    sys.exit(main())
