"""The openai adapter against the fake OpenAI provider over real sockets (TLS with the test CA where it
matters): requests the adapter builds are answered, answers and streams translate with the token counts
the fake reports, and every injected fault ends as the adapter's defined outcome."""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from fastgw.ai.adapter import ProviderError, ProviderRequest, ProviderTarget, Usage
from fastgw.ai.formats.openai import parse_chat_request, parse_embeddings_request
from fastgw.ai.providers.openai import OpenAIAdapter
from fastgw.tls.dev_certs import write_dev_certificates
from tests.support import openai_examples as ex
from tests.support.fake_openai import FakeOpenAI
from tests.support.fake_openai_answers import REPLY
from tests.support.provider_client import ProviderReply, send

KEY = "sk-fake-key"
ADAPTER = OpenAIAdapter()


def target(model: str = "gpt-4o-mini") -> ProviderTarget:
    return ProviderTarget(
        "fake", model, base_path="/v1", headers=((b"authorization", f"Bearer {KEY}".encode()),)
    )


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI(api_key=KEY)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    certs = write_dev_certificates(tmp_path / "certs")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(certs.server_cert, certs.server_key)
    return server, ssl.create_default_context(cafile=str(certs.ca_cert))


def chat(model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return parse_chat_request(orjson.dumps({**ex.CHAT_DEFAULT, "model": model, **extra}))


async def stream_chat(
    port: int, request: ProviderRequest, client_tls: ssl.SSLContext | None = None
) -> tuple[list[dict[str, Any]], Usage, ProviderReply]:
    reply = await send(port, request, client_tls)
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    stream = ADAPTER.chat_stream()
    chunks: list[dict[str, Any]] = []
    try:
        async for piece in reply.pieces():
            chunks.extend(stream.feed(piece))
        chunks.extend(stream.end())
    finally:
        await reply.close()
    return chunks, stream.usage, reply


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


@pytest.mark.asyncio
async def test_chat_over_tls_with_exact_usage(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    fake = FakeOpenAI(api_key=KEY, ssl_context=tls[0])
    await fake.start()
    try:
        reply = await send(fake.port, ADAPTER.chat_request(chat(), target(), stream=False), tls[1])
        answer, usage = ADAPTER.chat_response(await reply.read())
        await reply.close()
        chunks, stream_usage, _ = await stream_chat(
            fake.port, ADAPTER.chat_request(chat(), target(), True), tls[1]
        )
    finally:
        await fake.close()
    assert answer["choices"][0]["message"]["content"] == REPLY
    expected = Usage(prompt_tokens=6, completion_tokens=len(REPLY.split()), reported=True)  # 6 words in
    assert usage == stream_usage == expected
    assert [a.usage for a in fake.answers] == [{**expected.pivot()}] * 2
    assert text_of(chunks) == REPLY
    assert fake.requests[1].json["stream_options"] == {"include_usage": True}  # forced by the adapter


@pytest.mark.asyncio
async def test_streamed_tool_call_deltas(fake: FakeOpenAI) -> None:
    pivot = parse_chat_request(orjson.dumps({**ex.CHAT_TOOLS, "stream": True}))
    chunks, usage, _ = await stream_chat(fake.port, ADAPTER.chat_request(pivot, target(), True))
    arguments = "".join(
        call["function"].get("arguments", "")
        for chunk in chunks
        if chunk["choices"]
        for call in chunk["choices"][0]["delta"].get("tool_calls") or []
    )
    assert orjson.loads(arguments) == {"location": "fake"}
    assert arguments == fake.answers[-1].arguments
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert usage.completion_tokens == fake.answers[-1].usage["completion_tokens"]


@pytest.mark.asyncio
async def test_n_choices_and_max_tokens(fake: FakeOpenAI) -> None:
    request = ADAPTER.chat_request(chat(n=3, max_tokens=2), target(), stream=False)
    reply = await send(fake.port, request)
    answer, usage = ADAPTER.chat_response(await reply.read())
    await reply.close()
    assert [c["finish_reason"] for c in answer["choices"]] == ["length"] * 3
    assert usage.completion_tokens == 6


@pytest.mark.asyncio
@pytest.mark.parametrize("encoding", ["float", "base64"])
async def test_embeddings(fake: FakeOpenAI, encoding: str) -> None:
    pivot = parse_embeddings_request(
        orjson.dumps(
            {"model": "text-embedding-3-small", "input": ["one two", "three"], "encoding_format": encoding}
        )
    )
    reply = await send(fake.port, ADAPTER.embeddings_request(pivot, target("text-embedding-3-small")))
    answer, usage = ADAPTER.embeddings_response(await reply.read())
    await reply.close()
    assert usage == Usage(prompt_tokens=3, reported=True)
    vectors = [d["embedding"] for d in answer["data"]]
    if encoding == "base64":
        vectors = [list(struct.unpack("<8f", base64.b64decode(v))) for v in vectors]
    assert [len(v) for v in vectors] == [8, 8]


@pytest.mark.asyncio
async def test_models(fake: FakeOpenAI) -> None:
    reply = await send(fake.port, ProviderRequest("GET", "/v1/models", target().headers, b""))
    body = orjson.loads(await reply.read())
    await reply.close()
    assert [m["id"] for m in body["data"]] == fake.models


async def failed(
    fake: FakeOpenAI, model: str, *, stream: bool = False, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> ProviderError:
    """Send a request that must fail and return the adapter's ProviderError for it."""
    request = ADAPTER.chat_request(chat(model), target(model), stream)
    request = ProviderRequest(request.method, request.path, request.headers + headers, request.body)
    reply = await send(fake.port, request)
    try:
        if reply.status >= 300:
            return ADAPTER.error(reply.status, reply.headers, await reply.read())
        if not stream:
            ADAPTER.chat_response(await reply.read())
        else:
            translator = ADAPTER.chat_stream()
            async for piece in reply.pieces():
                translator.feed(piece)
            translator.end()
    except ProviderError as error:
        return error
    finally:
        await reply.close()
    raise AssertionError("no ProviderError")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("fault", "stream", "status", "retryable", "message"),
    [
        ("429", False, 429, True, "Rate limit reached"),
        ("529", False, 502, True, "Overloaded"),
        ("408", False, 504, True, "Request timed out"),
        ("500", True, 502, True, "The server had an error"),
        ("html", False, 502, False, "HTML page"),
        ("empty", False, 502, False, "empty answer"),
        ("truncated", False, 502, False, "malformed or truncated"),
        ("huge-response", False, 502, False, "exceeds"),
        ("no-done", True, 502, False, r"without \[DONE\]"),
        ("disconnect", True, 502, False, r"without \[DONE\]"),
        ("malformed-event", True, 502, False, "malformed event"),
        ("huge-line", True, 502, False, "over 1048576 bytes"),
    ],
)
async def test_faults_by_model_name(
    fake: FakeOpenAI, fault: str, stream: bool, status: int, retryable: bool, message: str
) -> None:
    error = await failed(fake, f"fault-{fault}", stream=stream)
    assert (error.status, error.retryable) == (status, retryable)
    assert re.search(message, error.message), error.message


@pytest.mark.asyncio
async def test_429_carries_the_retry_hint_and_faults_come_by_header_or_queue(fake: FakeOpenAI) -> None:
    fake.retry_after = "3"
    assert (await failed(fake, "gpt-4o", headers=((b"x-fake-fault", b"429"),))).retry_after == 3.0
    fake.faults.append("529")
    assert (await failed(fake, "gpt-4o")).kind == "overloaded"
    reply = await send(fake.port, ADAPTER.chat_request(chat(), target(), False))  # the queue is empty again
    assert reply.status == 200
    await reply.close()


@pytest.mark.asyncio
async def test_a_wrong_provider_key_is_the_gateways_problem(fake: FakeOpenAI) -> None:
    request = ADAPTER.chat_request(
        chat(), ProviderTarget("fake", "gpt-4o", "/v1", ((b"authorization", b"Bearer x"),)), False
    )
    reply = await send(fake.port, request)
    error = ADAPTER.error(reply.status, reply.headers, await reply.read())
    await reply.close()
    assert (error.status, error.kind, error.retryable) == (502, "provider_auth", False)
    assert "Incorrect API key" in error.message


@pytest.mark.asyncio
async def test_no_usage_is_recorded_as_missing(fake: FakeOpenAI) -> None:
    chunks, usage, _ = await stream_chat(
        fake.port, ADAPTER.chat_request(chat("fault-no-usage"), target("fault-no-usage"), True)
    )
    assert text_of(chunks) == REPLY
    assert not usage.reported


@pytest.mark.asyncio
async def test_slow_first_token(fake: FakeOpenAI) -> None:
    fake.first_token_delay = 0.3
    request = ADAPTER.chat_request(chat("fault-slow-first-token"), target("fault-slow-first-token"), True)
    reply = await send(fake.port, request)
    started = time.monotonic()
    pieces = reply.pieces()
    await pieces.__anext__()
    assert time.monotonic() - started >= 0.25
    await pieces.aclose()
    await reply.close()


@pytest.mark.asyncio
async def test_a_stall_holds_until_the_client_hangs_up(fake: FakeOpenAI) -> None:
    request = ADAPTER.chat_request(chat("fault-stall"), target("fault-stall"), True)
    reply = await send(fake.port, request)
    pieces = reply.pieces()
    translator = ADAPTER.chat_stream()
    assert translator.feed(await pieces.__anext__())  # the role chunk
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pieces.__anext__(), 0.2)
    await pieces.aclose()
    await reply.close()
    deadline = time.monotonic() + 5
    while fake.hangups == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert fake.hangups == 1


@pytest.mark.asyncio
async def test_a_client_hanging_up_mid_stream_closes_the_provider_connection(fake: FakeOpenAI) -> None:
    fake.chunk_delay = 0.05  # 7 pieces: 0.35 s of answer
    reply = await send(fake.port, ADAPTER.chat_request(chat(), target(), True))
    pieces = reply.pieces()
    await pieces.__anext__()
    assert fake.open_connections == 1
    await pieces.aclose()
    await reply.close()
    deadline = time.monotonic() + 5
    while (fake.open_connections or not fake.hangups) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert (fake.open_connections, fake.hangups) == (0, 1)
