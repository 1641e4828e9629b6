"""The gemini adapter against the fake Gemini provider over real sockets (TLS with the tests' CA where it
matters): what reaches the provider, exact token counts streamed and not, embeddings, and each fault."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fastgw.ai.adapter import ProviderError, ProviderTarget, Usage
from fastgw.ai.providers.gemini import ADAPTER
from fastgw.tls.dev_certs import DevCertificates, write_dev_certificates
from tests.support.certificates import client_context
from tests.support.fake_gemini import API_KEY, FakeGemini, Reply, prompt_tokens
from tests.support.provider_client import ProviderAnswer, fetch
from tests.support.waiting import wait_until

TARGET = ProviderTarget("google", "gemini-2.0-flash", headers=ADAPTER.credential_headers(API_KEY, {}))
CHAT = {
    "model": "g",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello to the fox"},
    ],
}


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    server = FakeGemini()
    yield server
    server.close()


@pytest.fixture
def certs(tmp_path: Path) -> DevCertificates:
    return write_dev_certificates(tmp_path / "certs")


def expected_usage(sent: dict[str, int]) -> tuple[int, int, int, int]:
    thoughts = sent.get("thoughtsTokenCount", 0)
    return (
        sent["promptTokenCount"],
        sent["candidatesTokenCount"] + thoughts,
        sent.get("cachedContentTokenCount", 0),
        thoughts,
    )


def counts(usage: Usage) -> tuple[int, int, int, int]:
    return (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.reasoning_tokens)


def stream(
    fake: FakeGemini, pivot: dict[str, Any], **kw: Any
) -> tuple[list[dict[str, Any]], Usage, ProviderAnswer]:
    translator = ADAPTER.chat_stream()
    chunks: list[dict[str, Any]] = []
    answer = fetch(
        fake.port,
        ADAPTER.chat_request(pivot, TARGET, True),
        on_body=lambda data: chunks.extend(translator.feed(data)),
        **kw,
    )
    assert answer.status == 200
    chunks.extend(translator.end())
    return chunks, translator.usage, answer


def test_a_chat_over_tls_with_exact_usage(certs: DevCertificates) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(certs.server_cert, certs.server_key)
    fake = FakeGemini(server_ctx)
    try:
        fake.reply = Reply(thoughts="think about foxes", cached_tokens=2)
        answer = fetch(
            fake.port, ADAPTER.chat_request(CHAT, TARGET, False), ssl_context=client_context(certs)
        )
    finally:
        fake.close()
    assert answer.status == 200
    completion, usage = ADAPTER.chat_response(bytes(answer.body))
    assert completion["choices"][0]["message"] == {
        "role": "assistant",
        "content": "The quick brown fox jumps over the lazy dog",
        "reasoning_content": "think about foxes",
    }
    assert counts(usage) == expected_usage(fake.sent_usage[-1]) == (7, 12, 2, 3)
    seen = fake.requests[-1]
    assert (seen.path, seen.headers["x-goog-api-key"]) == (
        "/v1beta/models/gemini-2.0-flash:generateContent",
        API_KEY,
    )
    assert seen.body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert prompt_tokens(seen.body) == usage.prompt_tokens


def test_a_streamed_chat_translates_event_by_event_with_exact_usage(fake: FakeGemini) -> None:
    fake.reply = Reply(words_per_event=3)
    chunks, usage, _ = stream(fake, {**CHAT, "n": 2})
    for index in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["index"] == index]
        assert "".join(choice["delta"].get("content", "") for choice in mine) == fake.reply.text
        assert [choice["finish_reason"] for choice in mine][-1] == "stop"
        assert mine[0]["delta"]["role"] == "assistant"
    assert (
        chunks[-1]["choices"] == []
        and chunks[-1]["usage"]["total_tokens"] == fake.sent_usage[-1]["totalTokenCount"]
    )
    assert counts(usage) == expected_usage(fake.sent_usage[-1]) == (7, 18, 0, 0)
    assert fake.requests[-1].path.endswith(":streamGenerateContent?alt=sse")


def test_a_streamed_tool_call(fake: FakeGemini) -> None:
    fake.reply = Reply(text="", calls=[("get_weather", {"city": "Paris"}), ("get_time", {})])
    tools = [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
        for n in ("get_weather", "get_time")
    ]
    chunks, _, _ = stream(fake, {**CHAT, "tools": tools})
    calls = [call for c in chunks if c["choices"] for call in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [(c["index"], c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in calls] == [
        (0, "get_weather", {"city": "Paris"}),
        (1, "get_time", {}),
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert fake.requests[-1].body["tools"][0]["functionDeclarations"][0]["parameters"] == {"type": "OBJECT"}


def test_embeddings_one_and_many(fake: FakeGemini) -> None:
    one = fetch(
        fake.port, ADAPTER.embeddings_request({"model": "e", "input": "hello", "dimensions": 4}, TARGET)
    )
    data, usage = ADAPTER.embeddings_response(bytes(one.body))
    assert fake.requests[-1].path == "/v1beta/models/gemini-2.0-flash:embedContent"
    assert [len(d["embedding"]) for d in data["data"]] == [4] and not usage.reported
    many = fetch(
        fake.port,
        ADAPTER.embeddings_request(
            {"model": "e", "input": ["a", "b", "c"], "encoding_format": "float"}, TARGET
        ),
    )
    data, _ = ADAPTER.embeddings_response(bytes(many.body))
    assert [(d["index"], len(d["embedding"])) for d in data["data"]] == [(0, 8), (1, 8), (2, 8)]
    assert fake.requests[-1].body["requests"][1] == {
        "model": "models/gemini-2.0-flash",
        "content": {"parts": [{"text": "b"}]},
    }


def test_a_wrong_key_is_the_providers_400(fake: FakeGemini) -> None:
    target = ProviderTarget("google", "gemini-2.0-flash", headers=ADAPTER.credential_headers("wrong", {}))
    answer = fetch(fake.port, ADAPTER.chat_request(CHAT, target, False))
    error = ADAPTER.error(answer.status, answer.headers, bytes(answer.body))
    assert (error.status, error.retryable, error.message) == (
        400,
        False,
        "API key not valid. Please pass a valid API key.",
    )


@pytest.mark.parametrize(
    ("fault", "status", "retry_after"),
    [("rate_limit", 429, 7.0), ("unavailable", 502, None), ("internal", 502, None)],
)
def test_error_faults_are_retryable_and_the_next_request_succeeds(
    fake: FakeGemini, fault: str, status: int, retry_after: float | None
) -> None:
    fake.fault = fault
    answer = fetch(fake.port, ADAPTER.chat_request(CHAT, TARGET, True))
    error = ADAPTER.error(answer.status, answer.headers, bytes(answer.body))
    assert (error.status, error.retryable, error.retry_after) == (status, True, retry_after)
    chunks, usage, _ = stream(fake, CHAT)  # the fault was for one request only
    assert usage.reported and chunks


@pytest.mark.parametrize("fault", ["html", "empty_200"])
def test_a_200_that_is_not_an_answer_is_a_502(fake: FakeGemini, fault: str) -> None:
    fake.fault = fault
    answer = fetch(fake.port, ADAPTER.chat_request(CHAT, TARGET, False))
    assert answer.status == 200
    with pytest.raises(ProviderError) as caught:
        ADAPTER.chat_response(bytes(answer.body))
    assert caught.value.status == 502


def test_a_slow_first_token_arrives_late_but_whole(fake: FakeGemini) -> None:
    fake.fault, fake.first_token_delay = "slow_first_token", 0.3
    arrivals: list[float] = []
    translator = ADAPTER.chat_stream()
    started = time.monotonic()

    def on_body(data: bytes) -> None:
        if translator.feed(data) and not arrivals:
            arrivals.append(time.monotonic() - started)

    fetch(fake.port, ADAPTER.chat_request(CHAT, TARGET, True), on_body=on_body)
    assert arrivals[0] >= 0.3
    assert translator.end()[-1]["usage"]["total_tokens"] == fake.sent_usage[-1]["totalTokenCount"]


def test_a_stall_yields_the_first_chunk_then_silence(fake: FakeGemini) -> None:
    fake.fault = "stall"
    translator = ADAPTER.chat_stream()
    chunks: list[dict[str, Any]] = []
    with pytest.raises(TimeoutError):
        fetch(
            fake.port,
            ADAPTER.chat_request(CHAT, TARGET, True),
            on_body=lambda d: chunks.extend(translator.feed(d)),
            timeout=0.5,
        )
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["The quick"]
    # the client gave up and closed: the provider sees its connection close (it stops generating)
    wait_until(lambda: fake.closed_mid_stream == 1, 2.0, "the fake to see the client hang up")


@pytest.mark.parametrize(("fault", "complete"), [("disconnect", False), ("no_finish_reason", True)])
def test_a_stream_cut_short_is_an_error_at_its_end(fake: FakeGemini, fault: str, complete: bool) -> None:
    fake.fault = fault
    translator = ADAPTER.chat_stream()
    answer = fetch(fake.port, ADAPTER.chat_request(CHAT, TARGET, True), on_body=translator.feed)
    assert answer.complete is complete
    with pytest.raises(ProviderError, match="ended before the answer was finished"):
        translator.end()


@pytest.mark.parametrize(("fault", "message"), [("malformed_event", "not JSON"), ("huge_line", "cut off")])
def test_a_bad_event_on_the_wire_is_a_provider_error(fake: FakeGemini, fault: str, message: str) -> None:
    fake.fault = fault
    translator = ADAPTER.chat_stream()
    with pytest.raises(ProviderError, match=message):
        fetch(fake.port, ADAPTER.chat_request(CHAT, TARGET, True), on_body=translator.feed)
