"""The OpenAI client format: documented requests parse to themselves (the pivot is this format), every bad
body gets OpenAI's 400 naming the parameter, and responses, chunks, errors and model lists render to the
bytes the official SDKs parse."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from fastgw.ai.adapter import InvalidRequestError, ProviderError, UnsupportedParameterError
from fastgw.ai.formats.openai import (
    DONE,
    parse_chat_request,
    parse_embeddings_request,
    render_chunk,
    render_error,
    render_models,
    render_response,
    render_stream_error,
    wants_usage,
)
from fastgw.codec.sse import SseParser, encode_event
from tests.support import openai_examples as ex


@pytest.mark.parametrize(
    "request_body",
    [
        ex.CHAT_DEFAULT,
        ex.CHAT_IMAGE,
        ex.CHAT_TOOLS,
        ex.CHAT_TOOL_RESULT,
        ex.CHAT_LOGPROBS,
        ex.CHAT_STREAM,
        ex.CHAT_JSON_SCHEMA,
        {**ex.CHAT_STREAM, "stream_options": {"include_usage": True}},
        {**ex.CHAT_DEFAULT, "temperature": None, "stop": None, "n": None},  # null means the default
        {**ex.CHAT_DEFAULT, "stop": ["\n", "END"], "seed": 7, "user": "u-1", "reasoning_effort": "low"},
        {**ex.CHAT_DEFAULT, "top_k": 40, "repetition_penalty": 1.1},  # vLLM's extensions are kept
        {**ex.CHAT_DEFAULT, "metadata": {"team": "search"}, "parallel_tool_calls": False},
    ],
)
def test_documented_requests_parse_to_themselves(request_body: dict[str, Any]) -> None:
    assert parse_chat_request(orjson.dumps(request_body)) == request_body


def chat(**changes: Any) -> bytes:
    body = {**ex.CHAT_DEFAULT, **changes}
    return orjson.dumps({k: v for k, v in body.items() if v is not DROP})


DROP = object()
USER = {"role": "user", "content": "hi"}


IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
BAD_SCHEMA = {"type": "object", "properties": {"a": {"type": "strng"}}}


def tool(**function: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "f", **function}}


def say(content: Any, role: str = "user") -> bytes:
    return chat(messages=[{"role": role, "content": content}])


def calls(tool_calls: Any) -> bytes:
    return chat(messages=[USER, {"role": "assistant", "content": None, "tool_calls": tool_calls}])


def json_schema(spec: dict[str, Any]) -> bytes:
    return chat(response_format={"type": "json_schema", "json_schema": spec})


MISSING, TYPE, VALUE = "missing_required_parameter", "invalid_type", "invalid_value"
BAD_FN, BAD_JS = "invalid_function_parameters", "invalid_json_schema"
P0, C0 = "messages[0].content[0].", "messages[1].tool_calls[0]."
BAD_CHAT: list[tuple[bytes, str | None, str | None]] = [
    # (body, param, code)
    (b"{not json", None, "invalid_json"),
    (b"\xff\xfe", None, "invalid_json"),
    (b"", None, "invalid_json"),
    (b"[1, 2]", None, TYPE),
    (chat(model=DROP), "model", MISSING),
    (chat(model=4), "model", TYPE),
    (chat(model=""), "model", VALUE),
    (chat(messages=DROP), "messages", MISSING),
    (chat(messages="hi"), "messages", TYPE),
    (chat(messages=[]), "messages", "empty_array"),
    (chat(messages=["hi"]), "messages[0]", TYPE),
    (chat(messages=[{"content": "hi"}]), "messages[0].role", MISSING),
    (chat(messages=[{"role": "bot", "content": "hi"}]), "messages[0].role", VALUE),
    (chat(messages=[{"role": "user"}]), "messages[0].content", MISSING),
    (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content", TYPE),
    (say([{"text": "x"}]), P0 + "type", MISSING),
    (say([{"type": "video"}]), P0 + "type", VALUE),
    (say([IMAGE], "system"), P0 + "type", VALUE),
    (say([{"type": "image_url", "image_url": {}}]), P0 + "image_url.url", MISSING),
    (say([{"type": "image_url", "image_url": {"url": "x", "detail": "4k"}}]), P0 + "image_url.detail", VALUE),
    (say([{"type": "input_audio", "input_audio": {"data": "AAAA"}}]), P0 + "input_audio.format", MISSING),
    (chat(messages=[USER, {"role": "tool", "content": "22"}]), "messages[1].tool_call_id", MISSING),
    (calls([{"id": "c", "type": "function"}]), C0 + "function", TYPE),
    (calls([{"id": "c", "function": {"name": "f", "arguments": {}}}]), C0 + "function.arguments", TYPE),
    (calls([{"function": {"name": "f", "arguments": "{}"}}]), C0 + "id", MISSING),
    (calls("c"), "messages[1].tool_calls", TYPE),
    (chat(messages=[USER, {"role": "assistant"}]), "messages[1].content", MISSING),
    (chat(messages=[{"role": "user", "content": "hi", "name": 3}]), "messages[0].name", TYPE),
    (chat(stream="yes"), "stream", TYPE),
    (chat(stream_options={"include_usage": True}), "stream_options", VALUE),
    (chat(stream=False, stream_options={"include_usage": True}), "stream_options", VALUE),
    (chat(stream=True, stream_options={"include_usage": "yes"}), "stream_options.include_usage", TYPE),
    (chat(n=0), "n", "integer_below_min_value"),
    (chat(n=129), "n", "integer_above_max_value"),
    (chat(n=1.5), "n", TYPE),
    (chat(n=True), "n", TYPE),
    (chat(temperature=2.5), "temperature", "decimal_above_max_value"),
    (chat(temperature=-0.1), "temperature", "decimal_below_min_value"),
    (chat(temperature="hot"), "temperature", TYPE),
    (chat(top_p=1.01), "top_p", "decimal_above_max_value"),
    (chat(presence_penalty=-3), "presence_penalty", "decimal_below_min_value"),
    (chat(frequency_penalty=2.1), "frequency_penalty", "decimal_above_max_value"),
    (chat(max_tokens=0), "max_tokens", "integer_below_min_value"),
    (chat(max_completion_tokens="many"), "max_completion_tokens", TYPE),
    (chat(seed=1.0), "seed", TYPE),
    (chat(user=1), "user", TYPE),
    (chat(logprobs="yes"), "logprobs", TYPE),
    (chat(top_logprobs=2), "top_logprobs", VALUE),
    (chat(logprobs=True, top_logprobs=21), "top_logprobs", "integer_above_max_value"),
    (chat(reasoning_effort="extreme"), "reasoning_effort", VALUE),
    (chat(stop=5), "stop", TYPE),
    (chat(stop=["a", "b", "c", "d", "e"]), "stop", "array_above_max_length"),
    (chat(stop=["a", 1]), "stop[1]", TYPE),
    (chat(metadata={str(i): "v" for i in range(17)}), "metadata", "object_above_max_properties"),
    (chat(metadata={"k": 1}), "metadata.k", TYPE),
    (chat(metadata={"k": "v" * 513}), "metadata.k", "string_above_max_length"),
    (chat(metadata={"k" * 65: "v"}), "metadata", "string_above_max_length"),
    (chat(tools={}), "tools", TYPE),
    (chat(tools=[]), "tools", "empty_array"),
    (chat(tools=[tool()] * 129), "tools", "array_above_max_length"),
    (chat(tools=[{"type": "retrieval"}]), "tools[0].type", VALUE),
    (chat(tools=[{"type": "function"}]), "tools[0].function", TYPE),
    (chat(tools=[{"type": "function", "function": {}}]), "tools[0].function.name", MISSING),
    (chat(tools=[tool(name="get weather")]), "tools[0].function.name", VALUE),
    (chat(tools=[tool(name="f" * 65)]), "tools[0].function.name", VALUE),
    (chat(tools=[tool(description=3)]), "tools[0].function.description", TYPE),
    (chat(tools=[tool(parameters=[])]), "tools[0].function.parameters", BAD_FN),
    (chat(tools=[tool(parameters={"type": "array"})]), "tools[0].function.parameters", BAD_FN),
    (chat(tools=[tool(parameters=BAD_SCHEMA)]), "tools[0].function.parameters", BAD_FN),
    (chat(tools=[tool(parameters={"properties": []})]), "tools[0].function.parameters", BAD_FN),
    (chat(tools=[tool(parameters={"required": "a"})]), "tools[0].function.parameters", BAD_FN),
    (chat(tool_choice="auto"), "tool_choice", VALUE),
    (chat(tools=[tool()], tool_choice="always"), "tool_choice", VALUE),
    (chat(tools=[tool()], tool_choice={"type": "function", "function": {"name": "g"}}), "tool_choice", VALUE),
    (chat(tools=[tool()], tool_choice={"type": "auto"}), "tool_choice.type", VALUE),
    (chat(tools=[tool()], tool_choice={"type": "function"}), "tool_choice.function", TYPE),
    (chat(response_format="json"), "response_format", TYPE),
    (chat(response_format={"type": "yaml"}), "response_format.type", VALUE),
    (chat(response_format={"type": "json_schema"}), "response_format.json_schema", TYPE),
    (json_schema({"schema": {}}), "response_format.json_schema.name", MISSING),
    (json_schema({"name": "a b"}), "response_format.json_schema.name", VALUE),
    (json_schema({"name": "x", "strict": "yes"}), "response_format.json_schema.strict", TYPE),
    (json_schema({"name": "x", "schema": BAD_SCHEMA}), "response_format.json_schema.schema", BAD_JS),
    (json_schema({"name": "x", "schema": {"type": "string"}}), "response_format.json_schema.schema", BAD_JS),
]  # fmt: skip


@pytest.mark.parametrize(("body", "param", "code"), BAD_CHAT)
def test_bad_chat_requests_name_the_parameter(body: bytes, param: str | None, code: str | None) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_chat_request(body)
    assert (caught.value.param, caught.value.code) == (param, code)
    status, rendered = render_error(caught.value)
    error = orjson.loads(rendered)["error"]
    assert status == 400
    assert error == {
        "message": caught.value.message,
        "type": "invalid_request_error",
        "param": param,
        "code": code,
    }


def test_messages_quote_openai_wording() -> None:
    with pytest.raises(InvalidRequestError, match=r"^Invalid 'temperature': decimal above maximum value\. "
                       r"Expected a value <= 2, but got 2\.5 instead\.$"):  # fmt: skip
        parse_chat_request(chat(temperature=2.5))
    with pytest.raises(InvalidRequestError, match=r"^Missing required parameter: 'messages'\.$"):
        parse_chat_request(chat(messages=DROP))
    with pytest.raises(
        InvalidRequestError, match="'/properties/a/type' is \"strng\", not a JSON Schema type"
    ):
        parse_chat_request(chat(tools=[tool(parameters=BAD_SCHEMA)]))


def test_a_long_value_is_quoted_cut() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_chat_request(chat(messages=[{"role": "x" * 10_000, "content": "hi"}]))
    assert len(caught.value.message) < 200


def test_deep_tool_schemas_are_refused_not_recursed() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(100):  # 200 JSON levels: under orjson's 254 for dumps, over our 64 schema levels
        schema = {"type": "object", "properties": {"a": schema}}
    with pytest.raises(InvalidRequestError, match="nested deeper than 64 levels") as caught:
        parse_chat_request(chat(tools=[tool(parameters=schema)]))
    assert caught.value.param == "tools[0].function.parameters"


def test_wants_usage_only_when_asked() -> None:
    assert wants_usage(parse_chat_request(chat(stream=True, stream_options={"include_usage": True})))
    assert not wants_usage(parse_chat_request(chat(stream=True)))
    assert not wants_usage(parse_chat_request(chat(stream=True, stream_options={"include_usage": False})))


def test_embeddings_requests() -> None:
    assert parse_embeddings_request(orjson.dumps(ex.EMBEDDINGS_REQUEST)) == ex.EMBEDDINGS_REQUEST
    for good in (["a", "b"], [1, 2, 3], [[1, 2], [3]]):
        body = {"model": "m", "input": good, "encoding_format": "base64", "dimensions": 256}
        assert parse_embeddings_request(orjson.dumps(body)) == body


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": "x"}, "model", "missing_required_parameter"),
        ({"model": "m"}, "input", "missing_required_parameter"),
        ({"model": "m", "input": ""}, "input", "invalid_value"),
        ({"model": "m", "input": []}, "input", "empty_array"),
        ({"model": "m", "input": ["a", ""]}, "input[1]", "invalid_value"),
        ({"model": "m", "input": [{"text": "a"}]}, "input[0]", "invalid_type"),
        ({"model": "m", "input": [[1, "a"]]}, "input[0]", "invalid_type"),
        ({"model": "m", "input": ["a"] * 2049}, "input", "array_above_max_length"),
        ({"model": "m", "input": "a", "encoding_format": "int8"}, "encoding_format", "invalid_value"),
        ({"model": "m", "input": "a", "dimensions": 0}, "dimensions", "integer_below_min_value"),
    ],
)
def test_bad_embeddings_requests(body: dict[str, Any], param: str, code: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_embeddings_request(orjson.dumps(body))
    assert (caught.value.param, caught.value.code) == (param, code)


def test_response_renders_as_json() -> None:
    assert orjson.loads(render_response(ex.CHAT_RESPONSE)) == ex.CHAT_RESPONSE


def test_chunks_render_as_the_sse_writer_would_and_parse_back() -> None:
    wire = b"".join(render_chunk(c) for c in ex.STREAM_CHUNKS) + DONE
    assert wire == ex.sse(ex.STREAM_CHUNKS)
    for chunk in ex.STREAM_CHUNKS:
        assert render_chunk(chunk) == encode_event(orjson.dumps(chunk))
    events = SseParser().feed(wire)
    assert [orjson.loads(e.data) for e in events[:-1]] == ex.STREAM_CHUNKS
    assert events[-1].data == "[DONE]"


def test_the_usage_chunk_is_left_out_unless_the_client_asked() -> None:
    usage_chunk = ex.STREAM_CHUNKS[-1]
    assert render_chunk(usage_chunk, include_usage=False) == b""
    assert render_chunk(usage_chunk, include_usage=True) != b""
    assert render_chunk(ex.STREAM_CHUNKS[0], include_usage=False) != b""  # "usage": null stays harmless


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (InvalidRequestError("bad", "n", "invalid_value"), 400, "invalid_request_error"),
        (UnsupportedParameterError("n", "anthropic"), 400, "invalid_request_error"),
        (ProviderError(429, "slow down", retryable=True, kind="rate_limited"), 429, "rate_limit_error"),
        (ProviderError(502, "upstream broke", kind="bad_response"), 502, "server_error"),
        (ProviderError(504, "stalled", kind="timeout"), 504, "server_error"),
        (ProviderError(404, "no such model", kind="provider_rejected"), 404, "invalid_request_error"),
    ],
)
def test_errors_render_in_openai_shape(
    error: InvalidRequestError | ProviderError, status: int, kind: str
) -> None:
    got_status, body = render_error(error)
    assert got_status == status
    assert set(orjson.loads(body)["error"]) == {"message", "type", "param", "code"}
    assert orjson.loads(body)["error"]["type"] == kind
    assert orjson.loads(body)["error"]["message"] == error.message


def test_a_stream_error_is_an_sse_event_with_the_error_object() -> None:
    event = render_stream_error(ProviderError(502, "the provider's stream ended without [DONE]"))
    (parsed,) = SseParser().feed(event)
    assert orjson.loads(parsed.data)["error"]["message"] == "the provider's stream ended without [DONE]"


def test_models_list() -> None:
    body = orjson.loads(render_models(["gpt-4o", "claude-sonnet"], 1686935002))
    assert body == {
        "object": "list",
        "data": [
            {"id": "gpt-4o", "object": "model", "created": 1686935002, "owned_by": "fastgw"},
            {"id": "claude-sonnet", "object": "model", "created": 1686935002, "owned_by": "fastgw"},
        ],
    }
    assert orjson.loads(render_models([], 0)) == {"object": "list", "data": []}
