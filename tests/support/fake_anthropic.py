"""A fake Anthropic provider: the Messages API's real wire format over HTTP/1.1 (optionally TLS with the
tests' CA) on 127.0.0.1, streamed (chunked SSE) and not, with token counts it computes exactly and
reports, ``count_tokens``, and faults injected per request.

Faults come from ``fake.faults`` (a queue, one per request to /v1/messages*) or a request's
``x-fake-fault`` header: ``429`` (with retry-after and rate-limit headers), ``529``, ``500``, ``html``
(a 200 HTML page), ``html_error`` (a 502 HTML page), ``empty`` (an empty 200), ``slow_first_token``
(``slow_seconds`` before the answer), ``stall`` (the stream stops after its first text delta and the
connection stays open), ``malformed`` (an event that is not JSON / a truncated body), ``disconnect``
(the connection drops mid-answer), ``error_event`` (an overloaded error event mid-stream),
``no_message_stop`` (the stream ends cleanly without it), ``huge_line`` (a 10 MiB line).
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from fastgw.ai.adapter import ProviderRequest
from tests.support.loops import shut_down

HUGE_LINE = 10 << 20  # 10 MiB: past every honest event; the translators must cut it off


@dataclass
class FakeRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Answer:
    """What the fake decided to answer: content blocks, stop reason and the counts it reports."""

    content: list[dict[str, Any]]
    stop_reason: str
    stop_sequence: str | None
    usage: dict[str, int] = field(default_factory=dict)


def _words(text: str) -> int:
    return len(text.split())


def count_input_tokens(request: dict[str, Any]) -> int:
    """The fake's tokenizer: one token per whitespace-separated word of every text, tool input and tool
    definition, 3 per message, 85 per image (deterministic, so tests can state exact counts)."""
    total = 0
    system = request.get("system")
    if isinstance(system, str):
        total += _words(system)
    elif isinstance(system, list):
        total += sum(_words(b.get("text", "")) for b in system)
    for message in request.get("messages", []):
        total += 3
        total += _content_tokens(message.get("content"))
    for tool in request.get("tools", []):
        total += _words(tool.get("name", "")) + _words(tool.get("description", ""))
        total += _words(orjson.dumps(tool.get("input_schema", {})).decode().replace(",", " "))
    return total


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return _words(content)
    total = 0
    for block in content or []:
        kind = block.get("type")
        if kind == "text":
            total += _words(block["text"])
        elif kind == "image":
            total += 85
        elif kind == "tool_use":
            total += _words(orjson.dumps(block.get("input", {})).decode().replace(",", " "))
        elif kind == "tool_result":
            total += _content_tokens(block.get("content"))
        elif kind == "thinking":
            total += _words(block.get("thinking", ""))
    return total


class FakeAnthropic:
    """The fake provider on its own loop in a thread; ``port`` once constructed."""

    __test__ = False

    def __init__(self, ssl_context: ssl.SSLContext | None = None, api_key: str = "sk-ant-test") -> None:
        self.ssl_context = ssl_context
        self.api_key = api_key
        self.reply = "Hello! I am a fake Claude, answering from the test suite."
        self.faults: deque[str] = deque()
        self.slow_seconds = 0.5
        self.requests: list[FakeRequest] = []
        self.answers: list[Answer] = []  # what each answered /v1/messages reported, in order
        self.connections = 0
        self._cache: set[bytes] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._closing: asyncio.Event
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(5)
        assert self._server is not None
        self.port: int = self._server.sockets[0].getsockname()[1]

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self._closing = asyncio.Event()
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
            ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def close(self) -> None:
        async def stop() -> None:
            self._closing.set()
            # Every connection's task (a stalled or slow answer included) ends before the loop closes.
            await shut_down(self._server, lambda: [writer.transport for writer in self._writers])

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                if not await self._answer(request, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, request: FakeRequest, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must close."""
        if request.path not in ("/v1/messages", "/v1/messages/count_tokens"):
            return _json(writer, 404, _error("not_found_error", f"no route {request.path}"))
        fault = request.headers.get("x-fake-fault") or (self.faults.popleft() if self.faults else "")
        if fault == "slow_first_token":
            await asyncio.sleep(self.slow_seconds)
        elif fault:
            early = _early_fault(fault, writer)
            if early is not None:
                return early
        if request.headers.get("x-api-key") != self.api_key:
            return _json(writer, 401, _error("authentication_error", "invalid x-api-key"))
        if request.headers.get("anthropic-version") != "2023-06-01":
            return _json(writer, 400, _error("invalid_request_error", "anthropic-version: header required"))
        try:
            body = request.json()
            assert isinstance(body, dict) and body["model"] and isinstance(body["messages"], list)
        except (orjson.JSONDecodeError, AssertionError, KeyError, TypeError):
            return _json(writer, 400, _error("invalid_request_error", "model and messages are required"))
        if request.path.endswith("/count_tokens"):
            return _json(writer, 200, {"input_tokens": count_input_tokens(body)})
        if not isinstance(body.get("max_tokens"), int):
            return _json(writer, 400, _error("invalid_request_error", "max_tokens: Field required"))
        answer = self._decide(body)
        self.answers.append(answer)
        if body.get("stream"):
            return await self._stream(answer, body, writer, fault)
        if fault == "malformed":
            truncated = b'{"id": "msg_01", "type": "message", "con'
            writer.write(_head(200, "application/json", len(truncated)) + truncated)
            return True
        if fault == "disconnect":
            return False
        return _json(writer, 200, _message(answer, body["model"]))

    def _decide(self, body: dict[str, Any]) -> Answer:
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {}
        last = _last_user_text(body["messages"])
        usage = {"input_tokens": count_input_tokens(body), "cache_creation_input_tokens": 0}
        usage["cache_read_input_tokens"] = 0
        key = orjson.dumps(body.get("system"))
        if "cache_control" in key.decode() and usage["input_tokens"] > 4:
            cached = 4  # the fake caches the first 4 tokens of a marked system prompt
            usage["input_tokens"] -= cached
            usage["cache_read_input_tokens" if key in self._cache else "cache_creation_input_tokens"] = cached
            self._cache.add(key)
        if tools and choice.get("type") in ("any", "tool"):
            name = choice.get("name") or tools[0]["name"]
            tool_input = {"query": last}
            content = [
                {
                    "type": "tool_use",
                    "id": f"toolu_{len(self.answers):04d}",
                    "name": name,
                    "input": tool_input,
                }
            ]
            usage["output_tokens"] = _content_tokens(content)
            return Answer(content, "tool_use", None, usage)
        words = self.reply.split()
        stop_reason, matched = "end_turn", None
        for stop in body.get("stop_sequences") or ():
            text = " ".join(words)
            if stop in text:
                words = text[: text.index(stop)].split()
                stop_reason, matched = "stop_sequence", stop
                break
        if len(words) > body["max_tokens"]:
            words = words[: body["max_tokens"]]
            stop_reason, matched = "max_tokens", None
        usage["output_tokens"] = len(words)
        return Answer([{"type": "text", "text": " ".join(words)}], stop_reason, matched, usage)

    async def _stream(
        self, answer: Answer, body: dict[str, Any], writer: asyncio.StreamWriter, fault: str
    ) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\nrequest-id: req_fake\r\n\r\n"
        )
        start_usage = {**answer.usage, "output_tokens": 1}
        message = {
            **_message(answer, body["model"]),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        message["usage"] = start_usage
        await _send(writer, "message_start", {"type": "message_start", "message": message})
        await _send(writer, "ping", {"type": "ping"})
        if fault == "malformed":
            await _send_raw(writer, b"event: content_block_delta\ndata: {not json\n\n")
        if fault == "huge_line":
            await _send_raw(writer, b"data: " + b"x" * HUGE_LINE + b"\n\n")
        for index, block in enumerate(answer.content):
            if block["type"] == "text":
                await _send(writer, "content_block_start", _block_start(index, {"type": "text", "text": ""}))
                for i, word in enumerate(block["text"].split()):
                    piece = word if i == 0 else " " + word
                    delta = {"type": "text_delta", "text": piece}
                    await _send(writer, "content_block_delta", _block_delta(index, delta))
                    if fault == "stall":
                        await self._closing.wait()  # until close(); the client may drop it first
                        return False
                    if fault == "disconnect":
                        return False
                    if fault == "error_event":
                        error = {
                            "type": "error",
                            "error": {"type": "overloaded_error", "message": "Overloaded"},
                        }
                        await _send(writer, "error", error)
                        await _send_raw(writer, None)
                        return True
            else:
                start = {**block, "input": {}}
                await _send(writer, "content_block_start", _block_start(index, start))
                text = orjson.dumps(block["input"]).decode()
                for cut in range(0, len(text), 7):  # a few characters per delta, as the real API sends
                    delta = {"type": "input_json_delta", "partial_json": text[cut : cut + 7]}
                    await _send(writer, "content_block_delta", _block_delta(index, delta))
            await _send(writer, "content_block_stop", {"type": "content_block_stop", "index": index})
        delta = {"stop_reason": answer.stop_reason, "stop_sequence": answer.stop_sequence}
        end_usage = {"output_tokens": answer.usage["output_tokens"]}
        await _send(writer, "message_delta", {"type": "message_delta", "delta": delta, "usage": end_usage})
        if fault != "no_message_stop":
            await _send(writer, "message_stop", {"type": "message_stop"})
        await _send_raw(writer, None)
        return True


def _early_fault(fault: str, writer: asyncio.StreamWriter) -> bool | None:
    """Faults answered before the request is looked at; None for those that act later."""
    if fault == "429":
        headers = {
            "retry-after": "7",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": "2030-01-01T00:00:07Z",
        }
        return _json(
            writer,
            429,
            _error("rate_limit_error", "Number of requests has exceeded your rate limit"),
            headers,
        )
    if fault == "529":
        return _json(writer, 529, _error("overloaded_error", "Overloaded"))
    if fault == "500":
        return _json(writer, 500, _error("api_error", "Internal server error"))
    page = b"<html><body><h1>502 Bad Gateway</h1><p>upstream 10.1.2.3:8443</p></body></html>"
    if fault in ("html", "html_error"):
        writer.write(_head(200 if fault == "html" else 502, "text/html", len(page)) + page)
        return True
    if fault == "empty":
        writer.write(_head(200, "application/json", 0))
        return True
    return None


async def _read_request(reader: asyncio.StreamReader) -> FakeRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return FakeRequest(method, target, headers, body)


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}
_REASONS |= {500: "Internal Server Error", 502: "Bad Gateway", 529: "Overloaded"}


def _head(status: int, content_type: str, length: int, headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {length}\r\nrequest-id: req_fake\r\n{extra}\r\n"
    ).encode()


def _json(
    writer: asyncio.StreamWriter, status: int, body: Any, headers: dict[str, str] | None = None
) -> bool:
    raw = orjson.dumps(body)
    writer.write(_head(status, "application/json", len(raw), headers) + raw)
    return True


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _message(answer: Answer, model: str) -> dict[str, Any]:
    return {
        "id": "msg_01FakeAnthropic",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": answer.content,
        "stop_reason": answer.stop_reason,
        "stop_sequence": answer.stop_sequence,
        "usage": answer.usage,
    }


def _block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def _block_delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(b.get("text", "") for b in content if b.get("type") == "text")
    return ""


async def _send(writer: asyncio.StreamWriter, event: str, data: dict[str, Any]) -> None:
    await _send_raw(writer, f"event: {event}\ndata: ".encode() + orjson.dumps(data) + b"\n\n")


async def _send_raw(writer: asyncio.StreamWriter, data: bytes | None) -> None:
    """One chunk of the chunked body (None: the last chunk), flushed before the next event."""
    writer.write(b"0\r\n\r\n" if data is None else b"%x\r\n%s\r\n" % (len(data), data))
    await writer.drain()


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A TLS server context for the fake (the tests' CA signed ``cert``)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@contextmanager
def calling(
    port: int,
    request: ProviderRequest,
    *,
    context: ssl.SSLContext | None = None,
    timeout: float = 5.0,
) -> Iterator[tuple[int, dict[str, str], http.client.HTTPResponse]]:
    """Send one provider request over a new connection (closed on exit); the response is left unread so a
    stream can be read piece by piece (``response.read1()``)."""
    connection: http.client.HTTPConnection
    if context is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    else:
        connection = http.client.HTTPSConnection("localhost", port, timeout=timeout, context=context)
    try:
        headers = {k.decode(): v.decode() for k, v in request.headers}
        connection.request(request.method, request.path, request.body, headers)
        response = connection.getresponse()
        try:
            yield response.status, {k.lower(): v for k, v in response.getheaders()}, response
        finally:
            response.close()
    finally:
        connection.close()
