"""The azure_openai adapter: deployment paths, api-version, api-key or Entra bearer, Azure's answers
(golden, from the shapes in the Azure OpenAI REST reference) and its stream, against a fake Azure
endpoint over a real socket that refuses a wrong path, version or key as Azure does."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgw.ai.adapter import InvalidRequestError, ProviderError, ProviderTarget
from fastgw.ai.providers.azure_openai import ADAPTER, DEFAULT_API_VERSION, AzureStreamTranslator
from tests.support.provider_client import fetch
from tests.support.upstreams import SeenRequest, TestUpstream, json_response

KEY = "azure-key-1"
TARGET = ProviderTarget(
    "azure", "gpt4o-prod", headers=ADAPTER.credential_headers(KEY, {}), options={"api_version": "2024-10-21"}
)

# learn.microsoft.com/azure/ai-foundry/openai/reference: a chat completion with Azure's filter results
ANSWER = {
    "id": "chatcmpl-7R1nGnsXO8n4oi9UPz2f3UHdgAYMn",
    "object": "chat.completion",
    "created": 1686676106,
    "model": "gpt-4o-2024-08-06",
    "prompt_filter_results": [
        {"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}}}
    ],
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {
                "role": "assistant",
                "content": "Yes, other Azure AI services also support customer managed keys.",
            },
            "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}},
        }
    ],
    "usage": {
        "completion_tokens": 86,
        "prompt_tokens": 37,
        "total_tokens": 123,
        "prompt_tokens_details": {"cached_tokens": 5},
        "completion_tokens_details": {"reasoning_tokens": 9},
    },
}
CHUNKS = [
    {
        "id": "",
        "object": "",
        "created": 0,
        "model": "",
        "choices": [],
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
    },
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}],
        "usage": None,
    },
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": None,
    },
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [],
        "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5},
    },
]
STREAM = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in CHUNKS) + b"data: [DONE]\n\n"


def error_response(status_line: bytes, code: str, message: str) -> bytes:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    head = b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    return head % (status_line, len(body)) + body


def azure(req: SeenRequest) -> bytes:
    """The fake Azure endpoint: Azure's own 401 and 404 for a wrong key or deployment."""
    path, _, query = req.target.decode().partition("?")
    if req.header(b"api-key") != KEY.encode():
        message = "Access denied due to invalid subscription key or wrong API endpoint."
        return error_response(b"401 Unauthorized", "401", message)
    if not path.startswith("/openai/deployments/gpt4o-prod/") or query != "api-version=2024-10-21":
        message = "The API deployment for this resource does not exist."
        return error_response(b"404 Not Found", "DeploymentNotFound", message)
    if path.endswith("/embeddings"):
        return json_response(
            orjson.dumps(
                {
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}],
                    "model": "ada",
                    "usage": {"prompt_tokens": 3, "total_tokens": 3},
                }
            )
        )
    if orjson.loads(req.body).get("stream"):
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n" % len(
            STREAM
        )
        return head + STREAM
    return json_response(orjson.dumps(ANSWER))


@pytest.fixture
def fake() -> Iterator[TestUpstream]:
    server = TestUpstream()
    server.handler = azure
    yield server
    server.close()


def test_chat_through_the_fake_with_exact_usage(fake: TestUpstream) -> None:
    pivot = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Do other Azure AI services support this too?"}],
        "logprobs": True,
    }
    answer = fetch(fake.port, ADAPTER.chat_request(pivot, TARGET, False))
    assert answer.status == 200
    completion, usage = ADAPTER.chat_response(bytes(answer.body))
    assert completion == ANSWER
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.reasoning_tokens) == (
        37,
        86,
        5,
        9,
    )
    seen = fake.requests[-1]
    assert seen.target == b"/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    assert orjson.loads(seen.body) == {**pivot, "model": "gpt4o-prod", "stream": False}


def test_a_stream_through_the_fake_asks_for_usage_and_drops_the_filter_chunk(fake: TestUpstream) -> None:
    translator = ADAPTER.chat_stream()
    chunks: list[dict[str, Any]] = []
    pivot = {"messages": [{"role": "user", "content": "Hi"}], "stream": True}
    fetch(
        fake.port,
        ADAPTER.chat_request(pivot, TARGET, True),
        on_body=lambda d: chunks.extend(translator.feed(d)),
    )
    chunks.extend(translator.end())
    assert chunks == CHUNKS[1:]
    assert (translator.usage.prompt_tokens, translator.usage.completion_tokens) == (4, 1)
    assert orjson.loads(fake.requests[-1].body)["stream_options"] == {"include_usage": True}


def test_embeddings_through_the_fake(fake: TestUpstream) -> None:
    answer = fetch(fake.port, ADAPTER.embeddings_request({"model": "ada", "input": "hi"}, TARGET))
    data, usage = ADAPTER.embeddings_response(bytes(answer.body))
    assert data["data"][0]["embedding"] == [0.5] and usage.prompt_tokens == 3
    assert fake.requests[-1].target == b"/openai/deployments/gpt4o-prod/embeddings?api-version=2024-10-21"


@pytest.mark.parametrize(
    ("target", "status", "message"),
    [
        (
            ProviderTarget(
                "azure",
                "gpt4o-prod",
                headers=ADAPTER.credential_headers("bad", {}),
                options={"api_version": "2024-10-21"},
            ),
            401,
            "Access denied",
        ),
        (
            ProviderTarget("azure", "other", headers=TARGET.headers, options={"api_version": "2024-10-21"}),
            404,
            "deployment",
        ),
        (
            ProviderTarget(
                "azure", "gpt4o-prod", headers=TARGET.headers, options={"api_version": "2023-05-15"}
            ),
            404,
            "deployment",
        ),
    ],
)
def test_wrong_key_deployment_or_version_are_azures_errors(
    fake: TestUpstream, target: ProviderTarget, status: int, message: str
) -> None:
    answer = fetch(fake.port, ADAPTER.chat_request({"messages": []}, target, False))
    error = ADAPTER.error(answer.status, answer.headers, bytes(answer.body))
    assert (error.status, error.retryable) == (status, False) and message in error.message


def test_the_default_api_version() -> None:
    request = ADAPTER.chat_request({"messages": []}, ProviderTarget("azure", "d", base_path="/az"), False)
    assert request.path == f"/az/openai/deployments/d/chat/completions?api-version={DEFAULT_API_VERSION}"


def test_entra_tokens_go_in_authorization() -> None:
    assert ADAPTER.credential_headers("tok", {"auth": "entra"}) == ((b"authorization", b"Bearer tok"),)
    with pytest.raises(ValueError, match="api_key or entra"):
        ADAPTER.credential_headers("tok", {"auth": "basic"})


@pytest.mark.parametrize("model", ["a/../b", "x?y", "", "deployment name"])
def test_a_deployment_name_that_is_not_one_segment_is_refused(model: str) -> None:
    with pytest.raises(InvalidRequestError):
        ADAPTER.chat_request({"messages": []}, ProviderTarget("azure", model), False)


def test_dropped_parameters_do_not_reach_azure() -> None:
    target = ProviderTarget("azure", "d", drop_unsupported=frozenset({"logprobs"}))
    assert "logprobs" not in orjson.loads(
        ADAPTER.chat_request({"messages": [], "logprobs": True}, target, False).body
    )


def test_rate_limit_hints() -> None:
    error = ADAPTER.error(
        429, {"retry-after-ms": "1500", "retry-after": "2"}, b'{"error": {"message": "Rate limit"}}'
    )
    assert (error.status, error.retryable, error.retry_after, error.kind) == (
        429,
        True,
        1.5,
        "rate_limit_error",
    )
    assert ADAPTER.error(429, {"x-ratelimit-reset-tokens": "6m0s"}, b"").retry_after == 360.0
    assert (
        ADAPTER.error(503, {}, b"<html>10.0.0.1</html>").message == "the azure_openai provider answered 503"
    )


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=10))
def test_any_chunking_gives_the_same_chunks(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    translator = AzureStreamTranslator()
    out: list[dict[str, Any]] = []
    for a, b in zip([0, *points], [*points, len(STREAM)], strict=True):
        out.extend(translator.feed(STREAM[a:b]))
    out.extend(translator.end())
    assert out == CHUNKS[1:] and translator.usage.total_tokens == 5


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (STREAM[: STREAM.index(b"data: [DONE]")], "without [DONE]"),
        (b"data: {oops\n\n", "not JSON"),
        (b'data: {"error": {"message": "server_error"}}\n\n', "server_error"),
    ],
)
def test_a_broken_stream_is_a_provider_error(stream: bytes, message: str) -> None:
    translator = AzureStreamTranslator()
    with pytest.raises(ProviderError, match=re.escape(message)):
        translator.feed(stream)
        translator.end()


def test_an_error_message_never_shows_the_providers_addresses() -> None:
    body = b'{"error": {"message": "backend http://10.1.2.3:8080/v1 refused; retry on 10.1.2.4"}}'
    message = ADAPTER.error(400, {}, body).message
    assert "10.1.2" not in message and "refused" in message


def test_a_targets_own_content_type_is_the_only_one() -> None:
    target = ProviderTarget("azure", "d", headers=((b"content-type", b"application/json; charset=utf-8"),))
    request = ADAPTER.chat_request({"messages": []}, target, False)
    assert [v for n, v in request.headers if n == b"content-type"] == [b"application/json; charset=utf-8"]
    assert [
        v for n, v in ADAPTER.chat_request({"messages": []}, TARGET, False).headers if n == b"content-type"
    ] == [b"application/json"]
