"""An Anthropic client's request, through the pivot, reaches an Anthropic provider unchanged: text,
system (string or blocks), multi-turn, images, tools, tool_choice, tool use and results, thinking blocks,
stop sequences, sampling parameters, metadata and cache breakpoints (hypothesis)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.ai.adapter import ProviderTarget
from fastgw.ai.formats.anthropic import parse_count_tokens_request, parse_messages_request
from fastgw.ai.pivot_extensions import strip_extensions
from fastgw.ai.providers.anthropic import AnthropicAdapter

MODEL = "claude-sonnet-4-20250514"
TARGET = ProviderTarget("claude", MODEL)
ADAPTER = AnthropicAdapter()

text = st.text(max_size=12)
word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10)
cache = st.sampled_from([{}, {"cache_control": {"type": "ephemeral"}}])
json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def text_block(draw: st.DrawFn) -> dict[str, Any]:
    return {"type": "text", "text": draw(text), **draw(cache)}


@st.composite
def image_block(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        data = draw(st.text(alphabet="ABCDEFabcdef0123456789+/=", min_size=1, max_size=16))
        media = draw(st.sampled_from(["image/jpeg", "image/png", "image/gif", "image/webp"]))
        source = {"type": "base64", "media_type": media, "data": data}
    else:
        source = {"type": "url", "url": f"https://images.example/{draw(word)}.png"}
    return {"type": "image", "source": source, **draw(cache)}


@st.composite
def tool_result(draw: st.DrawFn) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": f"toolu_{draw(word)}"}
    block["content"] = draw(text | st.lists(text_block() | image_block(), max_size=2))
    if draw(st.booleans()):
        block["is_error"] = draw(st.booleans())
    return {**block, **draw(cache)}


@st.composite
def user_turn(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        return {"role": "user", "content": draw(text)}
    results = draw(st.lists(tool_result(), max_size=2))  # tool results first, as Anthropic requires
    parts = draw(st.lists(text_block() | image_block(), max_size=3))
    return {"role": "user", "content": results + parts}


@st.composite
def assistant_turn(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        return {"role": "assistant", "content": draw(text)}
    thinking = draw(
        st.lists(
            st.builds(lambda t, s: {"type": "thinking", "thinking": t, "signature": s}, text, word)
            | st.builds(lambda d: {"type": "redacted_thinking", "data": d}, word),
            max_size=2,
        )
    )
    texts = draw(st.lists(text_block(), max_size=2))
    calls = draw(
        st.lists(
            st.builds(
                lambda i, n, a, c: {"type": "tool_use", "id": f"toolu_{i}", "name": n, "input": a, **c},
                word,
                word,
                st.dictionaries(text, json_value, max_size=3),
                cache,
            ),
            max_size=2,
        )
    )
    return {"role": "assistant", "content": thinking + texts + calls}


@st.composite
def tool_definition(draw: st.DrawFn) -> dict[str, Any]:
    tool: dict[str, Any] = {"name": draw(word)}
    if draw(st.booleans()):
        tool["description"] = draw(text)
    properties = draw(
        st.dictionaries(word, st.sampled_from([{"type": "string"}, {"type": "integer"}]), max_size=3)
    )
    tool["input_schema"] = {"type": "object", "properties": properties}
    return {**tool, **draw(cache)}


@st.composite
def messages_request(draw: st.DrawFn) -> dict[str, Any]:
    turns = []
    for i in range(draw(st.integers(1, 6))):
        turns.append(draw(user_turn() if i % 2 == 0 else assistant_turn()))
    request: dict[str, Any] = {"model": MODEL, "max_tokens": draw(st.integers(1, 200_000)), "messages": turns}
    system = draw(
        st.none() | st.text(min_size=1, max_size=12) | st.lists(text_block(), min_size=1, max_size=2)
    )
    if system is not None:
        request["system"] = system
    if draw(st.booleans()):
        request["tools"] = draw(st.lists(tool_definition(), min_size=1, max_size=3))
        choice = draw(
            st.sampled_from(
                [{"type": "auto"}, {"type": "any"}, {"type": "none"}, {"type": "tool", "name": "t"}]
            )
        )
        if choice["type"] != "none" and draw(st.booleans()):
            choice["disable_parallel_tool_use"] = draw(st.booleans())
        request["tool_choice"] = choice
    optional = {
        "stop_sequences": st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4),
        "temperature": st.floats(0, 1),
        "top_p": st.floats(0, 1),
        "top_k": st.integers(0, 500),
        "metadata": st.builds(lambda u: {"user_id": u}, text),
        "thinking": st.builds(lambda b: {"type": "enabled", "budget_tokens": b}, st.integers(1024, 64_000)),
        "stream": st.booleans(),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            request[name] = draw(strategy)
    if "thinking" in request:  # Anthropic: the budget is part of max_tokens
        request["max_tokens"] = max(request["max_tokens"], request["thinking"]["budget_tokens"] + 1)
    return request


@settings(max_examples=300, deadline=None)
@given(messages_request())
def test_anthropic_request_reaches_anthropic_unchanged(request: dict[str, Any]) -> None:
    pivot = parse_messages_request(orjson.dumps(request))
    stream = bool(request.get("stream"))
    sent = orjson.loads(ADAPTER.chat_request(pivot, TARGET, stream).body)
    expected = dict(request)
    if not stream:
        expected.pop("stream", None)
    assert sent == expected


@settings(max_examples=100, deadline=None)
@given(messages_request())
def test_count_tokens_request_reaches_anthropic_unchanged(request: dict[str, Any]) -> None:
    shared = {
        k: v
        for k, v in request.items()
        if k in ("model", "messages", "system", "tools", "tool_choice", "thinking")
    }
    pivot = parse_count_tokens_request(orjson.dumps(shared))
    assert orjson.loads(ADAPTER.count_tokens_request(pivot, TARGET).body) == shared


@settings(max_examples=100, deadline=None)
@given(messages_request())
def test_stripped_pivot_has_no_hint_fields(request: dict[str, Any]) -> None:
    pivot = strip_extensions(parse_messages_request(orjson.dumps(request), beta="x-1"))
    raw = orjson.dumps(pivot).decode()
    for name in ("cache_control", "thinking_blocks", "is_error", "anthropic_beta"):
        assert f'"{name}"' not in raw
