"""Anthropic streams both ways: the provider's documented event streams into pivot chunks, pivot chunks
into the events an Anthropic client reads; the same events and usage whatever the chunk boundaries."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.ai.adapter import ProviderError
from fastgw.ai.formats.anthropic import AnthropicStreamWriter, error_event
from fastgw.ai.providers.anthropic import AnthropicAdapter
from fastgw.codec.sse import SseParser
from tests.support.anthropic_examples import TEXT_STREAM, THINKING_STREAM, TOOL_STREAM, sse


def translate(stream: bytes, cuts: list[int] | None = None) -> tuple[list[dict[str, Any]], Any]:
    translator = AnthropicAdapter().chat_stream()
    pieces = [stream] if cuts is None else split(stream, cuts)
    chunks = [chunk for piece in pieces for chunk in translator.feed(piece)]
    chunks += translator.end()
    for chunk in chunks:
        chunk.pop("created")
    return chunks, translator.usage


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def deltas(chunks: list[dict[str, Any]]) -> list[Any]:
    return [
        (c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) if c["choices"] else c["usage"]
        for c in chunks
    ]


def test_text_stream_into_pivot_chunks() -> None:
    chunks, usage = translate(TEXT_STREAM)
    assert chunks[0]["id"] == "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[0]["model"] == "claude-opus-4-20250514"
    assert deltas(chunks) == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hello"}, None),
        ({"content": "!"}, None),
        ({}, "stop"),
        {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40},
    ]
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reported) == (25, 15, True)


def test_tool_stream_into_tool_call_deltas() -> None:
    chunks, usage = translate(TOOL_STREAM)
    assert deltas(chunks)[3:] == [
        (
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            },
            None,
        ),
        ({"tool_calls": [{"index": 0, "function": {"arguments": ""}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": '{"location":'}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": ' "San Francisco, CA"}'}}]}, None),
        ({}, "tool_calls"),
        {"prompt_tokens": 472, "completion_tokens": 89, "total_tokens": 561},
    ]
    assert usage.completion_tokens == 89


def test_thinking_stream_with_cache_usage() -> None:
    chunks, usage = translate(THINKING_STREAM)
    assert deltas(chunks)[1:3] == [
        ({"reasoning_content": "Let me solve this"}, None),
        (
            {
                "thinking_blocks": [
                    {"type": "thinking", "thinking": "", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA"}
                ]
            },
            None,
        ),
    ]
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_creation_tokens) == (65, 10, 5)
    assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 10, "cache_creation_tokens": 5}


@settings(max_examples=150, deadline=None)
@given(
    stream=st.sampled_from([TEXT_STREAM, TOOL_STREAM, THINKING_STREAM]),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=40),
)
def test_any_chunk_boundaries_give_the_same_chunks_and_usage(stream: bytes, cuts: list[int]) -> None:
    whole, usage = translate(stream)
    pieces, split_usage = translate(stream, cuts)
    assert pieces == whole
    assert split_usage == usage


@settings(max_examples=100, deadline=None)
@given(
    stream=st.sampled_from([TEXT_STREAM, TOOL_STREAM, THINKING_STREAM]),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=40),
)
def test_anthropic_to_pivot_to_anthropic_keeps_every_event(stream: bytes, cuts: list[int]) -> None:
    translator = AnthropicAdapter().chat_stream()
    writer = AnthropicStreamWriter(usage=translator.usage)
    out = b"".join(writer.feed(c) for piece in split(stream, cuts) for c in translator.feed(piece))
    out += b"".join(writer.feed(c) for c in translator.end()) + writer.end()
    assert events(out) == [e for e in events(stream) if e[0] != "ping"]


def events(stream: bytes) -> list[tuple[str, Any]]:
    """The events as (type, payload), with message_start's output count (1 at Anthropic, 0 here: nothing
    generated yet) and message_delta's repeated input counts left out."""
    out = []
    for event in SseParser().feed(stream):
        payload = orjson.loads(event.data)
        if payload["type"] == "message_start":
            payload["message"]["usage"].pop("output_tokens")
            for name in ("cache_read_input_tokens", "cache_creation_input_tokens"):
                payload["message"]["usage"].setdefault(name, 0)
        if payload["type"] == "message_delta":
            payload["usage"] = {"output_tokens": payload["usage"]["output_tokens"]}
        if payload["type"] == "content_block_delta" and payload["delta"].get("partial_json") == "":
            continue  # an empty argument piece carries nothing; the pivot does not repeat it
        out.append((event.event, payload))
    return out


def openai_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def test_openai_chunks_into_anthropic_events() -> None:
    chunks = [
        openai_chunk({"role": "assistant", "content": ""}),
        openai_chunk({"content": "Hello"}),
        openai_chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": ""},
                    }
                ]
            }
        ),
        openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        openai_chunk({}, "tool_calls"),
        {
            **openai_chunk({}),
            "choices": [],
            "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21},
        },
    ]
    writer = AnthropicStreamWriter(model="claude-public")
    out = b"".join(writer.feed(c) for c in chunks) + writer.end()
    got = [(e.event, orjson.loads(e.data)) for e in SseParser().feed(out)]
    assert [name for name, _ in got] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert got[0][1]["message"]["model"] == "claude-public"
    assert got[0][1]["message"]["id"] == "msg_chatcmpl-123"
    assert got[4][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "f", "input": {}}
    assert got[6][1] == {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": " 1}"},
    }
    assert got[8][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert got[8][1]["usage"] == {
        "input_tokens": 9,
        "output_tokens": 12,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    assert writer.done


def test_writer_closes_a_stream_without_usage_chunk() -> None:
    writer = AnthropicStreamWriter()
    out = writer.feed(openai_chunk({"content": "x"})) + writer.feed(openai_chunk({}, "length")) + writer.end()
    got = [orjson.loads(e.data) for e in SseParser().feed(out)]
    assert got[-2]["delta"]["stop_reason"] == "max_tokens"
    assert got[-1] == {"type": "message_stop"}
    assert writer.end() == b""


def test_error_event_shape() -> None:
    (event,) = SseParser().feed(error_event(529, "Overloaded"))
    assert event.event == "error"
    assert orjson.loads(event.data) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


START = TEXT_STREAM.split(b"event: content_block_start")[0]


@pytest.mark.parametrize(
    ("stream", "status", "words"),
    [
        (TEXT_STREAM.rsplit(b"event: message_stop", 1)[0], 502, "message_stop"),
        (TEXT_STREAM[:-5], 502, "message_stop"),
        (START + b"event: content_block_delta\ndata: {not json\n\n", 502, "not JSON"),
        (
            START
            + sse(("error", '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}')),
            502,
            "Overloaded",
        ),
        (
            START
            + sse(("error", '{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}')),
            429,
            "slow down",
        ),
        (
            sse(
                (
                    "content_block_delta",
                    '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}',
                )
            ),
            502,
            "malformed",
        ),
        (START + b"data: " + b"x" * (10 << 20) + b"\n\n", 502, "exceeds"),
    ],
)
def test_broken_streams_are_provider_errors(stream: bytes, status: int, words: str) -> None:
    translator = AnthropicAdapter().chat_stream()
    with pytest.raises(ProviderError) as caught:
        for cut in range(0, len(stream), 65536):
            translator.feed(stream[cut : cut + 65536])
        translator.end()
    assert caught.value.status == status
    assert words in caught.value.message


def test_overloaded_event_is_retryable() -> None:
    translator = AnthropicAdapter().chat_stream()
    error = sse(("error", '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'))
    with pytest.raises(ProviderError) as caught:
        translator.feed(START + error)
    assert caught.value.retryable
    assert caught.value.kind == "overloaded_error"


def test_reasoning_refusal_and_redacted_thinking_into_blocks() -> None:
    chunks = [
        openai_chunk({"reasoning_content": "thinking..."}),
        openai_chunk({"thinking_blocks": [{"type": "redacted_thinking", "data": "abc"}]}),
        openai_chunk({"refusal": "I can't help with that."}),
        openai_chunk({}, "content_filter"),
    ]
    writer = AnthropicStreamWriter()
    out = b"".join(writer.feed(c) for c in chunks) + writer.end()
    got = [orjson.loads(e.data) for e in SseParser().feed(out)]
    starts = [e["content_block"] for e in got if e["type"] == "content_block_start"]
    assert starts == [
        {"type": "thinking", "thinking": ""},
        {"type": "redacted_thinking", "data": "abc"},
        {"type": "text", "text": ""},
    ]
    stops = [e["index"] for e in got if e["type"] == "content_block_stop"]
    assert stops == [0, 1, 2]
    assert got[-2]["delta"]["stop_reason"] == "refusal"
