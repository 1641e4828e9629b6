"""A tiny in-process HTTP/1.1 backend so the quickstart proxies something real out of the box.

It answers every request with a JSON echo of what reached it (method, path, the forwarding headers the
gateway added, body size), which is exactly what a newcomer wants to see through ``curl``. It is a demo:
keep-alive and Content-Length/chunked bodies work; it enforces no limits and is off unless
``[demo_upstream]`` is configured.
"""

from __future__ import annotations

import asyncio
import socket

import httptools
import orjson

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
    __slots__ = ("_body", "_headers", "_parser", "_url", "transport")

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body = 0

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

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in _SHOWN:
            self._headers[name.lower().decode()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body += len(body)

    def on_message_complete(self) -> None:
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


async def start_demo_upstream(host: str, port: int, sock: socket.socket | None = None) -> asyncio.Server:
    """Serve the demo upstream on ``sock`` (bound by the supervisor, shared by workers) or on host:port."""
    loop = asyncio.get_running_loop()
    if sock is not None:
        return await loop.create_server(DemoUpstream, sock=sock)
    return await loop.create_server(DemoUpstream, host, port, reuse_address=True)
