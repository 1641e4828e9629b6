"""The official ``anthropic`` SDK as the client of a real gateway, over the fake Anthropic provider
(Messages API to Messages API) and the fake OpenAI provider (translated both ways): messages, streams of
text and of tool_use input (input_json_delta), exact token counts, and errors typed as the SDK raises them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from tests.support.llm_gateway import LlmGateway, llm_record, running_llm_gateway

MODELS = ("chat-anthropic", "chat-openai")
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
FAILING = {"rate-limited": "429", "overloaded": "529", "broken": "500"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmGateway]:
    extra = "".join(
        f"""
        [[llm.models]]
        name = "{name}"
        targets = [{{ provider = "oa", model = "fault-{fault}" }}]
        """
        for name, fault in FAILING.items()
    )
    with running_llm_gateway(tmp_path_factory.mktemp("anthropic-sdk"), extra) as running:
        yield running


@pytest.fixture
def sdk(gw: LlmGateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gw.gateway.url, api_key="any", max_retries=0, timeout=20) as opened:
        yield opened


def provider_usage(gw: LlmGateway, model: str) -> tuple[int, int]:
    if model == "chat-anthropic":
        usage = gw.stack.anthropic.answers[-1].usage
        return usage["input_tokens"], usage["output_tokens"]
    usage = gw.stack.openai.answers[-1].usage
    return usage["prompt_tokens"], usage["completion_tokens"]


def hello(sdk: anthropic.Anthropic, model: str = "chat-anthropic") -> str:
    message = sdk.messages.create(model=model, max_tokens=64, messages=[{"role": "user", "content": "hello"}])
    block = message.content[0]
    assert block.type == "text"
    return block.text


@pytest.mark.parametrize("model", MODELS)
def test_messages_with_a_system_prompt_and_exact_usage(
    gw: LlmGateway, sdk: anthropic.Anthropic, model: str
) -> None:
    raw = sdk.messages.with_raw_response.create(
        model=model,
        max_tokens=64,
        system="You are terse.",
        messages=[
            {"role": "user", "content": "Say hello"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Again, to the gateway"},
        ],
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.model == model
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text" and message.content[0].text
    prompt, completion = provider_usage(gw, model)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (prompt, completion)
    assert raw.headers["x-fastgw-llm-target"].endswith("attempts=1")
    record = llm_record(gw.gateway, raw.headers)
    assert record["endpoint"] == "messages" and record["model"] == model
    assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, completion)


@pytest.mark.parametrize("model", MODELS)
def test_text_stream_events_and_final_message(gw: LlmGateway, sdk: anthropic.Anthropic, model: str) -> None:
    with sdk.messages.stream(
        model=model, max_tokens=64, messages=[{"role": "user", "content": "Stream a short answer"}]
    ) as stream:
        headers = stream.response.headers
        events = list(stream)
        text = stream.get_final_text()
        final = stream.get_final_message()
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds and "message_delta" in kinds
    assert text and final.stop_reason == "end_turn"
    prompt, completion = provider_usage(gw, model)
    assert final.usage.output_tokens == completion
    record = llm_record(gw.gateway, headers)
    assert record["stream"] is True
    assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, completion)


@pytest.mark.parametrize("model", MODELS)
def test_tool_use_streams_its_input_as_json_deltas(
    gw: LlmGateway, sdk: anthropic.Anthropic, model: str
) -> None:
    with sdk.messages.stream(
        model=model,
        max_tokens=64,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    deltas = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert deltas, "no input_json_delta events"
    tool_use = next(b for b in final.content if b.type == "tool_use")
    assert tool_use.name == "get_weather" and tool_use.id
    assert json.loads("".join(deltas)) == tool_use.input
    assert final.stop_reason == "tool_use"


def test_tool_result_round_trip(sdk: anthropic.Anthropic) -> None:
    """A tool_result turn goes to the OpenAI provider as a tool message; the fake then answers text."""
    message = sdk.messages.create(
        model="chat-openai",
        max_tokens=64,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny"}],
            },
        ],
    )
    assert message.content[0].type == "text" and message.stop_reason == "end_turn"


def test_errors_are_typed_as_the_sdk_raises_them(gw: LlmGateway, sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as not_found:
        hello(sdk, "claude-unknown")
    assert "claude-unknown" in not_found.value.message
    with pytest.raises(anthropic.BadRequestError) as bad:
        sdk.messages.create(model="chat-anthropic", max_tokens=64, messages="hello")  # type: ignore[arg-type]
    assert "messages" in bad.value.message
    with pytest.raises(anthropic.BadRequestError) as no_tokens:
        sdk.messages.create(
            model="chat-anthropic", max_tokens=0, messages=[{"role": "user", "content": "hi"}]
        )
    assert "max_tokens" in no_tokens.value.message
    with pytest.raises(anthropic.RateLimitError) as limited:
        hello(sdk, "rate-limited")
    assert limited.value.response.headers["retry-after"] == gw.stack.openai.retry_after
    # A provider's 529 (or 5xx) is the gateway's 502 (the adapters' choice: the provider failed, not the
    # gateway), which the SDK raises as InternalServerError and retries like a 529; the text is kept.
    gw.stack.anthropic.faults.append("529")
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        hello(sdk, "chat-anthropic")
    assert overloaded.value.status_code == 502 and "Overloaded" in overloaded.value.message
    with pytest.raises(anthropic.InternalServerError):
        hello(sdk, "overloaded")
    with pytest.raises(anthropic.InternalServerError) as broken:
        hello(sdk, "broken")
    for error in (not_found.value, bad.value, overloaded.value, broken.value):
        assert isinstance(error.body, dict) and error.body["type"] == "error"
        assert "127.0.0.1" not in str(error.body) and str(gw.stack.openai.port) not in str(error.body)
    assert hello(sdk)  # the gateway keeps serving


def test_count_tokens_is_counted_by_a_provider_that_counts(gw: LlmGateway, sdk: anthropic.Anthropic) -> None:
    """Anthropic's own provider counts (the fake: a token per word); a model served by a provider
    without counting is a clear 400 naming the endpoint, never a guess."""
    counted = sdk.messages.count_tokens(
        model="chat-anthropic", messages=[{"role": "user", "content": "one two three four"}]
    )
    fake = sdk.messages.count_tokens(model="chat-anthropic", messages=[{"role": "user", "content": "one"}])
    assert counted.input_tokens - fake.input_tokens == 3  # three more words, three more tokens
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.count_tokens(model="chat-openai", messages=[{"role": "user", "content": "hi"}])
    assert "count_tokens" in caught.value.message


def test_the_sdk_retries_a_429_after_the_providers_retry_after(tmp_path: Path) -> None:
    """With retries on (the SDK's default), a 429 whose Retry-After the gateway passes on is retried by
    the SDK itself, and the retry succeeds once the provider accepts again."""
    with running_llm_gateway(tmp_path) as running:
        running.stack.openai.retry_after = "2"
        running.stack.openai.faults.append("429")
        with anthropic.Anthropic(base_url=running.gateway.url, api_key="any", max_retries=2) as sdk:
            started = time.monotonic()
            raw = sdk.messages.with_raw_response.create(
                model="chat-openai", max_tokens=64, messages=[{"role": "user", "content": "hello"}]
            )
            waited = time.monotonic() - started
        assert raw.retries_taken == 1 and raw.parse().content
        assert waited >= 2.0  # the provider's Retry-After, not the SDK's own sub-second backoff
        assert len(running.stack.openai.requests) == 2


@pytest.mark.parametrize("fault", ["no_message_stop", "disconnect", "malformed", "error_event", "huge_line"])
def test_a_broken_provider_stream_ends_with_an_error_event(
    gw: LlmGateway, sdk: anthropic.Anthropic, fault: str
) -> None:
    """Anthropic to Anthropic: a stream that breaks after it began ends with an ``error`` event, which the
    SDK raises; never a stream that looks complete. A provider whose first read already holds the break
    (its error event right behind message_start) is answered with an error status instead: nothing had
    reached the client yet."""
    gw.stack.anthropic.faults.append(fault)
    headers = None
    with (
        pytest.raises(anthropic.APIError) as caught,
        sdk.messages.stream(
            model="chat-anthropic", max_tokens=64, messages=[{"role": "user", "content": "stream please"}]
        ) as stream,
    ):
        headers = stream.response.headers
        for _ in stream:
            pass
    if headers is None:  # refused before the stream began
        assert isinstance(caught.value, anthropic.APIStatusError)
        headers = caught.value.response.headers
    assert "127.0.0.1" not in str(caught.value) and str(gw.stack.anthropic.port) not in str(caught.value)
    record = llm_record(gw.gateway, headers)
    assert record["error"] and record["attempts"] == 1
    assert hello(sdk)


def test_models_list_in_anthropics_shape(sdk: anthropic.Anthropic) -> None:
    ids = [m.id for m in sdk.models.list()]
    assert "chat-anthropic" in ids and "chat-openai" in ids and ids == sorted(ids)
