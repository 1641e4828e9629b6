"""A small HTTP/1.1 client for the control-path calls policies make (introspection, JWKS, discovery).

One request per connection (``Connection: close``), parsed by h11, over the gateway's own TLS client
context, with a size cap on the answer. Never used on the request fast path: only inside a ``Pending``
or a background refresh.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Final

import h11
import orjson

MAX_RESPONSE: Final = 1 << 20
# What a call through this client, and the JSON parse of its answer, raise when the server is unreachable,
# silent, speaks broken HTTP or answers no JSON: its callers' one failure (a JWKS fetch, an introspection).
CALL_ERRORS: Final = (
    OSError,
    TimeoutError,
    ssl.SSLError,
    h11.ProtocolError,
    orjson.JSONDecodeError,
    ValueError,
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    path: str  # with the query string
    tls: ssl.SSLContext | None
    server_hostname: str | None

    @classmethod
    def parse(cls, url: str, tls: ssl.SSLContext | None) -> Endpoint:
        """Raises ValueError for anything but an absolute http(s) URL."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        secure = parts.scheme == "https"
        if secure and tls is None:
            raise ValueError(f"{url!r} is https:// but no TLS context was given")
        return cls(
            host=parts.hostname,
            port=parts.port or (443 if secure else 80),
            path=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
            tls=tls if secure else None,
            server_hostname=parts.hostname if secure else None,
        )


async def request(
    endpoint: Endpoint, method: str, headers: list[tuple[str, str]], body: bytes = b""
) -> tuple[int, bytes]:
    """(status, body). Raises OSError, ssl.SSLError, h11.ProtocolError or ValueError (too large)."""
    status, _, answer = await exchange(endpoint, method, headers, body)
    return status, answer


async def exchange(
    endpoint: Endpoint, method: str, headers: list[tuple[str, str]], body: bytes = b""
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """``request`` with the response's header fields (names lower-case), between status and body."""
    reader, writer = await asyncio.open_connection(
        endpoint.host, endpoint.port, ssl=endpoint.tls, server_hostname=endpoint.server_hostname
    )
    try:
        conn = h11.Connection(h11.CLIENT)
        all_headers = [
            ("host", endpoint.server_hostname or endpoint.host),
            *headers,
            ("content-length", str(len(body))),
            ("connection", "close"),
        ]
        writer.write(conn.send(h11.Request(method=method, target=endpoint.path, headers=all_headers)) or b"")
        if body:
            writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        status, fields, chunks, size = 0, [], [], 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                fields = [(bytes(name), bytes(value)) for name, value in event.headers]
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_RESPONSE:
                    raise ValueError("response too large")
                chunks.append(bytes(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return status, fields, b"".join(chunks)
    finally:
        writer.close()
