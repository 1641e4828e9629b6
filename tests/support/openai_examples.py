"""OpenAI Chat Completions and Embeddings examples, written from the shapes of the API reference's examples
(https://platform.openai.com/docs/api-reference/chat/create, .../chat/streaming, .../embeddings/create,
.../models/list): the golden inputs of the OpenAI format's and the openai adapter's tests.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

WEATHER_TOOL: Final[dict[str, Any]] = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}

# Requests: the reference's "Default", "Image input", "Functions", "Logprobs" and "Streaming" examples.
CHAT_DEFAULT: Final[dict[str, Any]] = {
    "model": "gpt-4o",
    "messages": [
        {"role": "developer", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!"},
    ],
}
CHAT_IMAGE: Final[dict[str, Any]] = {
    "model": "gpt-4o",
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What's in this image?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://upload.wikimedia.org/wikipedia/commons/boardwalk.jpg"},
                },
            ],
        }
    ],
    "max_tokens": 300,
}
CHAT_TOOLS: Final[dict[str, Any]] = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "What's the weather like in Boston today?"}],
    "tools": [WEATHER_TOOL],
    "tool_choice": "auto",
}
CHAT_TOOL_RESULT: Final[dict[str, Any]] = {
    "model": "gpt-4o",
    "messages": [
        {"role": "user", "content": "What's the weather like in Boston today?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc123",
                    "type": "function",
                    "function": {"name": "get_current_weather", "arguments": '{"location": "Boston, MA"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc123", "content": "22 degrees and sunny"},
    ],
    "tools": [WEATHER_TOOL],
}
CHAT_LOGPROBS: Final[dict[str, Any]] = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "Hello!"}],
    "logprobs": True,
    "top_logprobs": 2,
}
CHAT_STREAM: Final[dict[str, Any]] = {**CHAT_DEFAULT, "stream": True}
CHAT_JSON_SCHEMA: Final[dict[str, Any]] = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "Extract the event: Alice and Bob meet on Friday."}],
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "calendar_event",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "date": {"type": "string"},
                    "participants": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["name", "date", "participants"],
                "additionalProperties": False,
            },
        },
    },
}

# Responses.
CHAT_RESPONSE: Final[dict[str, Any]] = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1677652288,
    "model": "gpt-4o-mini",
    "system_fingerprint": "fp_44709d6fcb",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "\n\nHello there, how may I assist you today?"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "service_tier": "default",
    "usage": {
        "prompt_tokens": 9,
        "completion_tokens": 12,
        "total_tokens": 21,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
}
TOOL_CALL_RESPONSE: Final[dict[str, Any]] = {
    "id": "chatcmpl-abc123",
    "object": "chat.completion",
    "created": 1699896916,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc123",
                        "type": "function",
                        "function": {
                            "name": "get_current_weather",
                            "arguments": '{\n"location": "Boston, MA"\n}',
                        },
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 82,
        "completion_tokens": 17,
        "total_tokens": 99,
        "prompt_tokens_details": {"cached_tokens": 64},
        "completion_tokens_details": {"reasoning_tokens": 5},
    },
}


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage:
        out["usage"] = None  # with stream_options.include_usage, every chunk but the last has "usage": null
    return out


# The streaming example with include_usage: role chunk, content chunks, finish chunk, usage chunk.
STREAM_CHUNKS: Final[list[dict[str, Any]]] = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Hello"}),
    _chunk({"content": " there"}),
    _chunk({"content": "! How can I help?"}),
    _chunk({}, "stop"),
    {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [],
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": 6,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 3},
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    },
]
# Streamed tool call: the arguments arrive as deltas of one call.
TOOL_STREAM_CHUNKS: Final[list[dict[str, Any]]] = [
    _chunk(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_abc123",
                    "type": "function",
                    "function": {"name": "get_current_weather", "arguments": ""},
                }
            ],
        },
        usage=False,
    ),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"loca'}}]}, usage=False),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'tion": "Boston, MA"}'}}]}, usage=False),
    _chunk({}, "tool_calls", usage=False),
]


def sse(chunks: list[dict[str, Any]], done: bool = True) -> bytes:
    """The wire bytes of a stream, as OpenAI sends it (``data: {...}`` events, then ``data: [DONE]``)."""
    out = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)
    return out + (b"data: [DONE]\n\n" if done else b"")


EMBEDDINGS_REQUEST: Final[dict[str, Any]] = {
    "input": "The food was delicious and the waiter...",
    "model": "text-embedding-ada-002",
    "encoding_format": "float",
}
EMBEDDINGS_RESPONSE: Final[dict[str, Any]] = {
    "object": "list",
    "data": [{"object": "embedding", "embedding": [0.0023064255, -0.009327292, -0.0028842222], "index": 0}],
    "model": "text-embedding-ada-002",
    "usage": {"prompt_tokens": 8, "total_tokens": 8},
}
