"""Anthropic answers of every shape (hypothesis), through the pivot and back: a whole message is rendered
unchanged, and its event stream, cut at any byte boundaries, is re-emitted event for event with the
same usage."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.ai.formats.anthropic import AnthropicStreamWriter, render_message
from fastgw.ai.providers.anthropic import AnthropicAdapter
from fastgw.codec.sse import SseParser
from tests.support.anthropic_examples import message_stream

ADAPTER = AnthropicAdapter()
text = st.text(min_size=1, max_size=30)
word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=10)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
count = st.integers(0, 10**6)


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    thinking = draw(
        st.lists(
            st.builds(
                lambda t, s: {"type": "thinking", "thinking": t, "signature": s}, st.text(max_size=20), word
            )
            | st.builds(lambda d: {"type": "redacted_thinking", "data": d}, word),
            max_size=2,
        )
    )
    texts = draw(st.lists(st.builds(lambda t: {"type": "text", "text": t}, text), max_size=1))
    calls = draw(
        st.lists(
            st.builds(
                lambda i, n, a: {"type": "tool_use", "id": f"toolu_{i}", "name": n, "input": a},
                word,
                word,
                st.dictionaries(st.text(max_size=6), json_value, max_size=3),
            ),
            max_size=2,
        )
    )
    stop_reason = draw(st.sampled_from(["end_turn", "max_tokens", "stop_sequence", "refusal", "tool_use"]))
    usage = {
        "input_tokens": draw(count),
        "output_tokens": draw(count),
        "cache_creation_input_tokens": draw(count),
        "cache_read_input_tokens": draw(count),
    }
    return {
        "id": f"msg_{draw(word)}",
        "type": "message",
        "role": "assistant",
        "model": draw(word),
        "content": thinking + texts + calls,
        "stop_reason": stop_reason,
        "stop_sequence": draw(text) if stop_reason == "stop_sequence" else None,
        "usage": usage,
    }


@settings(max_examples=200, deadline=None)
@given(answers())
def test_a_message_through_the_pivot_is_unchanged(answer: dict[str, Any]) -> None:
    response, usage = ADAPTER.chat_response(orjson.dumps(answer))
    assert render_message(response, usage) == answer


@settings(max_examples=200, deadline=None)
@given(answers(), st.integers(1, 12), st.lists(st.integers(0, 5000), max_size=30))
def test_a_stream_through_the_pivot_keeps_every_event(
    answer: dict[str, Any], piece: int, cuts: list[int]
) -> None:
    stream = message_stream(answer, piece)
    translator = ADAPTER.chat_stream()
    writer = AnthropicStreamWriter(usage=translator.usage)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    out = b""
    for a, b in itertools.pairwise([0, *points, len(stream)]):
        out += b"".join(writer.feed(chunk) for chunk in translator.feed(stream[a:b]))
    out += b"".join(writer.feed(chunk) for chunk in translator.end()) + writer.end()
    assert events(out) == [e for e in events(stream) if e[0] != "ping"]
    _, whole_usage = ADAPTER.chat_response(orjson.dumps(answer))
    assert translator.usage == whole_usage


def events(stream: bytes) -> list[tuple[str, Any]]:
    """(type, payload) per event; message_start's output count (1 at Anthropic: nothing generated yet, 0
    here) and message_delta's input counts (repeated by the writer) left out."""
    out = []
    for event in SseParser().feed(stream):
        payload = orjson.loads(event.data)
        if payload["type"] == "message_start":
            payload["message"]["usage"].pop("output_tokens")
        elif payload["type"] == "message_delta":
            payload["usage"] = {"output_tokens": payload["usage"]["output_tokens"]}
        out.append((event.event, payload))
    return out
