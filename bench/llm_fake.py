"""A fast fake OpenAI provider for bench/llm.py: ``POST /v1/chat/completions``, whole or streamed.

The wire shapes are the quick start's fake provider's (fastgw/ai/demo_provider.py: chat.completion,
chat.completion.chunk events, a usage chunk when ``stream_options.include_usage`` asks, ``data:
[DONE]``), but every answer is built once at start-up: the bench measures the gateways, so the fake
must cost as little as possible on the load generator's core. A streamed answer is CHUNKS content
events (one token each) in HTTP/1.1 chunked transfer coding, one HTTP chunk per event, each event its
own write, one per loop iteration (so each leaves as its own TCP segment and a gateway reads it apart,
as it does from a real provider whose tokens come spaced in time); ``batched`` writes the head and first
event, then all the rest in one write (the cheapest stream a gateway can relay: a floor that copies bytes
is then near its request rate, a gateway that works per event is not).
Usage is always PROMPT_TOKENS prompt tokens and CHUNKS completion tokens (bench/llm.py checks that the
gateway's access log records exactly these). Not a provider: no limits, no checks beyond ``stream``.

    python bench/llm_fake.py PORT [CHUNKS] [per-event|batched]
"""

from __future__ import annotations

import asyncio
import sys
from typing import Final

import httptools
import orjson
import uvloop

PROMPT_TOKENS: Final = 12
MODEL: Final = "bench-model"


def whole_answer(chunks: int) -> bytes:
    doc = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(["token"] * chunks)},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": chunks,
            "total_tokens": PROMPT_TOKENS + chunks,
        },
    }
    body = orjson.dumps(doc)
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
    return head + body


def streamed_answer(chunks: int, include_usage: bool, batched: bool) -> list[bytes]:
    """The writes of one stream: the head with the first event, then one per event (or the rest at once)."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": MODEL}

    def event(choices: list[object], **extra: object) -> bytes:
        return b"data: " + orjson.dumps({**base, "choices": choices, **extra}) + b"\n\n"

    events = [event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
    for i in range(chunks):
        text = "token" if i == 0 else " token"
        events.append(event([{"index": 0, "delta": {"content": text}, "finish_reason": None}]))
    events.append(event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    if include_usage:
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": chunks,
            "total_tokens": PROMPT_TOKENS + chunks,
        }
        events.append(event([], usage=usage))
    events.append(b"data: [DONE]\n\n")
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    framed = [b"%x\r\n%s\r\n" % (len(e), e) for e in events]
    framed[0] = head + framed[0]
    framed[-1] += b"0\r\n\r\n"
    return [framed[0], b"".join(framed[1:])] if batched else framed


class FakeProvider(asyncio.Protocol):
    whole = b""
    streamed: list[bytes] = []
    streamed_usage: list[bytes] = []
    not_found = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        assert self.transport is not None
        if not self.url.split(b"?", 1)[0].endswith(b"/chat/completions"):
            self.transport.write(self.not_found)
            return
        request = orjson.loads(body) if body else {}
        if not request.get("stream"):
            self.transport.write(self.whole)
            return
        options = request.get("stream_options") or {}
        self._send(self.streamed_usage if options.get("include_usage") else self.streamed, 0)

    def _send(self, writes: list[bytes], i: int) -> None:
        """One write now, the next one loop iteration later (callbacks queued while the loop runs its
        ready ones wait for the next iteration, after it polled the sockets)."""
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(writes[i])
        if i + 1 < len(writes):
            asyncio.get_running_loop().call_soon(self._send, writes, i + 1)


async def serve(port: int, chunks: int, batched: bool) -> None:
    FakeProvider.whole = whole_answer(chunks)
    FakeProvider.streamed = streamed_answer(chunks, include_usage=False, batched=batched)
    FakeProvider.streamed_usage = streamed_answer(chunks, include_usage=True, batched=batched)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FakeProvider, "127.0.0.1", port, backlog=4096)
    await server.serve_forever()


if __name__ == "__main__":
    mode = sys.argv[3] if len(sys.argv) > 3 else "per-event"
    if mode not in ("per-event", "batched"):
        raise SystemExit(__doc__)
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 100, mode == "batched"))
