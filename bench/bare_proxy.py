"""The floor: a bare uvloop + httptools reverse proxy with no routing, policies, logging or checks.

It forwards each request head and body to one keep-alive upstream connection per client connection and
relays the response (a chunked one re-chunked as it arrives, one chunk per read: bench/llm.py's streaming
floor). It exists only so bench/run.py can show, in the same run, what pure-Python proxying
costs before fastgw adds anything (the brief measured it at 0.75x nginx). Not for production: no limits,
no error handling beyond closing.

    python bench/bare_proxy.py LISTEN_PORT UPSTREAM_PORT
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.out: list[bytes] = []
        self.headers: list[bytes] = []
        self.chunked = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        if self.out and self.client.transport is not None:
            self.client.transport.write(b"".join(self.out))
            self.out.clear()

    def on_message_begin(self) -> None:
        self.headers = [b"HTTP/1.1 %d OK\r\n" % 200]
        self.chunked = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append(name + b": " + value + b"\r\n")
        if name.lower() == b"transfer-encoding":
            self.chunked = True  # httptools hands over the body de-chunked: it goes out re-chunked

    def on_headers_complete(self) -> None:
        self.headers[0] = b"HTTP/1.1 %d OK\r\n" % self.parser.get_status_code()
        self.headers.append(b"\r\n")
        self.out.append(b"".join(self.headers))

    def on_body(self, body: bytes) -> None:
        self.out.append(b"%x\r\n%s\r\n" % (len(body), body) if self.chunked else body)

    def on_message_complete(self) -> None:
        if self.chunked:
            self.out.append(b"0\r\n\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.transport is not None:
            self.client.transport.close()


class Client(asyncio.Protocol):
    upstream_port = 0

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.upstream: Upstream | None = None
        self.pending: list[bytes] = []
        self.url = b""
        self.headers: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        up = Upstream(self)
        task = loop.create_task(loop.create_connection(lambda: up, "127.0.0.1", self.upstream_port))

        def ready(_: object) -> None:
            self.upstream = up
            if self.pending and up.transport is not None:
                up.transport.write(b"".join(self.pending))
                self.pending.clear()

        task.add_done_callback(ready)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append(name + b": " + value + b"\r\n")

    def on_headers_complete(self) -> None:
        head = [self.parser.get_method(), b" ", self.url, b" HTTP/1.1\r\n", *self.headers, b"\r\n"]
        self.headers = []
        self._send(b"".join(head))

    def on_body(self, body: bytes) -> None:
        self._send(body)

    def _send(self, data: bytes) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.write(data)
        else:
            self.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()


async def main(port: int, upstream_port: int) -> None:
    Client.upstream_port = upstream_port
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Client, "127.0.0.1", port, backlog=4096)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
