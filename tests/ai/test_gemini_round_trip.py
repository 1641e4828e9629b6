"""Where the Gemini translation must be lossless: a function call the model made, handed to the client
as a pivot tool call and sent back on the next turn, reaches Gemini with the same arguments and the same
thought signature; a text conversation keeps every message's text; with ``json_schema = "full"`` a
schema reaches Gemini exactly as the client wrote it."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from fastgw.ai.adapter import ProviderTarget
from fastgw.ai.providers.gemini import ADAPTER

TARGET = ProviderTarget(provider="google", model="gemini-2.5-flash")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=12,
)


@given(
    args=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    signature=st.none() | st.text(alphabet="abcdefABCDEF0123456789+/=", min_size=1, max_size=20),
)
def test_a_function_call_comes_back_to_gemini_unchanged(args: dict[str, Any], signature: str | None) -> None:
    part: dict[str, Any] = {"functionCall": {"name": "lookup", "args": args}}
    if signature is not None:
        part["thoughtSignature"] = signature
    answer = {"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP"}]}
    completion, _ = ADAPTER.chat_response(orjson.dumps(answer))
    message = completion["choices"][0]["message"]
    call_id = message["tool_calls"][0]["id"]
    pivot = {
        "messages": [
            {"role": "user", "content": "look it up"},
            message,
            {"role": "tool", "tool_call_id": call_id, "content": '{"found": true}'},
        ]
    }
    body = orjson.loads(ADAPTER.chat_request(pivot, TARGET, False).body)
    assert body["contents"][1] == {"role": "model", "parts": [part]}
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "lookup", "response": {"found": True}}}
    ]


@given(
    st.lists(st.tuples(st.sampled_from(["user", "assistant"]), st.text(min_size=1, max_size=20)), min_size=1)
)
def test_every_turns_text_reaches_gemini_in_order(turns: list[tuple[str, str]]) -> None:
    pivot = {"messages": [{"role": role, "content": text} for role, text in turns]}
    body = orjson.loads(ADAPTER.chat_request(pivot, TARGET, False).body)
    assert [(c["role"], c["parts"][0]["text"]) for c in body["contents"]] == [
        ("model" if role == "assistant" else "user", text) for role, text in turns
    ]


def test_with_full_json_schema_schemas_go_as_they_are() -> None:
    schema = {
        "$defs": {"n": {"type": "integer"}},
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/n"}},
    }
    target = ProviderTarget("google", "gemini-2.5-flash", options={"json_schema": "full"})
    pivot = {
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
    }
    body = orjson.loads(ADAPTER.chat_request(pivot, target, False).body)
    assert body["tools"] == [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": schema}]}]
    assert body["generationConfig"] == {"responseMimeType": "application/json", "responseJsonSchema": schema}
