"""The official ``openai`` SDK as the client of a real gateway, over each provider kind (the fake OpenAI,
Anthropic and Gemini providers, over TLS): chat, streams with and without usage, streamed tool-call
arguments, embeddings (the SDK's default base64), the route's model list, and token counts that equal the
fake's own in the access log and in /metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from tests.support.h2client import H2Client
from tests.support.llm_gateway import LlmGateway, llm_record, metric, scrape
from tests.support.waiting import wait_until

CHAT_MODELS = ("chat-openai", "chat-anthropic", "chat-gemini")
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def client(llm: LlmGateway, prefix: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=llm.gateway.url + prefix, api_key="any", max_retries=0, timeout=20)


@pytest.fixture
def sdk(llm: LlmGateway) -> Iterator[openai.OpenAI]:
    with client(llm) as opened:
        yield opened


def sent_arguments(llm: LlmGateway, model: str) -> object:
    """The arguments of the tool call the fake behind ``model`` answered."""
    if model == "chat-openai":
        return json.loads(llm.stack.openai.answers[-1].arguments)
    if model == "chat-anthropic":
        return next(b["input"] for b in llm.stack.anthropic.answers[-1].content if b["type"] == "tool_use")
    return {"city": "fake"}


def provider_usage(llm: LlmGateway, model: str) -> tuple[int, int]:
    """(prompt, completion) tokens the fake behind ``model`` reported for its last answer."""
    if model == "chat-openai":
        usage = llm.stack.openai.answers[-1].usage
        return usage["prompt_tokens"], usage["completion_tokens"]
    if model == "chat-anthropic":
        usage = llm.stack.anthropic.answers[-1].usage
        return usage["input_tokens"], usage["output_tokens"]
    usage = llm.stack.gemini.sent_usage[-1]
    return usage["promptTokenCount"], usage["candidatesTokenCount"]


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_chat_completion_over_each_provider_with_exact_token_counts(
    llm: LlmGateway, sdk: openai.OpenAI, model: str
) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "Say hello to the gateway"}], max_tokens=64
    )
    answer = raw.parse()
    assert answer.model == model
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "stop"
    prompt, completion = provider_usage(llm, model)
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (prompt, completion)
    assert raw.headers["x-fastgw-llm-target"].endswith("; attempts=1")
    record = llm_record(llm.gateway, raw.headers)
    assert record["model"] == model
    assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, completion)
    assert record["attempts"] == 1 and record["stream"] is False


@pytest.mark.parametrize("model", CHAT_MODELS)
@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_sends_the_usage_chunk_only_when_asked(
    llm: LlmGateway, sdk: openai.OpenAI, model: str, include_usage: bool
) -> None:
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Stream a short answer please"}],
        max_tokens=64,
        stream=True,
        **options,  # type: ignore[arg-type]
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    usage_chunks = [c for c in chunks if c.usage is not None]
    prompt, completion = provider_usage(llm, model)
    if include_usage:
        assert len(usage_chunks) == 1 and not usage_chunks[0].choices and chunks[-1] is usage_chunks[0]
        assert (usage_chunks[0].usage.prompt_tokens, usage_chunks[0].usage.completion_tokens) == (
            prompt,
            completion,
        )
    else:
        assert usage_chunks == []
    record = llm_record(llm.gateway, stream.response.headers)
    assert record["stream"] is True and record["ttft_ms"] >= 0
    assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, completion)


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_streamed_tool_call_arguments_arrive_as_deltas(
    llm: LlmGateway, sdk: openai.OpenAI, model: str
) -> None:
    llm.stack.gemini.reply.calls = [("get_weather", {"city": "fake"})]
    try:
        stream = sdk.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=64,
            stream=True,
        )
        chunks = list(stream)
    finally:
        llm.stack.gemini.reply.calls = []
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls, "no tool-call deltas"
    assert calls[0].id and calls[0].function is not None and calls[0].function.name == "get_weather"
    arguments = "".join(tc.function.arguments or "" for tc in calls if tc.function is not None)
    assert json.loads(arguments) == sent_arguments(llm, model)
    assert {tc.index for tc in calls} == {0}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]


def test_whole_tool_call_over_the_sdk(llm: LlmGateway, sdk: openai.OpenAI) -> None:
    answer = sdk.chat.completions.create(
        model="chat-anthropic",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="required",
        max_tokens=64,
    )
    message = answer.choices[0].message
    assert answer.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls and message.tool_calls[0].function.name == "get_weather"  # type: ignore[union-attr]


@pytest.mark.parametrize("model", ["embed-openai", "embed-gemini"])
def test_embeddings_with_the_sdk_default_base64_and_with_floats(
    llm: LlmGateway, sdk: openai.OpenAI, model: str
) -> None:
    default = sdk.embeddings.create(model=model, input=["first text", "second longer text"])
    floats = sdk.embeddings.create(
        model=model, input=["first text", "second longer text"], encoding_format="float"
    )
    assert [d.index for d in default.data] == [0, 1]
    assert all(isinstance(v, float) for v in default.data[0].embedding)
    for a, b in zip(default.data, floats.data, strict=True):
        assert a.embedding == pytest.approx(b.embedding, rel=1e-6)
    assert default.model == model


def test_embeddings_answer_base64_when_asked_whatever_the_provider(
    llm: LlmGateway, sdk: openai.OpenAI
) -> None:
    """A client that asks base64 explicitly gets a base64 string (the SDK then hands back the string)."""
    for model in ("embed-openai", "embed-gemini"):
        raw = sdk.embeddings.with_raw_response.create(
            model=model, input="some text", encoding_format="base64"
        )
        data = raw.http_response.json()["data"][0]["embedding"]
        assert isinstance(data, str) and len(data) % 4 == 0, model


def test_models_lists_only_what_the_route_allows(llm: LlmGateway, sdk: openai.OpenAI) -> None:
    everything = {m.id for m in sdk.models.list()}
    assert everything == {"chat-openai", "chat-anthropic", "chat-gemini", "embed-openai", "embed-gemini"}
    with client(llm, "/narrow/v1") as narrow_sdk:
        narrow = {m.id for m in narrow_sdk.models.list()}
    assert narrow == {"chat-openai", "chat-anthropic", "chat-gemini"}


def test_token_metrics_equal_the_providers_counts(llm: LlmGateway, sdk: openai.OpenAI) -> None:
    before = scrape(llm.admin_port)
    sent = sdk.chat.completions.create(
        model="chat-openai", messages=[{"role": "user", "content": "count these five words"}], max_tokens=64
    )
    prompt, completion = provider_usage(llm, "chat-openai")
    assert sent.usage is not None and sent.usage.prompt_tokens == prompt

    def grown() -> str | None:
        text = scrape(llm.admin_port)
        labels = {"model": "chat-openai", "provider": "oa"}
        old = metric(before, "fastgw_llm_tokens_total", kind="completion", **labels)
        return text if metric(text, "fastgw_llm_tokens_total", kind="completion", **labels) > old else None

    after: str = wait_until(grown, 10.0, "the llm token counters to grow")
    for kind, count in (("prompt", prompt), ("completion", completion)):
        labels = {"model": "chat-openai", "provider": "oa", "kind": kind}
        assert (
            metric(after, "fastgw_llm_tokens_total", **labels)
            - metric(before, "fastgw_llm_tokens_total", **labels)
            == count
        )


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_streams_over_http2(llm: LlmGateway, path: str) -> None:
    """The same streams over h2c (the SDKs speak HTTP/1.1: an h2 client sends their request bytes)."""
    body = {
        "model": "chat-openai",
        "messages": [{"role": "user", "content": "stream over h2"}],
        "max_tokens": 64,
        "stream": True,
    }
    headers = [(b"content-type", b"application/json"), (b"anthropic-version", b"2023-06-01")]
    h2 = H2Client(llm.gateway.port)
    try:
        resp = h2.request(path, method="POST", headers=headers, body=json.dumps(body).encode())
    finally:
        h2.close()
    assert resp.status == 200 and resp.header(b"content-type") == b"text/event-stream"
    events = [line for line in resp.body.split(b"\n") if line.startswith(b"data: ")]
    if path.endswith("/messages"):
        kinds = [json.loads(e[6:])["type"] for e in events]
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    else:
        assert events[-1] == b"data: [DONE]"
        text = "".join(
            c["choices"][0]["delta"].get("content") or ""
            for c in (json.loads(e[6:]) for e in events[:-1])
            if c["choices"]
        )
        assert text == llm.stack.openai.answers[-1].text
