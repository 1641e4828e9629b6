"""The stream relay, on a scripted provider reply: chunks a read completed before a broken event still
reach the client, then the error event; a stream silent past its idle bound after the first token ends
with an error event naming that deadline, after about that long."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
import pytest

from fastgw.ai.adapter import ProviderError, ProviderTarget
from fastgw.ai.config import Provider, Target
from fastgw.ai.formats.registry import FORMATS
from fastgw.ai.providers.anthropic_stream import AnthropicStreamTranslator
from fastgw.ai.providers.registry import ADAPTERS
from fastgw.ai.record import LlmRecord
from fastgw.ai.relay import relay_stream
from fastgw.ai.resilience import Deadlines
from fastgw.proxy.upstream_errors import UpstreamError

CHUNK = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello"}, "finish_reason": None}],
    }
)


class ScriptedReply:
    """A provider reply: these reads, then a stall bounded by the read timeout the relay sets."""

    status = 200
    headers: list[tuple[bytes, bytes]] = []

    def __init__(self, reads: list[bytes], stall: bool = False) -> None:
        self.reads = reads
        self.stall = stall
        self.read_timeout = 60.0
        self.closed = False

    def header(self, name: bytes) -> bytes | None:
        return None

    def set_read_timeout(self, seconds: float) -> None:
        self.read_timeout = seconds

    def limit_reads(self, seconds: float) -> None:
        raise AssertionError("a relayed answer's reads are bounded one by one")

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._body()

    async def _body(self) -> AsyncIterator[bytes]:
        for data in self.reads:
            yield data
        if self.stall:
            await asyncio.sleep(self.read_timeout)
            raise UpstreamError(504, "upstream-timeout", "no response bytes within the read_timeout")

    async def read(self, limit: int = -1) -> bytes:
        return b"".join(self.reads)

    def close(self) -> None:
        self.closed = True


class Writer:
    def __init__(self) -> None:
        self.status = 0
        self.body = b""
        self.ended = False
        self.writes: list[tuple[float, bytes]] = []
        self.flushes: list[int] = []  # how many writes each flush found

    @property
    def started(self) -> bool:
        return self.status != 0

    def start(self, status: int, headers: object) -> None:
        assert not self.started
        self.status = status

    async def write(self, data: bytes) -> None:
        self.body += data
        self.writes.append((time.monotonic(), data))

    async def end(self, trailers: object = None) -> None:
        self.ended = True

    def flush(self) -> None:
        self.flushes.append(len(self.writes))


def openai_target(deadlines: Deadlines) -> Target:
    provider = Provider("oa", "openai", "up", ProviderTarget("oa", ""))
    return Target(provider, ProviderTarget("oa", "gpt-4o-mini", "/v1"), 1, 0, deadlines)


async def relay_to(out: Writer, record: LlmRecord, reply: ScriptedReply, deadlines: Deadlines) -> None:
    """An OpenAI client's stream of an OpenAI provider's reply, into ``out``."""
    now = time.monotonic()
    await relay_stream(
        reply,  # type: ignore[arg-type]
        ADAPTERS["openai"],
        openai_target(deadlines),
        out,  # type: ignore[arg-type]
        FORMATS["openai"],
        record,
        {"model": "chat", "stream": True},
        now,
        now,
    )


async def relay(reply: ScriptedReply, deadlines: Deadlines) -> tuple[Writer, LlmRecord, ProviderError]:
    out = Writer()
    record = LlmRecord(model="chat", endpoint="chat", stream=True)
    with pytest.raises(ProviderError) as caught:
        await relay_to(out, record, reply, deadlines)
    assert reply.closed
    return out, record, caught.value


def test_chunks_before_a_broken_event_in_the_same_read_reach_the_client() -> None:
    reply = ScriptedReply([b"data: " + CHUNK + b"\n\ndata: {not json\n\n"])
    out, _, error = asyncio.run(relay(reply, Deadlines(1.0, 1.0, 1.0, 10.0)))
    assert out.status == 200 and out.ended
    events = [e.removeprefix(b"data: ") for e in out.body.split(b"\n\n") if e]
    assert orjson.loads(events[0])["choices"][0]["delta"]["content"] == "Hello"
    assert orjson.loads(events[0])["model"] == "chat"
    assert orjson.loads(events[1])["error"]["message"] == error.message
    assert len(events) == 2


def test_an_anthropic_translator_keeps_the_chunks_before_a_broken_event() -> None:
    message = {"id": "msg_1", "model": "c", "usage": {"input_tokens": 3, "output_tokens": 0}}
    start = b"event: message_start\ndata: " + orjson.dumps({"type": "message_start", "message": message})
    start += b"\n\n"
    with pytest.raises(ProviderError) as caught:
        AnthropicStreamTranslator().feed(start + b"event: ping\ndata: {broken\n\n")
    assert caught.value.completed and caught.value.completed[0]["id"] == "msg_1"


def test_idle_timeout_after_the_first_token_ends_the_stream_with_an_error_event() -> None:
    idle = 0.3
    reply = ScriptedReply([b"data: " + CHUNK + b"\n\n"], stall=True)
    out, record, error = asyncio.run(relay(reply, Deadlines(1.0, 5.0, idle, 30.0)))
    assert error.kind == "idle_timeout" and error.status == 504
    assert reply.read_timeout == idle  # lowered from the first-token bound once a token went out
    (first_at, first), (error_at, last) = out.writes
    assert b"Hello" in first and b'"error"' in last and f"{idle:g}s".encode() in last
    assert idle <= error_at - first_at < idle + 0.5
    assert record.ttft_ms >= 0


def test_no_token_within_the_first_token_bound_is_a_retryable_error_before_any_byte() -> None:
    reply = ScriptedReply([b": keep-alive\n\n"], stall=True)
    out, _, error = asyncio.run(relay(reply, Deadlines(1.0, 0.2, 5.0, 30.0)))
    assert (error.kind, error.retryable, out.started) == ("first_token_timeout", True, False)
    assert reply.read_timeout <= 0.2  # the rest of the first-token bound, counted across reads


def test_the_first_token_of_a_burst_read_at_once_is_sent_alone_and_flushed() -> None:
    """A provider's events read together (a fast provider, or a burst after a stall): the first token
    is written and flushed at once, the rest after it, so translating the burst does not delay it."""
    burst = b"".join(b"data: " + CHUNK + b"\n\n" for _ in range(5)) + b"data: [DONE]\n\n"
    reply = ScriptedReply([burst])
    out = Writer()
    asyncio.run(
        relay_to(out, LlmRecord(model="chat", endpoint="chat", stream=True), reply, Deadlines(1, 1, 1, 10))
    )
    assert out.flushes == [1], "one flush, right after the first write"
    first = out.writes[0][1]
    assert first.count(b"data: ") == 1 and b"Hello" in first
    events = [e for e in out.body.split(b"\n\n") if e]
    assert sum(b"Hello" in e for e in events) == 5 and events[-1] == b"data: [DONE]"


def test_a_role_only_first_chunk_does_not_end_the_first_token_flush() -> None:
    """Most providers open with a role-only event: it is flushed, and so is the first with content,
    before the rest of the burst is translated."""
    role = orjson.loads(CHUNK)
    role["choices"][0]["delta"] = {"role": "assistant", "content": ""}
    events = [orjson.dumps(role)] + [CHUNK] * 4
    reply = ScriptedReply([b"".join(b"data: " + e + b"\r\n\r\n" for e in events) + b"data: [DONE]\r\n\r\n"])
    out = Writer()
    asyncio.run(
        relay_to(out, LlmRecord(model="chat", endpoint="chat", stream=True), reply, Deadlines(1, 1, 1, 10))
    )
    assert out.flushes == [1, 2], "the role chunk, then the first token, each flushed as it was written"
    (_, first), (_, second) = out.writes[:2]
    assert first.count(b"data: ") == 1 and b"Hello" not in first
    assert second.count(b"data: ") == 1 and b"Hello" in second
    assert out.body.count(b"Hello") == 4 and out.body.endswith(b"data: [DONE]\n\n")
