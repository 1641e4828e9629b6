"""The official ``anthropic`` SDK reads what the Anthropic format writes: its requests are parsed into the
pivot, sent by the anthropic adapter to the fake provider over TLS, and the answers, streams, token
counts and errors rendered back are what the SDK parses (messages, accumulated streams with tool input,
usage, typed exceptions). The SDK's HTTP client is an in-process transport standing in for the llm
handler, which brings the real sockets on the client side (skipped where the SDK is not installed)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

anthropic = pytest.importorskip("anthropic")  # a test extra (pyproject, with openai)
try:  # the SDK's HTTP client package: httpx2 from SDK 2.x, httpx before
    import httpx2 as httpx
except ImportError:
    httpx = pytest.importorskip("httpx")

from fastgw.ai.adapter import InvalidRequestError, ProviderError, ProviderTarget  # noqa: E402
from fastgw.ai.formats.anthropic import (  # noqa: E402
    AnthropicStreamWriter,
    error_event,
    error_for,
    parse_count_tokens_request,
    parse_messages_request,
    render_count_tokens,
    render_message,
)
from fastgw.ai.providers.anthropic import AnthropicAdapter  # noqa: E402
from fastgw.tls.dev_certs import write_dev_certificates  # noqa: E402
from tests.support.fake_anthropic import FakeAnthropic, calling, server_context  # noqa: E402

ADAPTER = AnthropicAdapter()
TARGET = ProviderTarget("claude", "claude-fake-1", headers=((b"x-api-key", b"sk-ant-test"),))
TOOL = {"name": "lookup", "description": "Look it up", "input_schema": {"type": "object", "properties": {}}}


class MiniGateway:
    """The request path of an Anthropic-format llm route, without routing: parse, call, render."""

    def __init__(self, fake: FakeAnthropic, tls: ssl.SSLContext) -> None:
        self.fake = fake
        self.tls = tls

    def __call__(self, request: Any) -> Any:
        try:
            if request.url.path == "/v1/messages/count_tokens":
                pivot = parse_count_tokens_request(request.content)
                with calling(
                    self.fake.port, ADAPTER.count_tokens_request(pivot, TARGET), context=self.tls
                ) as (
                    status,
                    headers,
                    response,
                ):
                    body = response.read()
                if status != 200:
                    raise ADAPTER.error(status, headers, body)
                return self._answer(200, render_count_tokens(ADAPTER.count_tokens_response(body)))
            pivot = parse_messages_request(request.content, request.headers.get("anthropic-beta"))
            return self._messages(pivot)
        except (InvalidRequestError, ProviderError) as exc:
            return self._answer(*error_for(exc))

    def _messages(self, pivot: dict[str, Any]) -> Any:
        stream = bool(pivot.get("stream"))
        public = pivot["model"]
        provider_request = ADAPTER.chat_request(pivot, TARGET, stream)
        with calling(self.fake.port, provider_request, context=self.tls) as (status, headers, response):
            if status != 200:
                raise ADAPTER.error(status, headers, response.read())
            if not stream:
                answer, usage = ADAPTER.chat_response(response.read())
                answer["model"] = public
                return self._answer(200, orjson.dumps(render_message(answer, usage)))
            translator = ADAPTER.chat_stream()
            writer = AnthropicStreamWriter(model=public, usage=translator.usage)
            out: list[bytes] = []
            try:
                while piece := response.read1(65536):
                    out.extend(writer.feed(chunk) for chunk in translator.feed(piece))
                out.extend(writer.feed(chunk) for chunk in translator.end())
                out.append(writer.end())
            except ProviderError as exc:  # the status line is gone: the error travels as an event
                out.append(error_event(exc.status, exc.message, exc.kind))
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=b"".join(out))

    @staticmethod
    def _answer(status: int, body: bytes) -> Any:
        return httpx.Response(status, headers={"content-type": "application/json"}, content=body)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return write_dev_certificates(Path(tmp_path_factory.mktemp("certs")))


@pytest.fixture
def fake(certs: Any) -> Iterator[FakeAnthropic]:
    server = FakeAnthropic(server_context(str(certs.server_cert), str(certs.server_key)))
    yield server
    server.close()


@pytest.fixture
def client(fake: FakeAnthropic, certs: Any) -> Iterator[Any]:
    tls = ssl.create_default_context(cafile=str(certs.ca_cert))
    http = httpx.Client(transport=httpx.MockTransport(MiniGateway(fake, tls)))
    sdk = anthropic.Anthropic(
        api_key="any-key", base_url="http://gateway.test", http_client=http, max_retries=0
    )
    yield sdk
    http.close()


def test_create(client: Any, fake: FakeAnthropic) -> None:
    message = client.messages.create(
        model="claude-public", max_tokens=100, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert message.content[0].text == fake.reply
    assert message.model == "claude-public"
    assert message.stop_reason == "end_turn"
    reported = fake.answers[-1].usage
    assert (message.usage.input_tokens, message.usage.output_tokens) == (
        reported["input_tokens"],
        reported["output_tokens"],
    )


def test_stream_text_and_usage(client: Any, fake: FakeAnthropic) -> None:
    with client.messages.stream(
        model="claude-public", max_tokens=100, messages=[{"role": "user", "content": "Say hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == fake.reply
    reported = fake.answers[-1].usage
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        reported["input_tokens"],
        reported["output_tokens"],
    )


def test_stream_tool_use_accumulates_its_input(client: Any) -> None:
    with client.messages.stream(
        model="claude-public",
        max_tokens=100,
        tools=[TOOL],
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "find cats"}],
    ) as stream:
        final = stream.get_final_message()
    (block,) = final.content
    assert (block.type, block.name, block.input) == ("tool_use", "lookup", {"query": "find cats"})
    assert final.stop_reason == "tool_use"


def test_count_tokens(client: Any) -> None:
    counted = client.messages.count_tokens(
        model="claude-public", messages=[{"role": "user", "content": "a b c"}]
    )
    assert counted.input_tokens == 6  # 3 words + 3 for the message, the fake's tokenizer


def test_errors_as_the_sdk_types_them(client: Any, fake: FakeAnthropic) -> None:
    hello = {"model": "claude-public", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(**{**hello, "max_tokens": 0})
    assert "max_tokens" in bad.value.message
    fake.faults.append("429")
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(**hello)
    fake.faults.append("529")
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        client.messages.create(**hello)
    assert overloaded.value.status_code == 502
    fake.faults.append("error_event")
    with pytest.raises(anthropic.APIStatusError) as mid_stream, client.messages.stream(**hello) as stream:
        for _ in stream.text_stream:
            pass
    assert "Overloaded" in str(mid_stream.value)
