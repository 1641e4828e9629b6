"""A fake OpenAI provider: real HTTP/1.1 on 127.0.0.1 (TLS when given a context), OpenAI's wire format.

It serves ``POST /v1/chat/completions`` (whole, or streamed as SSE chunks with a final usage chunk when the
request asks ``stream_options.include_usage``), ``POST /v1/embeddings`` (floats or base64) and
``GET /v1/models``, with token counts computed by simple rules so tests can predict them exactly
(fake_openai_answers.py: what it answers; this module: the wire and the faults).

Faults, per request: the ``x-fake-fault`` header, else the next one queued in ``faults``, else a model
named ``fault-<name>`` (so a gateway config can map an alias onto a failing model). See ``FAULTS``.

Standard library only (it becomes the quick start's built-in fake provider): asyncio streams, json.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

from tests.support.fake_openai_answers import Answer, embeddings_answer, plan_answer, usage_object
from tests.support.loops import shut_down

FAULTS: Final = (
    "429",  # rate limited: Retry-After and x-ratelimit-* headers
    "529",  # overloaded
    "500",  # server error
    "408",  # the provider timed out waiting for the request (as a proxy in front of it may answer)
    "slow-first-token",  # first_token_delay seconds before the first token (or the whole answer)
    "stall",  # streams the first chunk, then nothing until the client hangs up
    "malformed-event",  # a stream event that is not JSON
    "disconnect",  # hangs up after the first chunk
    "html",  # a 200 with an HTML page
    "empty",  # a 200 with an empty body
    "error-200",  # a 200 whose body is an error object (as some OpenAI-compatible servers answer)
    "error-stall",  # a 500 head and the start of its error body, then nothing until the client hangs up
    "error-trickle",  # a 500 head, then its error body one byte every trickle_seconds
    "truncated",  # a non-streamed answer cut in the middle, then the connection closed
    "no-done",  # a stream that ends cleanly without data: [DONE]
    "stall-after-usage",  # streams every event, usage included, then nothing until the client hangs up
    "no-usage",  # no usage object, streamed or not
    "inflated-usage",  # usage reports 1,000,000 completion tokens for a short answer
    "huge-line",  # a 10 MiB SSE line
    "huge-response",  # a 40 MB non-streamed answer
    "echo",  # answers "You said: " and the last message's text, streamed in 5-character pieces
)
MAX_BODY: Final = 64 << 20  # a request body larger than this is refused (413): the fake's own bound
HUGE_LINE: Final = 10 << 20
HUGE_RESPONSE: Final = 40_000_000
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    408: "Request Timeout",
    413: "Too Large",
}


def dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def error_body(message: str, kind: str, code: str | None = None) -> bytes:
    return dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


def _error_head(body: bytes) -> bytes:
    """A 500's head for ``body``, written by the faults that then send the body slowly or not at all."""
    head = b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
    return head + b"content-length: %d\r\n\r\n" % len(body)


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any = None


class FakeOpenAI:
    """Start with ``await start()`` inside a loop, or ``start_in_thread()`` for a test that blocks."""

    __test__ = False

    def __init__(self, *, api_key: str | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self.api_key = api_key  # when set, requests need "Authorization: Bearer <api_key>"
        self.other_keys: set[str] = set()  # more keys it accepts (several keys per provider, a client's own)
        self.limited_keys: dict[str, str] = {}  # key -> Retry-After: requests with it are answered 429
        self.ssl_context = ssl_context
        self.models = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
        self.faults: deque[str] = deque()  # faults for the next requests, in order
        # The text of the next non-streamed chat answers, in order (e.g. invalid JSON, then valid JSON: a
        # JSON-schema-mode answer that must be asked for again); empty: the usual REPLY.
        self.texts: deque[str] = deque()
        self.first_token_delay = 0.5
        self.trickle_seconds = 0.3  # between the bytes of an "error-trickle" body
        self.chunk_delay = 0.0  # seconds between streamed pieces: a slow stream to hang up on
        self.retry_after = "1"
        self.requests: list[SeenRequest] = []
        self.answers: list[Answer] = []
        # Answers the client hung up on while the fake was still writing or stalled (a short answer may fit
        # in the socket buffers and count as finished: use chunk_delay or a stall to see a hang-up).
        self.hangups = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def open_connections(self) -> int:
        """Connections open now: a test polls this to see that the gateway closed its provider connection."""
        return len(self._writers)

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}/v1"

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        # Answers still waiting (a slow first token) are cancelled, not left pending.
        await shut_down(self._server, lambda: [writer.transport for writer in self._writers])
        if self._server is not None:
            await self._server.wait_closed()

    def start_in_thread(self) -> FakeOpenAI:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            self._loop.run_until_complete(self.start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(5)
        return self

    def stop_thread(self) -> None:
        assert self._loop is not None and self._thread is not None
        asyncio.run_coroutine_threadsafe(self.close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    # --- HTTP/1.1 -------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # a connection callback of asyncio.start_server runs in its own Task
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while await self._one_request(reader, writer):
                pass
        except OSError:  # the client hung up while the fake was writing (TLS errors are OSErrors too)
            self.hangups += 1
        except (asyncio.IncompleteReadError, ValueError):
            pass
        except asyncio.CancelledError:  # close() while an answer waited: the task ends quietly
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.transport.abort()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        line = await reader.readline()
        if not line:
            return False
        method, path, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while size := int((await reader.readline()).split(b";")[0], 16):
                body += await reader.readexactly(size)
                await reader.readline()
                if len(body) > MAX_BODY:
                    raise ValueError("body too large")
            await reader.readline()
        else:
            length = int(headers.get("content-length", "0"))
            if length > MAX_BODY:
                await self._send(writer, 413, error_body("body too large", "invalid_request_error"))
                return False
            body = bytearray(await reader.readexactly(length))
        seen = SeenRequest(method, path.split("?")[0].removeprefix("/v1"), headers, bytes(body))
        self.requests.append(seen)
        await self._route(seen, reader, writer)
        return headers.get("connection", "").lower() != "close" and not writer.is_closing()

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        ctype: str = "application/json",
        extra: str = "",
    ) -> None:
        reason = _REASONS.get(status, "Error")
        head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: {ctype}\r\n"
        head += f"content-length: {len(body)}\r\n{extra}\r\n"
        writer.write(head.encode() + body)
        await writer.drain()

    async def _route(
        self, seen: SeenRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        authorization = seen.headers.get("authorization", "")
        given = authorization.removeprefix("Bearer ")
        accepted = {self.api_key, *self.other_keys}
        if self.api_key is not None and (given == authorization or given not in accepted):
            # As OpenAI words it: the key's first and last characters, the rest masked.
            message = f"Incorrect API key provided: {given[:3]}{'*' * max(len(given) - 7, 0)}{given[-4:]}."
            return await self._send(
                writer, 401, error_body(message, "invalid_request_error", "invalid_api_key")
            )
        if seen.method == "GET" and seen.path == "/models":
            data = [
                {"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"} for m in self.models
            ]
            return await self._send(writer, 200, dumps({"object": "list", "data": data}))
        if seen.method != "POST" or seen.path not in ("/chat/completions", "/embeddings"):
            return await self._send(
                writer, 404, error_body(f"Unknown path {seen.path}", "invalid_request_error")
            )
        try:
            seen.json = json.loads(seen.body)
            model = seen.json["model"]
        except (ValueError, KeyError, TypeError):
            return await self._send(
                writer, 400, error_body("We could not parse the JSON body", "invalid_request_error")
            )
        if given in self.limited_keys:
            extra = f"retry-after: {self.limited_keys[given]}\r\n"
            body = error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded")
            return await self._send(writer, 429, body, extra=extra)
        fault = seen.headers.get("x-fake-fault") or (self.faults.popleft() if self.faults else "")
        if not fault and isinstance(model, str) and model.startswith("fault-"):
            fault = model.removeprefix("fault-")
        if fault and fault not in FAULTS:
            return await self._send(
                writer, 400, error_body(f"unknown fault {fault!r}", "invalid_request_error")
            )
        if await self._error_fault(fault, reader, writer):
            return None
        if seen.path == "/embeddings":
            return await self._send(writer, 200, embeddings_answer(seen.json))
        if seen.json.get("stream"):
            return await self._stream(seen.json, fault, reader, writer)
        return await self._complete(seen.json, fault, writer)

    async def _error_fault(
        self, fault: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        if fault == "429":
            extra = (
                f"retry-after: {self.retry_after}\r\nx-ratelimit-remaining-requests: 0\r\n"
                "x-ratelimit-reset-requests: 1s\r\nx-ratelimit-remaining-tokens: 1000\r\n"
                "x-ratelimit-reset-tokens: 6m0s\r\n"
            )
            body = error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded")
            await self._send(writer, 429, body, extra=extra)
        elif fault == "529":
            await self._send(writer, 529, error_body("Overloaded", "overloaded_error"))
        elif fault == "500":
            await self._send(
                writer, 500, error_body("The server had an error processing your request.", "server_error")
            )
        elif fault == "408":
            await self._send(writer, 408, error_body("Request timed out.", "timeout"))
        elif fault == "html":
            await self._send(writer, 200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
        elif fault == "empty":
            await self._send(writer, 200, b"")
        elif fault == "error-200":
            message = "This model's maximum context length is 4096 tokens."
            body = error_body(message, "invalid_request_error", "context_length_exceeded")
            await self._send(writer, 200, body)
        elif fault == "error-stall":
            body = error_body("The server had an error processing your request.", "server_error")
            writer.write(_error_head(body) + body[:10])
            await writer.drain()
            await reader.read()  # the stall ends when the client hangs up
            self.hangups += 1
            writer.transport.abort()
        elif fault == "error-trickle":
            body = error_body("The server had an error processing your request.", "server_error")
            writer.write(_error_head(body))
            for byte in range(len(body)):
                await asyncio.sleep(self.trickle_seconds)
                if writer.transport.is_closing() or reader.at_eof():
                    break
                writer.write(body[byte : byte + 1])
                await writer.drain()
            self.hangups += 1
            writer.transport.abort()
        else:
            return False
        return True

    # --- chat -------------------------------------------------------------------------------------------

    async def _complete(self, request: dict[str, Any], fault: str, writer: asyncio.StreamWriter) -> None:
        answer, _, finish, tool = plan_answer(request, fault)
        if self.texts and tool is None:
            answer.text = self.texts.popleft()
        self.answers.append(answer)
        message: dict[str, Any] = {"role": "assistant", "content": answer.text or None, "refusal": None}
        if tool is not None:
            function = {"name": tool["function"]["name"], "arguments": answer.arguments}
            message["tool_calls"] = [{"id": "call_fake_1", "type": "function", "function": function}]
        if fault == "huge-response":
            message["content"] = "x" * HUGE_RESPONSE
        choices = [
            {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
            for i in range(request.get("n") or 1)
        ]
        body: dict[str, Any] = {
            "id": f"chatcmpl-fake-{len(self.answers)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request["model"],
            "system_fingerprint": "fp_fake",
            "choices": choices,
        }
        if answer.usage:
            body["usage"] = usage_object(answer)
        if fault == "slow-first-token":
            await asyncio.sleep(self.first_token_delay)
        raw = dumps(body)
        if fault == "truncated":
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(raw)
            )
            writer.write(raw[: len(raw) // 2])
            await writer.drain()
            writer.transport.abort()
            return
        await self._send(writer, 200, raw)

    async def _stream(
        self, request: dict[str, Any], fault: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        answer, pieces, finish, tool = plan_answer(request, fault)
        self.answers.append(answer)
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": f"chatcmpl-fake-{len(self.answers)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": request["model"],
            "system_fingerprint": "fp_fake",
        }
        n = request.get("n") or 1

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, index: int = 0) -> bytes:
            event: dict[str, Any] = {
                **base,
                "choices": [
                    {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }
            if include_usage:
                event["usage"] = None
            return b"data: " + dumps(event) + b"\n\n"

        def write(data: bytes) -> None:
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))

        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
        )
        if fault == "slow-first-token":  # the head went out at once, as OpenAI's does; the events wait
            await writer.drain()
            await asyncio.sleep(self.first_token_delay)
        for index in range(n):
            first: dict[str, Any] = {"role": "assistant", "content": None if tool else ""}
            if tool is not None:
                name = tool["function"]["name"]
                call = {"index": 0, "id": "call_fake_1", "type": "function"}
                first["tool_calls"] = [{**call, "function": {"name": name, "arguments": ""}}]
            write(chunk(first, index=index))
        await writer.drain()
        if fault in ("stall", "disconnect", "malformed-event", "huge-line"):
            return await self._broken_stream(fault, reader, writer, write)
        for piece in pieces:
            for index in range(n):
                if tool is not None:
                    delta: dict[str, Any] = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                else:
                    delta = {"content": piece}
                write(chunk(delta, index=index))
            await writer.drain()
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        for index in range(n):
            write(chunk({}, finish, index))
        if include_usage and answer.usage:
            write(b"data: " + dumps({**base, "choices": [], "usage": usage_object(answer)}) + b"\n\n")
        if fault == "stall-after-usage":
            await writer.drain()
            await reader.read()  # the stall ends when the client hangs up
            self.hangups += 1
            writer.transport.abort()
            return
        if fault != "no-done":
            write(b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _broken_stream(
        self, fault: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, write: Any
    ) -> None:
        if fault == "malformed-event":
            write(b'data: {"id": "chatcmpl-broken", "choices": [\n\n')
        elif fault == "huge-line":
            write(b"data: " + b"x" * HUGE_LINE + b"\n\n")
        if fault != "stall":
            await writer.drain()
            writer.transport.abort()
            return
        await reader.read()  # the stall ends when the client hangs up
        self.hangups += 1
        writer.transport.abort()
