"""A minimal HTTP/1.1 client for adapter tests: sends a ``ProviderRequest`` to a fake provider over a real
socket (TLS when given a context) and hands the body back piece by piece as it arrives, as the llm
handler will feed a stream translator. Content-Length, chunked and read-until-close bodies."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from fastgw.ai.adapter import ProviderRequest


@dataclass
class ProviderReply:
    status: int
    headers: dict[str, str]  # lower-case names
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def pieces(self) -> AsyncGenerator[bytes, None]:
        """The body as it arrives (chunked framing removed); ends early, without error, if the server hangs
        up mid-body: the caller's parser decides what a cut body means."""
        try:
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                while size := int((await self.reader.readline()).split(b";")[0] or b"0", 16):
                    yield await self.reader.readexactly(size)
                    await self.reader.readexactly(2)
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
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
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
