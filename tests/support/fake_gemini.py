"""A fake Gemini API (generativelanguage.googleapis.com) on 127.0.0.1: HTTP/1.1, optionally TLS with the
tests' CA, speaking the real wire format: ``generateContent``, ``streamGenerateContent?alt=sse``,
``embedContent``, ``batchEmbedContents``, Google's error objects, and faults on demand.

Token counts are exact and known to the test: a token is a whitespace-separated word of the text parts
(the prompt: system instruction and contents; the answer: its text; the thoughts: the thought text), so
``fake.sent_usage`` (the last ``usageMetadata`` of each answer) is what the adapter must report.

Faults (``fake.fault``, for the next ``fake.fault_times`` requests; -1 for every one):
``rate_limit`` (429 RESOURCE_EXHAUSTED with a RetryInfo of ``retry_delay``), ``unavailable`` (503),
``internal`` (500), ``slow_first_token`` (``first_token_delay`` before the first event or the body),
``stall`` (the first event, then nothing until the fake closes), ``malformed_event``, ``disconnect``
(the first event, then the connection drops), ``html`` (a 200 HTML page), ``empty_200``,
``no_finish_reason`` (a stream that ends cleanly without a finishReason), ``huge_line`` (a 10 MiB line).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

import httptools
import orjson

from tests.support.loops import shut_down

API_KEY = "fake-gemini-key"
HUGE_LINE = 10 * 1024 * 1024  # the "10 MiB line" of the bad-input list
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the JSON body


@dataclass
class Reply:
    """What the fake answers: text split into events of ``words_per_event`` words, optional thoughts and
    function calls (name, args), the finishReason, and how many prompt tokens were served from cache."""

    text: str = "The quick brown fox jumps over the lazy dog"
    thoughts: str = ""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    finish: str = "STOP"
    cached_tokens: int = 0
    words_per_event: int = 2


def words(text: str) -> int:
    return len(text.split())


def prompt_tokens(body: Any) -> int:
    """The fake's token count of a GenerateContentRequest: words of every text part."""
    total = 0
    contents = list(body.get("contents", []))
    if "systemInstruction" in body:
        contents.append(body["systemInstruction"])
    for content in contents:
        for part in content.get("parts", []):
            if "text" in part:
                total += words(part["text"])
            elif "functionResponse" in part:
                total += words(orjson.dumps(part["functionResponse"]).decode())
    return total


def google_error(code: int, status: str, message: str, details: list[Any] | None = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return orjson.dumps({"error": error})


class _Connection(asyncio.Protocol):
    def __init__(self, fake: FakeGemini) -> None:
        self.fake = fake
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.streaming = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.fake._transports.add(self.transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        self.fake._transports.discard(self.transport)  # type: ignore[arg-type]
        if self.streaming:
            self.fake.closed_mid_stream += 1

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", {}, bytearray()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        try:
            body = orjson.loads(self.body) if self.body else None
        except orjson.JSONDecodeError:
            body = None
        seen = Seen(self.parser.get_method().decode(), self.url.decode(), dict(self.headers), body)
        self.fake.requests.append(seen)
        task = asyncio.get_running_loop().create_task(self._answer(seen))
        self.fake._tasks.add(task)
        task.add_done_callback(self.fake._tasks.discard)

    # --- answering ---------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _whole(
        self, status: int, body: bytes, content_type: str = "application/json", extra: str = ""
    ) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}.get(
            status, "Error"
        )
        head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\n"
        head += f"content-length: {len(body)}\r\n{extra}\r\n"
        self._write(head.encode() + body)

    def _chunk(self, data: bytes) -> None:
        self._write(b"%x\r\n%s\r\n" % (len(data), data))

    async def _answer(self, seen: Seen) -> None:
        fake = self.fake
        path, _, query = seen.path.partition("?")
        model, _, method = path.removeprefix("/v1beta/models/").partition(":")
        if seen.headers.get("x-goog-api-key") != fake.api_key:
            self._whole(
                400, google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.")
            )
            return
        if seen.method != "POST" or not path.startswith("/v1beta/models/") or not isinstance(seen.body, dict):
            self._whole(404, google_error(404, "NOT_FOUND", f"{seen.path} is not found"))
            return
        fault = fake._take_fault()
        if fault == "rate_limit":
            details = [{"@type": _RETRY_INFO, "retryDelay": fake.retry_delay}]
            message = "Resource has been exhausted (e.g. check quota)."
            self._whole(429, google_error(429, "RESOURCE_EXHAUSTED", message, details))
        elif fault == "unavailable":
            self._whole(
                503, google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
            )
        elif fault == "internal":
            self._whole(500, google_error(500, "INTERNAL", "An internal error has occurred."))
        elif fault == "html":
            self._whole(200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
        elif fault == "empty_200":
            self._whole(200, b"")
        elif method in ("embedContent", "batchEmbedContents"):
            self._whole(200, orjson.dumps(fake._embeddings(method, seen.body)))
        elif method == "generateContent":
            if fault == "slow_first_token":
                await asyncio.sleep(fake.first_token_delay)
            self._whole(200, orjson.dumps(fake._completion(model, seen.body)))
        elif method == "streamGenerateContent" and query == "alt=sse":
            await self._stream(model, seen.body, fault)
        else:
            self._whole(404, google_error(404, "NOT_FOUND", f"method {method} is not found"))

    async def _stream(self, model: str, body: Any, fault: str | None) -> None:
        fake = self.fake
        self._write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        self.streaming = True
        if fault == "slow_first_token":
            await asyncio.sleep(fake.first_token_delay)
        if fault == "huge_line":
            piece = b"a" * 65536
            self._chunk(b"data: ")
            for _ in range(HUGE_LINE // len(piece)):
                self._chunk(piece)
                await asyncio.sleep(0)
            self._chunk(b"\n\n")
        events = fake._events(model, body, finish=fault != "no_finish_reason")
        for number, event in enumerate(events):
            if number and fake.event_gap:
                await asyncio.sleep(fake.event_gap)
            if fault == "malformed_event" and number == 1:
                self._chunk(b'data: {"candidates": [{"content": \n\n')
                break
            self._chunk(b"data: " + orjson.dumps(event) + b"\r\n\r\n")
            if number == 0 and fault == "stall":
                await fake._released.wait()
                return
            if number == 0 and fault == "disconnect":
                await asyncio.sleep(0.01)
                self.streaming = False  # the fake hangs up; closed_mid_stream counts the client's
                assert self.transport is not None
                self.transport.abort()
                return
        self._chunk(b"")
        self.streaming = False


class FakeGemini:
    """The fake on its own loop in a thread; ``reply`` and ``fault`` may be changed between requests."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.api_key = API_KEY
        self.reply = Reply()
        self.fault: str | None = None
        self.fault_times = 1
        self.retry_delay = "7s"
        self.first_token_delay = 0.3
        self.event_gap = 0.0
        self.requests: list[Seen] = []
        self.sent_usage: list[dict[str, int]] = []
        self.closed_mid_stream = 0
        self._transports: set[asyncio.Transport] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.loop = asyncio.new_event_loop()
        self._released = asyncio.Event()
        self._server: asyncio.Server | None = None
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self._server = self.loop.run_until_complete(
                self.loop.create_server(lambda: _Connection(self), "127.0.0.1", 0, ssl=ssl_context)
            )
            ready.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(5)
        assert self._server is not None
        self.port: int = self._server.sockets[0].getsockname()[1]

    def _take_fault(self) -> str | None:
        if self.fault is None or self.fault_times == 0:
            return None
        if self.fault_times > 0:
            self.fault_times -= 1
        return self.fault

    def _usage(self, body: Any, candidates: int, upto: int | None = None) -> dict[str, int]:
        reply = self.reply
        answer = words(reply.text) if upto is None else upto
        usage = {"promptTokenCount": prompt_tokens(body), "candidatesTokenCount": answer * candidates}
        if reply.thoughts:
            usage["thoughtsTokenCount"] = words(reply.thoughts) * candidates
        if reply.cached_tokens:
            usage["cachedContentTokenCount"] = reply.cached_tokens
        usage["totalTokenCount"] = sum(v for k, v in usage.items() if k != "cachedContentTokenCount")
        return usage

    def _candidate_count(self, body: Any) -> int:
        return int(body.get("generationConfig", {}).get("candidateCount", 1))

    def _call_parts(self) -> list[dict[str, Any]]:
        return [{"functionCall": {"name": name, "args": args}} for name, args in self.reply.calls]

    def _completion(self, model: str, body: Any) -> dict[str, Any]:
        reply = self.reply
        parts: list[dict[str, Any]] = [{"text": reply.thoughts, "thought": True}] if reply.thoughts else []
        parts += [{"text": reply.text}] if reply.text else []
        parts += self._call_parts()
        n = self._candidate_count(body)
        candidates = [
            {"content": {"parts": parts, "role": "model"}, "finishReason": reply.finish, "index": i}
            for i in range(n)
        ]
        usage = self._usage(body, n)
        self.sent_usage.append(usage)
        return {
            "candidates": candidates,
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": "fakeresp1",
        }

    def _events(self, model: str, body: Any, *, finish: bool) -> list[dict[str, Any]]:
        reply = self.reply
        n = self._candidate_count(body)
        pieces: list[list[dict[str, Any]]] = (
            [[{"text": reply.thoughts, "thought": True}]] if reply.thoughts else []
        )
        text_words = reply.text.split(" ") if reply.text else []
        step = reply.words_per_event
        counts: list[int] = [0] * len(pieces)
        for start in range(0, len(text_words), step):
            chunk = " ".join(text_words[start : start + step])
            pieces.append([{"text": chunk if start == 0 else " " + chunk}])
            counts.append(min(start + step, len(text_words)))
        if reply.calls:
            pieces.append(self._call_parts())
            counts.append(words(reply.text))
        events = []
        for number, parts in enumerate(pieces):
            last = number == len(pieces) - 1
            candidates = []
            for i in range(n):
                candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": i}
                if last and finish:
                    candidate["finishReason"] = reply.finish
                candidates.append(candidate)
            usage = self._usage(body, n, None if last else counts[number])
            if last:
                self.sent_usage.append(usage)
            events.append(
                {
                    "candidates": candidates,
                    "usageMetadata": usage,
                    "modelVersion": model,
                    "responseId": "fakeresp1",
                }
            )
        return events

    def _embeddings(self, method: str, body: Any) -> dict[str, Any]:
        def vector(request: Any) -> dict[str, list[float]]:
            text = request["content"]["parts"][0]["text"]
            size = int(request.get("outputDimensionality", 8))
            seed = zlib.crc32(text.encode())
            return {"values": [((seed + i * 7919) % 1000) / 1000 for i in range(size)]}

        if method == "embedContent":
            return {"embedding": vector(body)}
        return {"embeddings": [vector(request) for request in body["requests"]]}

    def close(self) -> None:
        async def stop() -> None:
            self._released.set()
            await shut_down(self._server, lambda: self._transports)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
