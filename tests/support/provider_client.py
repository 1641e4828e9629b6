"""A minimal HTTP/1.1 client for adapter tests: sends a ``ProviderRequest`` to a fake provider over a real
socket (TLS when given a context) and hands the body back piece by piece as it arrives, as the llm
handler will feed a stream translator. Content-Length, chunked and read-until-close bodies.

``send`` is for async tests; ``fetch`` runs it from synchronous ones, feeding a callback."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

from fastgw.ai.adapter import ProviderRequest


@dataclass
class ProviderReply:
    status: int
    headers: dict[str, str]  # lower-case names
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    complete: bool = False  # set by ``pieces``: the body's framing ended (False: a hang-up mid-body)

    async def pieces(self) -> AsyncGenerator[bytes, None]:
        """The body as it arrives (chunked framing removed); ends early, without error, if the server hangs
        up mid-body: the caller's parser decides what a cut body means."""
        try:
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                while line := await self.reader.readline():  # b"": a hang-up before the last chunk
                    if not (size := int(line.split(b";")[0], 16)):
                        break
                    yield await self.reader.readexactly(size)
                    await self.reader.readexactly(2)
                else:
                    return
            elif "content-length" in self.headers:
                left = int(self.headers["content-length"])
                while left:
                    piece = await self.reader.read(min(left, 1 << 16))
                    if not piece:
                        return
                    left -= len(piece)
                    yield piece
            else:
                while piece := await self.reader.read(1 << 16):
                    yield piece
            self.complete = True
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, ssl.SSLError):
            return

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self.pieces()])

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


async def send(
    port: int, request: ProviderRequest, ssl_context: ssl.SSLContext | None = None
) -> ProviderReply:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ssl_context, server_hostname="localhost" if ssl_context else None
    )
    head = [f"{request.method} {request.path} HTTP/1.1\r\n".encode(), b"host: localhost\r\n"]
    head += [name + b": " + value + b"\r\n" for name, value in request.headers]
    if request.body or request.method == "POST":
        head.append(b"content-length: %d\r\n" % len(request.body))
    writer.write(b"".join(head) + b"\r\n" + request.body)
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return ProviderReply(status, headers, reader, writer)


@dataclass
class ProviderAnswer:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)  # empty when the pieces went to ``on_body``
    complete: bool = False  # the whole message arrived (False: the provider hung up mid-answer)


def fetch(
    port: int,
    request: ProviderRequest,
    *,
    ssl_context: ssl.SSLContext | None = None,
    on_body: Callable[[bytes], None] | None = None,
    timeout: float = 5.0,
) -> ProviderAnswer:
    """One request on a fresh connection, from synchronous code: each body piece goes to ``on_body`` the
    moment it arrives (else into ``body``). Raises TimeoutError if the provider goes quiet for ``timeout``,
    and what ``on_body`` raises; either way the connection is closed (the provider sees the hang-up)."""
    return asyncio.run(_fetch(port, request, ssl_context, on_body, timeout))


async def _fetch(
    port: int,
    request: ProviderRequest,
    ssl_context: ssl.SSLContext | None,
    on_body: Callable[[bytes], None] | None,
    timeout: float,
) -> ProviderAnswer:
    reply = await asyncio.wait_for(send(port, request, ssl_context), timeout)
    answer = ProviderAnswer(reply.status, reply.headers)
    pieces = reply.pieces()
    try:
        while True:
            try:
                piece = await asyncio.wait_for(anext(pieces), timeout)
            except StopAsyncIteration:
                break
            if on_body is not None:
                on_body(piece)
            else:
                answer.body += piece
        answer.complete = reply.complete
    finally:
        await pieces.aclose()
        await reply.close()
    return answer
