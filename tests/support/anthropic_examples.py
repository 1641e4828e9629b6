"""Anthropic Messages API examples as its reference documents them ("Messages", "Tool use", "Vision",
"Streaming messages", "Extended thinking"), shared by the format and provider golden tests."""

from __future__ import annotations

import json
from typing import Any

MODEL = "claude-sonnet-4-20250514"

HELLO_REQUEST: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Hello, world"}],
}
HELLO_RESPONSE: dict[str, Any] = {
    "content": [{"text": "Hi! My name is Claude.", "type": "text"}],
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "model": MODEL,
    "role": "assistant",
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "type": "message",
    "usage": {"input_tokens": 2095, "output_tokens": 503},
}

WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}
        },
        "required": ["location"],
    },
}
TOOL_USE_RESPONSE: dict[str, Any] = {
    "id": "msg_01Aq9w938a90dw8q",
    "type": "message",
    "model": MODEL,
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "role": "assistant",
    "content": [
        {"type": "text", "text": "I'll check the current weather in San Francisco for you."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"location": "San Francisco, CA"},
        },
    ],
    "usage": {
        "input_tokens": 384,
        "output_tokens": 58,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 1200,
    },
}
THINKING_RESPONSE: dict[str, Any] = {
    "id": "msg_01ThinkingExample",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [
        {
            "type": "thinking",
            "thinking": "To approach this, let me think about prime numbers.",
            "signature": "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG/UvLEczmEsUjavL",
        },
        {
            "type": "redacted_thinking",
            "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP",
        },
        {"type": "text", "text": "Yes, there are infinitely many prime numbers such that..."},
    ],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 40,
        "output_tokens": 300,
        "cache_creation_input_tokens": 2,
        "cache_read_input_tokens": 8,
    },
}

# The second turn of the tool-use example: the assistant's tool call and the user's tool result.
TOOL_RESULT_REQUEST: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 1024,
    "tools": [WEATHER_TOOL],
    "tool_choice": {"type": "auto"},
    "messages": [
        {"role": "user", "content": "What's the weather like in San Francisco?"},
        {"role": "assistant", "content": TOOL_USE_RESPONSE["content"]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                    "content": "15 degrees",
                }
            ],
        },
    ],
}

IMAGE_DATA = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
VISION_REQUEST: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 1024,
    "system": [{"type": "text", "text": "You describe images.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": IMAGE_DATA},
                },
                {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/ant.jpg"}},
                {"type": "text", "text": "Describe these images."},
            ],
        }
    ],
    "stop_sequences": ["\n\nHuman:"],
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 40,
    "metadata": {"user_id": "13803d75-b4b5-4c3e-b2a2-6f21399b021b"},
}


def sse(*events: tuple[str, str]) -> bytes:
    return b"".join(f"event: {name}\ndata: {data}\n\n".encode() for name, data in events)


# "Streaming messages", basic streaming request.
TEXT_STREAM = sse(
    (
        "message_start",
        '{"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": '
        '"message", "role": "assistant", "content": [], "model": "claude-opus-4-20250514", "stop_reason": '
        'null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}',
    ),
    (
        "content_block_start",
        '{"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}',
    ),
    ("ping", '{"type": "ping"}'),
    (
        "content_block_delta",
        '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}',
    ),
    (
        "content_block_delta",
        '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}',
    ),
    ("content_block_stop", '{"type": "content_block_stop", "index": 0}'),
    (
        "message_delta",
        '{"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, '
        '"usage": {"output_tokens": 15}}',
    ),
    ("message_stop", '{"type": "message_stop"}'),
)

# "Streaming messages", streaming request with tool use (abridged to its distinct events).
TOOL_STREAM = sse(
    (
        "message_start",
        '{"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message",'
        '"role":"assistant","model":"claude-opus-4-20250514","stop_sequence":null,"usage":{"input_tokens":472,'
        '"output_tokens":2},"content":[],"stop_reason":null}}',
    ),
    (
        "content_block_start",
        '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
    ),
    ("ping", '{"type": "ping"}'),
    (
        "content_block_delta",
        '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}',
    ),
    (
        "content_block_delta",
        '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", let\'s check"}}',
    ),
    ("content_block_stop", '{"type":"content_block_stop","index":0}'),
    (
        "content_block_start",
        '{"type":"content_block_start","index":1,"content_block":{"type":"tool_use",'
        '"id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}',
    ),
    (
        "content_block_delta",
        '{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}',
    ),
    (
        "content_block_delta",
        '{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\":"}}',
    ),
    (
        "content_block_delta",
        '{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
        '"partial_json":" \\"San Francisco, CA\\"}"}}',
    ),
    ("content_block_stop", '{"type":"content_block_stop","index":1}'),
    (
        "message_delta",
        '{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}',
    ),
    ("message_stop", '{"type":"message_stop"}'),
)

# "Extended thinking", streaming with thinking (abridged).
THINKING_STREAM = sse(
    (
        "message_start",
        '{"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant", '
        '"content": [], "model": "claude-sonnet-4-20250514", "stop_reason": null, "stop_sequence": null, '
        '"usage": {"input_tokens": 50, "output_tokens": 1, "cache_read_input_tokens": 10, '
        '"cache_creation_input_tokens": 5}}}',
    ),
    (
        "content_block_start",
        '{"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}',
    ),
    (
        "content_block_delta",
        '{"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", '
        '"thinking": "Let me solve this"}}',
    ),
    (
        "content_block_delta",
        '{"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", '
        '"signature": "EqQBCgIYAhIM1gbcDa9GJwZA"}}',
    ),
    ("content_block_stop", '{"type": "content_block_stop", "index": 0}'),
    (
        "content_block_start",
        '{"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}',
    ),
    (
        "content_block_delta",
        '{"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", '
        '"text": "27 * 453 = 12,231"}}',
    ),
    ("content_block_stop", '{"type": "content_block_stop", "index": 1}'),
    (
        "message_delta",
        '{"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, '
        '"usage": {"output_tokens": 100}}',
    ),
    ("message_stop", '{"type": "message_stop"}'),
)


def message_stream(message: dict[str, Any], piece: int = 5) -> bytes:
    """The event stream Anthropic sends for ``message`` (a complete Messages answer): each text, thinking
    and tool input cut into ``piece``-character deltas, usage split between message_start and
    message_delta as Anthropic splits it."""
    usage = dict(message["usage"])
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**usage, "output_tokens": 1}
    events = [("message_start", {"type": "message_start", "message": start}), ("ping", {"type": "ping"})]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        empty = {"text": {"type": "text", "text": ""}, "thinking": {"type": "thinking", "thinking": ""}}
        first = empty.get(kind) or ({**block, "input": {}} if kind == "tool_use" else block)
        events.append(
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": first})
        )
        if kind == "tool_use":
            deltas = [
                ("input_json_delta", "partial_json", p) for p in _cut(json.dumps(block["input"]), piece)
            ]
        elif kind == "text":
            deltas = [("text_delta", "text", p) for p in _cut(block["text"], piece)]
        elif kind == "thinking":
            deltas = [("thinking_delta", "thinking", p) for p in _cut(block["thinking"], piece)]
            deltas.append(("signature_delta", "signature", block["signature"]))
        else:
            deltas = []
        for delta_type, field, value in deltas:
            delta = {"type": delta_type, field: value}
            events.append(
                ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    end_usage = {"output_tokens": usage["output_tokens"]}
    events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": end_usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events)


def _cut(text: str, piece: int) -> list[str]:
    return [text[i : i + piece] for i in range(0, len(text), piece)]
