"""The response cache of an llm route (docs/llm-cache.md), through a real gateway with the official
``openai`` SDK in front of the fake OpenAI provider: a deterministic request's second ask is answered
without a provider call, a stream replays the same events with the same boundaries, a hit is recorded
with zero tokens and the tokens it saved; non-deterministic requests, Cache-Control opt-outs and answers
that failed are never served from the cache."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.support.llm_gateway import LlmGateway, llm_record, metric, running_llm_gateway, scrape
from tests.support.waiting import wait_until

CACHED_ROUTE = """
        [[routes]]
        name = "cached"
        path = "/cached/v1"
        strip_prefix = true
        auth = "none"
        kind = "llm"
        handler = { cache = { ttl = 60.0, max_bytes = 1048576, scope = "route" } }
"""
HELLO = [{"role": "user", "content": "hello there cache"}]


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmGateway]:
    with running_llm_gateway(tmp_path_factory.mktemp("llm-cache"), CACHED_ROUTE) as running:
        running.stack.openai.first_token_delay = 0.0
        yield running


@pytest.fixture
def sdk(cached: LlmGateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=cached.gateway.url + "/cached/v1", api_key="any", max_retries=0, timeout=20
    ) as client:
        yield client


def calls(llm: LlmGateway) -> int:
    """Chat requests the fake provider has answered so far."""
    return sum(1 for r in llm.stack.openai.requests if r.path == "/chat/completions")


def streamed(sdk: openai.OpenAI, **kw: Any) -> tuple[str, list[dict[str, Any]], dict[str, str]]:
    """(x-fastgw-cache, the chunks as the SDK parsed them, the response headers) of one streamed ask."""
    raw = sdk.chat.completions.with_raw_response.create(model="chat-openai", stream=True, **kw)
    chunks = [chunk.model_dump() for chunk in raw.parse()]
    return raw.headers["x-fastgw-cache"], chunks, dict(raw.headers)


def test_a_stream_hit_replays_the_same_chunks_without_a_provider_call(
    cached: LlmGateway, sdk: openai.OpenAI
) -> None:
    ask = {"messages": [{"role": "user", "content": "stream me twice"}], "temperature": 0}
    ask["stream_options"] = {"include_usage": True}
    before = calls(cached)
    verdict, first, head = streamed(sdk, **ask)
    assert verdict == "miss" and len(first) > 3
    assert calls(cached) == before + 1
    verdict, again, hit_head = streamed(sdk, **ask)
    assert verdict == "hit"
    assert again == first  # the same events, ids and all: one chunk per original event
    assert calls(cached) == before + 1  # the provider was not asked again
    assert hit_head["x-fastgw-llm-target"] == head["x-fastgw-llm-target"]
    assert int(hit_head["age"]) >= 0
    usage = first[-1]["usage"]
    record = llm_record(cached.gateway, hit_head)
    assert record["cache"] == "hit"
    assert record["tokens_saved"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert record["prompt_tokens"] == 0 and record["completion_tokens"] == 0  # cost nothing
    # priced at 0, not unknown: the ledger's row keeps a cost (docs/llm-usage.md)
    assert record["cost_usd"] == 0 and "cost" not in record, record
    missed = llm_record(cached.gateway, head)
    assert "cache" not in missed and missed["cost_usd"] > 0

    def hits() -> float:
        text = scrape(cached.admin_port)
        return metric(text, "fastgw_llm_requests_total", model="chat-openai", provider="oa", outcome="cached")

    wait_until(hits, 10, "the hit in fastgw_llm_requests_total{outcome=cached}")


def test_a_stream_hit_is_byte_for_byte_the_original_stream(cached: LlmGateway) -> None:
    body = {"model": "chat-openai", "messages": HELLO, "seed": 7, "stream": True}
    url = cached.gateway.url + "/cached/v1/chat/completions"
    answers = []
    for _ in range(2):
        request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=20) as response:
            assert response.status == 200
            answers.append((response.headers["x-fastgw-cache"], response.read()))
    assert [a[0] for a in answers] == ["miss", "hit"]
    assert answers[0][1] == answers[1][1]
    assert answers[1][1].count(b"\n\n") == answers[1][1].count(b"data: ")  # whole SSE events
    assert answers[1][1].endswith(b"data: [DONE]\n\n")


def test_a_whole_answer_hit(cached: LlmGateway, sdk: openai.OpenAI) -> None:
    before = calls(cached)
    first = sdk.chat.completions.with_raw_response.create(model="chat-openai", messages=HELLO, temperature=0)
    again = sdk.chat.completions.with_raw_response.create(
        model="chat-openai", messages=HELLO, temperature=0.0
    )
    assert (first.headers["x-fastgw-cache"], again.headers["x-fastgw-cache"]) == ("miss", "hit")
    assert again.parse().model_dump() == first.parse().model_dump()
    assert calls(cached) == before + 1
    # Streams and whole answers are separate entries: the stream is asked of the provider.
    verdict, _, _ = streamed(sdk, messages=HELLO, temperature=0)
    assert verdict == "miss" and calls(cached) == before + 2


def test_non_deterministic_requests_are_never_cached(cached: LlmGateway, sdk: openai.OpenAI) -> None:
    before = calls(cached)
    for _ in range(2):
        raw = sdk.chat.completions.with_raw_response.create(model="chat-openai", messages=HELLO)
        assert raw.headers["x-fastgw-cache"] == "bypass"
        raw = sdk.chat.completions.with_raw_response.create(
            model="chat-openai", messages=HELLO, temperature=0.3
        )
        assert raw.headers["x-fastgw-cache"] == "bypass"
    assert calls(cached) == before + 4


def test_cache_control_opts_out(cached: LlmGateway, sdk: openai.OpenAI) -> None:
    ask: dict[str, Any] = {
        "model": "chat-openai",
        "messages": [{"role": "user", "content": "cc"}],
    }
    ask["temperature"] = 0
    before = calls(cached)
    no_store = {"Cache-Control": "no-store"}
    raw = sdk.chat.completions.with_raw_response.create(**ask, extra_headers=no_store)
    assert raw.headers["x-fastgw-cache"] == "bypass"
    raw = sdk.chat.completions.with_raw_response.create(**ask)
    assert raw.headers["x-fastgw-cache"] == "miss"  # no-store kept nothing
    raw = sdk.chat.completions.with_raw_response.create(**ask, extra_headers={"Cache-Control": "no-cache"})
    assert raw.headers["x-fastgw-cache"] == "miss"  # a fresh answer, stored again
    raw = sdk.chat.completions.with_raw_response.create(**ask)
    assert raw.headers["x-fastgw-cache"] == "hit"
    assert calls(cached) == before + 3


def test_a_stream_that_failed_is_not_kept(cached: LlmGateway, sdk: openai.OpenAI) -> None:
    ask = {"messages": [{"role": "user", "content": "this one breaks midway"}], "temperature": 0}
    before = calls(cached)
    cached.stack.openai.faults.append("disconnect")  # the provider hangs up after the first chunk
    with pytest.raises(openai.APIError):
        streamed(sdk, **ask)
    verdict, chunks, _ = streamed(sdk, **ask)
    assert verdict == "miss" and chunks
    assert streamed(sdk, **ask)[0] == "hit"
    assert calls(cached) == before + 2


def test_a_stream_the_client_hung_up_on_is_not_kept(cached: LlmGateway, sdk: openai.OpenAI) -> None:
    ask: dict[str, Any] = {
        "messages": [{"role": "user", "content": "I leave early"}],
        "temperature": 0,
    }
    fake = cached.stack.openai
    hangups = fake.hangups
    fake.chunk_delay = 0.3  # a slow stream, still under way when the client leaves
    try:
        stream = sdk.chat.completions.create(model="chat-openai", stream=True, **ask)
        assert next(iter(stream)).choices
        stream.close()
        wait_until(lambda: fake.hangups > hangups, 5.0, "the gateway to hang up on the provider")
    finally:
        fake.chunk_delay = 0.0
    assert streamed(sdk, **ask)[0] == "miss"  # the cut stream was not kept
    assert streamed(sdk, **ask)[0] == "hit"


def test_errors_are_not_kept(cached: LlmGateway, sdk: openai.OpenAI) -> None:
    ask: dict[str, Any] = {"model": "chat-openai", "messages": [{"role": "user", "content": "err"}]}
    cached.stack.openai.faults.append("500")
    cached.stack.openai.faults.append("500")
    cached.stack.openai.faults.append("500")
    cached.stack.openai.faults.append("500")
    with pytest.raises(openai.APIStatusError):
        sdk.chat.completions.create(**ask, temperature=0)
    cached.stack.openai.faults.clear()
    raw = sdk.chat.completions.with_raw_response.create(**ask, temperature=0)
    assert raw.headers["x-fastgw-cache"] == "miss"


def test_routes_without_a_cache_say_nothing(cached: LlmGateway) -> None:
    with openai.OpenAI(base_url=cached.base_url, api_key="any", max_retries=0) as plain:
        raw = plain.chat.completions.with_raw_response.create(
            model="chat-openai", messages=HELLO, temperature=0
        )
    assert "x-fastgw-cache" not in raw.headers


def test_anthropic_clients_get_their_own_events_back(cached: LlmGateway) -> None:
    """The client format is part of the key: an Anthropic SDK's stream is replayed as the Anthropic events
    it was sent, and an OpenAI client asking the same never gets them."""
    ask: dict[str, Any] = {
        "model": "chat-anthropic",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "one format each"}],
    }
    before = len(cached.stack.anthropic.answers)
    with anthropic.Anthropic(
        base_url=cached.gateway.url + "/cached", api_key="any", max_retries=0, timeout=20
    ) as client:
        runs = []
        for _ in range(2):
            # This SDK's create() has no temperature argument; the Messages API still takes one.
            raw = client.messages.with_raw_response.create(**ask, stream=True, extra_body={"temperature": 0})
            runs.append((raw.headers["x-fastgw-cache"], [event.model_dump() for event in raw.parse()]))
    assert [verdict for verdict, _ in runs] == ["miss", "hit"]
    assert runs[0][1] == runs[1][1] and runs[0][1][0]["type"] == "message_start"
    assert len(cached.stack.anthropic.answers) == before + 1
    with openai.OpenAI(
        base_url=cached.gateway.url + "/cached/v1", api_key="any", max_retries=0, timeout=20
    ) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(**ask, temperature=0, stream=True)
        assert raw.headers["x-fastgw-cache"] == "miss"
        assert [chunk.choices for chunk in raw.parse()]
    assert len(cached.stack.anthropic.answers) == before + 2
