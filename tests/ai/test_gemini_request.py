"""Pivot (OpenAI Chat Completions) requests to Gemini: golden tests built from the shapes in Gemini's
API reference and guides (ai.google.dev: text generation, system instructions, multi-turn chat,
generation config, function calling, structured output, image understanding), and every refusal."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from fastgw.ai.adapter import InvalidRequestError, ProviderTarget, UnsupportedParameterError
from fastgw.ai.providers.gemini import ADAPTER
from fastgw.ai.providers.gemini_schema import MAX_DEPTH

TARGET = ProviderTarget(provider="google", model="gemini-2.0-flash", headers=((b"x-goog-api-key", b"k"),))


def body_of(pivot: dict[str, Any], target: ProviderTarget = TARGET, stream: bool = False) -> Any:
    return orjson.loads(ADAPTER.chat_request(pivot, target, stream).body)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def test_the_request_line_and_headers_of_both_methods() -> None:
    plain = ADAPTER.chat_request({"messages": [user("hi")]}, TARGET, False)
    assert (plain.method, plain.path) == ("POST", "/v1beta/models/gemini-2.0-flash:generateContent")
    assert plain.headers == ((b"x-goog-api-key", b"k"), (b"content-type", b"application/json"))
    streamed = ADAPTER.chat_request({"messages": [user("hi")]}, TARGET, True)
    assert streamed.path == "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    assert streamed.body == plain.body
    versioned = ProviderTarget(
        "g", "models/gemini-1.5-pro", base_path="/google", options={"api_version": "v1"}
    )
    assert ADAPTER.chat_request({"messages": [user("hi")]}, versioned, False).path == (
        "/google/v1/models/gemini-1.5-pro:generateContent"
    )
    assert ADAPTER.credential_headers("secret", {}) == ((b"x-goog-api-key", b"secret"),)


@pytest.mark.parametrize("model", ["../admin", "a/b", "x?alt=json", "", "gemini 2"])
def test_a_model_name_that_is_not_one_path_segment_is_refused(model: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        ADAPTER.chat_request({"messages": [user("hi")]}, ProviderTarget("g", model), False)
    assert caught.value.param == "model"


def test_text_generation_golden() -> None:
    # ai.google.dev/gemini-api/docs/text-generation: "Explain how AI works in a few words"
    assert body_of(
        {"model": "gemini-2.0-flash", "messages": [user("Explain how AI works in a few words")]}
    ) == {"contents": [{"role": "user", "parts": [{"text": "Explain how AI works in a few words"}]}]}


def test_system_and_developer_messages_become_the_system_instruction() -> None:
    pivot = {
        "messages": [
            {"role": "system", "content": "You are a cat."},
            {"role": "developer", "content": [{"type": "text", "text": "Your name is Neko."}]},
            user("Hello there"),
        ]
    }
    assert body_of(pivot) == {
        "systemInstruction": {"parts": [{"text": "You are a cat."}, {"text": "Your name is Neko."}]},
        "contents": [{"role": "user", "parts": [{"text": "Hello there"}]}],
    }


def test_multi_turn_chat_golden() -> None:
    # ai.google.dev/gemini-api/docs/text-generation#multi-turn-conversations
    pivot = {
        "messages": [
            user("Hello"),
            {"role": "assistant", "content": "Great to meet you. What would you like to know?"},
            user("I have two dogs in my house. How many paws are in my house?"),
        ]
    }
    assert body_of(pivot)["contents"] == [
        {"role": "user", "parts": [{"text": "Hello"}]},
        {"role": "model", "parts": [{"text": "Great to meet you. What would you like to know?"}]},
        {"role": "user", "parts": [{"text": "I have two dogs in my house. How many paws are in my house?"}]},
    ]


def test_generation_config_golden() -> None:
    # ai.google.dev/gemini-api/docs/text-generation#configuration-parameters
    pivot = {
        "messages": [user("Explain how AI works")],
        "stop": ["Title"],
        "temperature": 1.0,
        "max_tokens": 800,
        "top_p": 0.8,
        "n": 2,
        "seed": 42,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "reasoning_effort": "low",
        "user": "end-user-1",
        "stream_options": {"include_usage": True},
    }
    assert body_of(pivot)["generationConfig"] == {
        "stopSequences": ["Title"],
        "temperature": 1.0,
        "maxOutputTokens": 800,
        "topP": 0.8,
        "candidateCount": 2,
        "seed": 42,
        "presencePenalty": 0.5,
        "frequencyPenalty": -0.5,
        "thinkingConfig": {"thinkingBudget": 1024},
    }
    assert body_of({"messages": [user("x")], "stop": "END", "max_completion_tokens": 5})[
        "generationConfig"
    ] == {
        "stopSequences": ["END"],
        "maxOutputTokens": 5,
    }


def test_images_inline_and_by_url() -> None:
    png = base64.b64encode(b"\x89PNG fake").decode()
    content = [
        {"type": "text", "text": "Caption this image."},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
    ]
    assert body_of({"messages": [{"role": "user", "content": content}]})["contents"][0]["parts"] == [
        {"text": "Caption this image."},
        {"inlineData": {"mimeType": "image/png", "data": png}},
    ]
    by_url = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
        ]
    }
    with pytest.raises(UnsupportedParameterError) as caught:
        body_of(by_url)
    assert caught.value.param == "messages[0].content[0].image_url"
    assert caught.value.code == "unsupported_parameter"
    allowed = ProviderTarget(
        "g", "gemini-2.0-flash", options={"image_urls": "file_data", "image_url_mime_type": "image/png"}
    )
    assert body_of(by_url, allowed)["contents"][0]["parts"] == [
        {"fileData": {"mimeType": "image/png", "fileUri": "https://x/y.png"}}
    ]


def test_tools_tool_choice_and_a_full_function_calling_turn() -> None:
    # ai.google.dev/gemini-api/docs/function-calling: schedule_meeting, then its result
    parameters = {
        "type": "object",
        "properties": {
            "attendees": {"type": "array", "items": {"type": "string"}, "description": "People to invite"},
            "date": {"type": "string", "description": "Date of the meeting (e.g., '2024-07-29')"},
            "topic": {"type": ["string", "null"]},
        },
        "required": ["attendees", "date"],
        "additionalProperties": False,
    }
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "schedule_meeting", "arguments": '{"date": "2025-03-14"}'},
    }
    pivot = {
        "messages": [
            user("Schedule a meeting with Bob and Alice for 03/14/2025."),
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "scheduled"}'},
            {"role": "tool", "tool_call_id": "call_1", "content": "plain text result"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "schedule_meeting",
                    "description": "Schedules a meeting.",
                    "parameters": parameters,
                    "strict": True,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "schedule_meeting"}},
        "parallel_tool_calls": True,
    }
    body = body_of(pivot)
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "schedule_meeting",
                    "description": "Schedules a meeting.",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {
                            "attendees": {
                                "type": "ARRAY",
                                "items": {"type": "STRING"},
                                "description": "People to invite",
                            },
                            "date": {
                                "type": "STRING",
                                "description": "Date of the meeting (e.g., '2024-07-29')",
                            },
                            "topic": {"type": "STRING", "nullable": True},
                        },
                        "required": ["attendees", "date"],
                    },
                }
            ]
        }
    ]
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["schedule_meeting"]}
    }
    assert body["contents"][1:] == [
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "schedule_meeting", "args": {"date": "2025-03-14"}}}],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "schedule_meeting", "response": {"status": "scheduled"}}},
                {
                    "functionResponse": {
                        "name": "schedule_meeting",
                        "response": {"result": "plain text result"},
                    }
                },
            ],
        },
    ]
    for choice, mode in (("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")):
        assert body_of({**pivot, "tool_choice": choice})["toolConfig"] == {
            "functionCallingConfig": {"mode": mode}
        }


def test_a_thought_signature_handed_out_with_a_call_goes_back_with_it() -> None:
    call = {
        "id": "c",
        "type": "function",
        "function": {"name": "f", "arguments": "{}"},
        "extra_content": {"google": {"thought_signature": "c2ln"}},
    }
    body = body_of({"messages": [user("x"), {"role": "assistant", "tool_calls": [call]}]})
    assert body["contents"][1]["parts"] == [
        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2ln"}
    ]


def test_structured_output_golden() -> None:
    # ai.google.dev/gemini-api/docs/structured-output: a list of recipes
    schema = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "recipeName": {"type": "string"},
                "ingredients": {"type": "array", "items": {"type": "string"}},
            },
            "propertyOrdering": ["recipeName", "ingredients"],
        },
    }
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "recipes", "schema": schema, "strict": True},
    }
    config = body_of({"messages": [user("List a few cookie recipes")], "response_format": response_format})[
        "generationConfig"
    ]
    assert config == {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "ARRAY",
            "items": {
                "type": "OBJECT",
                "properties": {
                    "recipeName": {"type": "STRING"},
                    "ingredients": {"type": "ARRAY", "items": {"type": "STRING"}},
                },
                "propertyOrdering": ["recipeName", "ingredients"],
            },
        },
    }
    json_object = body_of({"messages": [user("x")], "response_format": {"type": "json_object"}})
    assert json_object["generationConfig"] == {"responseMimeType": "application/json"}
    assert "generationConfig" not in body_of({"messages": [user("x")], "response_format": {"type": "text"}})


@pytest.mark.parametrize(
    ("pivot", "param"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"modalities": ["audio"]}, "modalities"),
    ],
)
def test_parameters_gemini_cannot_honour_are_refused_unless_dropped(
    pivot: dict[str, Any], param: str
) -> None:
    with pytest.raises(UnsupportedParameterError) as caught:
        body_of({"messages": [user("x")], **pivot})
    assert caught.value.param == param
    assert caught.value.message == f"'{param}' is not supported by the gemini provider"
    dropping = ProviderTarget("g", "gemini-2.0-flash", drop_unsupported=frozenset({param}))
    assert body_of({"messages": [user("x")], **pivot}, dropping) == {
        "contents": [{"role": "user", "parts": [{"text": "x"}]}]
    }


@pytest.mark.parametrize(
    ("pivot", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "only a system prompt"}]}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": []}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "assistant"}]}, "messages[0]"),
        (
            {"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]},
            "messages[0].tool_call_id",
        ),
        ({"temperature": 3}, "temperature"),
        ({"top_p": "high"}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": True}, "n"),
        ({"seed": 1.5}, "seed"),
        ({"stop": ["a", "b", "c", "d", "e", "f"]}, "stop"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools[0]"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "#/x"}}}]},
            "tools[0].function.parameters.$ref",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "tuple"}}}]},
            "tools[0].function.parameters.type",
        ),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
    ],
)
def test_malformed_requests_get_a_precise_400(pivot: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        body_of({"messages": [user("x")], **pivot})
    assert caught.value.param == param


def test_bad_image_data_and_tool_arguments_are_named() -> None:
    bad_image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,***"}}
    with pytest.raises(InvalidRequestError) as caught:
        body_of({"messages": [{"role": "user", "content": [bad_image]}]})
    assert caught.value.param == "messages[0].content[0].image_url"
    bad_call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1, 2"}}
    with pytest.raises(InvalidRequestError) as caught:
        body_of({"messages": [user("x"), {"role": "assistant", "tool_calls": [bad_call]}]})
    assert caught.value.param == "messages[1].tool_calls[0].function.arguments"


def test_a_schema_nested_too_deep_is_refused_not_recursed() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(MAX_DEPTH + 2):
        schema = {"type": "array", "items": schema}
    with pytest.raises(InvalidRequestError, match="nests deeper"):
        body_of(
            {
                "messages": [user("x")],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
            }
        )
