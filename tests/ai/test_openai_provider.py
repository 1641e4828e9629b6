"""The openai adapter: requests as the provider must get them (model rewritten, usage asked for, what the
target cannot honour refused or dropped), answers checked (HTML, empty, truncated: 502), errors mapped
with the provider's message and its retry hint."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from fastgw.ai.adapter import (
    Adapter,
    Capabilities,
    ProviderError,
    ProviderTarget,
    UnsupportedParameterError,
    Usage,
)
from fastgw.ai.provider_errors import retry_after
from fastgw.ai.providers.openai import MAX_RESPONSE_BYTES, OpenAIAdapter
from tests.support import openai_examples as ex

TARGET = ProviderTarget(
    provider="openai",
    model="gpt-4o-2024-08-06",
    base_path="/v1",
    headers=((b"authorization", b"Bearer sk-test"), (b"openai-organization", b"org-1")),
)
BARE = Capabilities()  # the defaults: no n > 1, no logprobs, no embeddings


def body_of(
    pivot: dict[str, Any],
    stream: bool = False,
    adapter: Adapter | None = None,
    target: ProviderTarget = TARGET,
) -> dict[str, Any]:
    request = (adapter or OpenAIAdapter()).chat_request(pivot, target, stream)
    return orjson.loads(request.body)  # type: ignore[no-any-return]


def test_an_adapter() -> None:
    adapter: Adapter = OpenAIAdapter()
    assert adapter.kind == "openai"
    assert adapter.capabilities.n and adapter.capabilities.embeddings and adapter.capabilities.stream_usage


def test_chat_request_rewrites_the_model_and_keeps_everything_else() -> None:
    pivot = copy.deepcopy(ex.CHAT_TOOLS)
    request = OpenAIAdapter().chat_request(pivot, TARGET, stream=False)
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers == ((b"content-type", b"application/json"), *TARGET.headers)
    assert orjson.loads(request.body) == {**ex.CHAT_TOOLS, "model": "gpt-4o-2024-08-06"}
    assert pivot == ex.CHAT_TOOLS  # the pivot itself is left as it was


def test_a_bare_base_path() -> None:
    target = ProviderTarget("ollama", "llama3.2", base_path="")
    assert OpenAIAdapter().chat_request(ex.CHAT_DEFAULT, target, False).path == "/chat/completions"


def test_streaming_forces_include_usage() -> None:
    assert body_of(ex.CHAT_STREAM, stream=True)["stream_options"] == {"include_usage": True}
    asked_not = {**ex.CHAT_STREAM, "stream_options": {"include_usage": False}}
    assert body_of(asked_not, stream=True)["stream_options"] == {"include_usage": True}
    assert body_of(ex.CHAT_DEFAULT, stream=True)["stream"] is True


def test_a_server_without_stream_usage_is_not_sent_stream_options() -> None:
    adapter = OpenAIAdapter(Capabilities(stream_usage=False))
    assert "stream_options" not in body_of(ex.CHAT_STREAM, stream=True, adapter=adapter)


def test_non_streamed_requests_carry_no_stream_fields() -> None:
    body = body_of({**ex.CHAT_STREAM, "stream_options": {"include_usage": True}}, stream=False)
    assert "stream" not in body and "stream_options" not in body


PLAIN = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}
UNSUPPORTED: list[tuple[dict[str, Any], str]] = [
    (ex.CHAT_TOOLS, "tools"),
    (ex.CHAT_IMAGE, "image_url"),
    (ex.CHAT_JSON_SCHEMA, "response_format"),
    ({**PLAIN, "response_format": {"type": "json_object"}}, "response_format"),
    (ex.CHAT_DEFAULT, "system"),  # it has a developer message
    ({**PLAIN, "n": 2}, "n"),
    (ex.CHAT_LOGPROBS, "logprobs"),
]
NOTHING = Capabilities(tools=False, vision=False, json_schema=False, json_object=False, system_prompt=False)


@pytest.mark.parametrize(("pivot", "param"), UNSUPPORTED)
def test_an_unsupported_parameter_is_refused_naming_it(pivot: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedParameterError) as caught:
        OpenAIAdapter(NOTHING, kind="openai").chat_request(pivot, TARGET, False)
    assert (caught.value.param, caught.value.code) == (param, "unsupported_parameter")
    assert "not supported by the openai provider" in caught.value.message


@pytest.mark.parametrize(("pivot", "param"), UNSUPPORTED)
def test_drop_unsupported_drops_it_instead(pivot: dict[str, Any], param: str) -> None:
    target = ProviderTarget("vllm", "m", drop_unsupported=frozenset({param}))
    before = copy.deepcopy(pivot)
    body = body_of(pivot, adapter=OpenAIAdapter(NOTHING), target=target)
    assert pivot == before
    dropped: Callable[[dict[str, Any]], bool] = {
        "tools": lambda b: "tools" not in b and "tool_choice" not in b,
        "image_url": lambda b: all(p["type"] == "text" for p in b["messages"][0]["content"]),
        "response_format": lambda b: "response_format" not in b,
        "system": lambda b: [m["role"] for m in b["messages"]] == ["user"],
        "n": lambda b: "n" not in b,
        "logprobs": lambda b: "logprobs" not in b and "top_logprobs" not in b,
    }[param]
    assert dropped(body)


def test_n_of_one_needs_no_capability() -> None:
    assert body_of({**ex.CHAT_DEFAULT, "n": 1}, adapter=OpenAIAdapter(Capabilities()))["n"] == 1


def test_chat_response_golden() -> None:
    answer, usage = OpenAIAdapter().chat_response(orjson.dumps(ex.CHAT_RESPONSE))
    assert answer == ex.CHAT_RESPONSE
    assert usage == Usage(prompt_tokens=9, completion_tokens=12, reported=True)
    answer, usage = OpenAIAdapter().chat_response(orjson.dumps(ex.TOOL_CALL_RESPONSE))
    assert answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_current_weather"
    assert usage == Usage(
        prompt_tokens=82, completion_tokens=17, cached_tokens=64, reasoning_tokens=5, reported=True
    )
    assert usage.pivot() == ex.TOOL_CALL_RESPONSE["usage"]


def test_an_answer_without_usage_is_recorded_as_missing() -> None:
    body = {k: v for k, v in ex.CHAT_RESPONSE.items() if k != "usage"}
    _, usage = OpenAIAdapter().chat_response(orjson.dumps(body))
    assert not usage.reported and usage.total_tokens == 0


FULL = orjson.dumps(ex.CHAT_RESPONSE)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty answer"),
        (b"  \r\n", "empty answer"),
        (b"<html><body>502 Bad Gateway</body></html>", "HTML page"),
        (b"\n<!DOCTYPE html>", "HTML page"),
        (FULL[: len(FULL) // 2], "malformed or truncated"),
        (b"[]", "not a JSON object"),
        (b'{"id": "x"}', "no valid 'choices'"),
        (b'{"choices": [{"index": 0}]}', "no valid 'choices'"),
        (b'{"error": {"message": "model overloaded", "code": 503}}', "model overloaded"),
        (b" " * (MAX_RESPONSE_BYTES + 1), "exceeds"),
    ],
)
def test_a_malformed_answer_is_a_502(body: bytes, message: str) -> None:
    with pytest.raises(ProviderError, match=message) as caught:
        OpenAIAdapter().chat_response(body)
    assert caught.value.status == 502


def test_embeddings() -> None:
    request = OpenAIAdapter().embeddings_request(ex.EMBEDDINGS_REQUEST, TARGET)
    assert request.path == "/v1/embeddings"
    assert orjson.loads(request.body) == {**ex.EMBEDDINGS_REQUEST, "model": TARGET.model}
    answer, usage = OpenAIAdapter().embeddings_response(orjson.dumps(ex.EMBEDDINGS_RESPONSE))
    assert answer == ex.EMBEDDINGS_RESPONSE
    assert usage == Usage(prompt_tokens=8, reported=True)
    with pytest.raises(ProviderError, match="no 'data' array"):
        OpenAIAdapter().embeddings_response(b'{"object": "list"}')
    with pytest.raises(UnsupportedParameterError) as caught:
        OpenAIAdapter(BARE).embeddings_request(ex.EMBEDDINGS_REQUEST, TARGET)
    assert caught.value.param == "embeddings"


def openai_error(message: str, kind: str = "server_error") -> bytes:
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}})


@pytest.mark.parametrize(
    ("status", "status_out", "retryable", "kind"),
    [
        (429, 429, True, "rate_limited"),
        (500, 502, True, "provider_unavailable"),
        (503, 502, True, "provider_unavailable"),
        (529, 502, True, "overloaded"),
        (408, 504, True, "provider_timeout"),  # the provider's own timeout: never the request's fault
        (400, 400, False, "provider_rejected"),
        (404, 404, False, "provider_rejected"),
        (401, 502, False, "provider_auth"),
        (403, 502, False, "provider_auth"),
    ],
)
def test_error_statuses(status: int, status_out: int, retryable: bool, kind: str) -> None:
    error = OpenAIAdapter().error(status, {}, openai_error("The model is overloaded"))
    assert (error.status, error.retryable, error.kind, error.provider_status) == (
        status_out,
        retryable,
        kind,
        status,
    )
    assert "The model is overloaded" in error.message


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "20"}, 20.0),
        ({"retry-after-ms": "1500", "retry-after": "20"}, 1.5),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, 30.0),
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}, 360.0),
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "20ms",
                "x-ratelimit-remaining-tokens": "1200",
                "x-ratelimit-reset-tokens": "6m0s",
            },
            0.02,
        ),
        ({"x-ratelimit-reset-tokens": "1h2m3.5s"}, 3723.5),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, None),
        ({"x-ratelimit-reset-requests": "6m0"}, None),
        ({"retry-after": "9" * 100}, None),
        ({}, None),
    ],
)
def test_retry_hints(headers: dict[str, str], seconds: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    expected = None if seconds is None else pytest.approx(seconds)
    assert retry_after(headers, rate_limited=True, now=now) == expected


def test_reset_headers_count_only_for_a_429() -> None:
    headers = {"x-ratelimit-reset-requests": "1s"}
    assert OpenAIAdapter().error(429, headers, b"").retry_after == 1.0
    assert OpenAIAdapter().error(500, headers, b"").retry_after is None
    assert OpenAIAdapter().error(503, {"retry-after": "7"}, b"").retry_after == 7.0


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>Bad Gateway</html>", b"{not json", b'{"error": 12}', b"[]", b'{"error": {"message": ""}}'],
)
def test_an_error_without_a_message_gets_a_generic_one(body: bytes) -> None:
    assert OpenAIAdapter().error(502, {}, body).message == "the provider answered 502"


def test_error_messages_are_bounded_and_hide_addresses() -> None:
    body = openai_error(
        "upstream http://10.1.2.3:8000/v1 at 192.168.0.7:9000 and [fd00::5]:80 failed " + "x" * 2000
    )
    message = OpenAIAdapter().error(500, {}, body).message
    assert len(message) <= 500
    for leak in ("10.1.2.3", "192.168.0.7", "fd00::5", "http://"):
        assert leak not in message
    assert "12:30:45" in OpenAIAdapter().error(500, {}, openai_error("retry after 12:30:45")).message
    # An address after a name and a colon, and one that the length bound would cut: masked all the same
    # (masked first, then cut: a cut first left "10.200.3..." showing).
    named = OpenAIAdapter().error(500, {}, openai_error("connect to host:fd00::7 refused")).message
    assert "fd00::7" not in named and named.startswith("connect to host:<address>")
    at_the_bound = OpenAIAdapter().error(500, {}, openai_error("x" * 488 + " 10.200.30.40 and more")).message
    assert len(at_the_bound) <= 500 and "10.200" not in at_the_bound
