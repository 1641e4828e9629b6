"""Gemini answers to pivot responses and chunks: golden tests from the response shapes in Gemini's API
reference (GenerateContentResponse, usageMetadata, function calls, prompt feedback, google.rpc errors),
the stream translator fed at every chunking hypothesis finds, and every malformed answer."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgw.ai.adapter import ProviderError
from fastgw.ai.providers.gemini import ADAPTER
from fastgw.ai.providers.gemini_response import GeminiStreamTranslator, chat_completion

# ai.google.dev/api/generate-content#v1beta.GenerateContentResponse, as the text-generation guide shows it
TEXT_ANSWER = {
    "candidates": [
        {
            "content": {
                "parts": [{"text": "AI learns patterns from data to make predictions."}],
                "role": "model",
            },
            "finishReason": "STOP",
            "avgLogprobs": -0.12,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 8,
        "candidatesTokenCount": 12,
        "totalTokenCount": 54,
        "cachedContentTokenCount": 3,
        "thoughtsTokenCount": 30,
        "toolUsePromptTokenCount": 4,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}],
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "abc123",
}


def test_text_answer_golden_with_exact_usage() -> None:
    completion, usage = chat_completion(orjson.dumps(TEXT_ANSWER), created=1700000000)
    assert completion == {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gemini-2.5-flash",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "AI learns patterns from data to make predictions.",
                },
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 42,
            "total_tokens": 54,
            "prompt_tokens_details": {"cached_tokens": 3},
            "completion_tokens_details": {"reasoning_tokens": 30},
        },
    }
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.reasoning_tokens) == (
        12,
        42,
        3,
        30,
    )
    assert usage.total_tokens == TEXT_ANSWER["usageMetadata"]["totalTokenCount"]  # type: ignore[index]
    assert usage.reported


def test_function_call_answer_golden() -> None:
    # ai.google.dev/gemini-api/docs/function-calling: the model asks for schedule_meeting (and, in
    # parallel, a second call); thoughts come back as reasoning_content
    answer = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Let me check the calendars.", "thought": True},
                        {
                            "functionCall": {
                                "name": "schedule_meeting",
                                "args": {"attendees": ["Bob", "Alice"], "date": "2025-03-14"},
                            },
                            "thoughtSignature": "c2ln",
                        },
                        {"functionCall": {"name": "notify", "args": {}, "id": "gem-2"}},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "responseId": "r9",
    }
    completion, usage = ADAPTER.chat_response(orjson.dumps(answer))
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "reasoning_content": "Let me check the calendars.",
        "tool_calls": [
            {
                "id": "call_r9_0",
                "type": "function",
                "function": {
                    "name": "schedule_meeting",
                    "arguments": '{"attendees":["Bob","Alice"],"date":"2025-03-14"}',
                },
                "extra_content": {"google": {"thought_signature": "c2ln"}},
            },
            {"id": "gem-2", "type": "function", "function": {"name": "notify", "arguments": "{}"}},
        ],
    }
    assert not usage.reported and "usage" not in completion


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("OTHER", "stop"),
        ("SOMETHING_NEW", "stop"),
    ],
)
def test_finish_reasons(reason: str, expected: str) -> None:
    answer = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]}
    assert ADAPTER.chat_response(orjson.dumps(answer))[0]["choices"][0]["finish_reason"] == expected


def test_a_blocked_prompt_is_an_empty_filtered_answer() -> None:
    answer = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5},
    }
    completion, usage = ADAPTER.chat_response(orjson.dumps(answer))
    assert completion["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": ""},
            "finish_reason": "content_filter",
            "logprobs": None,
        }
    ]
    assert (usage.prompt_tokens, usage.completion_tokens) == (5, 0)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><body>502 Bad Gateway</body></html>",
        b'{"candidates": [',
        b"[1, 2]",
        b'{"candidates": "x"}',
        b"{}",
        b'{"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]}',
        b'{"candidates": [{"index": "0", "finishReason": "STOP"}]}',
    ],
)
def test_malformed_answers_are_a_502(body: bytes) -> None:
    with pytest.raises(ProviderError) as caught:
        ADAPTER.chat_response(body)
    assert caught.value.status == 502
    assert caught.value.message.startswith("the gemini provider sent a malformed answer")


# --- streams ------------------------------------------------------------------------------------------


def sse(*events: Any) -> bytes:
    return b"".join(b"data: " + orjson.dumps(event) + b"\r\n\r\n" for event in events)


USAGE_SO_FAR = {"promptTokenCount": 9, "candidatesTokenCount": 2, "totalTokenCount": 11}
FINAL_USAGE = {
    "promptTokenCount": 9,
    "candidatesTokenCount": 5,
    "thoughtsTokenCount": 7,
    "totalTokenCount": 21,
}
STREAM = sse(
    {
        "candidates": [{"content": {"parts": [{"text": "Hello"}], "role": "model"}, "index": 0}],
        "usageMetadata": USAGE_SO_FAR,
        "modelVersion": "gemini-2.0-flash",
        "responseId": "s1",
    },
    {
        "candidates": [{"content": {"parts": [{"text": " wörld"}], "role": "model"}, "index": 0}],
        "usageMetadata": USAGE_SO_FAR,
        "modelVersion": "gemini-2.0-flash",
        "responseId": "s1",
    },
    {
        "candidates": [
            {
                "content": {
                    "parts": [{"functionCall": {"name": "lookup", "args": {"q": "x"}}}],
                    "role": "model",
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": FINAL_USAGE,
        "modelVersion": "gemini-2.0-flash",
        "responseId": "s1",
    },
)


def chunk(choice: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-s1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "gemini-2.0-flash",
        "choices": [choice],
    }


EXPECTED = [
    chunk(
        {
            "index": 0,
            "delta": {"role": "assistant", "content": "Hello"},
            "finish_reason": None,
            "logprobs": None,
        }
    ),
    chunk({"index": 0, "delta": {"content": " wörld"}, "finish_reason": None, "logprobs": None}),
    chunk(
        {
            "index": 0,
            "delta": {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_s1_0",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q":"x"}'},
                    }
                ]
            },
            "finish_reason": "tool_calls",
            "logprobs": None,
        }
    ),
    {
        "id": "chatcmpl-s1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "gemini-2.0-flash",
        "choices": [],
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": 12,
            "total_tokens": 21,
            "completion_tokens_details": {"reasoning_tokens": 7},
        },
    },
]


def translate(pieces: list[bytes]) -> tuple[list[dict[str, Any]], GeminiStreamTranslator]:
    translator = GeminiStreamTranslator(created=7)
    out: list[dict[str, Any]] = []
    for piece in pieces:
        out.extend(translator.feed(piece))
    out.extend(translator.end())
    return out, translator


def test_stream_golden() -> None:
    chunks, translator = translate([STREAM])
    assert chunks == EXPECTED
    assert (
        translator.usage.prompt_tokens,
        translator.usage.completion_tokens,
        translator.usage.reasoning_tokens,
    ) == (9, 12, 7)


def test_each_event_comes_out_as_soon_as_it_is_complete() -> None:
    translator = GeminiStreamTranslator(created=7)
    first_end = STREAM.index(b"\r\n\r\n") + 4
    assert translator.feed(STREAM[: first_end - 2]) == []  # the data line, not yet the empty line
    assert translator.feed(STREAM[first_end - 2 : first_end]) == EXPECTED[:1]


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_chunking_gives_the_same_chunks_and_usage(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    pieces = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    chunks, translator = translate(pieces)
    assert chunks == EXPECTED
    assert translator.usage.total_tokens == FINAL_USAGE["totalTokenCount"]


def test_two_candidates_stream_side_by_side() -> None:
    events = sse(
        {
            "candidates": [
                {"content": {"parts": [{"text": "a"}]}, "index": 0},
                {"content": {"parts": [{"text": "b"}]}, "index": 1},
            ]
        },
        {
            "candidates": [
                {"content": {"parts": [{"text": "."}]}, "index": 0, "finishReason": "STOP"},
                {"content": {"parts": [{"text": "!"}]}, "index": 1, "finishReason": "MAX_TOKENS"},
            ]
        },
    )
    chunks, _ = translate([events])
    assert [
        (c["choices"][0]["index"], c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks
    ] == [
        (0, {"role": "assistant", "content": "a"}, None),
        (1, {"role": "assistant", "content": "b"}, None),
        (0, {"content": "."}, "stop"),
        (1, {"content": "!"}, "length"),
    ]


@pytest.mark.parametrize(
    "stream",
    [
        sse({"candidates": [{"content": {"parts": [{"text": "no end"}]}}]}),  # no finishReason
        b"",  # nothing at all
        sse(
            {
                "candidates": [
                    {"content": {"parts": [{"text": "x"}]}, "index": 0},
                    {"content": {"parts": [{"text": "y"}]}, "index": 1, "finishReason": "STOP"},
                ]
            }
        ),
    ],
)
def test_a_stream_that_ends_unfinished_is_an_error_on_end(stream: bytes) -> None:
    translator = GeminiStreamTranslator()
    translator.feed(stream)
    with pytest.raises(ProviderError) as caught:
        translator.end()
    assert (caught.value.status, caught.value.kind) == (502, "truncated_stream")


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b'data: {"candidates": [\n\n', "malformed answer: not JSON"),
        (b'data: {"error": {"code": 503, "message": "overloaded"}}\n\n', "gemini: overloaded"),
        (b"data: " + b"a" * (2 << 20), "cut off"),
    ],
)
def test_a_bad_event_is_a_provider_error(stream: bytes, message: str) -> None:
    with pytest.raises(ProviderError) as caught:
        GeminiStreamTranslator().feed(stream)
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("error", "status", "retryable"),
    [
        ({"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}, 502, True),
        ({"code": 500, "message": "internal", "status": "INTERNAL"}, 502, True),
        ({"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}, 429, True),
        ({"code": 400, "message": "bad field", "status": "INVALID_ARGUMENT"}, 400, False),
        ({"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}, 403, False),
        ({"message": "no code"}, 502, False),
        ({"code": True, "message": "a bool is no code"}, 502, False),
    ],
)
def test_an_error_object_in_a_200_is_judged_by_its_code(
    error: dict[str, object], status: int, retryable: bool
) -> None:
    """Google's error in a 200, whole or as a stream event: a 429 or 5xx code falls back like that status,
    another 4xx is the request's own, and one without a code is not retried (as OpenAI's)."""
    whole = orjson.dumps({"error": error})
    for raise_it in (
        lambda: chat_completion(whole),
        lambda: GeminiStreamTranslator().feed(b"data: " + whole + b"\n\n"),
    ):
        with pytest.raises(ProviderError) as caught:
            raise_it()
        assert (caught.value.status, caught.value.retryable) == (status, retryable)
        assert caught.value.message == f"gemini: {error['message']}"
