"""Budgets on prompt API routes, end to end: a gateway subprocess in front of the fake OpenAI provider
(TLS). A prompt API call reserves its filled prompt's estimate and settles at the provider's usage; a
budget shared with an llm route is one allowance across both (a consumer out of budget on one cannot
spend through the other); an exhausted budget is a 429 problem+json before any provider call; and a
request every target failed, or cut while its call still waited for a connection, gives its reservation
back, on both kinds of route.

The fake counts a token per word, so each call's usage is read from its access-log record and the
reservations from the headers (limit minus remaining)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.support.clients import Response
from tests.support.llm_gateway import (
    LlmGateway,
    llm_record,
    post_json,
    running_llm_gateway,
    silent_listener,
    silent_provider,
)
from tests.support.waiting import wait_until

SAY_SCHEMA = (
    'input_schema = { type = "object", required = ["text"], properties = { text = { type = "string" } } }'
)


def route(
    name: str, path: str, budget: str, tokens_per_day: int, models: str = "", shared: bool = False
) -> str:
    """An auth = "none" route with one token budget: a prompt_api route, or with ``models`` an llm one."""
    kind = (
        f'kind = "llm"\nstrip_prefix = true\n[routes.handler]\nmodels = {models}'
        if models
        else 'kind = "prompt_api"'
    )
    sharing = "shared = true\n" if shared else ""
    return f"""
[[routes]]
name = "{name}"
path = "{path}"
auth = "none"
{kind}
[[routes.handler.budgets]]
name = "{budget}"
{sharing}key = "route"
tokens_per_day = {tokens_per_day}
"""


def api(name: str, path: str, model: str, verb: str = "Say", extra: str = "") -> str:
    """A [[prompt_api]] filling "<verb> {{ text }}", its answer bounded to 20 tokens."""
    return f"""
[[prompt_api]]
name = "{name}"
path = "{path}"
model = "{model}"
max_tokens = 20
template = "{verb} {{{{ text }}}}"
{SAY_SCHEMA}
{extra}"""


# A model at a provider whose TLS handshake never ends (the ``silent`` fixture's port).
UNREACHABLE = """
[[llm.models]]
name = "unreachable"
targets = [{ provider = "silent", model = "gpt-4o-mini" }]
"""

EXTRA = (
    """
[[llm.models]]
name = "metered"
targets = [{ provider = "oa", model = "gpt-4o-mini" }]

[[llm.models]]
name = "failing"
targets = [{ provider = "oa", model = "fault-500" }]

[[llm.models]]
name = "slow"
targets = [{ provider = "oa", model = "fault-slow-first-token" }]
"""
    + route("strict-prompts", "/strict", "tokens", 30)
    + route("metered-prompts", "/metered", "shared-tokens", 150, shared=True)
    + route("metered-llm", "/metered-llm/v1", "shared-tokens", 150, '["metered"]', shared=True)
    + route("fragile-prompts", "/fragile", "tokens", 1000)
    + route("fragile-llm", "/fragile-llm/v1", "tokens", 1000, '["metered", "failing", "unreachable"]')
    + api("say", "/metered/say", "metered")
    + api("fragile-say", "/fragile/say", "metered")
    + api("fragile-slow", "/fragile/slow", "slow")
    + api("fragile-unreachable", "/fragile/unreachable", "unreachable")
    + api(
        "strict",
        "/strict/classify",
        "metered",
        "Classify",
        'output_schema = { type = "object", required = ["label"],'
        ' properties = { label = { type = "string" } } }',
    )
    + api("broken", "/fragile/broken", "failing")
)
SAY_ESTIMATE = len(b"Say hello") // 4 + 1 + 20  # the filled prompt's bytes / 4 + 1, plus max_tokens


@pytest.fixture(scope="module")
def silent() -> Iterator[socket.socket]:
    with silent_listener() as listener:
        yield listener


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, silent: socket.socket) -> Iterator[LlmGateway]:
    config = silent_provider(silent.getsockname()[1], 10.0) + UNREACHABLE + EXTRA
    with running_llm_gateway(tmp_path_factory.mktemp("prompt-budgets"), config) as running:
        yield running


def headers_of(resp: Response) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in resp.headers}


def used_by(gw: LlmGateway, headers: dict[str, str]) -> int:
    record = llm_record(gw.gateway, headers)
    return int(record["prompt_tokens"]) + int(record["completion_tokens"])


def sdk(gw: LlmGateway, prefix: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.gateway.url}{prefix}/v1", api_key="any", max_retries=0)


def test_prompt_api_calls_spend_a_budget_shared_with_an_llm_route_and_are_refused_when_it_is_out(
    gw: LlmGateway,
) -> None:
    fake = gw.stack.openai
    first = post_json(gw.gateway, "/metered/say", {"text": "hello"})
    assert first.status == 200, first.body
    head = headers_of(first)
    assert head["x-ratelimit-limit-tokens"] == "150"
    assert int(head["x-ratelimit-remaining-tokens"]) == 150 - SAY_ESTIMATE
    spent = used_by(gw, head)
    assert 0 < spent < SAY_ESTIMATE  # settled at the provider's usage, not kept at the estimate
    # The llm route counts in the same allowance: its answer's headers show the prompt API's usage.
    with sdk(gw, "/metered-llm") as client:
        raw = client.chat.completions.with_raw_response.create(
            model="metered", messages=[{"role": "user", "content": "hello there"}], max_tokens=10
        )
        answer = raw.parse()
    assert answer.usage is not None
    llm_estimate = 150 - spent - int(raw.headers["x-ratelimit-remaining-tokens"])
    assert llm_estimate > 10  # its own estimate, on top of what the prompt API used
    spent += answer.usage.total_tokens
    second = post_json(gw.gateway, "/metered/say", {"text": "hello"})
    assert int(headers_of(second)["x-ratelimit-remaining-tokens"]) == 150 - spent - SAY_ESTIMATE
    spent += used_by(gw, headers_of(second))
    refused: Response | None = None
    for _ in range(20):
        seen = len(fake.requests)
        resp = post_json(gw.gateway, "/metered/say", {"text": "hello"})
        if resp.status == 429:
            refused = resp
            assert len(fake.requests) == seen  # refused before any provider call
            break
        assert resp.status == 200, resp.body
        spent += used_by(gw, headers_of(resp))
    assert refused is not None, "the budget never refused"
    assert spent + SAY_ESTIMATE > 150 >= spent  # refused exactly when the estimate no longer fits
    assert refused.header(b"content-type") == b"application/problem+json"
    problem = json.loads(refused.body)
    assert problem["type"].endswith("/budget-exceeded") and problem["status"] == 429
    assert problem["code"] == "rate_limit_exceeded" and "'shared-tokens'" in problem["detail"]
    refusal = headers_of(refused)
    assert int(refusal["retry-after"]) >= 1
    assert int(refusal["x-ratelimit-remaining-tokens"]) == 150 - spent
    # And the llm route, out of the same allowance, refuses in OpenAI's shape.
    with sdk(gw, "/metered-llm") as client, pytest.raises(openai.RateLimitError) as error:
        client.chat.completions.create(model="metered", messages=[{"role": "user", "content": "hi"}])
    assert "'shared-tokens'" in error.value.message


def test_a_request_every_target_failed_gives_its_reservation_back(gw: LlmGateway) -> None:
    """A provider outage must not drain budgets: after it, the callers have what they had."""
    ok = post_json(gw.gateway, "/fragile/say", {"text": "hello"})
    assert ok.status == 200, ok.body
    spent = used_by(gw, headers_of(ok))
    failed = post_json(gw.gateway, "/fragile/broken", {"text": "hello"})
    assert failed.status == 502, failed.body
    after = post_json(gw.gateway, "/fragile/say", {"text": "hello"})
    assert int(headers_of(after)["x-ratelimit-remaining-tokens"]) == 1000 - spent - SAY_ESTIMATE
    # The same on an llm route: the failed call's estimate is not kept.
    with sdk(gw, "/fragile-llm") as client:
        good = client.chat.completions.with_raw_response.create(
            model="metered", messages=[{"role": "user", "content": "hello"}], max_tokens=10
        )
        usage = good.parse().usage
        assert usage is not None
        estimate = 1000 - int(good.headers["x-ratelimit-remaining-tokens"])
        with pytest.raises(openai.APIStatusError) as error:
            client.chat.completions.create(
                model="failing", messages=[{"role": "user", "content": "hello"}], max_tokens=10
            )
        assert error.value.status_code >= 500
        again = client.chat.completions.with_raw_response.create(
            model="metered", messages=[{"role": "user", "content": "hello"}], max_tokens=10
        )
    assert int(again.headers["x-ratelimit-remaining-tokens"]) == 1000 - usage.total_tokens - estimate


def test_a_request_cut_after_it_reached_the_provider_keeps_its_reservation(gw: LlmGateway) -> None:
    """The provider may bill for a request the client left while it ran: its estimate stays counted
    (a request every target refused gives it back, above)."""
    fake = gw.stack.openai
    ok = post_json(gw.gateway, "/fragile/say", {"text": "hello"})
    remaining = int(headers_of(ok)["x-ratelimit-remaining-tokens"])
    spent = used_by(gw, headers_of(ok))
    fake.first_token_delay = 5.0
    try:
        body = json.dumps({"text": "hello"}).encode()
        head = f"POST /fragile/slow HTTP/1.1\r\nHost: test\r\ncontent-length: {len(body)}\r\n\r\n"
        seen = len(fake.requests)
        with socket.create_connection(("127.0.0.1", gw.gateway.port)) as client:
            client.sendall(head.encode() + body)
            wait_until(lambda: len(fake.requests) > seen, 5.0, "the request to reach the provider")
        cut = wait_until(
            lambda: next(
                (r for r in gw.gateway.log_records() if (r.get("llm") or {}).get("error") == "client_closed"),
                None,
            ),
            5.0,
            "the cut request's access-log record",
        )
        assert cut["llm"]["endpoint"] == "prompt_api" and cut["llm"]["attempts"] == 1
    finally:
        fake.first_token_delay = 0.05
    after = post_json(gw.gateway, "/fragile/say", {"text": "hello"})
    # This request's estimate, the last one's usage, and the cut one's estimate: kept.
    assert int(headers_of(after)["x-ratelimit-remaining-tokens"]) == remaining - spent - SAY_ESTIMATE


def cut_llm(record: dict[str, Any]) -> bool:
    """An access-log record of an llm exchange that ended in an error (a cut one, here)."""
    return bool((record.get("llm") or {}).get("error"))


def chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 10}


@pytest.mark.parametrize(
    ("path", "ok", "cut_path", "cut"),
    [
        ("/fragile/say", {"text": "hello"}, "/fragile/unreachable", {"text": "hello"}),
        (
            "/fragile-llm/v1/chat/completions",
            chat("metered"),
            "/fragile-llm/v1/chat/completions",
            chat("unreachable"),
        ),
    ],
    ids=["prompt_api", "llm"],
)
def test_a_request_cut_while_its_call_waited_for_a_connection_gives_its_reservation_back(
    gw: LlmGateway,
    silent: socket.socket,
    path: str,
    ok: dict[str, object],
    cut_path: str,
    cut: dict[str, object],
) -> None:
    """A client that leaves while the gateway is still connecting to the provider (here a TLS handshake
    nobody answers): no byte of the request left, nothing can be billed, the estimate is given back."""
    first = post_json(gw.gateway, path, ok)
    assert first.status == 200, first.body
    remaining = int(headers_of(first)["x-ratelimit-remaining-tokens"])
    spent = used_by(gw, headers_of(first))
    body = json.dumps(cut).encode()
    head = f"POST {cut_path} HTTP/1.1\r\nHost: test\r\ncontent-type: application/json\r\n"
    head += f"content-length: {len(body)}\r\n\r\n"
    seen = len(gw.gateway.log_records())
    silent.settimeout(5.0)
    with socket.create_connection(("127.0.0.1", gw.gateway.port)) as client:
        client.sendall(head.encode() + body)
        connecting, _ = silent.accept()  # the gateway's connect began; its handshake gets no answer
    with connecting:
        record = wait_until(
            lambda: next((r for r in gw.gateway.log_records()[seen:] if cut_llm(r)), None),
            5.0,
            "the cut request's access-log record",
        )
    assert record["llm"]["error"] == "client_closed" and record["llm"]["attempts"] == 1
    after = post_json(gw.gateway, path, ok)
    # This request's estimate and the first one's usage; the cut one's estimate was given back.
    assert int(headers_of(after)["x-ratelimit-remaining-tokens"]) == remaining - spent


def test_an_output_schema_retry_reserves_again_and_is_refused_without_room(gw: LlmGateway) -> None:
    """The first call's estimate fits the budget (30 tokens: 24 reserved) and its answer is no JSON; the
    retry needs room for its own estimate on top of the first call's usage, which is no longer there: a
    429 rather than a second call nobody reserved for."""
    fake = gw.stack.openai
    seen = len(fake.requests)
    fake.texts.append("Sure, here it is: {")  # not JSON: the output schema asks for a retry
    refused = post_json(gw.gateway, "/strict/classify", {"text": "hello"})
    assert refused.status == 429, refused.body
    problem = json.loads(refused.body)
    assert problem["type"].endswith("/budget-exceeded") and "'tokens'" in problem["detail"]
    assert len(fake.requests) == seen + 1  # the first call only
    head = headers_of(refused)
    record = llm_record(gw.gateway, head)
    used = record["prompt_tokens"] + record["completion_tokens"]
    assert used > 30 - (len(b"Classify hello") // 4 + 1 + 20)  # why the retry could not fit
    assert int(head["x-ratelimit-remaining-tokens"]) == 30 - used  # the first call stays counted
    assert [name for name, _ in refused.headers].count(b"x-ratelimit-remaining-tokens") == 1
