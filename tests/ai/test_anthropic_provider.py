"""The anthropic provider adapter: pivot requests as Messages API requests, documented answers as pivot
responses with exact usage, error statuses mapped by the fallback rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest

from fastgw.ai.adapter import InvalidRequestError, ProviderError, ProviderTarget, UnsupportedParameterError
from fastgw.ai.providers.anthropic import AnthropicAdapter, retry_after
from tests.support.anthropic_examples import HELLO_RESPONSE, IMAGE_DATA, MODEL, TOOL_USE_RESPONSE

ADAPTER = AnthropicAdapter()
TARGET = ProviderTarget("claude", MODEL, headers=((b"x-api-key", b"sk-ant-test"),))


def body_of(pivot: dict[str, Any], target: ProviderTarget = TARGET, stream: bool = False) -> dict[str, Any]:
    request = ADAPTER.chat_request(pivot, target, stream)
    assert request.method == "POST"
    assert request.path == "/v1/messages"
    return orjson.loads(request.body)  # type: ignore[no-any-return]


def test_headers_carry_key_version_and_content_type() -> None:
    request = ADAPTER.chat_request(
        {"model": "x", "messages": [{"role": "user", "content": "hi"}]}, TARGET, True
    )
    headers = dict(request.headers)
    assert headers[b"x-api-key"] == b"sk-ant-test"
    assert headers[b"anthropic-version"] == b"2023-06-01"
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"accept"] == b"text/event-stream"
    assert b"anthropic-beta" not in headers


def test_beta_headers_only_when_allowed() -> None:
    pivot = {"messages": [{"role": "user", "content": "hi"}], "anthropic_beta": ["a-1", "b-2"]}
    target = ProviderTarget("claude", MODEL, options={"allowed_betas": "b-2", "anthropic_beta": "own-3"})
    headers = dict(ADAPTER.chat_request(pivot, target, False).headers)
    assert headers[b"anthropic-beta"] == b"own-3,b-2"
    everything = ProviderTarget("claude", MODEL, options={"allowed_betas": "*"})
    assert dict(ADAPTER.chat_request(pivot, everything, False).headers)[b"anthropic-beta"] == b"a-1,b-2"


def test_openai_documented_chat_request() -> None:
    """OpenAI's "Create chat completion" examples (default, image input, functions) for Claude."""
    pivot = {
        "model": "gpt-4o",
        "messages": [
            {"role": "developer", "content": "You are a helpful assistant."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What's in this image?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/boardwalk.jpg", "detail": "low"},
                    },
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{IMAGE_DATA}"}},
                ],
            },
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_current_weather",
                    "description": "Get the current weather in a given location",
                    "parameters": {
                        "type": "object",
                        "properties": {"location": {"type": "string"}},
                        "required": ["location"],
                    },
                },
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_completion_tokens": 30000,
        "stop": "END",
        "temperature": 0.2,
        "user": "user-1234",
        "reasoning_effort": "high",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert body_of(pivot, stream=True) == {
        "model": MODEL,
        "system": "You are a helpful assistant.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What's in this image?"},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/boardwalk.jpg"}},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": IMAGE_DATA},
                    },
                ],
            }
        ],
        "tools": [
            {
                "name": "get_current_weather",
                "description": "Get the current weather in a given location",
                "input_schema": {
                    "type": "object",
                    "properties": {"location": {"type": "string"}},
                    "required": ["location"],
                },
            }
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 24576},
        "max_tokens": 30000,
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "metadata": {"user_id": "user-1234"},
        "stream": True,
    }


def test_tool_messages_join_the_next_user_turn() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    pivot = {
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            {"role": "user", "content": "thanks"},
        ]
    }
    assert body_of(pivot)["messages"] == [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "42"},
                {"type": "text", "text": "thanks"},
            ],
        },
    ]
    assert body_of(pivot)["max_tokens"] == 4096  # Anthropic requires it; OpenAI clients may omit it


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"seed": 7}, "seed"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ],
)
def test_unsupported_parameters_are_refused_unless_dropped(extra: dict[str, Any], param: str) -> None:
    pivot = {"messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(UnsupportedParameterError) as caught:
        ADAPTER.chat_request(pivot, TARGET, False)
    assert caught.value.param == param
    dropping = ProviderTarget("claude", MODEL, drop_unsupported=frozenset({param}))
    assert param not in orjson.loads(ADAPTER.chat_request(pivot, dropping, False).body)
    with pytest.raises(UnsupportedParameterError):
        ADAPTER.embeddings_request({"input": "x"}, TARGET)


def test_untranslatable_messages_are_invalid() -> None:
    bad_image = [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]
    with pytest.raises(InvalidRequestError) as caught:
        ADAPTER.chat_request({"messages": [{"role": "user", "content": bad_image}]}, TARGET, False)
    assert caught.value.param == "messages[0].content[0].image_url.url"
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
    with pytest.raises(InvalidRequestError) as caught:
        ADAPTER.chat_request({"messages": [{"role": "assistant", "tool_calls": [call]}]}, TARGET, False)
    assert caught.value.param == "messages[0].tool_calls[0].function.arguments"


def test_documented_message_into_pivot() -> None:
    response, usage = ADAPTER.chat_response(orjson.dumps(HELLO_RESPONSE))
    response.pop("created")
    assert response == {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "object": "chat.completion",
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi! My name is Claude."},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 2095, "completion_tokens": 503, "total_tokens": 2598},
    }
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reported) == (2095, 503, True)


def test_documented_tool_use_into_pivot_with_cache_usage() -> None:
    response, usage = ADAPTER.chat_response(orjson.dumps(TOOL_USE_RESPONSE))
    choice = response["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll check the current weather in San Francisco for you."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_01A09q90qw90lq917835lq9",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location":"San Francisco, CA"}'},
        }
    ]
    assert (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens) == (1584, 1200, 58)


def test_stop_sequence_and_missing_usage() -> None:
    answer = {**HELLO_RESPONSE, "stop_reason": "stop_sequence", "stop_sequence": "END"}
    del answer["usage"]
    response, usage = ADAPTER.chat_response(orjson.dumps(answer))
    assert response["choices"][0]["stop_reason"] == "END"
    assert "usage" not in response
    assert not usage.reported


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><body>502 Bad Gateway at 10.0.0.7</body></html>",
        b'{"id": "msg_01", "type": "message", "con',
        b"[]",
        b'{"type": "message", "content": [{"type": "text"}]}',
        b'{"type": "error", "error": {}}',
    ],
)
def test_malformed_answers_are_provider_errors(body: bytes) -> None:
    with pytest.raises(ProviderError) as caught:
        ADAPTER.chat_response(body)
    assert caught.value.status == 502
    assert "10.0.0.7" not in caught.value.message


def test_an_error_object_in_a_200_is_the_providers_message_masked_and_no_malformed_answer() -> None:
    """Not a kind that falls back to another target (adapter.UNUSABLE_ANSWERS): as OpenAI's error in a 200."""
    body = b'{"type": "error", "error": {"type": "invalid_request_error", "message": "too long at 10.0.0.7"}}'
    with pytest.raises(ProviderError) as caught:
        ADAPTER.chat_response(body)
    assert (caught.value.status, caught.value.kind) == (502, "provider_error")
    assert caught.value.message.startswith("too long at") and "10.0.0.7" not in caught.value.message


@pytest.mark.parametrize(
    ("status", "body", "client_status", "kind", "retryable"),
    [
        (
            400,
            b'{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: required"}}',
            400,
            "invalid_request_error",
            False,
        ),
        (
            401,
            b'{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}',
            401,
            "authentication_error",
            False,
        ),
        (
            429,
            b'{"type":"error","error":{"type":"rate_limit_error","message":"Rate limited"}}',
            429,
            "rate_limit_error",
            True,
        ),
        (
            500,
            b'{"type":"error","error":{"type":"api_error","message":"Internal server error"}}',
            502,
            "api_error",
            True,
        ),
        (
            529,
            b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
            502,
            "overloaded_error",
            True,
        ),
        (503, b"<html>Service Unavailable at 10.1.2.3</html>", 502, "api_error", True),
        (  # the provider's own timeout: falls back as a 5xx does, a 504 to the client as on every adapter
            408,
            b'{"type":"error","error":{"type":"timeout_error","message":"Request timed out"}}',
            504,
            "timeout_error",
            True,
        ),
        (
            500,
            b'{"type":"error","error":{"type":"api_error","message":"upstream 10.1.2.3:80 https://10.1.2.3/x"}}',
            502,
            "api_error",
            True,
        ),
        (  # IPv6 masked too: the message goes through provider_errors.error_message, as every adapter's
            503,
            b'{"type":"error","error":{"type":"api_error","message":"upstream [fd00::1]:443 refused"}}',
            502,
            "api_error",
            True,
        ),
    ],
)
def test_error_mapping(status: int, body: bytes, client_status: int, kind: str, retryable: bool) -> None:
    error = ADAPTER.error(status, {"retry-after": "3"}, body)
    assert (error.status, error.kind, error.retryable, error.provider_status) == (
        client_status,
        kind,
        retryable,
        status,
    )
    assert error.retry_after == (3.0 if retryable else None)
    assert "10.1.2.3" not in error.message and "fd00::1" not in error.message


def test_retry_after_sources() -> None:
    now = 1_900_000_000.0
    assert retry_after({"retry-after": "12"}, now) == 12.0
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now) == 0.0
    reset = {
        "anthropic-ratelimit-requests-remaining": "10",
        "anthropic-ratelimit-requests-reset": "2030-03-17T17:46:50Z",
        "anthropic-ratelimit-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": "2030-03-17T17:46:45Z",
    }
    base = datetime.fromisoformat("2030-03-17T17:46:40+00:00").timestamp()
    assert retry_after(reset, base) == 5.0  # the exhausted limit's reset, not the later one
    assert retry_after({}, now) is None


def test_count_tokens_request_and_answer() -> None:
    pivot = {"messages": [{"role": "user", "content": "Hello, world"}], "max_tokens": 100, "temperature": 0.5}
    request = ADAPTER.count_tokens_request(pivot, TARGET)
    assert request.path == "/v1/messages/count_tokens"
    assert orjson.loads(request.body) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hello, world"}],
    }
    assert ADAPTER.count_tokens_response(b'{"input_tokens": 14}') == 14
    with pytest.raises(ProviderError):
        ADAPTER.count_tokens_response(b'{"tokens": 14}')


def test_capabilities() -> None:
    caps = ADAPTER.capabilities
    assert (caps.tools, caps.vision, caps.count_tokens) == (True, True, True)
    assert (caps.n, caps.logprobs, caps.embeddings, caps.json_schema) == (False, False, False, False)


def test_thinking_fits_inside_max_tokens() -> None:
    hi = [{"role": "user", "content": "hi"}]
    body = body_of({"messages": hi, "reasoning_effort": "high"})
    assert (body["thinking"]["budget_tokens"], body["max_tokens"]) == (24576, 24576 + 4096)
    body = body_of({"messages": hi, "reasoning_effort": "medium", "max_completion_tokens": 5000})
    assert (body["thinking"]["budget_tokens"], body["max_tokens"]) == (4999, 5000)
    body = body_of({"messages": hi, "reasoning_effort": "low", "max_tokens": 20000})
    assert (body["thinking"]["budget_tokens"], body["max_tokens"]) == (1024, 20000)
    with pytest.raises(InvalidRequestError) as caught:
        ADAPTER.chat_request({"messages": hi, "reasoning_effort": "low", "max_tokens": 1000}, TARGET, False)
    assert caught.value.param == "max_tokens"
    assert "thinking" not in body_of({"messages": hi, "reasoning_effort": "none"})
