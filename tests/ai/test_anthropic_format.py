"""The Anthropic client format: documented requests into the pivot, pivot answers into documented
messages, stream events and errors; bad requests refused with the parameter named."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from fastgw.ai.adapter import InvalidRequestError, ProviderError, Usage
from fastgw.ai.formats.anthropic import (
    error_body,
    error_for,
    parse_count_tokens_request,
    parse_messages_request,
    render_count_tokens,
    render_message,
)
from fastgw.ai.providers.anthropic import AnthropicAdapter
from tests.support.anthropic_examples import (
    HELLO_REQUEST,
    HELLO_RESPONSE,
    IMAGE_DATA,
    MODEL,
    THINKING_RESPONSE,
    TOOL_RESULT_REQUEST,
    TOOL_USE_RESPONSE,
    VISION_REQUEST,
    WEATHER_TOOL,
)


def parse(request: dict[str, Any], beta: str | None = None) -> dict[str, Any]:
    return parse_messages_request(orjson.dumps(request), beta)


def test_hello_becomes_a_one_message_pivot() -> None:
    assert parse(HELLO_REQUEST) == {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello, world"}],
    }


def test_tool_use_turns_become_tool_calls_and_tool_messages() -> None:
    pivot = parse(TOOL_RESULT_REQUEST)
    assert pivot["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "parameters": WEATHER_TOOL["input_schema"],
            },
        }
    ]
    assert pivot["tool_choice"] == "auto"
    assert pivot["messages"] == [
        {"role": "user", "content": "What's the weather like in San Francisco?"},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "I'll check the current weather in San Francisco for you."}],
            "tool_calls": [
                {
                    "id": "toolu_01A09q90qw90lq917835lq9",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"San Francisco, CA"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
    ]


def test_vision_system_blocks_sampling_and_metadata() -> None:
    pivot = parse(VISION_REQUEST, beta="prompt-caching-2024-07-31, token-efficient-tools-2025-02-19")
    assert pivot["messages"][0] == {
        "role": "system",
        "content": [{"type": "text", "text": "You describe images.", "cache_control": {"type": "ephemeral"}}],
    }
    assert pivot["messages"][1]["content"] == [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{IMAGE_DATA}"}},
        {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/ant.jpg"}},
        {"type": "text", "text": "Describe these images."},
    ]
    assert pivot["stop"] == ["\n\nHuman:"]
    assert (pivot["temperature"], pivot["top_p"], pivot["top_k"]) == (0.5, 0.9, 40)
    assert pivot["user"] == "13803d75-b4b5-4c3e-b2a2-6f21399b021b"
    assert pivot["anthropic_beta"] == ["prompt-caching-2024-07-31", "token-efficient-tools-2025-02-19"]


@pytest.mark.parametrize(
    ("choice", "pivot_choice", "parallel"),
    [
        ({"type": "any"}, "required", None),
        ({"type": "none"}, "none", None),
        (
            {"type": "tool", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
            None,
        ),
        ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
    ],
)
def test_tool_choice(choice: dict[str, Any], pivot_choice: Any, parallel: bool | None) -> None:
    pivot = parse({**HELLO_REQUEST, "tools": [WEATHER_TOOL], "tool_choice": choice})
    assert pivot["tool_choice"] == pivot_choice
    assert pivot.get("parallel_tool_calls") == parallel


def test_thinking_budget_becomes_effort_and_exact_budget() -> None:
    pivot = parse(
        {**HELLO_REQUEST, "max_tokens": 16000, "thinking": {"type": "enabled", "budget_tokens": 10000}}
    )
    assert pivot["reasoning_effort"] == "medium"
    assert pivot["reasoning"] == {"max_tokens": 10000}


def test_stream_asks_for_usage() -> None:
    pivot = parse({**HELLO_REQUEST, "stream": True})
    assert pivot["stream"] is True
    assert pivot["stream_options"] == {"include_usage": True}


def test_count_tokens_needs_no_max_tokens() -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hello, world"}],
        "tools": [WEATHER_TOOL],
    }
    pivot = parse_count_tokens_request(orjson.dumps(body))
    assert pivot["messages"] == [{"role": "user", "content": "Hello, world"}]
    assert "max_tokens" not in pivot
    with pytest.raises(InvalidRequestError) as caught:
        parse_count_tokens_request(orjson.dumps({**body, "max_tokens": 5}))
    assert caught.value.param == "max_tokens"
    assert render_count_tokens(14) == b'{"input_tokens":14}'


USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        ({"messages": USER, "max_tokens": 5}, "model"),
        ({"model": MODEL, "messages": USER}, "max_tokens"),
        ({"model": MODEL, "messages": USER, "max_tokens": "5"}, "max_tokens"),
        ({"model": MODEL, "messages": USER, "max_tokens": True}, "max_tokens"),
        ({"model": MODEL, "messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"model": MODEL, "messages": [], "max_tokens": 5}, "messages"),
        (
            {"model": MODEL, "messages": [{"role": "system", "content": "x"}], "max_tokens": 5},
            "messages.0.role",
        ),
        ({"model": MODEL, "messages": [{"role": "user"}], "max_tokens": 5}, "messages.0.content"),
        ({"model": MODEL, "messages": USER, "max_tokens": 5, "temperature": 1.5}, "temperature"),
        ({"model": MODEL, "messages": USER, "max_tokens": 5, "top_k": -1}, "top_k"),
        ({"model": MODEL, "messages": USER, "max_tokens": 5, "frequency_penalty": 1}, "frequency_penalty"),
        (
            {"model": MODEL, "messages": USER, "max_tokens": 5, "metadata": {"session": "x"}},
            "metadata.session",
        ),
        ({"model": MODEL, "messages": USER, "max_tokens": 5, "stop_sequences": [""]}, "stop_sequences.0"),
        (
            {"model": MODEL, "messages": USER, "max_tokens": 5, "tool_choice": {"type": "all"}},
            "tool_choice.type",
        ),
        (
            {
                "model": MODEL,
                "messages": USER,
                "max_tokens": 5,
                "thinking": {"type": "enabled", "budget_tokens": 100},
            },
            "thinking.budget_tokens",
        ),
        (
            {
                "model": MODEL,
                "messages": USER,
                "max_tokens": 2000,
                "thinking": {"type": "enabled", "budget_tokens": 2000},
            },
            "thinking.budget_tokens",
        ),
        (
            {
                "model": MODEL,
                "messages": USER,
                "max_tokens": 5,
                "tools": [{"name": "t", "input_schema": {"type": "array"}}],
            },
            "tools.0.input_schema.type",
        ),
        (
            {
                "model": MODEL,
                "messages": USER,
                "max_tokens": 5,
                "tools": [{"type": "web_search_20250305", "name": "w"}],
            },
            "tools.0.type",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/bmp", "data": "x"},
                            }
                        ],
                    }
                ],
            },
            "messages.0.content.0.source.media_type",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "document"}]}],
            },
            "messages.0.content.0.type",
        ),
    ],
)
def test_bad_requests_name_the_parameter(body: Any, param: str | None) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(InvalidRequestError) as caught:
        parse_messages_request(raw)
    assert caught.value.param == param
    assert caught.value.message


def pivot_completion(
    message: dict[str, Any], finish: str, usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if usage is not None:
        out["usage"] = usage
    return out


def test_render_text_message_with_usage() -> None:
    usage = {
        "prompt_tokens": 19,
        "completion_tokens": 10,
        "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    message = render_message(
        pivot_completion({"role": "assistant", "content": "Hi! My name is Claude."}, "stop", usage)
    )
    assert message == {
        "id": "msg_chatcmpl-123",
        "type": "message",
        "role": "assistant",
        "model": "gpt-4o",
        "content": [{"type": "text", "text": "Hi! My name is Claude."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 15,
            "output_tokens": 10,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 4,
        },
    }


def test_render_tool_calls_and_stop_reasons() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
    }
    message = render_message(
        pivot_completion({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls")
    )
    assert message["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Paris"}}
    ]
    assert message["stop_reason"] == "tool_use"
    assert render_message(pivot_completion({"content": "x"}, "length"))["stop_reason"] == "max_tokens"
    assert render_message(pivot_completion({"content": "x"}, "content_filter"))["stop_reason"] == "refusal"
    matched = pivot_completion({"content": "x"}, "stop")
    matched["choices"][0]["stop_reason"] = "\n\nHuman:"
    rendered = render_message(matched)
    assert (rendered["stop_reason"], rendered["stop_sequence"]) == ("stop_sequence", "\n\nHuman:")


def test_render_takes_exact_usage_from_the_handler() -> None:
    usage = Usage(
        prompt_tokens=30, completion_tokens=7, cached_tokens=10, cache_creation_tokens=5, reported=True
    )
    message = render_message(pivot_completion({"content": "x"}, "stop"), usage)
    assert message["usage"] == {
        "input_tokens": 15,
        "output_tokens": 7,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 10,
    }


def test_render_refuses_arguments_that_are_not_an_object() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1"}}
    with pytest.raises(ProviderError):
        render_message(pivot_completion({"content": None, "tool_calls": [call]}, "tool_calls"))
    with pytest.raises(ProviderError):
        render_message({"id": "x", "choices": []})


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
     (404, "not_found_error"), (413, "request_too_large"), (429, "rate_limit_error"), (500, "api_error"),
     (502, "api_error"), (529, "overloaded_error")],
)  # fmt: skip
def test_errors_in_anthropic_shape(status: int, kind: str) -> None:
    assert orjson.loads(error_body(status, "nope")) == {
        "type": "error",
        "error": {"type": kind, "message": "nope"},
    }


def test_error_for_exceptions() -> None:
    status, body = error_for(InvalidRequestError("max_tokens: Field required", "max_tokens"))
    assert status == 400
    assert orjson.loads(body)["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }
    status, body = error_for(ProviderError(502, "Overloaded", retryable=True, kind="overloaded_error"))
    assert status == 502
    assert orjson.loads(body)["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize("answer", [HELLO_RESPONSE, TOOL_USE_RESPONSE, THINKING_RESPONSE])
def test_anthropic_message_through_the_pivot_is_unchanged(answer: dict[str, Any]) -> None:
    response, usage = AnthropicAdapter().chat_response(orjson.dumps(answer))
    expected = {
        **answer,
        "usage": {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, **answer["usage"]},
    }
    assert render_message(response, usage) == expected
