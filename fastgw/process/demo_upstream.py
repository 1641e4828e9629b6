"""A tiny in-process HTTP/1.1 backend so the quickstart proxies something real out of the box.

It answers every request with a JSON echo of what reached it (method, path, the forwarding headers the
gateway added, body size), which is exactly what a newcomer wants to see through ``curl``. It is a demo:
keep-alive and Content-Length/chunked bodies work; it enforces no limits and is off unless
``[demo_upstream]`` is configured.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Final

import httptools
import orjson

from fastgw.ai.demo_provider import answer
from fastgw.codec.serialize import LAST_CHUNK, chunk

# A request body is kept (for the fake LLM provider under /v1/) up to this much: the demo's prompts are
# small, and an unbounded buffer would let any client fill the gateway process's memory.
BODY_KEEP: Final = 1024 * 1024

_SHOWN = (
    b"host",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"via",
    b"x-request-id",
    b"traceparent",
    b"user-agent",
)


class DemoUpstream(asyncio.Protocol):
    __slots__ = ("_body", "_data", "_headers", "_parser", "_url", "transport")

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body = 0
        self._data: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
                self.transport.close()

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = 0
        self._data = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in _SHOWN:
            self._headers[name.lower().decode()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body += len(body)
        if self._body <= BODY_KEEP:
            self._data.append(body)

    def on_message_complete(self) -> None:
        if self._url.startswith(b"/v1/"):
            self._answer_llm()
            return
        doc = {
            "message": "Hello from the fastgw demo upstream",
            "method": self._parser.get_method().decode(),
            "path": self._url.decode("latin-1"),
            "headers": self._headers,
            "body_bytes": self._body,
        }
        body = orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
        keep = self._parser.should_keep_alive()
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n" % (
            len(body),
            b"" if keep else b"connection: close\r\n",
        )
        if self.transport is not None:
            self.transport.write(head + body)
            if not keep:
                self.transport.close()

    def _answer_llm(self) -> None:
        """The fake LLM provider (fastgw/ai/demo_provider.py): JSON whole, streams chunked per event."""
        status, content_type, pieces = answer(self._parser.get_method(), self._url, b"".join(self._data))
        keep = self._parser.should_keep_alive()
        close = b"" if keep else b"connection: close\r\n"
        if content_type == b"text/event-stream":
            head = b"HTTP/1.1 %d OK\r\ncontent-type: %s\r\ntransfer-encoding: chunked\r\n%s\r\n" % (
                status,
                content_type,
                close,
            )
            out = head + b"".join(chunk(p) for p in pieces) + LAST_CHUNK
        else:
            body = b"".join(pieces)
            head = b"HTTP/1.1 %d OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n" % (
                status,
                content_type,
                len(body),
                close,
            )
            out = head + body
        if self.transport is not None:
            self.transport.write(out)
            if not keep:
                self.transport.close()


async def start_demo_upstream(host: str, port: int, sock: socket.socket | None = None) -> asyncio.Server:
    """Serve the demo upstream on ``sock`` (bound by the supervisor, shared by workers) or on host:port."""
    loop = asyncio.get_running_loop()
    if sock is not None:
        return await loop.create_server(DemoUpstream, sock=sock)
    return await loop.create_server(DemoUpstream, host, port, reuse_address=True)
