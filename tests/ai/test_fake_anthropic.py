"""The anthropic adapter against the fake Anthropic provider through real sockets (TLS with the tests'
CA): answers, streams, token counts exactly as the provider reported them, and every injected fault a
defined ProviderError."""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fastgw.ai.adapter import ProviderError, ProviderTarget, Usage
from fastgw.ai.formats.anthropic import AnthropicStreamWriter, parse_messages_request
from fastgw.ai.providers.anthropic import AnthropicAdapter
from fastgw.codec.sse import SseParser
from fastgw.tls.dev_certs import DevCertificates, write_dev_certificates
from tests.support.fake_anthropic import FakeAnthropic, calling, count_input_tokens, server_context

ADAPTER = AnthropicAdapter()
TARGET = ProviderTarget("claude", "claude-fake-1", headers=((b"x-api-key", b"sk-ant-test"),))
HELLO = {"model": "claude", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 100}
TOOL = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCertificates:
    return write_dev_certificates(Path(tmp_path_factory.mktemp("certs")))


@pytest.fixture
def fake(certs: DevCertificates) -> Iterator[FakeAnthropic]:
    server = FakeAnthropic(server_context(str(certs.server_cert), str(certs.server_key)))
    yield server
    server.close()


@pytest.fixture
def tls(certs: DevCertificates) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs.ca_cert))


def complete(fake: FakeAnthropic, tls: ssl.SSLContext, pivot: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
    with calling(fake.port, ADAPTER.chat_request(pivot, TARGET, False), context=tls) as (
        status,
        headers,
        response,
    ):
        body = response.read()
    if status != 200:
        raise ADAPTER.error(status, headers, body)
    return ADAPTER.chat_response(body)


def stream(
    fake: FakeAnthropic, tls: ssl.SSLContext, pivot: dict[str, Any], timeout: float = 5.0
) -> tuple[list[Any], Usage]:
    request = ADAPTER.chat_request(pivot, TARGET, True)
    with calling(fake.port, request, context=tls, timeout=timeout) as (status, headers, response):
        if status != 200:
            raise ADAPTER.error(status, headers, response.read())
        translator = ADAPTER.chat_stream()
        chunks: list[Any] = []
        try:
            while piece := response.read1(65536):
                chunks += translator.feed(piece)
        except (http.client.IncompleteRead, ConnectionError):
            pass  # the provider dropped the connection: end() decides whether the answer was complete
        chunks += translator.end()
    return chunks, translator.usage


def expected_usage(fake: FakeAnthropic) -> tuple[int, int, int, int]:
    reported = fake.answers[-1].usage
    prompt = (
        reported["input_tokens"]
        + reported["cache_read_input_tokens"]
        + reported["cache_creation_input_tokens"]
    )
    return (
        prompt,
        reported["output_tokens"],
        reported["cache_read_input_tokens"],
        reported["cache_creation_input_tokens"],
    )


def counts(usage: Usage) -> tuple[int, int, int, int]:
    return usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.cache_creation_tokens


def test_answer_and_exact_usage_over_tls(fake: FakeAnthropic, tls: ssl.SSLContext) -> None:
    response, usage = complete(fake, tls, HELLO)
    assert response["choices"][0]["message"]["content"] == fake.reply
    assert response["model"] == "claude-fake-1"
    assert counts(usage) == expected_usage(fake)
    seen = fake.requests[-1]
    assert (seen.headers["x-api-key"], seen.headers["anthropic-version"]) == ("sk-ant-test", "2023-06-01")


def test_stream_and_exact_usage_over_tls(fake: FakeAnthropic, tls: ssl.SSLContext) -> None:
    chunks, usage = stream(fake, tls, HELLO)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == fake.reply
    assert counts(usage) == expected_usage(fake)
    assert chunks[-1]["usage"]["completion_tokens"] == len(fake.reply.split())


def test_prompt_cache_reads_are_counted(fake: FakeAnthropic, tls: ssl.SSLContext) -> None:
    system = [
        {
            "type": "text",
            "text": "You are a very helpful assistant today.",
            "cache_control": {"type": "ephemeral"},
        }
    ]
    pivot = {**HELLO, "messages": [{"role": "system", "content": system}, *HELLO["messages"]]}
    _, first = complete(fake, tls, pivot)
    assert (first.cache_creation_tokens, first.cached_tokens) == (4, 0)
    _, second = stream(fake, tls, pivot)
    assert (second.cache_creation_tokens, second.cached_tokens) == (0, 4)
    assert counts(second) == expected_usage(fake)


def test_tool_call_streamed_in_pieces(fake: FakeAnthropic, tls: ssl.SSLContext) -> None:
    pivot = {**HELLO, "tools": [TOOL], "tool_choice": "required"}
    chunks, usage = stream(fake, tls, pivot)
    pieces = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert pieces[0]["function"]["name"] == "lookup"
    assert len(pieces) > 2
    assert orjson.loads("".join(p["function"]["arguments"] for p in pieces)) == {"query": "Say hello"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert counts(usage) == expected_usage(fake)


def test_stop_sequence_and_max_tokens(fake: FakeAnthropic, tls: ssl.SSLContext) -> None:
    response, _ = complete(fake, tls, {**HELLO, "stop": ["fake"]})
    choice = response["choices"][0]
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", "fake")
    assert choice["message"]["content"] == "Hello! I am a"
    response, usage = complete(fake, tls, {**HELLO, "max_tokens": 2})
    assert response["choices"][0]["finish_reason"] == "length"
    assert usage.completion_tokens == 2


def test_anthropic_client_stream_through_the_pivot(fake: FakeAnthropic, tls: ssl.SSLContext) -> None:
    """An Anthropic client's request and stream, translated both ways: its usage is the provider's."""
    pivot = parse_messages_request(orjson.dumps({**HELLO, "stream": True}))
    chunks, _ = stream(fake, tls, pivot)
    writer = AnthropicStreamWriter(model="claude")
    out = b"".join(writer.feed(c) for c in chunks) + writer.end()
    events = [orjson.loads(e.data) for e in SseParser().feed(out)]
    assert events[-2]["usage"]["output_tokens"] == fake.answers[-1].usage["output_tokens"]
    assert events[-2]["usage"]["input_tokens"] == fake.answers[-1].usage["input_tokens"]
    assert events[-1] == {"type": "message_stop"}


def test_count_tokens(fake: FakeAnthropic, tls: ssl.SSLContext) -> None:
    request = ADAPTER.count_tokens_request(HELLO, TARGET)
    with calling(fake.port, request, context=tls) as (status, _, response):
        assert status == 200
        assert ADAPTER.count_tokens_response(response.read()) == count_input_tokens(
            orjson.loads(request.body)
        )


@pytest.mark.parametrize(
    ("fault", "status", "retryable", "retry_after"),
    [
        ("429", 429, True, 7.0),
        ("529", 502, True, None),
        ("500", 502, True, None),
        ("html_error", 502, True, None),
    ],
)
def test_error_statuses(
    fake: FakeAnthropic,
    tls: ssl.SSLContext,
    fault: str,
    status: int,
    retryable: bool,
    retry_after: float | None,
) -> None:
    for streamed in (False, True):
        fake.faults.append(fault)
        with pytest.raises(ProviderError) as caught:
            stream(fake, tls, HELLO) if streamed else complete(fake, tls, HELLO)
        assert (caught.value.status, caught.value.retryable, caught.value.retry_after) == (
            status,
            retryable,
            retry_after,
        )
        assert "10.1.2.3" not in caught.value.message


@pytest.mark.parametrize("fault", ["html", "empty", "malformed"])
def test_malformed_answers(fake: FakeAnthropic, tls: ssl.SSLContext, fault: str) -> None:
    fake.faults.append(fault)
    with pytest.raises(ProviderError) as caught:
        complete(fake, tls, HELLO)
    assert caught.value.status == 502


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ("malformed", "not JSON"),
        ("disconnect", "message_stop"),
        ("no_message_stop", "message_stop"),
        ("huge_line", "exceeds"),
        ("error_event", "Overloaded"),
    ],
)
def test_broken_streams(fake: FakeAnthropic, tls: ssl.SSLContext, fault: str, words: str) -> None:
    fake.faults.append(fault)
    with pytest.raises(ProviderError) as caught:
        stream(fake, tls, HELLO)
    assert caught.value.status == 502
    assert words in caught.value.message


def test_slow_first_token_and_stall_hit_the_read_deadline(fake: FakeAnthropic, tls: ssl.SSLContext) -> None:
    fake.slow_seconds = 2.0
    fake.faults.append("slow_first_token")
    with pytest.raises((TimeoutError, socket.timeout)):
        stream(fake, tls, HELLO, timeout=0.3)
    fake.faults.append("stall")
    translator = ADAPTER.chat_stream()
    chunks: list[Any] = []
    with calling(fake.port, ADAPTER.chat_request(HELLO, TARGET, True), context=tls, timeout=0.5) as (
        status,
        _,
        response,
    ):
        assert status == 200
        with pytest.raises((TimeoutError, socket.timeout)):
            while piece := response.read1(65536):
                chunks += translator.feed(piece)
    assert any(c["choices"] and c["choices"][0]["delta"].get("content") == "Hello!" for c in chunks)


def test_plain_http_and_a_wrong_key(fake: FakeAnthropic, tls: ssl.SSLContext) -> None:
    plain = FakeAnthropic()
    try:
        with calling(plain.port, ADAPTER.chat_request(HELLO, TARGET, False)) as (status, _, response):
            assert status == 200
            _, usage = ADAPTER.chat_response(response.read())
        assert usage.completion_tokens == plain.answers[-1].usage["output_tokens"]
    finally:
        plain.close()
    wrong = ProviderTarget("claude", "m", headers=((b"x-api-key", b"sk-ant-wrong"),))
    with calling(fake.port, ADAPTER.chat_request(HELLO, wrong, False), context=tls) as (
        status,
        headers,
        response,
    ):
        error = ADAPTER.error(status, headers, response.read())
    assert (error.status, error.kind, error.retryable) == (401, "authentication_error", False)
