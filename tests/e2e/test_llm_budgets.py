"""Budgets and token limits on an llm route, end to end: a real gateway with two workers in front of the
demo provider, the official SDKs as clients, each request on a fresh connection (so both workers serve).

The demo provider counts a token per word, so what each answer used is known; what a request reserved
is read back from the headers (limit minus remaining, on the first request), so the tests check the
arithmetic without knowing how the SDK spells its body.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import redis as redis_client

from tests.support.demo_llm import demo_llm_config
from tests.support.gateways import Gateway
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from tests.support.webhooks import WebhookReceiver

PROMPT = " ".join(["word"] * 50)  # 50 tokens for the demo provider; its answer: "You said: " + them
MESSAGES = [{"role": "user", "content": PROMPT}]
PRICES = """
[[llm.prices]]
provider = "demo"
model = "demo-chat"
input = 1000.0
output = 1000.0
"""  # USD per million tokens: 0.001 USD a token, so a 102-token answer costs 0.102 USD


def config(budgets: str, extra: str = "") -> str:
    return demo_llm_config(free_port(), route='auth = "none"\n' + budgets, extra=PRICES + extra)


def client(gw: Gateway) -> openai.OpenAI:
    """A fresh client: a new connection, served by whichever worker the kernel picks."""
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="any", max_retries=0)


def chat(gw: Gateway, max_tokens: int) -> tuple[dict[str, str], int]:
    """One chat completion: its response headers and the tokens it used."""
    with client(gw) as oa:
        raw = oa.chat.completions.with_raw_response.create(
            model="demo-chat",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=max_tokens,
        )
        answer = raw.parse()
    assert answer.usage is not None
    return dict(raw.headers), answer.usage.total_tokens


def test_a_token_limit_holds_exactly_across_workers_and_refuses_with_the_sdks_error_and_headers(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gw = gateway_factory(
        config(
            """
            [[routes.handler.budgets]]
            name = "route-tokens"
            key = "route"
            tokens_per_day = 1000
            requests_per_minute = 100
            """
        ),
        workers=2,
    )
    headers, used = chat(gw, max_tokens=100)
    assert used == 102  # 50 prompt words, "You said:" and the 50 words back
    assert headers["x-ratelimit-limit-tokens"] == "1000"
    assert headers["x-ratelimit-limit-requests"] == "100"
    assert headers["x-ratelimit-remaining-requests"] == "99"
    assert headers["x-ratelimit-reset-tokens"].endswith("s")
    assert '"tokens_per_day";q=1000;w=86400' in headers["ratelimit-policy"]
    estimate = 1000 - int(headers["x-ratelimit-remaining-tokens"])
    assert estimate > 100  # the prompt's estimate plus max_tokens
    spent, admitted = used, 1
    refused: openai.RateLimitError | None = None
    while refused is None:
        try:
            headers, used = chat(gw, max_tokens=100)
        except openai.RateLimitError as error:
            refused = error
            continue
        # Exact across workers: each request sees every earlier one settled at its real usage.
        assert int(headers["x-ratelimit-remaining-tokens"]) == 1000 - spent - estimate
        spent += used
        admitted += 1
        assert admitted < 20, "the limit never refused"
    assert spent + estimate > 1000 >= spent  # refused exactly when the estimate no longer fits
    assert admitted == (1000 - estimate) // 102 + 1
    response = refused.response
    assert refused.code == "rate_limit_exceeded"
    assert "tokens per day" in refused.message and "'route-tokens'" in refused.message
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-ratelimit-limit-tokens"] == "1000"
    assert int(response.headers["x-ratelimit-remaining-tokens"]) == 1000 - spent
    assert '"tokens_per_day";r=' in response.headers["ratelimit"]


def test_a_stream_that_runs_past_its_estimate_is_counted_in_full(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gw = gateway_factory(
        config('[[routes.handler.budgets]]\nname = "t"\nkey = "route"\ntokens_per_day = 100000'), workers=2
    )

    def stream() -> tuple[int, int]:
        with client(gw) as oa:
            raw = oa.chat.completions.with_raw_response.create(
                model="demo-chat",
                messages=MESSAGES,  # type: ignore[arg-type]
                max_tokens=1,  # the demo ignores it: 52 answer tokens against 1 reserved
                stream=True,
                stream_options={"include_usage": True},
            )
            remaining = int(raw.headers["x-ratelimit-remaining-tokens"])
            chunks = list(raw.parse())
        usage = chunks[-1].usage
        assert usage is not None
        return remaining, usage.total_tokens

    first, used = stream()
    estimate = 100000 - first
    assert used == 102 and used > estimate  # the stream overran what it reserved
    second, _ = stream()
    assert second == 100000 - used - estimate  # the first counted at its full 102 tokens


def test_a_spend_budget_stops_spend_with_openais_quota_error(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(
        config('[[routes.handler.budgets]]\nname = "spend"\nkey = "route"\nusd_per_day = 0.5'), workers=2
    )
    admitted = 0
    with pytest.raises(openai.RateLimitError) as refused:
        for _ in range(10):
            chat(gw, max_tokens=100)
            admitted += 1
    # 0.102 USD an answer; each reserves its estimate's cost (~0.18 USD) before the call: the fifth
    # would take the day past 0.5 USD and is refused.
    assert admitted == 4
    assert refused.value.code == "insufficient_quota"
    assert "Budget 'spend' exhausted" in refused.value.message
    assert "spent 0.4080" in refused.value.message  # 4 x 0.102 USD: settled at the real cost
    assert refused.value.response.headers.get("retry-after")


def test_a_budget_of_zero_refuses_every_request_in_anthropics_shape_before_any_provider_call(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gw = gateway_factory(
        config(
            '[[routes.handler.budgets]]\nname = "off"\nkey = "route"\ntokens_per_day = 0',
            '[access_log]\ntarget = "{log}"',
        )
    )
    with (
        anthropic.Anthropic(base_url=gw.url, api_key="any", max_retries=0) as claude,
        pytest.raises(anthropic.RateLimitError) as refused,
    ):
        claude.messages.create(model="demo-chat", max_tokens=16, messages=MESSAGES)  # type: ignore[arg-type]
    body = refused.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error" and "'off'" in body["error"]["message"]
    (record,) = [r for r in gw.wait_log(1) if r.get("status") == 429]
    assert record["llm"]["attempts"] == 0  # the provider was never called


def test_two_nodes_share_a_budget_through_redis_within_the_stated_bound(
    gateway_factory: Callable[..., Gateway], redis_server: RedisServer
) -> None:
    """Two gateways (two workers each) and one Redis: a token budget spent on either node is seen by
    the other within a flush interval, overshoots by at most one reservation per other participant,
    and Redis ends up holding exactly the tokens the answers used."""
    redis = f'[rate_limits.redis]\nurl = "{redis_server.url}"\nflush_interval = 0.05'
    budget = '[[routes.handler.budgets]]\nname = "shared"\nkey = "route"\ntokens_per_day = 1000'
    nodes = [gateway_factory(config(budget, redis), workers=2) for _ in range(2)]
    spent = admitted = 0
    estimate = 0
    refusals = [False, False]
    turn = 0
    while not all(refusals):
        node = turn % 2
        turn += 1
        try:
            headers, used = chat(nodes[node], max_tokens=100)
        except openai.RateLimitError as refused:
            assert refused.code == "rate_limit_exceeded"
            refusals[node] = True
            continue
        estimate = estimate or 1000 - int(headers["x-ratelimit-remaining-tokens"])
        spent += used
        admitted += 1
        assert turn < 40, "the shared budget never refused"
    participants = 4  # two nodes x two workers
    assert spent <= 1000 + (participants - 1) * 102  # docs/llm-budgets.md: the cluster bound
    assert admitted >= (1000 - estimate) // 102  # and the budget was not split per node

    with redis_client.Redis.from_url(redis_server.url) as store:

        def stored() -> int:
            keys = [k for k in store.keys("fgw:rl:*") if k != b"fgw:rl:participants"]
            return sum(int(v or 0) for v in store.mget(keys)) if keys else 0

        wait_until(lambda: stored() == spent, 5.0, f"Redis to hold the {spent} tokens spent")


def test_thresholds_alert_signed_webhooks_once_per_period_with_retries(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    secret = b"budget-alert-secret-3b9f0c1d"
    (tmp_path / "alert.key").write_bytes(secret + b"\n")
    receiver = WebhookReceiver(secret, fail_first=1)  # the first delivery fails: retried
    try:
        gw = gateway_factory(
            config(
                f"""
                [routes.handler.budget_alerts]
                thresholds = [50, 80, 100]
                webhooks = ["{receiver.url}"]
                secret = {{ file = "{tmp_path / "alert.key"}" }}

                [[routes.handler.budgets]]
                name = "team-tokens"
                key = "route"
                tokens_per_day = 1000
                """
            ),
            workers=2,
        )
        refusals = 0
        for _ in range(20):
            try:
                chat(gw, max_tokens=100)
            except openai.RateLimitError:
                refusals += 1
                if refusals == 3:  # refused again and again: still one alert for 100 %
                    break
        wait_until(lambda: len(receiver.received) >= 3, 10.0, "three alerts at the webhook")
        assert receiver.bad_signatures == 0 and receiver.attempts >= 4
        alerts = sorted(receiver.received, key=lambda a: a["threshold"])
        assert [a["threshold"] for a in alerts] == [50, 80, 100]
        assert all(a["budget"] == "team-tokens" and a["limit"] == "tokens_per_day" for a in alerts)
        assert alerts[0]["used"] >= 500 and alerts[1]["used"] >= 800 and alerts[2]["refused"]
        assert (
            alerts[0]["limit_value"] == 1000 and alerts[0]["period"] == "day" and alerts[0]["route"] == "llm"
        )
        # Raised synchronously with the request (delivered later): the log has each exactly once.
        assert gw.stderr().count("budget alert: ") == 3

        def audited() -> list[dict[str, Any]]:
            lines = (gw.state / "audit.log").read_text().splitlines()
            return [r for r in map(json.loads, lines) if r.get("event") == "budget.threshold"]

        # The audit log has them too, through the control process (workers never write it).
        wait_until(lambda: len(audited()) == 3, 10.0, "three budget.threshold audit records")
        records = sorted(audited(), key=lambda r: r["threshold"])
        assert [r["threshold"] for r in records] == [50, 80, 100]
        assert all(r["budget"] == "team-tokens" and r["worker"] in (0, 1) for r in records)
    finally:
        receiver.close()
